//! `rotate-kek` throughput on PostgreSQL: N DEKs (default 100 000, `COFFER_BENCH_DEKS`) wrapped
//! under main/v1 are re-wrapped under main/v2 by `Keyring::rotate_kek` with batches of 1 000.
//! Prints DEKs/s, and beside it the same run's raw unwrap+wrap rate without the store (the
//! baseline: how fast the KEK side alone could go). Needs the local PostgreSQL (`make bench`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use coffer_core::{Dek, Kek, KeyVersion, ScopeId, WrapAlgorithm};
use coffer_keys::keyring::DEK_ALGORITHM;
use coffer_keys::{KekId, KekProvider, KekRing, KeyStore, Keyring, KeyringConfig, LocalKek};
use coffer_store::SqlStore;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` from the criterion harness convention
    }
    let n: usize = std::env::var("COFFER_BENCH_DEKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n));
}

async fn run(n: usize) {
    let db = match coffer_testkit::pg::TestDb::try_new("coffer_bench") {
        Ok(db) => db,
        Err(e) => {
            eprintln!("skipping rotate-kek benchmark: {e}");
            return;
        }
    };
    let url = db.url().to_owned();
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    let info = store.info().await.unwrap();

    let k1 = Kek::generate().unwrap();
    let k2 = Kek::generate().unwrap();
    let id1 = KekId::new("main", 1).unwrap();
    let id2 = KekId::new("main", 2).unwrap();

    // Load N DEKs wrapped under v1 in bulk (the library makes the wraps and tags).
    let t = Instant::now();
    let mut rows = Vec::with_capacity(1000);
    for i in 0..n {
        let scope = ScopeId::new(format!("bench:{i}")).unwrap();
        let dek = Dek::generate().unwrap();
        let key_id = coffer_testkit::random::bytes::<16>();
        let meta = coffer_core::KeyMetadata {
            store_id: &info.store_id,
            scope: &scope,
            version: KeyVersion(1),
            key_id: &key_id,
            algorithm: DEK_ALGORITHM,
        };
        let check = coffer_core::wrap::metadata_tag(&dek, &meta).unwrap();
        let wrapped = k1.wrap_dek(&dek, WrapAlgorithm::AesKwp).unwrap();
        rows.push((scope, key_id, wrapped, check));
        if rows.len() == 1000 || i + 1 == n {
            insert(store.pool(), &rows).await;
            rows.clear();
        }
    }
    eprintln!("loaded {n} DEKs in {:.1} s", t.elapsed().as_secs_f64());

    // Baseline: unwrap + wrap alone, no store.
    let dek = Dek::generate().unwrap();
    let w = k1.wrap_dek(&dek, WrapAlgorithm::AesKwp).unwrap();
    let t = Instant::now();
    let reps = 20_000;
    for _ in 0..reps {
        let d = k1.unwrap_dek(&w, WrapAlgorithm::AesKwp).unwrap();
        std::hint::black_box(k2.wrap_dek(&d, WrapAlgorithm::AesKwp).unwrap());
    }
    let raw_rate = reps as f64 / t.elapsed().as_secs_f64();

    let ring = KekRing::new(
        [
            (
                id1.clone(),
                Arc::new(LocalKek::new(id1, k1)) as Arc<dyn KekProvider>,
            ),
            (
                id2.clone(),
                Arc::new(LocalKek::new(id2.clone(), k2)) as Arc<dyn KekProvider>,
            ),
        ],
        id2.clone(),
    )
    .unwrap();
    let kr = Keyring::new(store.clone(), ring, KeyringConfig::default())
        .await
        .unwrap();
    let t = Instant::now();
    let report = kr.rotate_kek(1000, |_| {}).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(report.rewrapped as usize, n);
    assert_eq!(store.count_deks_not_under(&id2).await.unwrap(), 0);
    println!(
        "rotate-kek/postgres: {n} DEKs in {secs:.1} s = {:.0} DEKs/s (batch 1000, local KEKs) | baseline unwrap+wrap without the store: {raw_rate:.0} DEKs/s",
        n as f64 / secs
    );
    drop(kr);
    drop(store);
    drop(db);
}

/// scope, key id, wrap, metadata tag.
type Row = (ScopeId, [u8; 16], Vec<u8>, [u8; 32]);

async fn insert(pool: &sqlx::AnyPool, rows: &[Row]) {
    let mut tx = pool.begin().await.unwrap();
    let mut q = String::from("INSERT INTO coffer_scopes (scope, created_at_us) VALUES ");
    for i in 0..rows.len() {
        q.push_str(&format!("{}(${}, 0)", if i > 0 { "," } else { "" }, i + 1));
    }
    let mut query = sqlx::query(&q);
    for r in rows {
        query = query.bind(r.0.as_str().to_owned());
    }
    query.execute(&mut *tx).await.unwrap();
    let mut q = String::from(
        "INSERT INTO coffer_deks (scope, version, key_id, state, wrapped, kek_name, kek_version, \
         wrap_algorithm, key_check, encryptions, created_at_us, state_changed_at_us) VALUES ",
    );
    for i in 0..rows.len() {
        let b = i * 4;
        q.push_str(&format!(
            "{}(${}, 1, ${}, 'active', ${}, 'main', 1, 'aes256-kwp', ${}, 0, 0, 0)",
            if i > 0 { "," } else { "" },
            b + 1,
            b + 2,
            b + 3,
            b + 4
        ));
    }
    let mut query = sqlx::query(&q);
    for r in rows {
        query = query
            .bind(r.0.as_str().to_owned())
            .bind(r.1.to_vec())
            .bind(r.2.clone())
            .bind(r.3.to_vec());
    }
    query.execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

//! The key store at many scopes, each figure beside a same-run baseline, on SQLite and on the
//! local PostgreSQL (skipped when it is down):
//! - the first encrypt on a scope this process has never touched (active pointer, L1 and L2
//!   all miss: one store read of the pointer, one of the DEK, one local-KEK unwrap) vs a warm
//!   encrypt (L1 hit) in the same keyring;
//! - `Keyring::create_scopes` (a batch of 5 000 in one transaction) vs `create_scope` one by
//!   one, per scope.
//!
//! `make bench` runs it; `cargo bench -p coffer-store --bench scale` alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_core::{ColumnId, FieldContext, Kek, ScopeId, Suite};
use coffer_keys::{KeyStore, Keyring, KeyringConfig};
use coffer_store::SqlStore;
use coffer_testkit::bench_setup;
use coffer_testkit::keyring_fixtures::KeyringSetup;
use criterion::{Criterion, criterion_group, criterion_main};

/// Scopes made ahead for the cold-miss figure (each iteration takes a new one).
const COLD_SCOPES: usize = 50_000;

struct Backend {
    name: &'static str,
    url: String,
    _dir: Option<tempfile::TempDir>,
    _db: Option<coffer_testkit::pg::TestDb>,
}

fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![Backend {
        name: "sqlite",
        url: format!("sqlite:{}", dir.path().join("keys.db").display()),
        _dir: Some(dir),
        _db: None,
    }];
    match coffer_testkit::pg::TestDb::try_new("coffer_bench") {
        Ok(db) => out.push(Backend {
            name: "postgres",
            url: db.url().to_owned(),
            _dir: None,
            _db: Some(db),
        }),
        Err(e) => eprintln!("skipping the PostgreSQL figures: {e}"),
    }
    out
}

fn keyring(rt: &tokio::runtime::Runtime, url: &str, kek: &Kek) -> Keyring {
    rt.block_on(async {
        let store: Arc<dyn KeyStore> = Arc::new(SqlStore::connect(url).await.unwrap());
        let config = KeyringConfig {
            audit_unwraps: false,
            ..KeyringConfig::default()
        };
        KeyringSetup::new(store, kek).config(config).build().await
    })
}

fn first_encrypt_on_a_new_scope(c: &mut Criterion) {
    let rt = bench_setup::current_thread();
    let column = ColumnId::new("patients.ssn").unwrap();
    let mut g = c.benchmark_group("first-encrypt-on-a-new-scope");
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    for b in backends() {
        let kek = Kek::generate().unwrap();
        let maker = keyring(&rt, &b.url, &kek);
        let names: Vec<ScopeId> = (0..COLD_SCOPES)
            .map(|i| ScopeId::new(format!("patient:{i:07}")).unwrap())
            .collect();
        rt.block_on(maker.create_scopes(&names)).unwrap();
        // Another process: nothing of these scopes is cached in it.
        let kr = keyring(&rt, &b.url, &kek);
        let warm = &names[0];
        rt.block_on(kr.encrypt(warm, &column, Suite::Gcm96, &FieldContext::new(), b"x"))
            .unwrap();
        g.bench_function(format!("{}/baseline-warm-encrypt-50B", b.name), |bench| {
            bench.iter(|| {
                rt.block_on(kr.encrypt(
                    warm,
                    &column,
                    Suite::Gcm96,
                    &FieldContext::new(),
                    black_box(&[7u8; 50]),
                ))
                .unwrap()
            })
        });
        let mut next = 1;
        g.bench_function(
            format!("{}/cold-encrypt-50B (L1+L2 miss, local KEK)", b.name),
            |bench| {
                bench.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if next == names.len() {
                            // Every scope was touched: forget them all, so each is cold again.
                            kr.clear_l1();
                            next = 1;
                        }
                        let s = &names[next];
                        next += 1;
                        let t = Instant::now();
                        rt.block_on(kr.encrypt(
                            s,
                            &column,
                            Suite::Gcm96,
                            &FieldContext::new(),
                            black_box(&[7u8; 50]),
                        ))
                        .unwrap();
                        total += t.elapsed();
                    }
                    total
                })
            },
        );
        let misses = kr.stats().l1_misses;
        assert!(misses > 100, "the cold figure measured misses: {misses}");
    }
    g.finish();
}

fn bulk_creation(c: &mut Criterion) {
    const BATCH: usize = coffer_keys::keyring::BULK_BATCH;
    let rt = bench_setup::current_thread();
    let mut g = c.benchmark_group("scope-creation-per-scope");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for b in backends() {
        let kek = Kek::generate().unwrap();
        let kr = keyring(&rt, &b.url, &kek);
        let mut n = 0usize;
        let mut fresh = |count: usize| -> Vec<ScopeId> {
            let out = (n..n + count)
                .map(|i| ScopeId::new(format!("bench:{i:09}")).unwrap())
                .collect();
            n += count;
            out
        };
        // Per scope: `iters` scopes, one `create_scope` call each.
        g.bench_function(
            format!("{}/baseline-create_scope-one-by-one", b.name),
            |bench| {
                bench.iter_custom(|iters| {
                    let names = fresh(iters as usize);
                    let t = Instant::now();
                    for s in &names {
                        rt.block_on(kr.create_scope(s)).unwrap();
                    }
                    t.elapsed()
                })
            },
        );
        // Per scope: batches of BULK_BATCH, the time divided over the scopes.
        g.bench_function(
            format!("{}/create_scopes-batch-of-{BATCH}", b.name),
            |bench| {
                bench.iter_custom(|iters| {
                    let batches = (iters as usize).div_ceil(BATCH).max(1);
                    let names = fresh(batches * BATCH);
                    let t = Instant::now();
                    for chunk in names.chunks(BATCH) {
                        rt.block_on(kr.create_scopes(chunk)).unwrap();
                    }
                    t.elapsed().mul_f64(iters as f64 / (batches * BATCH) as f64)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, first_encrypt_on_a_new_scope, bulk_creation);
criterion_main!(benches);

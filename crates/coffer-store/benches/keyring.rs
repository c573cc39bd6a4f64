//! Keyring hot paths against real stores, each beside a same-run baseline:
//! an L1 hit (decrypt and encrypt through the keyring) vs the bare column key; the local-KEK unwrap
//! (KWP + metadata-tag check) vs the bare KWP unwrap; an L1 miss served by L2 (Redis on loopback)
//! or by the local KEK, vs one Redis GET round trip. `make bench` runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use coffer_core::wrap;
use coffer_core::{
    ColumnId, Dek, FieldContext, FieldKey, Kek, KeyVersion, ScopeId, Suite, WrapAlgorithm,
};
use coffer_keys::{CacheKey, Keyring, KeyringConfig, L2Backend};
use coffer_store::SqlStore;
use coffer_testkit::bench_setup;
use coffer_testkit::fixtures::DekSlot;
use coffer_testkit::keyring_fixtures::{KeyringSetup, Sealed, local, stored_dek};
use criterion::{Criterion, criterion_group, criterion_main};

const REDIS: &str = "redis://127.0.0.1:6379";
/// The Redis Cluster of `scripts/services-up.sh` (three masters, three replicas, on loopback).
const REDIS_CLUSTER: [&str; 3] = [
    "redis://127.0.0.1:7000",
    "redis://127.0.0.1:7001",
    "redis://127.0.0.1:7002",
];

struct Setup {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    store: Arc<SqlStore>,
    kek: Kek,
    scope: ScopeId,
    column: ColumnId,
    ct: Vec<u8>,
}

/// A SQLite key store in a temporary directory, one local KEK, and a 50-byte value sealed in
/// scope `tenant:bench`.
fn setup() -> Setup {
    let rt = bench_setup::current_thread();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("keys.db").display());
    let kek = Kek::generate().unwrap();
    let (store, sealed) = rt.block_on(async {
        let store = Arc::new(SqlStore::connect(&url).await.unwrap());
        let kr = KeyringSetup::new(store.clone(), &kek).build().await;
        let sealed = Sealed::create(&kr, "tenant:bench", "patients.ssn", &[7u8; 50]).await;
        (store, sealed)
    });
    Setup {
        rt,
        _dir: dir,
        store,
        kek,
        scope: sealed.scope,
        column: sealed.column,
        ct: sealed.ct,
    }
}

impl Setup {
    /// A keyring over the bench store with `config`, and an L2 cache on `l2` if given.
    fn keyring(&self, config: KeyringConfig, l2: Option<Arc<dyn L2Backend>>) -> Keyring {
        let mut kr = KeyringSetup::new(self.store.clone(), &self.kek).config(config);
        if let Some(l2) = l2 {
            kr = kr.l2(l2, CacheKey::new(&[9; 32], 1).unwrap());
        }
        self.rt.block_on(kr.build())
    }
}

fn no_audit() -> KeyringConfig {
    KeyringConfig {
        audit_unwraps: false,
        ..KeyringConfig::default()
    }
}

fn l1_hit(c: &mut Criterion) {
    let s = setup();
    let kr = s.keyring(KeyringConfig::default(), None);
    s.rt.block_on(kr.decrypt(&s.scope, &s.column, &FieldContext::new(), &s.ct))
        .unwrap();
    // The bare column key, derived from the same DEK, for the baseline.
    let dek = s.rt.block_on(stored_dek(&*s.store, &s.kek, &s.scope, 1));
    let fk = FieldKey::new(&dek, KeyVersion(1), Suite::Gcm96, &s.scope, &s.column).unwrap();
    let mut g = c.benchmark_group("keyring-l1-hit");
    g.bench_function("harness-tokio-block-on-empty", |b| {
        b.iter(|| s.rt.block_on(async {}))
    });
    g.bench_function("baseline-fieldkey-open-50B", |b| {
        b.iter(|| fk.decrypt(&FieldContext::new(), black_box(&s.ct)).unwrap())
    });
    g.bench_function("keyring-decrypt-50B", |b| {
        b.iter(|| {
            s.rt.block_on(kr.decrypt(&s.scope, &s.column, &FieldContext::new(), black_box(&s.ct)))
                .unwrap()
        })
    });
    g.bench_function("baseline-fieldkey-seal-50B", |b| {
        b.iter(|| {
            fk.encrypt(&FieldContext::new(), black_box(&[7u8; 50]))
                .unwrap()
        })
    });
    g.bench_function("keyring-encrypt-50B", |b| {
        b.iter(|| {
            s.rt.block_on(kr.encrypt(
                &s.scope,
                &s.column,
                Suite::Gcm96,
                &FieldContext::new(),
                black_box(&[7u8; 50]),
            ))
            .unwrap()
        })
    });
    g.finish();
}

fn kek_unwrap(c: &mut Criterion) {
    let rt = bench_setup::current_thread();
    let kek = Kek::generate().unwrap();
    let dek = Dek::generate().unwrap();
    let slot = DekSlot {
        algorithm: "coffer-dek-v1",
        ..DekSlot::in_scope("tenant:bench")
    };
    let (ctx, meta) = (slot.wrap_context(), slot.metadata());
    let tag = wrap::metadata_tag(&dek, &meta).unwrap();
    let wrapped = kek.wrap_dek(&dek, WrapAlgorithm::AesKwp).unwrap();
    let (_, local) = local("main", 1, &kek);
    // The two unwraps measured: the bare AES-KWP one and the provider's (KWP + its checks).
    let kwp_unwrap = || {
        kek.unwrap_dek(black_box(&wrapped), WrapAlgorithm::AesKwp)
            .unwrap()
    };
    let local_unwrap = || {
        rt.block_on(local.unwrap(black_box(&wrapped), &ctx))
            .unwrap()
    };
    let mut g = c.benchmark_group("kek-unwrap");
    g.bench_function("baseline-kwp-unwrap", |b| b.iter(kwp_unwrap));
    g.bench_function("local-kek-unwrap", |b| b.iter(local_unwrap));
    g.bench_function("metadata-tag-check (HKDF + HMAC, DESIGN.md §K1)", |b| {
        b.iter(|| wrap::verify_metadata_tag(black_box(&dek), &meta, &tag).unwrap())
    });
    g.bench_function("local-kek-unwrap-and-tag-check", |b| {
        b.iter(|| {
            let d = local_unwrap();
            wrap::verify_metadata_tag(&d, &meta, &tag).unwrap();
            d
        })
    });
    g.finish();
}

fn l1_miss(c: &mut Criterion) {
    let s = setup();
    let mut g = c.benchmark_group("keyring-l1-miss");
    let kek_only = s.keyring(no_audit(), None);
    g.bench_function("served-by-local-kek (store read + unwrap)", |b| {
        b.iter(|| {
            kek_only.clear_l1();
            s.rt.block_on(kek_only.decrypt(&s.scope, &s.column, &FieldContext::new(), &s.ct))
                .unwrap()
        })
    });
    let redis_up = redis::Client::open(REDIS)
        .and_then(|c| c.get_connection())
        .is_ok();
    if !redis_up {
        eprintln!("skipping the L2 benchmarks: no Redis at {REDIS}");
        g.finish();
        return;
    }
    let l2 = Arc::new(coffer_redis::RedisL2::new(REDIS, Default::default()).unwrap());
    let with_l2 = s.keyring(no_audit(), Some(l2));
    s.rt.block_on(with_l2.decrypt(&s.scope, &s.column, &FieldContext::new(), &s.ct))
        .unwrap();
    g.bench_function("served-by-l2-redis (store read + GETEX + open)", |b| {
        b.iter(|| {
            with_l2.clear_l1();
            s.rt.block_on(with_l2.decrypt(&s.scope, &s.column, &FieldContext::new(), &s.ct))
                .unwrap()
        })
    });
    assert!(
        with_l2.stats().l2_hits > 0 && with_l2.stats().kek_unwraps == 1,
        "{:?}",
        with_l2.stats()
    );
    l1_miss_cluster(&s, &mut g);
    let mut conn = redis::Client::open(REDIS)
        .unwrap()
        .get_connection()
        .unwrap();
    g.bench_function("baseline-redis-get-roundtrip", |b| {
        b.iter(|| {
            redis::cmd("GET")
                .arg("coffer:bench:absent")
                .query::<Option<Vec<u8>>>(&mut conn)
                .unwrap()
        })
    });
    g.bench_function("baseline-sqlite-dek-read", |b| {
        b.iter(|| {
            s.rt.block_on(coffer_keys::KeyStore::dek(
                &*s.store,
                &s.scope,
                KeyVersion(1),
            ))
            .unwrap()
        })
    });
    g.finish();
}

/// The same L1 miss served by L2 on a Redis Cluster (`[cache] redis_cluster`), when one runs.
fn l1_miss_cluster(
    s: &Setup,
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
) {
    let cluster_up = redis::Client::open(REDIS_CLUSTER[0])
        .and_then(|c| c.get_connection())
        .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
        .is_ok_and(|info| info.contains("cluster_state:ok"));
    if !cluster_up {
        eprintln!("skipping the Redis Cluster L2 benchmark: no cluster at 127.0.0.1:7000");
        return;
    }
    let l2 = Arc::new(coffer_redis::RedisL2::cluster(&REDIS_CLUSTER, Default::default()).unwrap());
    let with_l2 = s.keyring(no_audit(), Some(l2));
    s.rt.block_on(with_l2.decrypt(&s.scope, &s.column, &FieldContext::new(), &s.ct))
        .unwrap();
    g.bench_function(
        "served-by-l2-redis-cluster (store read + GETEX + open)",
        |b| {
            b.iter(|| {
                with_l2.clear_l1();
                s.rt.block_on(with_l2.decrypt(&s.scope, &s.column, &FieldContext::new(), &s.ct))
                    .unwrap()
            })
        },
    );
    assert!(
        with_l2.stats().l2_hits > 0 && with_l2.stats().kek_unwraps == 1,
        "{:?}",
        with_l2.stats()
    );
}

criterion_group!(benches, l1_hit, kek_unwrap, l1_miss);
criterion_main!(benches);

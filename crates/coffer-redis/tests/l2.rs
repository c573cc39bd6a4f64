//! The two-tier cache against a real Redis: each test starts its own `redis-server` on a free
//! loopback port, so it can stop and restart it without disturbing anything else.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use coffer_core::Kek;
use coffer_keys::{CacheKey, KekId, KekProvider, Keyring, KeyringConfig, LocalKek};
use coffer_redis::{RedisL2, RedisOptions};
use coffer_store::SqlStore;
use coffer_testkit::keyring_fixtures::{KeyringSetup, Sealed, open, seal, stored_dek};
use coffer_testkit::ports::free_port;
use coffer_testkit::redis::RedisServer;
use common::{refused_as_destroyed, sqlite_store};

/// A SQLite key store with one scope and a value sealed in it, and the KEK that wraps its DEK.
struct Env {
    _dir: tempfile::TempDir,
    store: Arc<SqlStore>,
    kek: Kek,
    /// `J45.909` in `tenant:acme-hospital`, column `diagnosis`.
    v: Sealed,
}

async fn env() -> Env {
    let (_dir, store) = sqlite_store().await;
    let kek = Kek::generate().unwrap();
    let kr = KeyringSetup::new(store.clone(), &kek).build().await;
    let v = Sealed::create(&kr, "tenant:acme-hospital", "diagnosis", b"J45.909").await;
    Env {
        _dir,
        store,
        kek,
        v,
    }
}

fn cache_key(version: u32) -> CacheKey {
    CacheKey::new(&[0x5a; 32], version).unwrap()
}

async fn process(e: &Env, redis: &RedisServer, config: KeyringConfig, ck: CacheKey) -> Keyring {
    let l2 = Arc::new(RedisL2::new(&redis.url(), fast()).unwrap());
    KeyringSetup::new(e.store.clone(), &e.kek)
        .config(config)
        .l2(l2, ck)
        .build()
        .await
}

fn fast() -> RedisOptions {
    RedisOptions {
        op_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(200),
        retry_every: Duration::from_millis(100),
    }
}

async fn read(kr: &Keyring, e: &Env) -> Vec<u8> {
    e.v.open(kr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l2_is_shared_sealed_and_named_opaquely() {
    let e = env().await;
    let redis = RedisServer::start();
    let a = process(&e, &redis, KeyringConfig::default(), cache_key(1)).await;
    assert_eq!(read(&a, &e).await, b"J45.909");
    assert_eq!(a.stats().kek_unwraps, 1);
    assert_eq!(a.stats().l2_misses, 1);

    // A second process finds the DEK in L2: no KEK call.
    let b = process(&e, &redis, KeyringConfig::default(), cache_key(1)).await;
    assert_eq!(read(&b, &e).await, b"J45.909");
    assert_eq!((b.stats().kek_unwraps, b.stats().l2_hits), (0, 1));

    // What Redis holds: opaque names, sealed values, a TTL; never the DEK or the scope.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("coffer:dek:") && !keys[0].contains("acme"));
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 500 && ttl <= 600, "sliding 10-minute TTL, got {ttl}");
    let dek = stored_dek(&*e.store, &e.kek, &e.v.scope, 1).await;
    assert!(!value.windows(32).any(|w| w == dek.expose_secret()));
    assert!(!value.windows(4).any(|w| w == b"acme"));

    // Another cache-key version cannot read the entry: a miss, then a KEK call.
    let c = process(&e, &redis, KeyringConfig::default(), cache_key(2)).await;
    assert_eq!(read(&c, &e).await, b"J45.909");
    assert_eq!(c.stats().kek_unwraps, 1);

    // An entry past its absolute lifetime is not used, however recently it was touched.
    let capped = KeyringConfig {
        l2_max_lifetime: Duration::ZERO,
        ..KeyringConfig::default()
    };
    let d = process(&e, &redis, capped, cache_key(1)).await;
    assert_eq!(read(&d, &e).await, b"J45.909");
    assert_eq!(d.stats().kek_unwraps, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_requests_across_processes_make_one_kek_call() {
    let e = env().await;
    let redis = RedisServer::start();
    // Waiters give the lock holder up to 5 s (default 1 s) so that a loaded CI machine, where one
    // unwrap plus its audit row can take a while, does not turn a waiter into a second unwrapper.
    let patient = KeyringConfig {
        l2_lock_wait: Duration::from_secs(5),
        ..KeyringConfig::default()
    };
    let mut procs = Vec::new();
    for _ in 0..4 {
        procs.push(process(&e, &redis, patient.clone(), cache_key(1)).await);
    }
    let mut tasks = Vec::new();
    for kr in &procs {
        for _ in 0..250 {
            let kr = kr.clone();
            let v = e.v.clone();
            tasks.push(tokio::spawn(async move { v.open(&kr).await }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), b"J45.909");
    }
    let unwraps: u64 = procs.iter().map(|p| p.stats().kek_unwraps).sum();
    assert_eq!(
        unwraps, 1,
        "1 000 cold requests in 4 processes, one KEK unwrap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_then_back() {
    let e = env().await;
    let mut redis = RedisServer::start();
    let kr = process(&e, &redis, KeyringConfig::default(), cache_key(1)).await;
    assert_eq!(read(&kr, &e).await, b"J45.909");
    assert_eq!(kr.stats().kek_unwraps, 1);

    // Redis stops in the middle of a run: every request still succeeds (through the KEK).
    redis.kill();
    for i in 0..50 {
        kr.clear_l1();
        assert_eq!(read(&kr, &e).await, b"J45.909", "request {i}");
        let ct = seal(&kr, &e.v.scope, &e.v.column, b"x").await;
        assert_eq!(open(&kr, &e.v.scope, &e.v.column, &ct).await, b"x");
    }
    let down = kr.stats();
    assert!(down.l2_errors > 0, "{down:?}");
    assert!(down.kek_unwraps >= 50);

    // Redis comes back: the keyring uses it again by itself.
    redis.restart();
    let mut recovered = false;
    for _ in 0..100 {
        kr.clear_l1();
        assert_eq!(read(&kr, &e).await, b"J45.909");
        let now = kr.stats();
        if now.l2_hits > down.l2_hits {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recovered,
        "L2 used again after Redis restarted: {:?}",
        kr.stats()
    );
}

#[tokio::test]
async fn redis_down_at_start_is_not_an_error() {
    let e = env().await;
    let port = free_port();
    let l2 = Arc::new(RedisL2::new(&format!("redis://127.0.0.1:{port}"), fast()).unwrap());
    let kr = KeyringSetup::new(e.store.clone(), &e.kek)
        .l2(l2, cache_key(1))
        .build()
        .await;
    assert_eq!(read(&kr, &e).await, b"J45.909");
    assert!(kr.stats().l2_errors > 0);
    assert!(RedisL2::new("not a url", fast()).is_err());
    let _ = KekProvider::kind(&LocalKek::new(KekId::new("x", 1).unwrap(), e.kek.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn destroy_reaches_other_processes_l1_at_once() {
    let e = env().await;
    let redis = RedisServer::start();
    let a = process(&e, &redis, KeyringConfig::default(), cache_key(1)).await;
    let b = process(&e, &redis, KeyringConfig::default(), cache_key(1)).await;
    assert_eq!(read(&a, &e).await, b"J45.909");
    assert_eq!(read(&b, &e).await, b"J45.909");
    // Give B's subscription a moment to be in place, then shred from A.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.destroy(&e.v.scope).await.unwrap();
    // B held the DEK in L1 (TTL 60 s); the published invalidation drops it within moments.
    assert!(
        refused_as_destroyed(&b, &e.v.scope, &e.v.column, &e.v.ct).await,
        "process B still decrypts after the destroy"
    );
}

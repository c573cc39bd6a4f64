//! Without Redis, processes sharing a PostgreSQL key store learn of each other's destroys,
//! compromises and rotations through LISTEN/NOTIFY (docs/KEYS.md §7.7): each keyring below has
//! its own connection pool and listener, as a process would, and caches that would otherwise keep
//! a key for an hour.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use coffer_core::{ColumnId, FieldContext, Kek, ScopeId, Suite};
use coffer_keys::{Error, Keyring, KeyringConfig};
use common::keyring;

/// Caches that outlive every test here: only a notice can empty them in time.
fn long_caches() -> KeyringConfig {
    KeyringConfig {
        l1_ttl: Duration::from_secs(3600),
        active_ttl: Duration::from_secs(3600),
        ..KeyringConfig::default()
    }
}

/// Polls `check` every 20 ms for up to 10 s (a bound for a loaded machine, far under the
/// caches' hour); `true` once it holds.
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn two_processes(url: &str) -> (Keyring, Keyring) {
    let kek = Kek::generate().unwrap();
    let a = keyring(url, &kek, long_caches()).await;
    let b = keyring(url, &kek, long_caches()).await;
    (a, b)
}

async fn seal(kr: &Keyring, s: &ScopeId) -> Vec<u8> {
    kr.encrypt(
        s,
        &ColumnId::new("diagnosis").unwrap(),
        Suite::Gcm96,
        &FieldContext::new(),
        b"J45.909",
    )
    .await
    .unwrap()
}

async fn open(kr: &Keyring, s: &ScopeId, ct: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    kr.decrypt(
        s,
        &ColumnId::new("diagnosis").unwrap(),
        &FieldContext::new(),
        ct,
    )
    .await
}

/// Waits until `kr`'s listener is connected: a rotation notice it receives changes its
/// generation. Rotates a probe scope until one lands.
async fn wait_listening(publisher: &Keyring, kr: &Keyring) {
    let probe = ScopeId::new(coffer_testkit::random::name("probe")).unwrap();
    publisher.create_scope(&probe).await.unwrap();
    let before = kr.generation();
    let heard = eventually(|| async {
        publisher.rotate(&probe).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        kr.generation() != before
    })
    .await;
    assert!(heard, "the second keyring never heard a rotation notice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_destroy_reaches_other_processes_without_redis() {
    let db = common::postgres().await;
    let (a, b) = two_processes(&db.url).await;
    wait_listening(&a, &b).await;
    let s = ScopeId::new("patient:4711").unwrap();
    a.create_scope(&s).await.unwrap();
    let ct = seal(&a, &s).await;
    // B unwraps the key and keeps it in L1 for an hour.
    assert_eq!(open(&b, &s, &ct).await.unwrap().unwrap(), b"J45.909");
    assert_eq!(open(&b, &s, &ct).await.unwrap().unwrap(), b"J45.909");

    a.destroy(&s).await.unwrap();
    let refused =
        eventually(|| async { matches!(open(&b, &s, &ct).await, Err(Error::Destroyed { .. })) })
            .await;
    assert!(
        refused,
        "B still decrypts under a destroyed key: {:?}",
        open(&b, &s, &ct).await
    );
    db.drop_pg().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compromise_and_rotation_reach_other_processes() {
    let db = common::postgres().await;
    let (a, b) = two_processes(&db.url).await;
    wait_listening(&a, &b).await;
    let s = ScopeId::new("tenant:acme").unwrap();
    a.create_scope(&s).await.unwrap();
    let v1 = b.active_version(&s).await.unwrap();

    // A rotation moves B's cached active version (held for an hour otherwise).
    a.rotate(&s).await.unwrap();
    let v2 = a.active_version(&s).await.unwrap();
    assert_ne!(v1, v2);
    assert!(
        eventually(|| async { b.active_version(&s).await.unwrap() == v2 }).await,
        "B kept writing under {v1} after the rotation to {v2}"
    );

    // A compromise: B moves to the new active version; what it sealed before stays readable
    // (the compromised version is decrypt-only).
    let ct = seal(&b, &s).await;
    a.compromise(&s, "test").await.unwrap();
    let v3 = a.active_version(&s).await.unwrap();
    assert!(eventually(|| async { b.active_version(&s).await.unwrap() == v3 }).await);
    assert_eq!(open(&b, &s, &ct).await.unwrap().unwrap(), b"J45.909");
    db.drop_pg().await;
}

/// A listener whose connection dies reconnects and drops its whole L1, since notices sent
/// meanwhile are lost; notices reach it again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_listener_reconnects_and_forgets_what_it_may_have_missed() {
    let db = common::postgres().await;
    let (a, b) = two_processes(&db.url).await;
    wait_listening(&a, &b).await;
    let before = b.generation();
    let admin = sqlx::PgPool::connect(&db.url).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN %'",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(
        killed >= 2,
        "both keyrings' listeners were found ({killed})"
    );
    assert!(
        eventually(|| async { b.generation() != before }).await,
        "B did not drop its caches after losing its listener"
    );

    let s = ScopeId::new("ballot:2026").unwrap();
    a.create_scope(&s).await.unwrap();
    let ct = seal(&a, &s).await;
    assert!(open(&b, &s, &ct).await.is_ok());
    a.destroy(&s).await.unwrap();
    assert!(
        eventually(|| async { matches!(open(&b, &s, &ct).await, Err(Error::Destroyed { .. })) })
            .await,
        "notices stopped after the reconnect"
    );
    admin.close().await;
    db.drop_pg().await;
}

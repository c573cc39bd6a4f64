//! A wrong KEK (other key material under a configured KEK id) is refused before anything is
//! wrapped under it: creating, rotating, lazily creating, re-wrapping and registering all fail
//! with `WrongKek` and leave the store as it was; `check_deks` names the scopes it cannot open.

use std::sync::Arc;

use coffer_core::{FieldContext, Kek, Suite};
use coffer_keys::{AuditFilter, DekRecord, Error, KekRecord, KeyStore, KeyringConfig, ScopeRecord};

use super::{Env, col, keyring, one_kek, ring, scope};

/// Everything a refused call must leave unchanged: scopes, every DEK row, the KEK registry,
/// the length of the audit trail.
#[derive(Debug, PartialEq)]
struct Snapshot {
    scopes: Vec<(ScopeRecord, Vec<DekRecord>)>,
    keks: Vec<KekRecord>,
    audit: usize,
}

async fn snapshot(store: &Arc<dyn KeyStore>) -> Snapshot {
    let mut scopes = Vec::new();
    for s in store.scopes().await.unwrap() {
        let deks = store.deks(&s.scope).await.unwrap();
        scopes.push((s, deks));
    }
    Snapshot {
        scopes,
        keks: store.keks().await.unwrap(),
        audit: store.audit(&AuditFilter::default()).await.unwrap().len(),
    }
}

#[track_caller]
fn wrong_kek<T: std::fmt::Debug>(r: Result<T, Error>, kek: &str) {
    match r {
        Err(Error::WrongKek { kek: k }) => assert_eq!(k, kek),
        other => panic!("expected a wrong-KEK refusal for {kek}, got {other:?}"),
    }
}

pub async fn a_wrong_kek_writes_nothing<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let right = one_kek(env, &kek).await;
    right.register_keks().await.unwrap();
    let s1 = scope("tenant:acme");
    right.create_scope(&s1).await.unwrap();
    let c = col("ssn");
    let row: &[&[u8]] = &[b"row-1"];
    let ctx = FieldContext::row(row);
    let sealed = right
        .encrypt(&s1, &c, Suite::Gcm96, &ctx, b"123-45-6789")
        .await
        .unwrap();

    // Another process, configured with other key material under the same id main/v1.
    let store = env.store().await;
    let before = snapshot(&store).await;
    let wrong = one_kek(env, &Kek::generate().unwrap()).await;
    let s2 = scope("tenant:new");
    wrong_kek(wrong.create_scope(&s2).await, "main/v1");
    wrong_kek(wrong.rotate(&s1).await, "main/v1");
    wrong_kek(wrong.ensure_scope(&s2).await, "main/v1");
    wrong_kek(wrong.compromise(&s1, "test").await, "main/v1");
    wrong_kek(wrong.rotate_kek(10, |_| {}).await, "main/v1");
    wrong_kek(
        wrong.encrypt(&s1, &c, Suite::Gcm96, &ctx, b"x").await,
        "main/v1",
    );
    assert_eq!(snapshot(&store).await, before, "a refusal changes nothing");
    let report = wrong.check_deks(None).await.unwrap();
    assert_eq!(report.checked, 0);
    let failed: Vec<&str> = report.failed.iter().map(|(s, _, _)| s.as_str()).collect();
    // The audit chain key is a DEK under main/v1 like any other.
    assert_eq!(failed, ["coffer:audit", "tenant:acme"]);

    // A KEK id with no canary (a store written before canaries, or by a keyring that never
    // registered): proven against a DEK already wrapped under it.
    let legacy = Kek::generate().unwrap();
    // (Both keep main/v1: the audit chain key is wrapped under it, and a process that cannot
    // open that key appends no audit record, so it changes nothing.)
    let lr = keyring(
        env,
        ring(&[("main", 1, &kek), ("legacy", 1, &legacy)], ("legacy", 1)),
        KeyringConfig::default(),
    )
    .await;
    let s3 = scope("tenant:legacy");
    lr.create_scope(&s3).await.unwrap();
    let before = snapshot(&store).await;
    let bad = keyring(
        env,
        ring(
            &[("main", 1, &kek), ("legacy", 1, &Kek::generate().unwrap())],
            ("legacy", 1),
        ),
        KeyringConfig::default(),
    )
    .await;
    wrong_kek(bad.create_scope(&s2).await, "legacy/v1");
    wrong_kek(bad.rotate(&s3).await, "legacy/v1");
    wrong_kek(bad.register_keks().await, "legacy/v1");
    assert_eq!(snapshot(&store).await, before, "a refusal changes nothing");

    // The right keys afterwards: everything works, and every DEK opens.
    let both = keyring(
        env,
        ring(&[("main", 1, &kek), ("legacy", 1, &legacy)], ("main", 1)),
        KeyringConfig::default(),
    )
    .await;
    both.rotate(&s1).await.unwrap();
    both.create_scope(&s2).await.unwrap();
    both.rotate(&s3).await.unwrap();
    assert_eq!(
        both.decrypt(&s1, &c, &ctx, &sealed).await.unwrap().unwrap(),
        b"123-45-6789"
    );
    let report = both.check_deks(None).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    // Three scopes and the audit chain key's.
    assert_eq!((report.checked, report.scopes), (4, 4));
    let sample = both.check_deks(Some(2)).await.unwrap();
    assert!(sample.sampled && sample.checked == 2, "{sample:?}");
}

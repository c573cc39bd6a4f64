//! The audit chain against an attacker who can write the key store but has no KEK: rows
//! deleted, changed or re-hashed without the chain key fail verification; removing the newest
//! rows is found against the anchor kept outside the store; a verifier without the KEK says it
//! cannot check the keyed records.

use coffer_core::{FieldContext, Kek, KeyVersion, Suite};
use coffer_keys::audit::{Anchor, ChainBreak, Outcome};
use coffer_keys::{
    AUDIT_SCOPE, AuditEvent, AuditFilter, AuditRecord, DekState, Error, Keyring, KeyringConfig,
    Operation,
};
use coffer_testkit::keyring_audit::rehash_unkeyed;

use super::{Env, col, configured, keyring, one_kek, ring, scope};

/// Two records from before the store had a chain key, then a keyring's work (keyed).
async fn history<E: Env>(env: &E, kr: &Keyring) -> Vec<AuditRecord> {
    let store = env.store().await;
    for op in [Operation::Init, Operation::KekRegister] {
        store
            .append_audit(&AuditEvent::new("old-version", op), None)
            .await
            .unwrap();
    }
    let s = scope("tenant:acme");
    kr.create_scope(&s).await.unwrap();
    kr.encrypt(&s, &col("ssn"), Suite::Gcm96, &FieldContext::new(), b"x")
        .await
        .unwrap();
    kr.rotate(&s).await.unwrap();
    kr.record(AuditEvent::new("ops", Operation::AdminRequest).detail("one"))
        .await
        .unwrap();
    kr.record(AuditEvent::new("ops", Operation::AdminRequest).detail("two"))
        .await
        .unwrap();
    store.audit(&AuditFilter::default()).await.unwrap()
}

async fn verdict(kr: &Keyring) -> Outcome {
    kr.verify_audit().await.unwrap().1.outcome
}

fn broken_at(o: &Outcome) -> Option<&ChainBreak> {
    match o {
        Outcome::Broken(b) => Some(b),
        _ => None,
    }
}

pub async fn a_rewritten_audit_trail_fails_verification<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let kr = one_kek(env, &kek).await;
    let good = history(env, &kr).await;
    // Another process with the same KEK verifies: the old records unkeyed, the rest keyed.
    let verifier = one_kek(env, &kek).await;
    let (_, v) = verifier.verify_audit().await.unwrap();
    assert_eq!(v.outcome, Outcome::Intact);
    assert_eq!(v.unkeyed, 2);
    assert_eq!(v.keyed, good.len() - 2);
    assert!(v.keyed >= 4, "{v:?}");
    let last = good.last().unwrap();
    assert_eq!(v.head, Some((last.id, last.hash)));

    // 1. A middle row deleted and the chain recomputed from there with SHA-256.
    let mut cut = good.clone();
    cut.remove(3);
    env.rewrite_audit(&rehash_unkeyed(cut, 3)).await;
    let o = verdict(&verifier).await;
    let b = broken_at(&o).unwrap_or_else(|| panic!("deleting row 4 went unnoticed: {o:?}"));
    assert_eq!(b.id, 4, "{o:?}");
    assert!(b.reason.contains("without the chain key"), "{o:?}");

    // 2. Only the newest row rewritten with an unkeyed hash after keyed rows.
    let mut tail = good.clone();
    let n = tail.len();
    tail[n - 1].event.detail = "nothing to see".into();
    env.rewrite_audit(&rehash_unkeyed(tail, n - 1)).await;
    let o = verdict(&verifier).await;
    assert_eq!(broken_at(&o).map(|b| b.id), Some(last.id), "{o:?}");

    // 3. Every row re-hashed without the key and dated before the key existed.
    let mut all = good.clone();
    for r in &mut all {
        r.at_us = good[0].at_us;
    }
    env.rewrite_audit(&rehash_unkeyed(all, 0)).await;
    let o = verdict(&verifier).await;
    let b = broken_at(&o).unwrap_or_else(|| panic!("a fully re-hashed trail passed: {o:?}"));
    assert!(b.reason.contains("no keyed record"), "{o:?}");

    // 4. A keyed row changed, its hash left as it was; and a row removed without re-hashing.
    env.rewrite_audit(&good).await;
    assert_eq!(verdict(&verifier).await, Outcome::Intact);
    env.tamper_audit_detail(5, "edited").await;
    assert_eq!(broken_at(&verdict(&verifier).await).map(|b| b.id), Some(5));
    let mut gap = good.clone();
    gap.remove(4);
    env.rewrite_audit(&gap).await;
    let o = verdict(&verifier).await;
    assert_eq!(broken_at(&o).map(|b| b.id), Some(6), "{o:?}");
    assert!(broken_at(&o).unwrap().reason.contains("missing"));

    // Restored, the trail verifies again and goes on being keyed.
    env.rewrite_audit(&good).await;
    kr.record(AuditEvent::new("ops", Operation::AdminRequest))
        .await
        .unwrap();
    let (_, v) = verifier.verify_audit().await.unwrap();
    assert_eq!(v.outcome, Outcome::Intact);
    assert_eq!(v.keyed, good.len() - 1);
}

pub async fn truncation_is_found_against_the_anchor<E: Env>(env: &E) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.anchor");
    let kek = Kek::generate().unwrap();
    let config = KeyringConfig {
        audit_anchor_file: Some(path.clone()),
        ..KeyringConfig::default()
    };
    let kr = configured(env, &kek, config).await;
    let good = history(env, &kr).await;
    let anchor = Anchor::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let last = good.last().unwrap();
    assert_eq!((anchor.id, anchor.hash), (last.id, last.hash));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(anchor.check(&good), None);

    // The newest row deleted: the chain alone is a valid shorter chain, the anchor is not met.
    env.rewrite_audit(&good[..good.len() - 1]).await;
    let verifier = one_kek(env, &kek).await;
    let (records, v) = verifier.verify_audit().await.unwrap();
    assert_eq!(v.outcome, Outcome::Intact);
    let why = anchor
        .check(&records)
        .expect("truncation found against the anchor");
    assert!(why.contains("missing"), "{why}");

    // An older copy that went on being written: the anchored id exists with another hash.
    verifier
        .record(AuditEvent::new("ops", Operation::AdminRequest).detail("after restore"))
        .await
        .unwrap();
    let (records, _) = verifier.verify_audit().await.unwrap();
    assert_eq!(records.len(), good.len());
    let why = anchor.check(&records).expect("another copy found");
    assert!(why.contains("differs"), "{why}");

    // Records after the anchored one are fine.
    env.rewrite_audit(&good).await;
    verifier
        .record(AuditEvent::new("ops", Operation::AdminRequest))
        .await
        .unwrap();
    let (records, v) = verifier.verify_audit().await.unwrap();
    assert_eq!(v.outcome, Outcome::Intact);
    assert_eq!(anchor.check(&records), None);
    // The keyring that keeps the anchor rewrites it after its next append.
    kr.record(AuditEvent::new("ops", Operation::AdminRequest))
        .await
        .unwrap();
    let moved = Anchor::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(moved.id, good.len() as i64 + 2);
}

pub async fn a_verifier_without_the_kek_cannot_check_keyed_records<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let kr = one_kek(env, &kek).await;
    let good = history(env, &kr).await;

    // Other key material under the same KEK id, and a configuration without that KEK id.
    let other = Kek::generate().unwrap();
    for ring in [
        ring(&[("main", 1, &other)], ("main", 1)),
        ring(&[("backup", 1, &kek)], ("backup", 1)),
    ] {
        let verifier = keyring(env, ring, KeyringConfig::default()).await;
        let (_, v) = verifier.verify_audit().await.unwrap();
        match &v.outcome {
            Outcome::Unchecked { from_id, reason } => {
                assert_eq!(*from_id, 3, "the two unkeyed records were checked");
                assert!(reason.contains("main/v1"), "{reason}");
            }
            o => panic!("expected the keyed part unchecked, got {o:?}"),
        }
        assert_eq!(v.unkeyed, 2);
        // It cannot check what it cannot open, and writes nothing while trying.
        assert_eq!(
            env.store()
                .await
                .audit(&AuditFilter::default())
                .await
                .unwrap(),
            good
        );
    }

    // The unkeyed part it still checks.
    env.tamper_audit_detail(1, "edited").await;
    let verifier = keyring(
        env,
        ring(&[("main", 1, &other)], ("main", 1)),
        KeyringConfig::default(),
    )
    .await;
    assert_eq!(broken_at(&verdict(&verifier).await).map(|b| b.id), Some(1));
}

pub async fn reserved_scopes_are_refused<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let kr = one_kek(env, &kek).await;
    history(env, &kr).await;
    let store = env.store().await;
    let audit_scope = scope(AUDIT_SCOPE);
    let before = store.deks(&audit_scope).await.unwrap();
    assert_eq!(
        before.len(),
        1,
        "the chain key exists once appends are keyed"
    );
    assert_eq!(before[0].state, DekState::Active);
    let trail = store.audit(&AuditFilter::default()).await.unwrap().len();

    let check = |e: Error| {
        let text = e.to_string();
        assert!(
            text.contains("reserved") && text.contains("coffer:"),
            "{text}"
        );
    };
    check(kr.create_scope(&scope("coffer:mine")).await.unwrap_err());
    check(kr.ensure_scope(&scope("coffer:mine")).await.unwrap_err());
    check(kr.create_scope(&audit_scope).await.unwrap_err());
    check(kr.rotate(&audit_scope).await.unwrap_err());
    check(
        kr.rotate_if_active(&audit_scope, KeyVersion(1))
            .await
            .unwrap_err(),
    );
    check(kr.compromise(&audit_scope, "test").await.unwrap_err());
    check(kr.destroy(&audit_scope).await.unwrap_err());
    check(
        kr.retire(&audit_scope, KeyVersion(1), std::time::Duration::ZERO)
            .await
            .unwrap_err(),
    );
    check(
        kr.encrypt(
            &audit_scope,
            &col("c"),
            Suite::Gcm96,
            &FieldContext::new(),
            b"x",
        )
        .await
        .unwrap_err(),
    );
    check(kr.active_version(&audit_scope).await.unwrap_err());

    // Nothing changed: the chain key as it was, no scope made, nothing audited.
    assert_eq!(store.deks(&audit_scope).await.unwrap(), before);
    assert!(store.scope(&scope("coffer:mine")).await.unwrap().is_none());
    assert_eq!(
        store.audit(&AuditFilter::default()).await.unwrap().len(),
        trail
    );
}

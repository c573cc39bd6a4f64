//! Scope and version lifecycle through the keyring: errors, rotation, destroy, compromise, restore, KEK rotation.

use coffer_core::{FieldContext, Kek, KeyVersion, Suite};
use coffer_keys::{AuditFilter, DekState, Error, KeyringConfig, Operation};

use super::{Env, col, keyring, one_kek, open, ring, scope, seal};

pub async fn lifecycle_and_errors<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let kr = one_kek(env, &kek).await;
    let s = scope("tenant:acme");
    let c = col("ssn");
    let row: &[&[u8]] = &[b"patient-1"];
    let ctx = FieldContext::row(row);

    // Unknown scope: a clear error naming the command that fixes it.
    let err = kr
        .encrypt(&s, &c, Suite::Gcm96, &ctx, b"x")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownScope(_)), "{err}");
    assert!(
        err.to_string()
            .contains("coffer keys create-scope tenant:acme")
    );

    let first = kr.create_scope(&s).await.unwrap();
    assert_eq!(first.version, KeyVersion(1));
    assert_eq!(first.state, DekState::Active);
    assert!(matches!(
        kr.create_scope(&s).await,
        Err(Error::ScopeExists(_))
    ));

    let v1 = kr
        .encrypt(&s, &c, Suite::Gcm96, &ctx, b"123-45-6789")
        .await
        .unwrap();
    let rotated = kr.rotate(&s).await.unwrap();
    assert_eq!(rotated.version, KeyVersion(2));
    let v2 = kr
        .encrypt(&s, &c, Suite::Gcm96, &ctx, b"987-65-4321")
        .await
        .unwrap();
    assert_ne!(v1[0], v2[0], "the header names the version");
    assert_eq!(
        kr.decrypt(&s, &c, &ctx, &v1).await.unwrap().unwrap(),
        b"123-45-6789"
    );
    assert_eq!(
        kr.decrypt(&s, &c, &ctx, &v2).await.unwrap().unwrap(),
        b"987-65-4321"
    );
    // Another process opens v1 through the KEK (an audited unwrap).
    let cold = one_kek(env, &kek).await;
    assert_eq!(
        cold.decrypt(&s, &c, &ctx, &v1).await.unwrap().unwrap(),
        b"123-45-6789"
    );
    assert_eq!(cold.stats().kek_unwraps, 1);
    let states: Vec<_> = kr
        .store()
        .deks(&s)
        .await
        .unwrap()
        .iter()
        .map(|d| d.state)
        .collect();
    assert_eq!(states, [DekState::DecryptOnly, DekState::Active]);

    // Tampering is the opaque crypto error.
    let mut bad = v2.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(matches!(
        kr.decrypt(&s, &c, &ctx, &bad).await,
        Err(Error::Crypto(coffer_core::Error::Decrypt))
    ));

    // A wrong KEK under the same name: WrongKek, and the store is unchanged.
    let before = kr.store().deks(&s).await.unwrap();
    let wrong = one_kek(env, &Kek::generate().unwrap()).await;
    let err = wrong.decrypt(&s, &c, &ctx, &v1).await.unwrap_err();
    assert!(matches!(err, Error::WrongKek { .. }), "{err}");
    assert_eq!(kr.store().deks(&s).await.unwrap(), before);

    // A KEK name the process does not have.
    let other = keyring(
        env,
        ring(&[("other", 1, &kek)], ("other", 1)),
        KeyringConfig::default(),
    )
    .await;
    let err = other.decrypt(&s, &c, &ctx, &v1).await.unwrap_err();
    assert!(matches!(err, Error::UnknownKek { .. }), "{err}");

    // Crypto-shredding: every version gone, a clear error, the scope cannot come back.
    assert_eq!(kr.destroy(&s).await.unwrap(), 2);
    for ct in [&v1, &v2] {
        let err = kr.decrypt(&s, &c, &ctx, ct).await.unwrap_err();
        assert!(matches!(err, Error::Destroyed { .. }), "{err}");
        assert!(err.to_string().contains("key destroyed"));
    }
    assert!(
        kr.store()
            .deks(&s)
            .await
            .unwrap()
            .iter()
            .all(|d| d.wrapped.is_none() && d.state == DekState::Destroyed)
    );
    let again = kr.create_scope(&s).await.unwrap_err();
    assert!(
        matches!(
            again,
            Error::ScopeDestroyed {
                destroyed_at_us: Some(_),
                ..
            }
        ),
        "{again:?}"
    );
    let text = again.to_string();
    assert!(
        text.contains("was destroyed on ") && text.contains("cannot be reused"),
        "{text}"
    );
    assert!(matches!(
        kr.ensure_scope(&s).await,
        Err(Error::Destroyed { .. })
    ));
    let err = kr
        .encrypt(&s, &c, Suite::Gcm96, &ctx, b"x")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Destroyed { .. }), "{err}");

    // The audit trail recorded it all and chains.
    let trail = kr.store().audit(&AuditFilter::default()).await.unwrap();
    let ops: Vec<_> = trail.iter().map(|r| r.event.operation).collect();
    for op in [
        Operation::Create,
        Operation::Rotate,
        Operation::KekUnwrap,
        Operation::Destroy,
        Operation::AccessDenied,
    ] {
        assert!(ops.contains(&op), "{op} missing from {ops:?}");
    }
    assert_eq!(
        kr.verify_audit().await.unwrap().1.outcome,
        coffer_keys::audit::Outcome::Intact
    );
    let scoped = kr
        .store()
        .audit(&AuditFilter {
            scope: Some("tenant:acme".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        scoped
            .iter()
            .all(|r| r.event.scope.as_deref() == Some("tenant:acme"))
    );

    // Editing a row behind the store's back breaks the chain there.
    env.tamper_audit_detail(2, "nothing happened").await;
    match kr.verify_audit().await.unwrap().1.outcome {
        coffer_keys::audit::Outcome::Broken(b) => assert_eq!(b.id, 2),
        o => panic!("a changed record went unnoticed: {o:?}"),
    }
}

pub async fn compromise_and_restore<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let kr = one_kek(env, &kek).await;
    let s = scope("tenant:breached");
    let c = col("x");
    kr.create_scope(&s).await.unwrap();
    let old = seal(&kr, &s, &c, b"old").await;
    let rec = kr.compromise(&s, "laptop stolen").await.unwrap();
    assert_eq!(rec.version, KeyVersion(2));
    let new = seal(&kr, &s, &c, b"new").await;
    assert_eq!(
        coffer_core::Header::parse(&new).unwrap().0.version,
        KeyVersion(2)
    );
    // Old data still reads (re-encryption moves it), through a fresh unwrap.
    assert_eq!(open(&kr, &s, &c, &old).await, b"old");
    let trail = kr.store().audit(&AuditFilter::default()).await.unwrap();
    let alert = trail
        .iter()
        .find(|r| r.event.operation == Operation::Compromise)
        .unwrap();
    assert!(
        alert.event.detail.contains("ALERT: laptop stolen"),
        "{}",
        alert.event.detail
    );
    assert!(alert.event.detail.contains("v1"));

    // Restored from a backup: the epoch moves, version numbers skip ahead, nothing is reused.
    assert_eq!(kr.store().info().await.unwrap().epoch, 0);
    assert_eq!(kr.mark_restored(100).await.unwrap(), 1);
    let after = one_kek(env, &kek).await;
    assert_eq!(after.store().info().await.unwrap().epoch, 1);
    assert_eq!(after.rotate(&s).await.unwrap().version, KeyVersion(103));
    let fresh = scope("tenant:new");
    assert_eq!(
        after.create_scope(&fresh).await.unwrap().version,
        KeyVersion(1)
    );
    assert_eq!(open(&after, &s, &c, &new).await, b"new");
    let trail = after.store().audit(&AuditFilter::default()).await.unwrap();
    assert!(
        trail
            .iter()
            .any(|r| r.event.operation == Operation::Restore)
    );
    assert_eq!(
        after.verify_audit().await.unwrap().1.outcome,
        coffer_keys::audit::Outcome::Intact
    );
}

pub async fn kek_rotation_rewraps_every_dek<E: Env>(env: &E) {
    let k1 = Kek::generate().unwrap();
    let k2 = Kek::generate().unwrap();
    let old = keyring(
        env,
        ring(&[("main", 1, &k1)], ("main", 1)),
        KeyringConfig::default(),
    )
    .await;
    let c = col("note");
    let mut cts = Vec::new();
    for i in 0..30 {
        let s = scope(&format!("row:{i}"));
        old.create_scope(&s).await.unwrap();
        if i % 3 == 0 {
            old.rotate(&s).await.unwrap();
        }
        let ct = seal(&old, &s, &c, format!("{i}").as_bytes()).await;
        cts.push((s, ct));
    }
    old.destroy(&scope("row:29")).await.unwrap();

    let both = keyring(
        env,
        ring(&[("main", 1, &k1), ("main", 2, &k2)], ("main", 2)),
        KeyringConfig::default(),
    )
    .await;
    let mut batches = 0;
    let report = both.rotate_kek(7, |_| batches += 1).await.unwrap();
    assert_eq!(
        report.rewrapped, 40,
        "30 scopes, 10 rotated twice-versioned, 1 destroyed, and the audit chain key"
    );
    assert!(batches >= 6);
    // Idempotent: a second run has nothing to do.
    assert_eq!(both.rotate_kek(7, |_| {}).await.unwrap().rewrapped, 0);

    // With only the new KEK configured, everything still opens.
    let new_only = keyring(
        env,
        ring(&[("main", 2, &k2)], ("main", 2)),
        KeyringConfig::default(),
    )
    .await;
    for (i, (s, ct)) in cts.iter().enumerate().take(29) {
        let p = new_only
            .decrypt(s, &c, &FieldContext::new(), ct)
            .await
            .unwrap();
        assert_eq!(p.unwrap(), format!("{i}").as_bytes());
    }
    let trail = new_only
        .store()
        .audit(&AuditFilter::default())
        .await
        .unwrap();
    assert!(trail.iter().any(|r| r.event.operation == Operation::Rewrap));
    // The chain key was re-wrapped too: the new KEK alone checks the keyed records.
    let (_, v) = new_only.verify_audit().await.unwrap();
    assert_eq!(v.outcome, coffer_keys::audit::Outcome::Intact);
    assert_eq!(v.keyed, trail.len());
}

//! The write path: encryption limits and age, leasing ahead, batches.

use coffer_core::{FieldContext, Kek, KeyVersion, Suite};
use coffer_keys::{AuditFilter, KeyringConfig, Operation};

use super::{Env, col, configured, leasing, open, scope, seal};

pub async fn counters_rotate_automatically<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let config = KeyringConfig {
        max_encryptions: 100,
        ..leasing(10)
    };
    let kr = configured(env, &kek, config).await;
    let s = scope("table:ballots");
    kr.create_scope(&s).await.unwrap();
    let c = col("choice");
    let mut cts = Vec::new();
    for i in 0..250u32 {
        cts.push(seal(&kr, &s, &c, &i.to_be_bytes()).await);
    }
    let deks = kr.store().deks(&s).await.unwrap();
    assert_eq!(deks.len(), 3, "{deks:?}");
    assert!(deks.iter().all(|d| d.encryptions <= 100));
    for (i, ct) in cts.iter().enumerate() {
        let p = open(&kr, &s, &c, ct).await;
        assert_eq!(p, (i as u32).to_be_bytes());
    }
    let trail = kr.store().audit(&AuditFilter::default()).await.unwrap();
    assert!(
        trail.iter().any(|r| r.event.operation == Operation::Rotate
            && r.event.detail.contains("encryption limit"))
    );
}

pub async fn the_next_block_is_leased_ahead<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let config = KeyringConfig {
        max_encryptions: 1000,
        ..leasing(100)
    };
    let kr = configured(env, &kek, config).await;
    let s = scope("tenant:ahead");
    kr.create_scope(&s).await.unwrap();
    let c = col("a");
    let leased = || async {
        kr.store()
            .dek(&s, KeyVersion(1))
            .await
            .unwrap()
            .unwrap()
            .encryptions
    };
    let seal_n = |n: u32| {
        let (kr, s, c) = (&kr, &s, &c);
        async move {
            for i in 0..n {
                seal(kr, s, c, &i.to_be_bytes()).await;
            }
        }
    };
    seal_n(40).await;
    assert_eq!(
        leased().await,
        100,
        "one block while more than half is left"
    );
    // Past half the block, the next one is leased in the background, before it is needed.
    seal_n(20).await;
    let mut total = leased().await;
    for _ in 0..500 {
        if total == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        total = leased().await;
    }
    assert_eq!(total, 200, "the spare block");
    // 150 seals in all use the two blocks and lease nothing more: no block is thrown away.
    seal_n(90).await;
    assert_eq!(leased().await, 200);
    // Near the limit nothing is leased ahead past it, and the version rotates as before.
    seal_n(851).await;
    let deks = kr.store().deks(&s).await.unwrap();
    assert!(deks.iter().all(|d| d.encryptions <= 1000), "{deks:?}");
    assert_eq!(deks.len(), 2, "{deks:?}");
}

pub async fn batches_lease_once_and_keep_order<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let config = KeyringConfig {
        max_encryptions: 1000,
        ..leasing(16)
    };
    let kr = configured(env, &kek, config).await;
    let s = scope("tenant:acme");
    kr.create_scope(&s).await.unwrap();
    let (a, b) = (col("a"), col("b"));
    let rows: Vec<Vec<u8>> = (0..40u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let row_refs: Vec<[&[u8]; 1]> = rows.iter().map(|r| [r.as_slice()]).collect();
    // Runs of one column and suite, a column change, a suite change and NULLs, 40 items:
    // more than the lease block, so the batch leases what it needs at once.
    let items: Vec<coffer_keys::BatchItem<'_>> = (0..40)
        .map(|i| coffer_keys::BatchItem {
            column: if i < 20 { &a } else { &b },
            suite: if i % 7 == 3 {
                Suite::Gcm128
            } else {
                Suite::Gcm96
            },
            ctx: FieldContext::row(&row_refs[i]),
            plaintext: (i % 5 != 4).then_some(rows[i].as_slice()),
        })
        .collect();
    let (v, cts) = kr.encrypt_batch(&s, &items).await.unwrap();
    assert_eq!(v, KeyVersion(1));
    assert_eq!(cts.len(), 40);
    for (i, ct) in cts.iter().enumerate() {
        let col = if i < 20 { &a } else { &b };
        let got = kr
            .decrypt(&s, col, &FieldContext::row(&row_refs[i]), ct)
            .await
            .unwrap();
        assert_eq!(got.as_deref(), items[i].plaintext, "item {i}");
    }
    let dek = kr.store().dek(&s, KeyVersion(1)).await.unwrap().unwrap();
    assert!(dek.encryptions >= 40, "leased {}", dek.encryptions);
    assert!(kr.encrypt_batch(&s, &[]).await.unwrap().1.is_empty());
    // Past the encryption limit the batch rotates first, like single encryptions do.
    let big: Vec<coffer_keys::BatchItem<'_>> = (0..1000)
        .map(|i| coffer_keys::BatchItem {
            column: &a,
            suite: Suite::Gcm96,
            ctx: FieldContext::row(&row_refs[i % 40]),
            plaintext: Some(b"x"),
        })
        .collect();
    let (v2, _) = kr.encrypt_batch(&s, &big).await.unwrap();
    assert_eq!(v2, KeyVersion(2));

    // A data key rewrapped to the active version opens to the same key.
    let (key, blob) = kr.generate_data_key(&s).await.unwrap();
    assert!(kr.rewrap_data_key(&s, &blob).await.unwrap().is_none());
    kr.rotate(&s).await.unwrap();
    let moved = kr.rewrap_data_key(&s, &blob).await.unwrap().unwrap();
    assert_ne!(moved, blob);
    assert_eq!(
        kr.open_data_key(&s, &moved).await.unwrap().expose_secret(),
        key.expose_secret()
    );
    let mut bad = blob.clone();
    bad[40] ^= 1;
    assert!(kr.rewrap_data_key(&s, &bad).await.is_err());
}

pub async fn age_rotates_once_and_metrics_count<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let config = KeyringConfig {
        max_age: Some(std::time::Duration::from_millis(1500)),
        ..KeyringConfig::default()
    };
    let kr = configured(env, &kek, config).await;
    let s = scope("tenant:aging");
    let c = col("x");
    kr.create_scope(&s).await.unwrap();
    let a = seal(&kr, &s, &c, b"a").await;
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let b = seal(&kr, &s, &c, b"b").await;
    let b2 = seal(&kr, &s, &c, b"c").await;
    let v = |ct: &[u8]| coffer_core::Header::parse(ct).unwrap().0.version;
    assert_eq!(
        (v(&a), v(&b), v(&b2)),
        (KeyVersion(1), KeyVersion(2), KeyVersion(2))
    );
    let trail = kr.store().audit(&AuditFilter::default()).await.unwrap();
    assert!(trail.iter().any(|r| r.event.detail.contains("age limit")));
}

/// A leased column key seals what was leased and no more, counts in the store, and stops being
/// current when the keyring drops its keys.
pub async fn leased_field_keys_keep_to_their_lease<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let kr = configured(env, &kek, leasing(4)).await;
    let s = scope("tenant:leased");
    let c = col("email");
    kr.create_scope(&s).await.unwrap();
    let key = kr.leased_field_key(&s, &c, Suite::Gcm96, 10).await.unwrap();
    assert_eq!((key.version(), key.remaining()), (KeyVersion(1), 10));
    assert!(key.is_current(&kr));
    let ctx = FieldContext::new();
    let items: Vec<(FieldContext<'_>, &[u8])> = (0..9).map(|_| (ctx, &b"v"[..])).collect();
    let cts = key.encrypt_batch(&items).unwrap();
    let last = key.encrypt(&ctx, b"last").unwrap();
    assert!(key.encrypt(&ctx, b"one too many").is_err());
    assert!(!key.is_current(&kr), "a used-up lease is not current");
    // The store counted at least what was sealed, and the keyring opens it all.
    let dek = kr.store().dek(&s, KeyVersion(1)).await.unwrap().unwrap();
    assert!(dek.encryptions >= 10, "{dek:?}");
    for ct in cts.iter().chain([&last]) {
        assert!(kr.decrypt(&s, &c, &ctx, ct).await.unwrap().is_some());
    }
    // A rotation changes the generation: a lease taken before it is no longer current.
    let fresh = kr.leased_field_key(&s, &c, Suite::Gcm96, 0).await.unwrap();
    assert_eq!(fresh.remaining(), 1, "at least one encryption is leased");
    kr.rotate(&s).await.unwrap();
    assert!(!fresh.is_current(&kr));
    let next = kr.leased_field_key(&s, &c, Suite::Gcm96, 2).await.unwrap();
    assert_eq!(next.version(), KeyVersion(2));
    assert!(next.is_current(&kr));
}

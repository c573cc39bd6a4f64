//! The keyring over real key stores: every test runs on a fresh SQLite file and on a fresh
//! PostgreSQL database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use coffer_core::{ColumnId, FieldContext, Kek, KeyVersion, ScopeId, Suite};
use coffer_keys::audit::verify_chain;
use coffer_keys::{AuditFilter, DekState, Error, Keyring, KeyringConfig, Operation};
use common::{TestDb, keyring, ring};

macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = super::common::sqlite().await;
                super::$name(&db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let db = super::common::postgres().await;
                super::$name(&db).await;
                db.drop_pg().await;
            }
        }
    };
}

fn scope(s: &str) -> ScopeId {
    ScopeId::new(s).unwrap()
}

fn col(s: &str) -> ColumnId {
    ColumnId::new(s).unwrap()
}

async fn one_kek(db: &TestDb, kek: &Kek) -> Keyring {
    keyring(
        &db.url,
        ring(&[("main", 1, kek)], ("main", 1)),
        KeyringConfig::default(),
    )
    .await
}

on_both!(lifecycle_and_errors);
async fn lifecycle_and_errors(db: &TestDb) {
    let kek = Kek::generate().unwrap();
    let kr = one_kek(db, &kek).await;
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
    let cold = one_kek(db, &kek).await;
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
    let wrong = one_kek(db, &Kek::generate().unwrap()).await;
    let err = wrong.decrypt(&s, &c, &ctx, &v1).await.unwrap_err();
    assert!(matches!(err, Error::WrongKek { .. }), "{err}");
    assert_eq!(kr.store().deks(&s).await.unwrap(), before);

    // A KEK name the process does not have.
    let other = keyring(
        &db.url,
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
    assert!(matches!(
        kr.create_scope(&s).await,
        Err(Error::ScopeExists(_))
    ));
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
    assert_eq!(verify_chain(&trail).unwrap(), None);
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
    sqlx::query("UPDATE coffer_audit SET detail = 'nothing happened' WHERE id = 2")
        .execute(
            coffer_store::SqlStore::connect(&db.url)
                .await
                .unwrap()
                .pool(),
        )
        .await
        .unwrap();
    let trail = kr.store().audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(verify_chain(&trail).unwrap().unwrap().id, 2);
}

on_both!(rotation_under_load_loses_nothing);
async fn rotation_under_load_loses_nothing(db: &TestDb) {
    let kek = Kek::generate().unwrap();
    let kr = one_kek(db, &kek).await;
    let s = scope("table:patients");
    kr.create_scope(&s).await.unwrap();
    // Another "process": its own pool and caches over the same store.
    let other = one_kek(db, &kek).await;

    let written = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let kr = if t % 2 == 0 {
            kr.clone()
        } else {
            other.clone()
        };
        let (s, written, failures, stop) =
            (s.clone(), written.clone(), failures.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = col("diagnosis");
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) || i < 20 {
                let value = format!("task {t} value {i}");
                let row = format!("{t}/{i}");
                let parts: &[&[u8]] = &[row.as_bytes()];
                let ctx = FieldContext::row(parts);
                match kr
                    .encrypt(&s, &c, Suite::Gcm96, &ctx, value.as_bytes())
                    .await
                {
                    Ok(ct) => {
                        // Read back at once, and every earlier value of this task too.
                        match kr.decrypt(&s, &c, &ctx, &ct).await {
                            Ok(Some(p)) if p == value.as_bytes() => {}
                            _ => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        written.lock().unwrap().push((row, value, ct));
                    }
                    Err(e) => {
                        eprintln!("write failed: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        kr.rotate(&s).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no failed read or write"
    );

    // No lost write: every value written reads back, through a cold keyring.
    let cold = one_kek(db, &kek).await;
    let c = col("diagnosis");
    let written = written.lock().unwrap().clone();
    assert!(written.len() >= 80);
    let mut versions = std::collections::BTreeSet::new();
    for (row, value, ct) in &written {
        let parts: &[&[u8]] = &[row.as_bytes()];
        let got = cold
            .decrypt(&s, &c, &FieldContext::row(parts), ct)
            .await
            .unwrap();
        assert_eq!(got.as_deref(), Some(value.as_bytes()));
        versions.insert(coffer_core::Header::parse(ct).unwrap().0.version);
    }
    assert!(
        versions.len() >= 2,
        "writes spanned several versions: {versions:?}"
    );
    let deks = cold.store().deks(&s).await.unwrap();
    assert_eq!(deks.len(), 6);
    assert_eq!(
        deks.iter().filter(|d| d.state == DekState::Active).count(),
        1
    );
}

on_both!(concurrent_creates_and_rotations_leave_one_active_version);
async fn concurrent_creates_and_rotations_leave_one_active_version(db: &TestDb) {
    let kek = Kek::generate().unwrap();
    // Eight independent keyrings (eight "processes", each with its own pool).
    let mut rings = Vec::new();
    for _ in 0..8 {
        rings.push(one_kek(db, &kek).await);
    }
    let s = scope("ballot:2026-11");
    let created = futures_join(rings.iter().map(|kr| {
        let s = s.clone();
        let kr = kr.clone();
        async move { kr.ensure_scope(&s).await.unwrap() }
    }))
    .await;
    assert!(created.iter().all(|v| *v == KeyVersion(1)), "{created:?}");

    // All eight rotate away from v1 at once: exactly one wins, the others see its version.
    let rotated = futures_join(rings.iter().map(|kr| {
        let s = s.clone();
        let kr = kr.clone();
        async move {
            kr.rotate_if_active(&s, KeyVersion(1))
                .await
                .unwrap()
                .version
        }
    }))
    .await;
    assert!(rotated.iter().all(|v| *v == KeyVersion(2)), "{rotated:?}");
    let deks = rings[0].store().deks(&s).await.unwrap();
    assert_eq!(deks.len(), 2);
    assert_eq!(
        deks.iter().filter(|d| d.state == DekState::Active).count(),
        1
    );

    // Unconditional rotations at once: each makes a version or loses a race to one; never
    // two active versions, never a gap or a reused number.
    futures_join(rings.iter().map(|kr| {
        let s = s.clone();
        let kr = kr.clone();
        async move { kr.rotate(&s).await.unwrap().version }
    }))
    .await;
    let deks = rings[0].store().deks(&s).await.unwrap();
    assert_eq!(
        deks.iter().filter(|d| d.state == DekState::Active).count(),
        1
    );
    let numbers: Vec<u32> = deks.iter().map(|d| d.version.0).collect();
    assert_eq!(numbers, (1..=numbers.len() as u32).collect::<Vec<_>>());
    assert!(numbers.len() >= 3 && numbers.len() <= 10, "{numbers:?}");
    assert_eq!(deks.last().unwrap().state, DekState::Active);
    let rotations = rings[0]
        .store()
        .audit(&AuditFilter::default())
        .await
        .unwrap()
        .iter()
        .filter(|r| matches!(r.event.operation, Operation::Create | Operation::Rotate))
        .count();
    assert_eq!(rotations, numbers.len(), "one audit event per version made");
}

async fn futures_join<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

on_both!(cold_requests_make_one_kek_call);
async fn cold_requests_make_one_kek_call(db: &TestDb) {
    let kek = Kek::generate().unwrap();
    let warm = one_kek(db, &kek).await;
    let s = scope("tenant:busy");
    warm.create_scope(&s).await.unwrap();
    let c = col("email");
    let ct = warm
        .encrypt(&s, &c, Suite::Gcm96, &FieldContext::new(), b"a@example.org")
        .await
        .unwrap();

    let cold = one_kek(db, &kek).await;
    let results = futures_join((0..1000).map(|_| {
        let (cold, s, c, ct) = (cold.clone(), s.clone(), c.clone(), ct.clone());
        async move { cold.decrypt(&s, &c, &FieldContext::new(), &ct).await }
    }))
    .await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(Some(p)) if p == b"a@example.org"))
    );
    let stats = cold.stats();
    assert_eq!(stats.kek_unwraps, 1, "{stats:?}");
    assert_eq!(stats.l1_hits + stats.l1_misses, 1000);
}

on_both!(kek_rotation_rewraps_every_dek);
async fn kek_rotation_rewraps_every_dek(db: &TestDb) {
    let k1 = Kek::generate().unwrap();
    let k2 = Kek::generate().unwrap();
    let old = keyring(
        &db.url,
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
        let ct = old
            .encrypt(
                &s,
                &c,
                Suite::Gcm96,
                &FieldContext::new(),
                format!("{i}").as_bytes(),
            )
            .await
            .unwrap();
        cts.push((s, ct));
    }
    old.destroy(&scope("row:29")).await.unwrap();

    let both = keyring(
        &db.url,
        ring(&[("main", 1, &k1), ("main", 2, &k2)], ("main", 2)),
        KeyringConfig::default(),
    )
    .await;
    let mut batches = 0;
    let report = both.rotate_kek(7, |_| batches += 1).await.unwrap();
    assert_eq!(
        report.rewrapped, 39,
        "30 scopes, 10 rotated twice-versioned, 1 destroyed"
    );
    assert!(batches >= 6);
    // Idempotent: a second run has nothing to do.
    assert_eq!(both.rotate_kek(7, |_| {}).await.unwrap().rewrapped, 0);

    // With only the new KEK configured, everything still opens.
    let new_only = keyring(
        &db.url,
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
    assert_eq!(verify_chain(&trail).unwrap(), None);
}

on_both!(concurrent_writers_lease_one_block_at_a_time);
/// Writers that find the lease used up at the same moment share the next block: before, each
/// leased a block of its own, and under load the key store counted 20–30 times more encryptions
/// than were made (docs/BENCHMARKS.md, the service benchmark).
async fn concurrent_writers_lease_one_block_at_a_time(db: &TestDb) {
    let kek = Kek::generate().unwrap();
    let config = KeyringConfig {
        lease_block: 1000,
        ..KeyringConfig::default()
    };
    let kr = keyring(&db.url, ring(&[("main", 1, &kek)], ("main", 1)), config).await;
    let s = scope("table:busy");
    kr.create_scope(&s).await.unwrap();
    let writers: Vec<_> = (0..200u32)
        .map(|w| {
            let kr = kr.clone();
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..10u32 {
                    let v = (w * 10 + i).to_be_bytes();
                    kr.encrypt(&s, &col("n"), Suite::Gcm96, &FieldContext::new(), &v)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let deks = kr.store().deks(&s).await.unwrap();
    assert_eq!(deks.len(), 1, "{deks:?}");
    // 2 000 encryptions: two blocks, three at most if two refills crossed.
    assert!(deks[0].encryptions <= 3000, "{deks:?}");
}

on_both!(counters_rotate_automatically);
async fn counters_rotate_automatically(db: &TestDb) {
    let kek = Kek::generate().unwrap();
    let config = KeyringConfig {
        max_encryptions: 100,
        lease_block: 10,
        ..KeyringConfig::default()
    };
    let kr = keyring(&db.url, ring(&[("main", 1, &kek)], ("main", 1)), config).await;
    let s = scope("table:ballots");
    kr.create_scope(&s).await.unwrap();
    let c = col("choice");
    let mut cts = Vec::new();
    for i in 0..250u32 {
        cts.push(
            kr.encrypt(&s, &c, Suite::Gcm96, &FieldContext::new(), &i.to_be_bytes())
                .await
                .unwrap(),
        );
    }
    let deks = kr.store().deks(&s).await.unwrap();
    assert_eq!(deks.len(), 3, "{deks:?}");
    assert!(deks.iter().all(|d| d.encryptions <= 100));
    for (i, ct) in cts.iter().enumerate() {
        let p = kr
            .decrypt(&s, &c, &FieldContext::new(), ct)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p, (i as u32).to_be_bytes());
    }
    let trail = kr.store().audit(&AuditFilter::default()).await.unwrap();
    assert!(
        trail.iter().any(|r| r.event.operation == Operation::Rotate
            && r.event.detail.contains("encryption limit"))
    );
}

on_both!(the_next_block_is_leased_ahead);
async fn the_next_block_is_leased_ahead(db: &TestDb) {
    let kek = Kek::generate().unwrap();
    let config = KeyringConfig {
        max_encryptions: 1000,
        lease_block: 100,
        ..KeyringConfig::default()
    };
    let kr = keyring(&db.url, ring(&[("main", 1, &kek)], ("main", 1)), config).await;
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
    let seal = |n: u32| {
        let (kr, s, c) = (&kr, &s, &c);
        async move {
            for i in 0..n {
                kr.encrypt(s, c, Suite::Gcm96, &FieldContext::new(), &i.to_be_bytes())
                    .await
                    .unwrap();
            }
        }
    };
    seal(40).await;
    assert_eq!(
        leased().await,
        100,
        "one block while more than half is left"
    );
    // Past half the block, the next one is leased in the background, before it is needed.
    seal(20).await;
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
    seal(90).await;
    assert_eq!(leased().await, 200);
    // Near the limit nothing is leased ahead past it, and the version rotates as before.
    seal(851).await;
    let deks = kr.store().deks(&s).await.unwrap();
    assert!(deks.iter().all(|d| d.encryptions <= 1000), "{deks:?}");
    assert_eq!(deks.len(), 2, "{deks:?}");
}

on_both!(batches_lease_once_and_keep_order);
async fn batches_lease_once_and_keep_order(db: &TestDb) {
    let kek = Kek::generate().unwrap();
    let config = KeyringConfig {
        max_encryptions: 1000,
        lease_block: 16,
        ..KeyringConfig::default()
    };
    let kr = keyring(&db.url, ring(&[("main", 1, &kek)], ("main", 1)), config).await;
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

on_both!(data_keys_in_rows);
async fn data_keys_in_rows(db: &TestDb) {
    let kek = Kek::generate().unwrap();
    let kr = one_kek(db, &kek).await;
    let s = scope("table:ballots");
    kr.create_scope(&s).await.unwrap();
    let (key, blob) = kr.generate_data_key(&s).await.unwrap();
    assert_eq!(blob.len(), coffer_keys::datakey::DATA_KEY_BLOB_LEN);
    assert!(!blob.windows(32).any(|w| w == key.expose_secret()));
    kr.rotate(&s).await.unwrap();
    // After a rotation the blob still names its parent version; a cold process opens it.
    let cold = one_kek(db, &kek).await;
    let opened = cold.open_data_key(&s, &blob).await.unwrap();
    assert_eq!(opened.expose_secret(), key.expose_secret());
    // Another scope, any changed byte, a cut blob: refused.
    let other = scope("table:other");
    kr.create_scope(&other).await.unwrap();
    assert!(kr.open_data_key(&other, &blob).await.is_err());
    for i in 0..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x01;
        assert!(kr.open_data_key(&s, &bad).await.is_err(), "byte {i}");
    }
    assert!(kr.open_data_key(&s, &blob[..blob.len() - 1]).await.is_err());
    // Shredding the parent scope shreds the row keys.
    kr.destroy(&s).await.unwrap();
    let err = cold.open_data_key(&s, &blob).await;
    let err = match err {
        Err(e) => e,
        Ok(_) => {
            // The cold process may still hold the parent in L1; a fresh one cannot open it.
            one_kek(db, &kek)
                .await
                .open_data_key(&s, &blob)
                .await
                .unwrap_err()
        }
    };
    assert!(matches!(err, Error::Destroyed { .. }), "{err}");
}

on_both!(files_keyed_by_a_scope);
async fn files_keyed_by_a_scope(db: &TestDb) {
    use coffer_core::stream::{Decryptor, EncryptionContext, Encryptor, Limits, MessageHeader};
    use std::io::{Read as _, Write as _};
    let kek = Kek::generate().unwrap();
    let kr = one_kek(db, &kek).await;
    let (a, b) = (scope("tenant:a-files"), scope("tenant:b-files"));
    kr.create_scope(&a).await.unwrap();
    kr.create_scope(&b).await.unwrap();
    let seal = |keyring: &coffer_core::stream::RawAesKeyring, pt: &[u8]| {
        let mut e =
            Encryptor::new(Vec::new(), &[keyring], &EncryptionContext::new(), 4096).unwrap();
        e.write_all(pt).unwrap();
        e.finish().unwrap()
    };
    let pt = vec![7u8; 10_000];
    let msg = seal(&kr.scope_file_keyring(&a).await.unwrap(), &pt);
    let header = MessageHeader::read_from(&mut &msg[..], &Limits::default()).unwrap();
    let name = header.edks[0].key_name().unwrap().to_owned();
    assert!(name.starts_with(&hex::encode(kr.store_id())), "{name}");
    assert!(name.ends_with("/v1") && !name.contains("tenant"), "{name}");
    // A rotation later, a cold process still opens it with the version the name carries.
    kr.rotate(&a).await.unwrap();
    let cold = one_kek(db, &kek).await;
    let dk = cold.open_scope_file(&a, &header).await.unwrap();
    let mut d = Decryptor::with_data_key(&msg[header.len()..], header.clone(), &dk).unwrap();
    let mut out = Vec::new();
    d.read_to_end(&mut out).unwrap();
    assert_eq!(out, pt);
    assert!(
        kr.scope_file_keyring(&a)
            .await
            .unwrap()
            .name()
            .ends_with("/v2"),
        "new files use the active version"
    );
    // Another tenant's scope does not open it.
    let err = cold.open_scope_file(&b, &header).await.unwrap_err();
    assert!(matches!(err, Error::NoMatchingKey { .. }), "{err}");
    // Crypto-shredding the scope shreds its files.
    kr.destroy(&a).await.unwrap();
    let err = one_kek(db, &kek)
        .await
        .open_scope_file(&a, &header)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Destroyed { .. }), "{err}");
}

on_both!(age_rotates_once_and_metrics_count);
async fn age_rotates_once_and_metrics_count(db: &TestDb) {
    let kek = Kek::generate().unwrap();
    let config = KeyringConfig {
        max_age: Some(std::time::Duration::from_millis(1500)),
        ..KeyringConfig::default()
    };
    let kr = keyring(&db.url, ring(&[("main", 1, &kek)], ("main", 1)), config).await;
    let s = scope("tenant:aging");
    let c = col("x");
    kr.create_scope(&s).await.unwrap();
    let a = kr
        .encrypt(&s, &c, Suite::Gcm96, &FieldContext::new(), b"a")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let b = kr
        .encrypt(&s, &c, Suite::Gcm96, &FieldContext::new(), b"b")
        .await
        .unwrap();
    let b2 = kr
        .encrypt(&s, &c, Suite::Gcm96, &FieldContext::new(), b"c")
        .await
        .unwrap();
    let v = |ct: &[u8]| coffer_core::Header::parse(ct).unwrap().0.version;
    assert_eq!(
        (v(&a), v(&b), v(&b2)),
        (KeyVersion(1), KeyVersion(2), KeyVersion(2))
    );
    let trail = kr.store().audit(&AuditFilter::default()).await.unwrap();
    assert!(trail.iter().any(|r| r.event.detail.contains("age limit")));
}

#[test]
fn cache_and_kek_traffic_is_exported_as_metrics() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let db = common::sqlite().await;
            let kek = Kek::generate().unwrap();
            let kr = one_kek(&db, &kek).await;
            let s = scope("tenant:m");
            let c = col("x");
            kr.create_scope(&s).await.unwrap();
            // The creator keeps the new DEK: its first use is an L1 hit, with no KEK call.
            let ct = kr
                .encrypt(&s, &c, Suite::Gcm96, &FieldContext::new(), b"v")
                .await
                .unwrap();
            // Another process: one miss and one unwrap, then hits.
            let cold = one_kek(&db, &kek).await;
            for _ in 0..9 {
                cold.decrypt(&s, &c, &FieldContext::new(), &ct)
                    .await
                    .unwrap();
            }
        })
    });
    let counts: std::collections::HashMap<String, u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => {
                Some((key.key().name().to_owned(), n))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        counts.get("coffer_keys_kek_unwraps_total"),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("coffer_keys_kek_wraps_total"),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("coffer_keys_l1_misses_total"),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("coffer_keys_l1_hits_total"),
        Some(&9),
        "1 + 8: {counts:?}"
    );
}

on_both!(compromise_and_restore);
async fn compromise_and_restore(db: &TestDb) {
    let kek = Kek::generate().unwrap();
    let kr = one_kek(db, &kek).await;
    let s = scope("tenant:breached");
    let c = col("x");
    kr.create_scope(&s).await.unwrap();
    let old = kr
        .encrypt(&s, &c, Suite::Gcm96, &FieldContext::new(), b"old")
        .await
        .unwrap();
    let rec = kr.compromise(&s, "laptop stolen").await.unwrap();
    assert_eq!(rec.version, KeyVersion(2));
    let new = kr
        .encrypt(&s, &c, Suite::Gcm96, &FieldContext::new(), b"new")
        .await
        .unwrap();
    assert_eq!(
        coffer_core::Header::parse(&new).unwrap().0.version,
        KeyVersion(2)
    );
    // Old data still reads (re-encryption moves it), through a fresh unwrap.
    assert_eq!(
        kr.decrypt(&s, &c, &FieldContext::new(), &old)
            .await
            .unwrap()
            .unwrap(),
        b"old"
    );
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
    let after = one_kek(db, &kek).await;
    assert_eq!(after.store().info().await.unwrap().epoch, 1);
    assert_eq!(after.rotate(&s).await.unwrap().version, KeyVersion(103));
    let fresh = scope("tenant:new");
    assert_eq!(
        after.create_scope(&fresh).await.unwrap().version,
        KeyVersion(1)
    );
    assert_eq!(
        after
            .decrypt(&s, &c, &FieldContext::new(), &new)
            .await
            .unwrap()
            .unwrap(),
        b"new"
    );
    let trail = after.store().audit(&AuditFilter::default()).await.unwrap();
    assert!(
        trail
            .iter()
            .any(|r| r.event.operation == Operation::Restore)
    );
    assert_eq!(verify_chain(&trail).unwrap(), None);
}

//! The key-store conformance suite: the [`KeyStore`] contract, checked the same way on every
//! implementation (the in-memory store here, SQLite and PostgreSQL in `coffer-store`).
//!
//! Each check is an async function that takes a fresh, empty store and panics, saying what
//! broke, when the store does not keep the contract. [`run`] runs them all, each on a store of
//! its own:
//!
//! ```no_run
//! # async fn demo() {
//! use std::sync::Arc;
//! coffer_testkit::conformance::run(|| async {
//!     Arc::new(coffer_testkit::memory::MemoryStore::new()) as Arc<dyn coffer_keys::KeyStore>
//! })
//! .await;
//! # }
//! ```
//!
//! The records the checks write are made up (the "wrapped" keys are not keys): the contract is
//! about versions, states and conditional writes, not cryptography.

// An assertion library: a broken contract is a panic that names it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::Arc;

use coffer_core::{KeyVersion, ScopeId};
use coffer_keys::audit::{self, AuditEvent, AuditFilter, Operation, verify_chain};
use coffer_keys::{
    CreateOutcome, DekRecord, DekState, Error, KekId, KekRecord, KeyStore, NewDek, Rewrap,
    RotateOutcome,
};

/// How many callers race in the concurrency checks.
const RACERS: u8 = 8;

/// Runs every check, each on a store `fresh` makes.
pub async fn run<F, Fut>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn KeyStore>>,
{
    info_and_clock(fresh().await).await;
    kek_registry(fresh().await).await;
    create_and_read(fresh().await).await;
    create_race(fresh().await).await;
    rotate_compare_and_swap(fresh().await).await;
    rotate_race(fresh().await).await;
    leases(fresh().await).await;
    state_transitions(fresh().await).await;
    destroy(fresh().await).await;
    rewrap(fresh().await).await;
    restore(fresh().await).await;
    audit_chain(fresh().await).await;
    not_found(fresh().await).await;
}

fn scope(s: &str) -> ScopeId {
    ScopeId::new(s).unwrap()
}

fn kek(name: &str) -> KekId {
    KekId::new(name, 1).unwrap()
}

/// A made-up DEK version; `tag` tells records apart.
pub fn new_dek(scope: &ScopeId, version: u32, kek: &KekId, tag: u8) -> NewDek {
    NewDek {
        scope: scope.clone(),
        version: KeyVersion(version),
        key_id: [tag; 16],
        wrapped: vec![tag; 40],
        kek: kek.clone(),
        wrap_algorithm: "aes256-kwp".to_owned(),
        check: vec![tag; 32],
    }
}

fn created(o: CreateOutcome) -> DekRecord {
    match o {
        CreateOutcome::Created(r) => r,
        CreateOutcome::Existing(r) => panic!("expected Created, got Existing({r:?})"),
    }
}

async fn active(store: &dyn KeyStore, s: &ScopeId) -> Option<DekRecord> {
    store.active_dek(s).await.unwrap()
}

async fn active_count(store: &dyn KeyStore, s: &ScopeId) -> usize {
    let deks = store.deks(s).await.unwrap();
    deks.iter().filter(|d| d.state == DekState::Active).count()
}

/// The store id stays put, the epoch starts at 0, and the clock does not go backwards.
pub async fn info_and_clock(store: Arc<dyn KeyStore>) {
    let a = store.info().await.unwrap();
    let b = store.info().await.unwrap();
    assert_eq!(a, b, "info() changed between two calls");
    assert_eq!(a.epoch, 0, "a new store starts at epoch 0");
    assert!(a.schema_version >= 1, "schema version {}", a.schema_version);
    assert_ne!(a.store_id, [0; 16], "the store id is random, not zero");
    let t1 = store.now_us().await.unwrap();
    let t2 = store.now_us().await.unwrap();
    assert!(t1 > 1_600_000_000_000_000, "now_us is µs since 1970: {t1}");
    assert!(t2 >= t1, "the clock went backwards: {t1} then {t2}");
}

/// A KEK is registered once; the second registration changes nothing.
pub async fn kek_registry(store: Arc<dyn KeyStore>) {
    assert!(store.keks().await.unwrap().is_empty());
    let rec = |id: KekId, canary: u8| KekRecord {
        id,
        kind: "local".to_owned(),
        canary_wrapped: vec![canary; 40],
        canary_check: vec![canary; 32],
        registered_at_us: 0,
    };
    assert!(store.register_kek(&rec(kek("main"), 1)).await.unwrap());
    assert!(
        store
            .register_kek(&rec(KekId::new("main", 2).unwrap(), 2))
            .await
            .unwrap()
    );
    assert!(store.register_kek(&rec(kek("aux"), 3)).await.unwrap());
    assert!(
        !store.register_kek(&rec(kek("main"), 9)).await.unwrap(),
        "registering a known KEK again reports false"
    );
    let keks = store.keks().await.unwrap();
    let ids: Vec<String> = keks.iter().map(|k| k.id.to_string()).collect();
    assert_eq!(
        ids,
        ["aux/v1", "main/v1", "main/v2"],
        "ordered by name, version"
    );
    let main = &keks[1];
    assert_eq!(
        main.canary_wrapped,
        vec![1; 40],
        "the first registration stays"
    );
    assert_eq!(main.kind, "local");
    assert!(
        main.registered_at_us > 0,
        "registered_at_us is the store clock"
    );
}

/// A created scope reads back through every accessor.
pub async fn create_and_read(store: Arc<dyn KeyStore>) {
    let s = scope("tenant:1");
    let k = kek("main");
    let before = store.now_us().await.unwrap();
    let rec = created(store.create_scope(&new_dek(&s, 1, &k, 7)).await.unwrap());
    assert_eq!(rec.scope, s);
    assert_eq!(rec.version, KeyVersion(1));
    assert_eq!(rec.key_id, [7; 16]);
    assert_eq!(rec.state, DekState::Active);
    assert_eq!(rec.wrapped.as_deref(), Some(&[7; 40][..]));
    assert_eq!(rec.kek, k);
    assert_eq!(rec.wrap_algorithm, "aes256-kwp");
    assert_eq!(rec.check, vec![7; 32]);
    assert_eq!(rec.encryptions, 0);
    assert!(
        rec.created_at_us >= before,
        "created_at_us is the store clock"
    );
    assert!(rec.state_changed_at_us >= rec.created_at_us);

    let sc = store.scope(&s).await.unwrap().expect("the scope exists");
    assert_eq!(sc.scope, s);
    assert!(!sc.is_destroyed());
    assert!(sc.created_at_us >= before);
    assert_eq!(
        store.dek(&s, KeyVersion(1)).await.unwrap(),
        Some(rec.clone())
    );
    assert_eq!(store.deks(&s).await.unwrap(), vec![rec.clone()]);
    assert_eq!(active(&*store, &s).await, Some(rec));
    assert_eq!(store.max_version(&s).await.unwrap(), 1);

    // Existing: the first key stays; the caller discards its own.
    match store.create_scope(&new_dek(&s, 1, &k, 8)).await.unwrap() {
        CreateOutcome::Existing(r) => assert_eq!(r.key_id, [7; 16]),
        CreateOutcome::Created(r) => panic!("created {r:?} over an existing scope"),
    }
    store
        .create_scope(&new_dek(&scope("tenant:0"), 1, &k, 9))
        .await
        .unwrap();
    let names: Vec<String> = store
        .scopes()
        .await
        .unwrap()
        .iter()
        .map(|s| s.scope.as_str().to_owned())
        .collect();
    assert_eq!(
        names,
        ["tenant:0", "tenant:1"],
        "scopes() is ordered by name"
    );
}

/// Concurrent creations of one scope make exactly one first version.
pub async fn create_race(store: Arc<dyn KeyStore>) {
    let s = scope("race:create");
    let k = kek("main");
    let mut set = tokio::task::JoinSet::new();
    for tag in 1..=RACERS {
        let (store, new) = (Arc::clone(&store), new_dek(&s, 1, &k, tag));
        set.spawn(async move { store.create_scope(&new).await.unwrap() });
    }
    let mut winners = Vec::new();
    let mut seen = Vec::new();
    while let Some(o) = set.join_next().await {
        match o.unwrap() {
            CreateOutcome::Created(r) => winners.push(r.key_id),
            CreateOutcome::Existing(r) => seen.push(r.key_id),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creation wins");
    assert!(
        seen.iter().all(|id| *id == winners[0]),
        "losers see the winner's key"
    );
    assert_eq!(store.deks(&s).await.unwrap().len(), 1);
    assert_eq!(active(&*store, &s).await.unwrap().key_id, winners[0]);
}

/// Rotation swaps only from the expected active version.
pub async fn rotate_compare_and_swap(store: Arc<dyn KeyStore>) {
    let s = scope("tenant:rot");
    let k = kek("main");
    let v1 = created(store.create_scope(&new_dek(&s, 1, &k, 1)).await.unwrap());
    let v2 = match store
        .rotate(KeyVersion(1), &new_dek(&s, 2, &k, 2))
        .await
        .unwrap()
    {
        RotateOutcome::Rotated(r) => r,
        RotateOutcome::Lost(r) => panic!("lost to {r:?} with no one racing"),
    };
    assert_eq!(
        (v2.version, v2.state, v2.encryptions),
        (KeyVersion(2), DekState::Active, 0)
    );
    let old = store.dek(&s, KeyVersion(1)).await.unwrap().unwrap();
    assert_eq!(
        old.state,
        DekState::DecryptOnly,
        "the old version becomes decrypt-only"
    );
    assert_eq!(old.wrapped, v1.wrapped, "and keeps its key");
    assert!(old.state_changed_at_us >= v1.state_changed_at_us);
    // A rotation from a version that is no longer active loses to the current one.
    match store
        .rotate(KeyVersion(1), &new_dek(&s, 3, &k, 3))
        .await
        .unwrap()
    {
        RotateOutcome::Lost(r) => assert_eq!(r.version, KeyVersion(2)),
        RotateOutcome::Rotated(r) => panic!("rotated from a stale version: {r:?}"),
    }
    assert!(
        store.dek(&s, KeyVersion(3)).await.unwrap().is_none(),
        "a lost rotation writes nothing"
    );
    assert_eq!(store.max_version(&s).await.unwrap(), 2);
    assert_eq!(active_count(&*store, &s).await, 1);
    let versions: Vec<u32> = store
        .deks(&s)
        .await
        .unwrap()
        .iter()
        .map(|d| d.version.0)
        .collect();
    assert_eq!(versions, [1, 2], "deks() is oldest first");
    // Nothing to rotate from.
    let err = store
        .rotate(KeyVersion(1), &new_dek(&scope("nowhere"), 2, &k, 4))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::State(_)),
        "rotating an unknown scope: {err:?}"
    );
}

/// Concurrent rotations away from one version make exactly one new version.
pub async fn rotate_race(store: Arc<dyn KeyStore>) {
    let s = scope("race:rotate");
    let k = kek("main");
    created(store.create_scope(&new_dek(&s, 1, &k, 100)).await.unwrap());
    let mut set = tokio::task::JoinSet::new();
    for tag in 1..=RACERS {
        let (store, new) = (Arc::clone(&store), new_dek(&s, 2, &k, tag));
        set.spawn(async move { store.rotate(KeyVersion(1), &new).await.unwrap() });
    }
    let (mut won, mut lost) = (Vec::new(), Vec::new());
    while let Some(o) = set.join_next().await {
        match o.unwrap() {
            RotateOutcome::Rotated(r) => won.push(r.key_id),
            RotateOutcome::Lost(r) => lost.push(r.key_id),
        }
    }
    assert_eq!(won.len(), 1, "exactly one rotation wins");
    assert!(
        lost.iter().all(|id| *id == won[0]),
        "losers see the winner's version"
    );
    assert_eq!(store.deks(&s).await.unwrap().len(), 2);
    assert_eq!(active_count(&*store, &s).await, 1);
}

/// Leases add up under the active version only.
pub async fn leases(store: Arc<dyn KeyStore>) {
    let s = scope("tenant:lease");
    let k = kek("main");
    created(store.create_scope(&new_dek(&s, 1, &k, 1)).await.unwrap());
    assert_eq!(store.lease(&s, KeyVersion(1), 10).await.unwrap(), Some(10));
    assert_eq!(store.lease(&s, KeyVersion(1), 5).await.unwrap(), Some(15));
    assert_eq!(
        store
            .dek(&s, KeyVersion(1))
            .await
            .unwrap()
            .unwrap()
            .encryptions,
        15
    );
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..RACERS {
        let (store, s) = (Arc::clone(&store), s.clone());
        set.spawn(async move { store.lease(&s, KeyVersion(1), 100).await.unwrap().unwrap() });
    }
    let mut totals = Vec::new();
    while let Some(t) = set.join_next().await {
        totals.push(t.unwrap());
    }
    totals.sort_unstable();
    let expect: Vec<u64> = (1..=u64::from(RACERS)).map(|i| 15 + 100 * i).collect();
    assert_eq!(totals, expect, "concurrent leases each get their own block");
    store
        .rotate(KeyVersion(1), &new_dek(&s, 2, &k, 2))
        .await
        .unwrap();
    assert_eq!(
        store.lease(&s, KeyVersion(1), 1).await.unwrap(),
        None,
        "decrypt-only"
    );
    assert_eq!(
        store
            .dek(&s, KeyVersion(1))
            .await
            .unwrap()
            .unwrap()
            .encryptions,
        15 + 100 * u64::from(RACERS),
        "a refused lease counts nothing"
    );
    assert_eq!(store.lease(&s, KeyVersion(2), 3).await.unwrap(), Some(3));
    assert_eq!(
        store.lease(&s, KeyVersion(9), 1).await.unwrap(),
        None,
        "unknown version"
    );
    assert_eq!(
        store
            .lease(&scope("nowhere"), KeyVersion(1), 1)
            .await
            .unwrap(),
        None
    );
}

/// Conditional state changes; destroying is not one of them; one active version at most.
pub async fn state_transitions(store: Arc<dyn KeyStore>) {
    let s = scope("tenant:state");
    let k = kek("main");
    created(store.create_scope(&new_dek(&s, 1, &k, 1)).await.unwrap());
    store
        .rotate(KeyVersion(1), &new_dek(&s, 2, &k, 2))
        .await
        .unwrap();
    let v1 = KeyVersion(1);
    assert!(
        store
            .set_state(&s, v1, DekState::DecryptOnly, DekState::Retired)
            .await
            .unwrap()
    );
    assert_eq!(
        store.dek(&s, v1).await.unwrap().unwrap().state,
        DekState::Retired
    );
    assert!(
        !store
            .set_state(&s, v1, DekState::DecryptOnly, DekState::Retired)
            .await
            .unwrap(),
        "a version not in `from` is left alone"
    );
    for (from, to) in [
        (DekState::Retired, DekState::Destroyed),
        (DekState::Destroyed, DekState::Retired),
    ] {
        let err = store.set_state(&s, v1, from, to).await.unwrap_err();
        assert!(matches!(err, Error::State(_)), "{from} -> {to}: {err:?}");
    }
    assert!(store.dek(&s, v1).await.unwrap().unwrap().wrapped.is_some());
    // A second active version is refused.
    assert!(
        store
            .set_state(&s, v1, DekState::Retired, DekState::Active)
            .await
            .is_err(),
        "two active versions"
    );
    assert_eq!(active_count(&*store, &s).await, 1);
    // A scope with no active version: create_scope says so, and nothing is made.
    let v2 = KeyVersion(2);
    assert!(
        store
            .set_state(&s, v2, DekState::Active, DekState::DecryptOnly)
            .await
            .unwrap()
    );
    let err = store
        .create_scope(&new_dek(&s, 3, &k, 3))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::State(_)), "{err:?}");
    assert_eq!(store.deks(&s).await.unwrap().len(), 2);
    assert!(
        store
            .set_state(&s, v1, DekState::Retired, DekState::Active)
            .await
            .unwrap()
    );
    assert_eq!(active(&*store, &s).await.unwrap().version, v1);
    assert!(
        !store
            .set_state(
                &scope("nowhere"),
                v1,
                DekState::Active,
                DekState::DecryptOnly
            )
            .await
            .unwrap()
    );
}

/// Crypto-shredding erases every key, keeps a tombstone, and refuses to bring the scope back.
pub async fn destroy(store: Arc<dyn KeyStore>) {
    let s = scope("tenant:gone");
    let (k, other) = (kek("main"), kek("other"));
    created(store.create_scope(&new_dek(&s, 1, &k, 1)).await.unwrap());
    store
        .rotate(KeyVersion(1), &new_dek(&s, 2, &k, 2))
        .await
        .unwrap();
    let kept = scope("tenant:kept");
    created(store.create_scope(&new_dek(&kept, 1, &k, 3)).await.unwrap());
    assert_eq!(store.destroy_scope(&s).await.unwrap(), 2);
    let sc = store.scope(&s).await.unwrap().expect("a tombstone stays");
    assert!(sc.is_destroyed());
    for d in store.deks(&s).await.unwrap() {
        assert_eq!(
            (d.state, d.wrapped.as_ref()),
            (DekState::Destroyed, None),
            "{d:?}"
        );
    }
    assert!(active(&*store, &s).await.is_none());
    assert_eq!(
        store.destroy_scope(&s).await.unwrap(),
        0,
        "nothing left to erase"
    );
    assert_eq!(
        store.scope(&s).await.unwrap().unwrap().destroyed_at_us,
        sc.destroyed_at_us
    );
    let err = store
        .create_scope(&new_dek(&s, 3, &k, 4))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Destroyed { .. }),
        "re-creating a destroyed scope: {err:?}"
    );
    assert!(
        store
            .rotate(KeyVersion(2), &new_dek(&s, 3, &k, 5))
            .await
            .is_err()
    );
    assert_eq!(store.lease(&s, KeyVersion(2), 1).await.unwrap(), None);
    assert_eq!(
        store.max_version(&s).await.unwrap(),
        2,
        "version numbers are never reused"
    );
    let live = store.deks_not_under(&other, 10).await.unwrap();
    assert_eq!(live.len(), 1, "destroyed keys need no re-wrap: {live:?}");
    assert_eq!(store.count_deks_not_under(&other).await.unwrap(), 1);
    assert!(
        active(&*store, &kept).await.is_some(),
        "other scopes are untouched"
    );
    assert_eq!(store.destroy_scope(&scope("nowhere")).await.unwrap(), 0);
    assert!(store.scope(&scope("nowhere")).await.unwrap().is_none());
}

/// Re-wraps change only rows still under the KEK they were read with.
pub async fn rewrap(store: Arc<dyn KeyStore>) {
    let (a, b) = (kek("a"), kek("b"));
    for i in 1..=3u8 {
        let s = scope(&format!("rw:{i}"));
        created(store.create_scope(&new_dek(&s, 1, &a, i)).await.unwrap());
    }
    store
        .rotate(KeyVersion(1), &new_dek(&scope("rw:1"), 2, &b, 9))
        .await
        .unwrap();
    assert_eq!(store.count_deks_not_under(&b).await.unwrap(), 3);
    let first = store.deks_not_under(&b, 2).await.unwrap();
    let names: Vec<&str> = first.iter().map(|d| d.scope.as_str()).collect();
    assert_eq!(
        names,
        ["rw:1", "rw:2"],
        "ordered by scope and version, at most `limit`"
    );
    let todo = store.deks_not_under(&b, 100).await.unwrap();
    assert_eq!(todo.len(), 3);
    let rewraps: Vec<Rewrap> = todo
        .iter()
        .map(|d| Rewrap {
            scope: d.scope.clone(),
            version: d.version,
            old: d.kek.clone(),
            new: b.clone(),
            wrapped: vec![0xbb; 40],
            wrap_algorithm: "test-wrap".to_owned(),
        })
        .collect();
    // A row another process re-wrapped first is left alone.
    let stale = Rewrap {
        old: kek("elsewhere"),
        ..rewraps[0].clone()
    };
    assert_eq!(store.replace_wraps(&[stale]).await.unwrap(), 0);
    assert_eq!(store.replace_wraps(&rewraps).await.unwrap(), 3);
    assert_eq!(
        store.replace_wraps(&rewraps).await.unwrap(),
        0,
        "idempotent"
    );
    assert_eq!(store.count_deks_not_under(&b).await.unwrap(), 0);
    assert!(store.deks_not_under(&b, 10).await.unwrap().is_empty());
    let d = store
        .dek(&scope("rw:2"), KeyVersion(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.kek, d.wrapped, d.wrap_algorithm.as_str()),
        (b.clone(), Some(vec![0xbb; 40]), "test-wrap")
    );
    assert_eq!(d.check, vec![2; 32], "the metadata tag is not touched");
    assert_eq!(d.state, DekState::Active, "re-wrapping changes no state");
    assert_eq!(store.replace_wraps(&[]).await.unwrap(), 0);
}

/// Marking a restore bumps the epoch and lifts every scope's next version number.
pub async fn restore(store: Arc<dyn KeyStore>) {
    let k = kek("main");
    let (s1, s2) = (scope("restore:1"), scope("restore:2"));
    created(store.create_scope(&new_dek(&s1, 1, &k, 1)).await.unwrap());
    store
        .rotate(KeyVersion(1), &new_dek(&s1, 2, &k, 2))
        .await
        .unwrap();
    created(store.create_scope(&new_dek(&s2, 1, &k, 3)).await.unwrap());
    assert_eq!(store.mark_restored(1000).await.unwrap(), 1);
    assert_eq!(store.info().await.unwrap().epoch, 1);
    assert_eq!(store.max_version(&s1).await.unwrap(), 1002);
    assert_eq!(store.max_version(&s2).await.unwrap(), 1001);
    assert_eq!(store.mark_restored(10).await.unwrap(), 2);
    assert_eq!(store.max_version(&s1).await.unwrap(), 1014, "floors add up");
    // Rotation into the lifted range works; the floor then counts from the new maximum.
    let next = KeyVersion(store.max_version(&s1).await.unwrap() + 1);
    match store
        .rotate(KeyVersion(2), &new_dek(&s1, next.0, &k, 4))
        .await
        .unwrap()
    {
        RotateOutcome::Rotated(r) => assert_eq!(r.version, KeyVersion(1015)),
        RotateOutcome::Lost(r) => panic!("lost to {r:?}"),
    }
    assert_eq!(store.max_version(&s1).await.unwrap(), 1015);
    assert_eq!(store.max_version(&scope("nowhere")).await.unwrap(), 0);
}

/// The audit trail chains from the genesis hash, filters and verifies.
pub async fn audit_chain(store: Arc<dyn KeyStore>) {
    assert!(
        store
            .audit(&AuditFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let events = [
        AuditEvent::new("tester", Operation::Init).detail("store created"),
        AuditEvent::new("tester", Operation::Create)
            .scope("a")
            .version(1)
            .kek("main/v1"),
        AuditEvent::new("tester", Operation::Rotate)
            .scope("b")
            .version(2),
        AuditEvent::new("other", Operation::Destroy)
            .scope("a")
            .detail(""),
    ];
    // The first two as written before the store had a chain key, the others keyed.
    let mut appended = Vec::new();
    for e in &events[..2] {
        appended.push(store.append_audit(e, None).await.unwrap());
    }
    let created = store.now_us().await.unwrap();
    let key = Arc::new(
        audit::ChainKey::derive(&coffer_core::Dek::from_bytes([0x5a; 32]), created).unwrap(),
    );
    for e in &events[2..] {
        appended.push(store.append_audit(e, Some(key.clone())).await.unwrap());
    }
    let all = store.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        all, appended,
        "audit() returns what append_audit returned, oldest first"
    );
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(all[0].prev_hash, audit::GENESIS);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.event, events[i]);
        if i > 0 {
            assert_eq!(
                r.prev_hash,
                all[i - 1].hash,
                "record {} chains from {}",
                r.id,
                i
            );
            assert!(r.at_us >= all[i - 1].at_us);
        }
        let expected = if i >= 2 {
            audit::keyed_hash(&key, &r.prev_hash, r.id, r.at_us, &r.event).unwrap()
        } else {
            audit::chain_hash(&r.prev_hash, r.id, r.at_us, &r.event).unwrap()
        };
        assert_eq!(
            r.hash, expected,
            "record {} hashed with the key it was given",
            r.id
        );
    }
    let v = audit::verify_trail(&all, &audit::ChainKeyState::Present(&key)).unwrap();
    assert_eq!(v.outcome, audit::Outcome::Intact);
    assert_eq!((v.unkeyed, v.keyed), (2, 2));
    assert_eq!(v.head, Some((4, all[3].hash)));
    // Without the key the keyed records cannot pass as unkeyed ones.
    assert_eq!(verify_chain(&all).unwrap().map(|b| b.id), Some(3));
    let wrong =
        audit::ChainKey::derive(&coffer_core::Dek::from_bytes([0x5b; 32]), created).unwrap();
    let v = audit::verify_trail(&all, &audit::ChainKeyState::Present(&wrong)).unwrap();
    assert!(matches!(v.outcome, audit::Outcome::Broken(b) if b.id == 3));

    let only_a = AuditFilter {
        scope: Some("a".to_owned()),
        ..AuditFilter::default()
    };
    let ids: Vec<i64> = store
        .audit(&only_a)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [2, 4]);
    let two = AuditFilter {
        limit: Some(2),
        ..AuditFilter::default()
    };
    let ids: Vec<i64> = store
        .audit(&two)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [1, 2], "the oldest first");
    let since = AuditFilter {
        since_us: Some(all[3].at_us),
        ..AuditFilter::default()
    };
    let got = store.audit(&since).await.unwrap();
    assert!(got.iter().all(|r| r.at_us >= all[3].at_us) && got.last() == all.last());
    let future = AuditFilter {
        since_us: Some(all[3].at_us + 3_600_000_000),
        ..AuditFilter::default()
    };
    assert!(store.audit(&future).await.unwrap().is_empty());
}

/// What a store answers about things that do not exist.
pub async fn not_found(store: Arc<dyn KeyStore>) {
    let s = scope("nowhere");
    assert!(store.scope(&s).await.unwrap().is_none());
    assert!(store.scopes().await.unwrap().is_empty());
    assert!(store.dek(&s, KeyVersion(1)).await.unwrap().is_none());
    assert!(store.deks(&s).await.unwrap().is_empty());
    assert!(store.active_dek(&s).await.unwrap().is_none());
    assert_eq!(store.max_version(&s).await.unwrap(), 0);
    assert_eq!(store.count_deks_not_under(&kek("main")).await.unwrap(), 0);
    assert!(
        store
            .deks_not_under(&kek("main"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A version that does not exist in a scope that does.
    created(
        store
            .create_scope(&new_dek(&s, 1, &kek("main"), 1))
            .await
            .unwrap(),
    );
    assert!(store.dek(&s, KeyVersion(2)).await.unwrap().is_none());
    assert!(
        !store
            .set_state(&s, KeyVersion(2), DekState::DecryptOnly, DekState::Retired)
            .await
            .unwrap()
    );
}

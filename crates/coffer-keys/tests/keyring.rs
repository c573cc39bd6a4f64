//! The keyring on the in-memory key store (`coffer_testkit::memory`): every scenario of
//! `support/`, each on a fresh store shared by the keyrings it builds. coffer-store runs the
//! scenarios that need SQL behaviour on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;

use coffer_core::{FieldContext, Kek, Suite};
use coffer_keys::KeyStore;
use coffer_testkit::memory::MemoryStore;
use support::{Env, col, one_kek, scope, seal};

/// One in-memory store; every keyring built on it shares it, as processes share a database.
#[derive(Default)]
struct Memory(Arc<MemoryStore>);

impl Env for Memory {
    async fn store(&self) -> Arc<dyn KeyStore> {
        Arc::clone(&self.0) as Arc<dyn KeyStore>
    }

    async fn tamper_audit_detail(&self, id: i64, detail: &str) {
        assert!(
            self.0.tamper_audit_detail(id, detail),
            "no audit record {id}"
        );
    }

    async fn rewrite_audit(&self, records: &[coffer_keys::AuditRecord]) {
        self.0.replace_audit(records.to_vec());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rewritten_audit_trail_fails_verification() {
    support::audit::a_rewritten_audit_trail_fails_verification(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncation_is_found_against_the_anchor() {
    support::audit::truncation_is_found_against_the_anchor(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verifier_without_the_kek_cannot_check_keyed_records() {
    support::audit::a_verifier_without_the_kek_cannot_check_keyed_records(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserved_scopes_are_refused() {
    support::audit::reserved_scopes_are_refused(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_and_errors() {
    support::lifecycle::lifecycle_and_errors(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compromise_and_restore() {
    support::lifecycle::compromise_and_restore(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kek_rotation_rewraps_every_dek() {
    support::lifecycle::kek_rotation_rewraps_every_dek(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_load_loses_nothing() {
    support::concurrency::rotation_under_load_loses_nothing(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_and_rotations_leave_one_active_version() {
    support::concurrency::concurrent_creates_and_rotations_leave_one_active_version(
        &Memory::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_requests_make_one_kek_call() {
    support::concurrency::cold_requests_make_one_kek_call(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lease_one_block_at_a_time() {
    support::concurrency::concurrent_writers_lease_one_block_at_a_time(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_rotate_automatically() {
    support::writes::counters_rotate_automatically(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_next_block_is_leased_ahead() {
    support::writes::the_next_block_is_leased_ahead(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_lease_once_and_keep_order() {
    support::writes::batches_lease_once_and_keep_order(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn age_rotates_once_and_metrics_count() {
    support::writes::age_rotates_once_and_metrics_count(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leased_field_keys_keep_to_their_lease() {
    support::writes::leased_field_keys_keep_to_their_lease(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_keys_in_rows() {
    support::scoped_keys::data_keys_in_rows(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_keyed_by_a_scope() {
    support::scoped_keys::files_keyed_by_a_scope(&Memory::default()).await;
}

#[test]
fn cache_and_kek_traffic_is_exported_as_metrics() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = coffer_testkit::bench_setup::current_thread();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let env = Memory::default();
            let kek = Kek::generate().unwrap();
            let kr = one_kek(&env, &kek).await;
            let s = scope("tenant:m");
            let c = col("x");
            kr.create_scope(&s).await.unwrap();
            // The creator keeps the new DEK: its first use is an L1 hit, with no KEK call.
            let ct = seal(&kr, &s, &c, b"v").await;
            // Another process: one miss and one unwrap, then hits.
            let cold = one_kek(&env, &kek).await;
            for _ in 0..9 {
                cold.decrypt(&s, &c, &FieldContext::new(), &ct)
                    .await
                    .unwrap();
            }
        })
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let counts: std::collections::HashMap<String, u64> = snapshot
        .iter()
        .filter_map(|(key, _, _, value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => {
                Some((key.key().name().to_owned(), *n))
            }
            _ => None,
        })
        .collect();
    // The audit trail's head leaves the store as a gauge: create, then the cold unwrap.
    let head = snapshot.iter().find_map(|(key, _, _, value)| match value {
        metrics_util::debugging::DebugValue::Gauge(g)
            if key.key().name() == "coffer_audit_head_id" =>
        {
            Some(g.into_inner())
        }
        _ => None,
    });
    assert_eq!(head, Some(2.0), "{snapshot:?}");
    // The cold process's one data key; the audit chain key it opens to record that unwrap
    // is counted on its own.
    assert_eq!(
        counts.get("coffer_keys_kek_unwraps_total"),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("coffer_audit_chain_key_opens_total"),
        Some(&1),
        "{counts:?}"
    );
    // The new DEK, and the audit chain key made for the first record.
    assert_eq!(
        counts.get("coffer_keys_kek_wraps_total"),
        Some(&2),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_kek_writes_nothing() {
    support::wrong_kek::a_wrong_kek_writes_nothing(&Memory::default()).await;
}

/// A caller that sends ever new column and blind-index names (each up to the 255-byte id limit)
/// cannot grow a cached DEK's derived keys past the bound; dropped keys are derived again, the
/// same as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_keys_per_dek_stay_bounded() {
    use coffer_keys::{BlindIndexSpec, KeyringConfig};
    let env = Memory::default();
    let kek = Kek::generate().unwrap();
    let bound = 64;
    let kr = support::keyring(
        &env,
        support::ring(&[("main", 1, &kek)], ("main", 1)),
        KeyringConfig {
            derived_keys: bound,
            ..KeyringConfig::default()
        },
    )
    .await;
    let s = scope("tenant:bounded");
    let v = kr.create_scope(&s).await.unwrap().version;
    let row: &[&[u8]] = &[b"row-1"];
    let ctx = FieldContext::row(row);
    let first = col("ssn");
    let sealed = kr
        .encrypt(&s, &first, Suite::Gcm96, &ctx, b"123-45-6789")
        .await
        .unwrap();
    let spec = |name: String| BlindIndexSpec {
        column: col("email"),
        name,
        bits: 32,
        normalizers: Vec::new(),
    };
    let (_, first_term) = kr
        .blind_index(&s, &spec("by-email".into()), &[b"a@example.org"])
        .await
        .unwrap();
    let pad = "n".repeat(240);
    for i in 0..100_000u32 {
        let name = format!("{i}-{pad}");
        kr.field_key_at(&s, &col(&name), v, Suite::Gcm96)
            .await
            .unwrap();
        kr.blind_index(&s, &spec(name), &[b"x"]).await.unwrap();
        if i % 5_000 == 0 {
            let (c, x) = kr.derived_keys_cached(&s, v).await.unwrap();
            assert!(c <= bound && x <= bound, "{c} column keys, {x} index keys");
        }
    }
    let (c, x) = kr.derived_keys_cached(&s, v).await.unwrap();
    assert!(c <= bound && x <= bound, "{c} column keys, {x} index keys");
    assert!(
        c >= bound / 2 && x >= bound / 2,
        "recent keys are kept: {c}, {x}"
    );
    // Long evicted, derived again: the same keys.
    assert_eq!(
        kr.decrypt(&s, &first, &ctx, &sealed)
            .await
            .unwrap()
            .unwrap(),
        b"123-45-6789"
    );
    let (_, again) = kr
        .blind_index(&s, &spec("by-email".into()), &[b"a@example.org"])
        .await
        .unwrap();
    assert_eq!(again, first_term);
}

/// An in-process L2: entries in a map, invalidations delivered at once to every subscriber.
#[derive(Default)]
struct MemoryL2 {
    entries: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
    subscribers: std::sync::Mutex<Vec<coffer_keys::InvalidationHandler>>,
}

impl MemoryL2 {
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl coffer_keys::L2Backend for MemoryL2 {
    async fn get_touch(
        &self,
        name: &str,
        _ttl: std::time::Duration,
    ) -> Result<Option<Vec<u8>>, coffer_keys::L2Error> {
        Ok(self.entries.lock().unwrap().get(name).cloned())
    }

    async fn put(
        &self,
        name: &str,
        value: &[u8],
        _ttl: std::time::Duration,
    ) -> Result<(), coffer_keys::L2Error> {
        self.entries
            .lock()
            .unwrap()
            .insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    async fn try_lock(
        &self,
        _name: &str,
        _ttl: std::time::Duration,
    ) -> Result<bool, coffer_keys::L2Error> {
        Ok(true)
    }

    async fn unlock(&self, _name: &str) -> Result<(), coffer_keys::L2Error> {
        Ok(())
    }

    async fn delete(&self, names: &[String]) -> Result<(), coffer_keys::L2Error> {
        let mut e = self.entries.lock().unwrap();
        for n in names {
            e.remove(n);
        }
        Ok(())
    }

    async fn publish_invalidation(&self, names: &[String]) -> Result<(), coffer_keys::L2Error> {
        let subs = self.subscribers.lock().unwrap().clone();
        for s in subs {
            s(names.to_vec());
        }
        Ok(())
    }

    fn subscribe(&self, on_invalidate: coffer_keys::InvalidationHandler) {
        self.subscribers.lock().unwrap().push(on_invalidate);
    }
}

/// A cold load that read the DEK record before a destroy and finishes after it keeps nothing:
/// neither L1 nor L2 holds the destroyed key afterwards, and the load fails as destroyed. The
/// interleaving is fixed by a hook in the loader (no timing): the destroy runs, whole, while the
/// load waits between reading the record and unwrapping. `by_other` puts the destroy in another
/// process sharing the store and L2.
async fn destroy_during_a_cold_load(by_other: bool) {
    use coffer_keys::{CacheKey, Error, Keyring, KeyringConfig};
    use tokio::sync::Notify;
    let env = Memory::default();
    let kek = Kek::generate().unwrap();
    let l2 = Arc::new(MemoryL2::default());
    let cache_secret = [7u8; 32];
    let open = || async {
        Keyring::with_l2(
            env.0.clone() as Arc<dyn KeyStore>,
            support::ring(&[("main", 1, &kek)], ("main", 1)),
            KeyringConfig::default(),
            l2.clone() as Arc<dyn coffer_keys::L2Backend>,
            CacheKey::new(&cache_secret, 1).unwrap(),
        )
        .await
        .unwrap()
    };
    let a = open().await;
    let b = open().await;
    let s = scope("tenant:shredded");
    let c = col("ssn");
    let row: &[&[u8]] = &[b"row-1"];
    let ctx = FieldContext::row(row);
    let v = b.create_scope(&s).await.unwrap().version;
    let sealed = b
        .encrypt(&s, &c, Suite::Gcm96, &ctx, b"123-45-6789")
        .await
        .unwrap();

    let reached = Arc::new(Notify::new());
    let proceed = Arc::new(Notify::new());
    let (r, p) = (reached.clone(), proceed.clone());
    let hook: coffer_keys::LoadHook = Arc::new(
        move |_: &coffer_core::ScopeId,
              _: coffer_core::KeyVersion|
              -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
            let (r, p) = (r.clone(), p.clone());
            Box::pin(async move {
                r.notify_one();
                p.notified().await;
            })
        },
    );
    a.set_load_hook(Some(hook));
    let load = {
        let (a, s, c, sealed) = (a.clone(), s.clone(), c.clone(), sealed.clone());
        tokio::spawn(async move {
            let row: &[&[u8]] = &[b"row-1"];
            let ctx = FieldContext::row(row);
            a.decrypt(&s, &c, &ctx, &sealed).await
        })
    };
    reached.notified().await;
    let destroyer = if by_other { &b } else { &a };
    assert_eq!(destroyer.destroy(&s).await.unwrap(), 1);
    proceed.notify_one();
    let result = load.await.unwrap();
    a.set_load_hook(None);

    assert!(
        matches!(result, Err(Error::Destroyed { .. })),
        "the racing load must fail as destroyed: {result:?}"
    );
    assert_nothing_cached(&a, &l2, (&s, v), &c, &ctx, &sealed).await;
}

/// After a destroy: the key is in neither L1 nor L2, and the value fails as destroyed.
async fn assert_nothing_cached(
    a: &coffer_keys::Keyring,
    l2: &MemoryL2,
    (s, v): (&coffer_core::ScopeId, coffer_core::KeyVersion),
    c: &coffer_core::ColumnId,
    ctx: &FieldContext<'_>,
    sealed: &[u8],
) {
    assert_eq!(a.derived_keys_cached(s, v).await, None, "L1 refilled");
    assert_eq!(l2.len(), 0, "L2 refilled with a destroyed key");
    assert!(matches!(
        a.decrypt(s, c, ctx, sealed).await,
        Err(coffer_keys::Error::Destroyed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroy_racing_a_cold_load_leaves_no_key_cached() {
    destroy_during_a_cold_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroy_in_another_process_racing_a_cold_load_leaves_no_key_cached() {
    destroy_during_a_cold_load(true).await;
}

/// A load hook that counts the loads reaching it, signals `reached` and waits for `proceed`.
fn gated_hook(
    count: Arc<std::sync::atomic::AtomicUsize>,
    reached: Arc<tokio::sync::Notify>,
    proceed: Arc<tokio::sync::Notify>,
) -> coffer_keys::LoadHook {
    Arc::new(
        move |_: &coffer_core::ScopeId,
              _: coffer_core::KeyVersion|
              -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (r, p) = (reached.clone(), proceed.clone());
            Box::pin(async move {
                r.notify_one();
                p.notified().await;
            })
        },
    )
}

/// Waits (polling, at most 20 s) until `done` holds; fails the test if it never does.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..4000 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}

fn short_l1(l1_ttl_ms: u64, active_ttl_ms: u64) -> coffer_keys::KeyringConfig {
    coffer_keys::KeyringConfig {
        l1_ttl: std::time::Duration::from_millis(l1_ttl_ms),
        active_ttl: std::time::Duration::from_millis(active_ttl_ms),
        ..Default::default()
    }
}

/// A hit on an L1 entry past 80 % of `l1_ttl` is served the cached key and starts exactly one
/// reload, however many hits arrive while it runs; no hit misses; the reload goes back to the
/// KEK (one unwrap) and replaces the entry. The reload is held in the loader's hook, so the
/// count of reloads does not depend on how fast it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_is_reloaded_once_ahead_of_its_expiry() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Notify;
    let env = Memory::default();
    let kek = Kek::generate().unwrap();
    let ring = support::ring(&[("main", 1, &kek)], ("main", 1));
    let a = support::keyring(&env, ring, short_l1(5000, 60_000)).await;
    let s = scope("tenant:hot");
    let c = col("ssn");
    let v = a.create_scope(&s).await.unwrap().version;
    let ctx = FieldContext::new();
    let sealed = a
        .encrypt(&s, &c, Suite::Gcm96, &ctx, b"123-45-6789")
        .await
        .unwrap();
    assert_eq!(
        a.decrypt(&s, &c, &ctx, &sealed).await.unwrap().as_deref(),
        Some(&b"123-45-6789"[..])
    );
    // Into the last fifth of the entry's lifetime (4 s to 5 s), with 700 ms to spare on a busy
    // machine before it expires.
    tokio::time::sleep(std::time::Duration::from_millis(4300)).await;
    let before = a.stats();
    let (count, reached, proceed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
    );
    a.set_load_hook(Some(gated_hook(
        count.clone(),
        reached.clone(),
        proceed.clone(),
    )));
    let decrypt_many = |n: usize| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (a, s, c, sealed) = (a.clone(), s.clone(), c.clone(), sealed.clone());
                tokio::spawn(async move { a.decrypt(&s, &c, &FieldContext::new(), &sealed).await })
            })
            .collect();
        async move {
            for h in handles {
                assert_eq!(
                    h.await.unwrap().unwrap().as_deref(),
                    Some(&b"123-45-6789"[..])
                );
            }
        }
    };
    decrypt_many(50).await;
    reached.notified().await;
    decrypt_many(50).await;
    let during = a.stats();
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "one reload, not one per hit"
    );
    assert_eq!(
        during.l1_misses, before.l1_misses,
        "a hit missed: {during:?}"
    );
    assert_eq!(during.l1_hits, before.l1_hits + 100);
    assert_eq!(during.kek_unwraps, before.kek_unwraps);
    // The old entry, used for 100 decrypts, holds the column's derived key.
    assert_eq!(a.derived_keys_cached(&s, v).await, Some((1, 0)));

    proceed.notify_one();
    wait_until("the reload finished", || {
        a.stats().l1_refreshes == before.l1_refreshes + 1
    })
    .await;
    a.set_load_hook(None);
    let after = a.stats();
    assert_eq!(after.kek_unwraps, before.kek_unwraps + 1, "{after:?}");
    assert_eq!(after.l1_misses, before.l1_misses, "{after:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // The reloaded entry replaced the old one: no derived key yet.
    assert_eq!(a.derived_keys_cached(&s, v).await, Some((0, 0)));
    assert!(a.decrypt(&s, &c, &ctx, &sealed).await.unwrap().is_some());
}

/// Under steady traffic across several L1 lifetimes (and several active-pointer lifetimes),
/// the hot key never misses after warm-up: each lifetime ends in one background reload, not
/// in a miss every request waits for. Reloads are at most one per 80 % of a lifetime (a
/// reload per hit, or several per lifetime, would exceed it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_across_many_lifetimes_never_misses() {
    let env = Memory::default();
    let kek = Kek::generate().unwrap();
    let ring = support::ring(&[("main", 1, &kek)], ("main", 1));
    // Lifetimes long enough that the refresh window (the last fifth, 400 ms) is never skipped by
    // a stalled scheduler on a loaded machine.
    let ttl_ms = 2000;
    let a = support::keyring(&env, ring, short_l1(ttl_ms, 1000)).await;
    let s = scope("tenant:steady");
    let c = col("email");
    a.create_scope(&s).await.unwrap();
    let sealed = seal(&a, &s, &c, b"a@example.org").await;
    a.decrypt(&s, &c, &FieldContext::new(), &sealed)
        .await
        .unwrap();
    let before = a.stats();
    let start = std::time::Instant::now();
    let lifetimes = 4;
    let run = std::time::Duration::from_millis(ttl_ms * lifetimes);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (a, s, c, sealed) = (a.clone(), s.clone(), c.clone(), sealed.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < run {
                    let ctx = FieldContext::new();
                    let ct = a
                        .encrypt(&s, &c, Suite::Gcm96, &ctx, b"b@example.org")
                        .await
                        .unwrap();
                    assert!(a.decrypt(&s, &c, &ctx, &ct).await.unwrap().is_some());
                    assert!(a.decrypt(&s, &c, &ctx, &sealed).await.unwrap().is_some());
                    n += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                n
            })
        })
        .collect();
    let mut rounds = 0;
    for t in tasks {
        rounds += t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let after = a.stats();
    assert!(rounds > 0);
    assert_eq!(
        after.l1_misses, before.l1_misses,
        "hot key missed: {after:?}"
    );
    let reloads = after.kek_unwraps - before.kek_unwraps;
    // Over several lifetimes without a miss, the key was reloaded in each but the first.
    assert!(reloads >= lifetimes - 1, "{reloads} reloads: {after:?}");
    let most = (elapsed.as_millis() as u64) / (ttl_ms * 4 / 5) + 1;
    assert!(
        reloads <= most,
        "{reloads} reloads in {elapsed:?}, at most {most} expected"
    );
}

/// A destroy that lands while a background reload of the key is pending (the reload read the
/// DEK record before the destroy and continues after it) leaves nothing cached: not in L1,
/// not in L2, and decryption fails as destroyed. `by_other` destroys from another process
/// sharing the store and L2.
async fn destroy_during_a_refresh(by_other: bool) {
    use coffer_keys::{CacheKey, Keyring};
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Notify;
    let env = Memory::default();
    let kek = Kek::generate().unwrap();
    let l2 = Arc::new(MemoryL2::default());
    let cache_secret = [9u8; 32];
    let open = || async {
        Keyring::with_l2(
            env.0.clone() as Arc<dyn KeyStore>,
            support::ring(&[("main", 1, &kek)], ("main", 1)),
            short_l1(5000, 60_000),
            l2.clone() as Arc<dyn coffer_keys::L2Backend>,
            CacheKey::new(&cache_secret, 1).unwrap(),
        )
        .await
        .unwrap()
    };
    let a = open().await;
    let b = open().await;
    let s = scope("tenant:refreshed");
    let c = col("ssn");
    let ctx = FieldContext::new();
    let v = b.create_scope(&s).await.unwrap().version;
    let sealed = b
        .encrypt(&s, &c, Suite::Gcm96, &ctx, b"123-45-6789")
        .await
        .unwrap();
    assert!(a.decrypt(&s, &c, &ctx, &sealed).await.unwrap().is_some());
    tokio::time::sleep(std::time::Duration::from_millis(4300)).await;
    let before = a.stats();
    let (count, reached, proceed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
    );
    a.set_load_hook(Some(gated_hook(
        count.clone(),
        reached.clone(),
        proceed.clone(),
    )));
    // A hit in the last fifth: served, and the reload starts and stops in the hook.
    assert!(a.decrypt(&s, &c, &ctx, &sealed).await.unwrap().is_some());
    reached.notified().await;
    let destroyer = if by_other { &b } else { &a };
    assert_eq!(destroyer.destroy(&s).await.unwrap(), 1);
    proceed.notify_one();
    wait_until("the reload finished", || {
        a.stats().l1_refreshes == before.l1_refreshes + 1
    })
    .await;
    a.set_load_hook(None);
    assert_nothing_cached(&a, &l2, (&s, v), &c, &ctx, &sealed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroy_during_a_pending_refresh_leaves_no_key_cached() {
    destroy_during_a_refresh(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroy_in_another_process_during_a_pending_refresh_leaves_no_key_cached() {
    destroy_during_a_refresh(true).await;
}

/// The active-version pointer: concurrent writes on a cold keyring share one read of it, and
/// under steady writes across several `active_ttl` lifetimes no write waits for a re-read
/// (each is done in the background while the pointer is still trusted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_pointer_is_read_once_and_refreshed_ahead_of_expiry() {
    let env = Memory::default();
    let kek = Kek::generate().unwrap();
    let warm = support::one_kek(&env, &kek).await;
    let s = scope("tenant:pointer");
    let c = col("email");
    warm.create_scope(&s).await.unwrap();

    let ring = support::ring(&[("main", 1, &kek)], ("main", 1));
    let ttl_ms = 1500;
    let a = support::keyring(&env, ring, short_l1(60_000, ttl_ms)).await;
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let (a, s, c) = (a.clone(), s.clone(), c.clone());
            tokio::spawn(async move {
                a.encrypt(&s, &c, Suite::Gcm96, &FieldContext::new(), b"x")
                    .await
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let cold = a.stats();
    assert_eq!(cold.active_misses, 1, "{cold:?}");

    let start = std::time::Instant::now();
    let run = std::time::Duration::from_millis(ttl_ms * 4);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (a, s, c) = (a.clone(), s.clone(), c.clone());
            tokio::spawn(async move {
                while start.elapsed() < run {
                    seal(&a, &s, &c, b"y").await;
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let after = a.stats();
    assert_eq!(
        after.active_misses, 1,
        "a write waited for the pointer: {after:?}"
    );
    assert_eq!(after.l1_misses, cold.l1_misses, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scopes_are_created_in_bulk_with_an_outcome_each() {
    support::scale::scopes_are_created_in_bulk_with_an_outcome_each(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scopes_are_listed_a_page_at_a_time_by_prefix() {
    support::scale::scopes_are_listed_a_page_at_a_time_by_prefix(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subject_is_erased_with_its_sub_scopes() {
    support::scale::a_subject_is_erased_with_its_sub_scopes(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kek_rotation_walks_the_deks_in_pages() {
    support::scale::kek_rotation_walks_the_deks_in_pages(&Memory::default()).await;
}

/// L1 and the active-pointer cache stay within `l1_capacity` entries whatever the number of
/// scopes a process touches: 200 000 distinct scopes against a bound of 1 000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_stays_within_its_bound_at_200_000_scopes() {
    const SCOPES: usize = 200_000;
    const BOUND: u64 = 1_000;
    let env = Memory::default();
    let kek = Kek::generate().unwrap();
    let config = coffer_keys::KeyringConfig {
        l1_capacity: BOUND,
        ..coffer_keys::KeyringConfig::default()
    };
    let kr = support::configured(&env, &kek, config).await;
    let names: Vec<_> = (0..SCOPES)
        .map(|i| scope(&format!("patient:{i}")))
        .collect();
    kr.create_scopes(&names).await.unwrap();
    let c = col("ssn");
    let mut first = None;
    let mut peak = (0, 0);
    for (i, s) in names.iter().enumerate() {
        let ct = seal(&kr, s, &c, b"v").await;
        if i == 0 {
            first = Some(ct);
        }
        if i % 10_000 == 9_999 {
            let (l1, pointers) = kr.l1_entries().await;
            assert!(l1 <= BOUND, "{l1} DEKs cached after {} scopes", i + 1);
            assert!(
                pointers <= BOUND,
                "{pointers} pointers cached after {} scopes",
                i + 1
            );
            peak = (peak.0.max(l1), peak.1.max(pointers));
        }
    }
    assert!(peak.0 > 0 && peak.1 > 0, "the caches were used: {peak:?}");
    // Every key went through the KEK once at least; the first, long evicted, loads again.
    assert!(kr.stats().kek_unwraps >= SCOPES as u64 - BOUND);
    let back = support::open(&kr, &names[0], &c, &first.unwrap()).await;
    assert_eq!(back, b"v");
}

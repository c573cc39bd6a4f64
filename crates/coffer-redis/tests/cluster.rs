//! The L2 cache on a real Redis Cluster (127.0.0.1:7000-7005, started by
//! `scripts/services-up.sh`): commands spread over the masters, multi-name deletes across slots,
//! invalidations across nodes, and two keyrings sharing DEKs through the cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_core::{FieldContext, Kek};
use coffer_keys::{CacheKey, L2Backend};
use coffer_redis::RedisL2;
use coffer_testkit::keyring_fixtures::{KeyringSetup, Sealed, col, open, scope, seal};
use coffer_testkit::{ports::free_port, random};
use common::{
    fast, node, nodes_seen_by, owner, refused_as_destroyed, require_cluster, seeds, slot,
    sqlite_store, url,
};
use tokio::time::Instant;

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i:03}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_over_many_names_spreads_over_the_masters() {
    require_cluster().await;
    let l2 = RedisL2::cluster(&seeds(), fast()).unwrap();
    assert!(l2.is_cluster());
    let prefix = random::name_with("coffer:test:rt", ':');
    let entries = names(&prefix, 60);
    let ttl = Duration::from_secs(60);
    for (i, name) in entries.iter().enumerate() {
        l2.put(name, format!("value-{i}").as_bytes(), ttl)
            .await
            .unwrap();
    }
    for (i, name) in entries.iter().enumerate() {
        let got = l2.get_touch(name, ttl).await.unwrap();
        assert_eq!(got.as_deref(), Some(format!("value-{i}").as_bytes()));
    }
    assert_eq!(
        l2.get_touch(&format!("{prefix}:absent"), ttl)
            .await
            .unwrap(),
        None
    );

    // Each entry is on the master that owns its slot: ask that node directly.
    let nodes = nodes_seen_by(7000).await;
    let mut per_master: BTreeMap<u16, usize> = BTreeMap::new();
    for name in &entries {
        let master = owner(&nodes, slot(name).await).port;
        let mut c = node(master).await;
        let exists: i64 = redis::cmd("EXISTS")
            .arg(name)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(exists, 1, "{name} not on its slot's master {master}");
        let pttl: i64 = redis::cmd("PTTL")
            .arg(name)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(pttl > 50_000 && pttl <= 60_000, "{name}: PTTL {pttl}");
        *per_master.entry(master).or_default() += 1;
    }
    assert!(
        per_master.len() > 1,
        "60 names all landed on one master: {per_master:?}"
    );
    assert_eq!(per_master.values().sum::<usize>(), entries.len());

    // Locks: taken once, refused while held, free again after unlock, on every slot.
    for name in entries.iter().take(20) {
        let lock = format!("{name}:lock");
        assert!(l2.try_lock(&lock, ttl).await.unwrap());
        assert!(
            !l2.try_lock(&lock, ttl).await.unwrap(),
            "{lock} taken twice"
        );
        l2.unlock(&lock).await.unwrap();
        assert!(
            l2.try_lock(&lock, ttl).await.unwrap(),
            "{lock} not released"
        );
        l2.unlock(&lock).await.unwrap();
    }
    // A lock held by another process (another token) is not released by our unlock.
    let foreign = format!("{prefix}:foreign-lock");
    let master = owner(&nodes, slot(&foreign).await).port;
    let mut c = node(master).await;
    let _: () = redis::cmd("SET")
        .arg(&foreign)
        .arg("someone-else")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut c)
        .await
        .unwrap();
    l2.unlock(&foreign).await.unwrap();
    let still: Option<String> = redis::cmd("GET")
        .arg(&foreign)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(still.as_deref(), Some("someone-else"));

    let mut all = entries.clone();
    all.push(foreign);
    l2.delete(&all).await.unwrap();
    for name in &entries {
        assert_eq!(l2.get_touch(name, ttl).await.unwrap(), None, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_names_across_slots_removes_them_all() {
    require_cluster().await;
    let l2 = RedisL2::cluster(&seeds(), fast()).unwrap();
    let prefix = random::name_with("coffer:test:del", ':');
    let entries = names(&prefix, 40);
    let ttl = Duration::from_secs(60);
    let mut slots = BTreeSet::new();
    for name in &entries {
        l2.put(name, b"sealed", ttl).await.unwrap();
        slots.insert(slot(name).await);
    }
    assert!(slots.len() > 1, "the names must span several slots");
    // One call, many slots: a single cross-slot DEL would fail with CROSSSLOT.
    l2.delete(&entries).await.unwrap();
    let nodes = nodes_seen_by(7000).await;
    for name in &entries {
        let mut c = node(owner(&nodes, slot(name).await).port).await;
        let exists: i64 = redis::cmd("EXISTS")
            .arg(name)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(exists, 0, "{name} survived the delete");
    }
    // Deleting names that are not there (again) is fine.
    l2.delete(&entries).await.unwrap();
    l2.delete(&[]).await.unwrap();
}

type Seen = Arc<Mutex<Vec<String>>>;

fn recorder() -> (Seen, coffer_keys::InvalidationHandler) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    (
        seen,
        Arc::new(move |names: Vec<String>| {
            s.lock().unwrap().extend(names);
            true
        }),
    )
}

/// Publishes `name` through `publisher` until `seen` has it (at most 10 s).
async fn delivered(publisher: &RedisL2, seen: &Seen, name: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let _ = publisher.publish_invalidation(&[name.to_owned()]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if seen.lock().unwrap().iter().any(|n| n == name) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_published_on_one_node_reaches_a_subscriber_on_another() {
    require_cluster().await;
    // The publish goes to the master owning the channel's slot; the subscriber listens on two
    // other nodes (first one, then the other when the first drops it). Not on 7000, where the
    // other tests' listeners are.
    let nodes = nodes_seen_by(7000).await;
    let publish_node = owner(&nodes, slot(coffer_redis::INVALIDATION_CHANNEL).await).port;
    let others: Vec<u16> = nodes
        .iter()
        .map(|n| n.port)
        .filter(|p| *p != publish_node && *p != 7000)
        .take(2)
        .collect();
    assert_eq!(others.len(), 2, "{nodes:?}");
    let subscriber = RedisL2::cluster(&[url(others[0]), url(others[1])], fast()).unwrap();
    let publisher = RedisL2::cluster(&[url(publish_node)], fast()).unwrap();
    let (seen, handler) = recorder();
    subscriber.subscribe(handler);

    let first = random::name_with("coffer:test:inv", ':');
    assert!(
        delivered(&publisher, &seen, &first).await,
        "an invalidation published via {publish_node} never reached the listener on {}",
        others[0]
    );

    // The listener's pings are answered: it stays on its node (one connection, growing older).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut c = node(others[0]).await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut c)
        .await
        .unwrap();
    let ages: Vec<u64> = clients
        .lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("age=")))
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(
        ages.len(),
        1,
        "one listener connection on {}: {clients}",
        others[0]
    );
    assert!(
        ages[0] >= 2,
        "the listener reconnected meanwhile: {clients}"
    );

    // The listener's node drops every subscriber connection: it moves to the next seed.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        killed >= 1,
        "the listener was not subscribed on {}",
        others[0]
    );
    let second = random::name_with("coffer:test:inv", ':');
    assert!(
        delivered(&publisher, &seen, &second).await,
        "after losing its node the listener did not resubscribe elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyrings_share_deks_and_invalidations_through_the_cluster() {
    require_cluster().await;
    let (_dir, store) = sqlite_store().await;
    let kek = Kek::generate().unwrap();
    let secret = random::bytes::<32>();
    let process = || async {
        let l2 = Arc::new(RedisL2::cluster(&seeds(), fast()).unwrap());
        KeyringSetup::new(store.clone(), &kek)
            .l2(l2, CacheKey::new(&secret, 1).unwrap())
            .build()
            .await
    };
    let a = process().await;
    let Sealed { scope, column, ct } =
        Sealed::create(&a, "tenant:acme-hospital", "diagnosis", b"J45.909").await;
    a.clear_l1();
    let before = a.stats();
    let pt = open(&a, &scope, &column, &ct).await;
    assert_eq!(pt, b"J45.909");
    assert!(a.stats().l2_errors == before.l2_errors, "{:?}", a.stats());

    // Another process finds the DEK in the cluster: no KEK call.
    let b = process().await;
    let pt = open(&b, &scope, &column, &ct).await;
    assert_eq!(pt, b"J45.909");
    let s = b.stats();
    assert_eq!((s.kek_unwraps, s.l2_hits, s.l2_errors), (0, 1, 0), "{s:?}");

    // A destroy in A drops the DEK from B's L1 through the cluster's pub/sub.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.destroy(&scope).await.unwrap();
    assert!(
        refused_as_destroyed(&b, &scope, &column, &ct).await,
        "process B still decrypts after the destroy"
    );
}

#[tokio::test]
async fn unreachable_cluster_fails_fast_and_bad_seeds_are_refused() {
    // Nothing listens there: an L2 error, quickly, and then the breaker answers at once.
    let l2 = RedisL2::cluster(&[url(free_port())], fast()).unwrap();
    assert!(l2.get_touch("x", Duration::from_secs(1)).await.is_err());
    assert!(l2.put("x", b"v", Duration::from_secs(1)).await.is_err());

    let err = |r: coffer_keys::Result<RedisL2>| r.unwrap_err().to_string();
    let none: [&str; 0] = [];
    assert!(err(RedisL2::cluster(&none, fast())).contains("at least one seed"));
    assert!(
        err(RedisL2::cluster(
            &["redis://127.0.0.1:7000", "not a url"],
            fast()
        ))
        .contains("seed URL #2")
    );
    assert!(err(RedisL2::cluster(&["redis://127.0.0.1:7000/3"], fast())).contains("database 0"));
    // No TLS client in this build: refused at start, not at the first request.
    assert!(RedisL2::cluster(&["rediss://127.0.0.1:7000"], fast()).is_err());
    assert!(RedisL2::new("rediss://127.0.0.1:6379", fast()).is_err());
    let mixed = RedisL2::cluster(
        &[
            "redis://:pw-one@127.0.0.1:7000",
            "redis://:pw-two@127.0.0.1:7001",
        ],
        fast(),
    );
    let msg = err(mixed);
    assert!(msg.contains("password") && !msg.contains("pw-"), "{msg}");

    // Debug names the seeds, never a password.
    let l2 = RedisL2::cluster(&["redis://:hunter2@127.0.0.1:7000"], fast()).unwrap();
    let shown = format!("{l2:?}");
    assert!(
        shown.contains("7000") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyring_on_an_unreachable_cluster_still_serves_through_the_kek() {
    let (_dir, store) = sqlite_store().await;
    let kek = Kek::generate().unwrap();
    // Two seeds where nothing listens: every L2 call fails, no request does.
    let l2 = Arc::new(RedisL2::cluster(&[url(free_port()), url(free_port())], fast()).unwrap());
    let kr = KeyringSetup::new(store, &kek)
        .l2(l2, CacheKey::new(&random::bytes::<32>(), 1).unwrap())
        .build()
        .await;
    let (scope, column) = (scope("tenant:acme"), col("diagnosis"));
    kr.create_scope(&scope).await.unwrap();
    for i in 0..5 {
        let ct = seal(&kr, &scope, &column, b"x").await;
        kr.clear_l1();
        let pt = kr
            .decrypt(&scope, &column, &FieldContext::new(), &ct)
            .await
            .unwrap();
        assert_eq!(pt.as_deref(), Some(&b"x"[..]), "request {i}");
    }
    let s = kr.stats();
    assert!(s.l2_errors > 0 && s.kek_unwraps >= 5, "{s:?}");
}

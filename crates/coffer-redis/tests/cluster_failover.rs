//! A master of the shared Redis Cluster (127.0.0.1:7000-7005, `scripts/services-up.sh`) hands
//! over to its replica (`CLUSTER FAILOVER`, a clean manual failover) while an L2 client is in
//! use: the same client keeps working afterwards. The test fails back at the end, so the
//! cluster is left as it was. Its own test binary, so no other cluster test runs meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use coffer_keys::L2Backend;
use coffer_redis::RedisL2;
use coffer_testkit::random;
use common::{fast, node, nodes_seen_by, owner, require_cluster, seeds, slot};
use tokio::time::Instant;

/// Asks `replica` to take over from its master, and waits (at most 30 s) until it is a master
/// serving `slot` and every node says the cluster is ok. A manual failover the master does not
/// complete within 5 s (e.g. right after a previous one, while the nodes still learn the new
/// roles) is abandoned by Redis: it is asked for again.
async fn fail_over_to(replica: u16, slot_no: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut c = node(replica).await;
    while Instant::now() < deadline {
        let r: redis::RedisResult<()> = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query_async(&mut c)
            .await;
        if let Err(e) = r {
            // Refused while the replica is not in sync yet: ask again shortly.
            eprintln!("CLUSTER FAILOVER on {replica} refused for now: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let attempt = Instant::now() + Duration::from_secs(6);
        while Instant::now() < attempt.min(deadline) {
            let seen = nodes_seen_by(replica).await;
            if owner(&seen, slot_no).port == replica && common::healthy().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("{replica} did not become the master of slot {slot_no} within 30 s");
}

/// Retries `get_touch(name)` (the breaker may be open right after the handover) until it
/// returns `want`, at most 10 s.
async fn reads_back(l2: &RedisL2, name: &str, want: &[u8]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(v)) = l2.get_touch(name, Duration::from_secs(60)).await
            && v == want
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_survives_a_master_failing_over_to_its_replica() {
    require_cluster().await;
    let l2 = RedisL2::cluster(&seeds(), fast()).unwrap();
    let name = random::name_with("coffer:test:failover", ':');
    let ttl = Duration::from_secs(60);
    l2.put(&name, b"before", ttl).await.unwrap();
    assert_eq!(
        l2.get_touch(&name, ttl).await.unwrap().as_deref(),
        Some(&b"before"[..])
    );

    let slot_no = slot(&name).await;
    let nodes = nodes_seen_by(7000).await;
    let master = owner(&nodes, slot_no).clone();
    let replica = nodes
        .iter()
        .find(|n| n.master_id.as_deref() == Some(master.id.as_str()) && !n.failed)
        .unwrap_or_else(|| panic!("master {} has no replica: {nodes:?}", master.port))
        .port;

    fail_over_to(replica, slot_no).await;
    // The entry was replicated before the handover; the same client reads it from the new
    // master and writes there.
    assert!(
        reads_back(&l2, &name, b"before").await,
        "the L2 client did not follow the failover from {} to {replica}",
        master.port
    );
    let after = format!("{name}:after");
    l2.put(&after, b"after", ttl).await.unwrap();
    let mut c = node(replica).await;
    let on_new_master: i64 = redis::cmd("EXISTS")
        .arg(&name)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(on_new_master, 1);
    assert!(l2.try_lock(&format!("{name}:lock"), ttl).await.unwrap());
    l2.unlock(&format!("{name}:lock")).await.unwrap();

    // Fail back: the old master takes over again, and the client follows again.
    fail_over_to(master.port, slot_no).await;
    assert!(
        reads_back(&l2, &name, b"before").await,
        "the L2 client did not follow the failback to {}",
        master.port
    );
    l2.delete(&[name.clone(), after]).await.unwrap();
    assert_eq!(l2.get_touch(&name, ttl).await.unwrap(), None);
}

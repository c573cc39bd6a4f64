//! The Redis Cluster the cluster tests use: six loopback nodes on 127.0.0.1:7000-7005 (three
//! masters, three replicas) started by `scripts/services-up.sh`, shared by every test run. Tests
//! write only names under a random prefix of their own.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use coffer_core::{ColumnId, FieldContext, ScopeId};
use coffer_keys::Keyring;
use coffer_redis::RedisOptions;
use coffer_store::SqlStore;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

/// The six nodes' ports.
pub const PORTS: [u16; 6] = [7000, 7001, 7002, 7003, 7004, 7005];

/// `redis://127.0.0.1:PORT`.
pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// Every node as a seed.
pub fn seeds() -> Vec<String> {
    PORTS.iter().map(|p| url(*p)).collect()
}

/// Short timeouts, so that a failure costs the tests little time.
pub fn fast() -> RedisOptions {
    RedisOptions {
        op_timeout: Duration::from_millis(250),
        connect_timeout: Duration::from_millis(250),
        retry_every: Duration::from_millis(100),
    }
}

/// A key store in a fresh SQLite file, with the directory that holds it.
pub async fn sqlite_store() -> (tempfile::TempDir, Arc<SqlStore>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("keys.db").display());
    (dir, Arc::new(SqlStore::connect(&url).await.unwrap()))
}

/// Whether `kr` refuses `ct` as sealed under a destroyed key within 10 s (asked every 20 ms):
/// another process's destroy reaches it through a published invalidation. Panics on any other
/// error.
pub async fn refused_as_destroyed(
    kr: &Keyring,
    scope: &ScopeId,
    column: &ColumnId,
    ct: &[u8],
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match kr.decrypt(scope, column, &FieldContext::new(), ct).await {
            Err(coffer_keys::Error::Destroyed { .. }) => return true,
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    false
}

/// A direct (non-cluster) connection to one node.
pub async fn node(port: u16) -> MultiplexedConnection {
    let client = redis::Client::open(url(port)).unwrap();
    match tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(Ok(c)) => c,
        _ => panic!(
            "no Redis Cluster node on 127.0.0.1:{port}: run scripts/services-up.sh \
             (it starts the cluster on 7000-7005)"
        ),
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    pub failed: bool,
    pub slots: Vec<(u16, u16)>,
}

/// The cluster as `port` sees it.
pub async fn nodes_seen_by(port: u16) -> Vec<NodeInfo> {
    let mut c = node(port).await;
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut c)
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = f[1].split('@').next().unwrap();
            let port = addr.rsplit(':').next().unwrap().parse().unwrap();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| match s.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (s.parse().unwrap(), s.parse().unwrap()),
                })
                .collect();
            NodeInfo {
                id: f[0].to_owned(),
                port,
                master: f[2].contains("master"),
                master_id: (f[3] != "-").then(|| f[3].to_owned()),
                failed: f[2].contains("fail"),
                slots,
            }
        })
        .collect()
}

/// The slot of `key`.
pub async fn slot(key: &str) -> u16 {
    let mut c = node(PORTS[0]).await;
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

/// The master serving `slot`, as node 7000 sees it.
pub fn owner(nodes: &[NodeInfo], slot: u16) -> &NodeInfo {
    nodes
        .iter()
        .find(|n| n.master && n.slots.iter().any(|(a, b)| *a <= slot && slot <= *b))
        .unwrap_or_else(|| panic!("no master serves slot {slot}: {nodes:?}"))
}

/// `cluster_state` of every node.
pub async fn healthy() -> bool {
    for port in PORTS {
        let client = redis::Client::open(url(port)).unwrap();
        let Ok(Ok(mut c)) = tokio::time::timeout(
            Duration::from_secs(1),
            client.get_multiplexed_async_connection(),
        )
        .await
        else {
            return false;
        };
        let info: redis::RedisResult<String> =
            redis::cmd("CLUSTER").arg("INFO").query_async(&mut c).await;
        if !info.is_ok_and(|i| i.contains("cluster_state:ok")) {
            return false;
        }
    }
    true
}

/// Waits (at most 20 s) until every node says `cluster_state:ok`; panics with what to run.
pub async fn require_cluster() {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if healthy().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "the Redis Cluster on 127.0.0.1:7000-7005 is absent or not healthy: run \
         scripts/services-up.sh (it starts and forms it; `make test` runs it first)"
    );
}

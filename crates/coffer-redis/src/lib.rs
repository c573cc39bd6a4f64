//! Coffer's shared L2 DEK cache on Redis.
//!
//! [`RedisL2`] implements [`coffer_keys::L2Backend`]: a byte store with sliding expiry (`GETEX`)
//! and a short self-expiring lock (`SET NX PX` with a random token, released by a
//! compare-and-delete script). It holds only what the keyring gives it: entries sealed under the
//! cache key with names that are HMACs (docs/FORMAT.md §7). There is no cryptography here.
//!
//! Two deployments: one Redis server ([`RedisL2::new`], `[cache] redis_url`) or a Redis Cluster
//! ([`RedisL2::cluster`], `[cache] redis_cluster`, a list of seed nodes). The keyring sees no
//! difference.
//!
//! Redis being down is not an error for the application: every call has a short timeout, fails
//! with [`L2Error`], and the keyring falls back to the KEK provider. The connection is re-made in
//! the background (or, if Redis was down at start, tried again at most once a second).
//!
//! ```no_run
//! # async fn demo() -> coffer_keys::Result<()> {
//! let l2 = coffer_redis::RedisL2::new("redis://127.0.0.1:6379", Default::default())?;
//! let cluster = coffer_redis::RedisL2::cluster(
//!     &["redis://127.0.0.1:7000", "redis://127.0.0.1:7001", "redis://127.0.0.1:7002"],
//!     Default::default(),
//! )?;
//! # Ok(()) }
//! ```
//!
//! # Redis Cluster
//!
//! * Commands go through the `redis` crate's cluster client, which routes each one to the master
//!   owning its key's slot and follows `MOVED`/`ASK` redirections (re-reading the slot map), so a
//!   master that fails over to its replica is followed without a restart. On top of that, any
//!   failure drops the cluster connection: the next attempt (after the circuit breaker's pause)
//!   builds a new one from the seed nodes with a fresh slot map, so a node that hangs or a stale
//!   map never outlives one breaker pause.
//! * Entry and lock names are HMAC hex strings, so they spread over all slots; every command but
//!   `DEL` touches one key (the unlock script included). A `DEL` of several names is split per
//!   slot by the cluster client, never sent as one cross-slot command (which would fail with
//!   `CROSSSLOT`).
//! * Invalidations use classic `PUBLISH`/`SUBSCRIBE`: in a cluster a message published on any
//!   node reaches the subscribers of every node. The listener holds one subscription to one seed
//!   node, pings it every second, and on a failure moves to the next seed in the list. (The
//!   crate's own cluster pub/sub needs RESP3 and multiplexes the subscription onto the command
//!   connections, which are only re-made when a command fails; a dedicated connection that
//!   checks itself every second is simpler to reason about.) Messages published while the
//!   listener moves are lost, as they are while a single Redis restarts: L1's `l1_ttl` bounds
//!   what that costs.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use coffer_keys::{Error, InvalidationHandler, L2Backend, L2Error};
use futures_util::StreamExt as _;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Timeouts of the Redis client.
#[derive(Clone, Copy, Debug)]
pub struct RedisOptions {
    /// Longest wait for one command (default 250 ms): past it, the keyring unwraps itself.
    pub op_timeout: Duration,
    /// Longest wait to connect (default 250 ms).
    pub connect_timeout: Duration,
    /// Pause between connection attempts while Redis is down (default 1 s).
    pub retry_every: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            op_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_millis(250),
            retry_every: Duration::from_secs(1),
        }
    }
}

/// Where the cache lives.
enum Target {
    Single(redis::Client),
    Cluster {
        client: ClusterClient,
        /// One client per seed node: the invalidation listener subscribes through them in turn.
        seeds: Vec<redis::Client>,
    },
}

/// A connection to either kind of target.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

struct State {
    conn: Option<Conn>,
    /// While Redis is failing, calls fail at once until this instant (a circuit breaker), so
    /// an outage costs the application one timeout per `retry_every`, not one per request.
    next_attempt: Instant,
}

/// The L2 cache on one Redis server (or a proxy in front of a cluster), or on a Redis Cluster.
pub struct RedisL2 {
    target: Target,
    options: RedisOptions,
    state: Mutex<State>,
}

impl fmt::Debug for RedisL2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URLs may carry a password: show only where they point.
        let addr = |c: &redis::Client| c.get_connection_info().addr().to_string();
        match &self.target {
            Target::Single(client) => f
                .debug_struct("RedisL2")
                .field("addr", &addr(client))
                .finish_non_exhaustive(),
            Target::Cluster { seeds, .. } => f
                .debug_struct("RedisL2")
                .field("cluster_seeds", &seeds.iter().map(addr).collect::<Vec<_>>())
                .finish_non_exhaustive(),
        }
    }
}

/// Deletes the lock only if it still holds our token (it may have expired and been taken by
/// another process meanwhile). Sent as `EVAL` (one key, so one slot in a cluster): no script
/// cache to load on every node, and nothing to reload after a failover.
const UNLOCK_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

fn l2(e: impl fmt::Display) -> L2Error {
    L2Error(e.to_string())
}

impl RedisL2 {
    /// A cache on `url` (`redis://host:port[/db]`; this build has no TLS client, so `rediss://`
    /// is refused). Does not connect yet: a Redis that is down at start is not an error.
    pub fn new(url: &str, options: RedisOptions) -> coffer_keys::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::config(format!("invalid Redis URL: {}", e.category())))?;
        Ok(Self::with_target(Target::Single(client), options))
    }

    /// A cache on the Redis Cluster that `seeds` belong to (`redis://host:port` each; one is
    /// enough to find the others, list several so that start-up and the invalidation listener
    /// survive a node being down). Does not connect yet: a cluster that is down at start is not
    /// an error. All seeds must share one user name and password; a cluster has database 0 only.
    pub fn cluster<S: AsRef<str>>(seeds: &[S], options: RedisOptions) -> coffer_keys::Result<Self> {
        if seeds.is_empty() {
            return Err(Error::config(
                "a Redis Cluster needs at least one seed node: list redis://host:port URLs",
            ));
        }
        let mut clients = Vec::with_capacity(seeds.len());
        for (i, seed) in seeds.iter().enumerate() {
            let n = i + 1;
            let client = redis::Client::open(seed.as_ref()).map_err(|e| {
                Error::config(format!(
                    "invalid Redis Cluster seed URL #{n}: {} (expected redis://host:port)",
                    e.category()
                ))
            })?;
            if client.get_connection_info().redis_settings().db() != 0 {
                return Err(Error::config(format!(
                    "Redis Cluster seed URL #{n} names a database: a cluster has database 0 \
                     only; remove the /N path"
                )));
            }
            clients.push(client);
        }
        // The cluster client takes one user name and password for every node.
        let first = clients[0].get_connection_info().redis_settings();
        let differs = |c: &redis::Client| {
            let r = c.get_connection_info().redis_settings();
            r.username() != first.username() || r.password() != first.password()
        };
        if clients.iter().any(differs) {
            return Err(Error::config(
                "the Redis Cluster seed URLs carry different user names or passwords: a \
                 cluster has one; give every seed the same",
            ));
        }
        let infos = clients.iter().map(|c| c.get_connection_info().clone());
        let client = ClusterClientBuilder::new(infos)
            .connection_timeout(options.connect_timeout)
            .response_timeout(options.op_timeout)
            .overall_response_timeout(Some(options.op_timeout))
            // A redirection or a reconnection within the command's time budget; past it, the
            // keyring unwraps itself and the circuit breaker pauses the cache.
            .retries(2)
            .min_retry_wait(5)
            .max_retry_wait(50)
            .build()
            .map_err(|e| Error::config(format!("invalid Redis Cluster seeds: {}", e.category())))?;
        Ok(Self::with_target(
            Target::Cluster {
                client,
                seeds: clients,
            },
            options,
        ))
    }

    fn with_target(target: Target, options: RedisOptions) -> Self {
        RedisL2 {
            target,
            options,
            state: Mutex::new(State {
                conn: None,
                next_attempt: Instant::now(),
            }),
        }
    }

    /// Whether this cache is on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster { .. })
    }

    async fn connect(&self) -> Result<Conn, L2Error> {
        match &self.target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.options.connect_timeout))
                    .set_response_timeout(Some(self.options.op_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(self.options.retry_every);
                let made = tokio::time::timeout(
                    self.options.connect_timeout * 2,
                    ConnectionManager::new_with_config(client.clone(), config),
                )
                .await;
                match made {
                    Ok(Ok(c)) => Ok(Conn::Single(c)),
                    Ok(Err(e)) => Err(l2(e)),
                    Err(_) => Err(L2Error("Redis connection timed out".into())),
                }
            }
            Target::Cluster { client, .. } => {
                // Seeds in parallel, then the slot map from one of them, then the masters.
                let budget = self.options.connect_timeout * 3 + self.options.op_timeout;
                match tokio::time::timeout(budget, client.get_async_connection()).await {
                    Ok(Ok(c)) => Ok(Conn::Cluster(c)),
                    Ok(Err(e)) => Err(l2(e)),
                    Err(_) => Err(L2Error("Redis Cluster connection timed out".into())),
                }
            }
        }
    }

    async fn conn(&self) -> Result<Conn, L2Error> {
        let mut state = self.state.lock().await;
        if Instant::now() < state.next_attempt {
            return Err(L2Error("Redis unreachable; retrying shortly".into()));
        }
        if let Some(c) = &state.conn {
            return Ok(c.clone());
        }
        match self.connect().await {
            Ok(c) => {
                state.conn = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                state.next_attempt = Instant::now() + self.options.retry_every;
                Err(e)
            }
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, L2Error> {
        let mut conn = self.conn().await?;
        let r =
            tokio::time::timeout(self.options.op_timeout, cmd.query_async::<T>(&mut conn)).await;
        self.settle(r)
    }

    /// Maps a command's outcome, opening the circuit breaker on a failure.
    fn settle<T>(
        &self,
        r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, L2Error> {
        let err = match r {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => l2(e),
            Err(_) => L2Error("Redis command timed out".into()),
        };
        if let Ok(mut state) = self.state.try_lock() {
            state.next_attempt = Instant::now() + self.options.retry_every;
            // A cluster connection is rebuilt from the seeds (fresh slot map) after any
            // failure; the single-node connection manager reconnects by itself.
            if self.is_cluster() {
                state.conn = None;
            }
        }
        Err(err)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl L2Backend for RedisL2 {
    async fn get_touch(&self, name: &str, ttl: Duration) -> Result<Option<Vec<u8>>, L2Error> {
        let mut cmd = redis::cmd("GETEX");
        cmd.arg(name).arg("PX").arg(millis(ttl));
        self.run(&cmd).await
    }

    async fn put(&self, name: &str, value: &[u8], ttl: Duration) -> Result<(), L2Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(name).arg(value).arg("PX").arg(millis(ttl));
        self.run::<()>(&cmd).await
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, L2Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(name)
            .arg(lock_token())
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        Ok(self.run::<Option<String>>(&cmd).await?.is_some())
    }

    async fn unlock(&self, name: &str) -> Result<(), L2Error> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(UNLOCK_SCRIPT).arg(1).arg(name).arg(lock_token());
        self.run::<i64>(&cmd).await.map(|_| ())
    }

    async fn publish_invalidation(&self, names: &[String]) -> Result<(), L2Error> {
        if names.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(INVALIDATION_CHANNEL).arg(names.join(" "));
        self.run::<i64>(&cmd).await.map(|_| ())
    }

    fn subscribe(&self, on_invalidate: InvalidationHandler) {
        let nodes = match &self.target {
            Target::Single(client) => vec![client.clone()],
            Target::Cluster { seeds, .. } => seeds.clone(),
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(listen(nodes, self.options, on_invalidate));
        }
    }

    async fn delete(&self, names: &[String]) -> Result<(), L2Error> {
        if names.is_empty() {
            return Ok(());
        }
        // One command; on a cluster the client splits it per slot (the names spread over
        // slots, and one cross-slot DEL would fail with CROSSSLOT) and sums the counts.
        let mut cmd = redis::cmd("DEL");
        for n in names {
            cmd.arg(n);
        }
        self.run::<i64>(&cmd).await.map(|_| ())
    }
}

/// The pub/sub channel invalidations travel on.
pub const INVALIDATION_CHANNEL: &str = "coffer:invalidate";

/// Runs a subscription until the handler says stop. `nodes` are tried in turn: the listener
/// stays on one until it fails (connection lost, or no answer to the ping sent every second),
/// then moves to the next; it pauses `retry_every` after a whole round of failed attempts.
async fn listen(nodes: Vec<redis::Client>, options: RedisOptions, handler: InvalidationHandler) {
    let mut warned = false;
    let mut next = 0usize;
    let mut failed_in_row = 0usize;
    let tick_every = Duration::from_secs(1);
    loop {
        let client = &nodes[next % nodes.len()];
        next = next.wrapping_add(1);
        let subscribed = tokio::time::timeout(options.connect_timeout * 2, async {
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            sink.subscribe(INVALIDATION_CHANNEL).await?;
            Ok::<_, redis::RedisError>((sink, stream))
        })
        .await;
        let (mut sink, mut messages) = match subscribed {
            Ok(Ok(pair)) => {
                if warned {
                    tracing::info!("L2 invalidation channel subscribed again");
                    warned = false;
                }
                failed_in_row = 0;
                pair
            }
            _ => {
                if !warned {
                    tracing::warn!("cannot subscribe to L2 invalidations; retrying");
                    warned = true;
                }
                if !handler(Vec::new()) {
                    return;
                }
                failed_in_row += 1;
                if failed_in_row % nodes.len() == 0 {
                    tokio::time::sleep(options.retry_every).await;
                }
                continue;
            }
        };
        let mut tick = tokio::time::interval(tick_every);
        loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    Some(msg) => {
                        let payload: String = msg.get_payload().unwrap_or_default();
                        let names = payload.split(' ').filter(|n| !n.is_empty()).map(str::to_owned).collect();
                        if !handler(names) {
                            return;
                        }
                    }
                    None => break, // connection lost: subscribe again
                },
                _ = tick.tick() => {
                    if !handler(Vec::new()) {
                        return;
                    }
                    // A node that hangs (or a link that silently died) keeps the stream open:
                    // only a ping notices.
                    let pong = tokio::time::timeout(options.op_timeout * 2, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        if !warned {
            tracing::warn!("L2 invalidation subscription lost; subscribing again");
            warned = true;
        }
        if nodes.len() == 1 {
            tokio::time::sleep(options.retry_every).await;
        }
    }
}

/// This process's lock token: pid and a random value drawn once, so a lock taken here is
/// released only from here.
fn lock_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{}-{nanos:08x}", std::process::id())
    })
}

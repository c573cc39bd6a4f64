//! Coffer's shared L2 DEK cache on Redis.
//!
//! [`RedisL2`] implements [`coffer_keys::L2Backend`]: a byte store with sliding expiry (`GETEX`)
//! and a short self-expiring lock (`SET NX PX` with a random token, released by a
//! compare-and-delete script). It holds only what the keyring gives it: entries sealed under the
//! cache key with names that are HMACs (docs/FORMAT.md §7). There is no cryptography here.
//!
//! Redis being down is not an error for the application: every call has a short timeout, fails
//! with [`L2Error`], and the keyring falls back to the KEK provider. The connection is re-made in
//! the background (or, if Redis was down at start, tried again at most once a second).
//!
//! ```no_run
//! # async fn demo() -> coffer_keys::Result<()> {
//! let l2 = coffer_redis::RedisL2::new("redis://127.0.0.1:6379", Default::default())?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use coffer_keys::{Error, InvalidationHandler, L2Backend, L2Error};
use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
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

struct State {
    conn: Option<ConnectionManager>,
    /// While Redis is failing, calls fail at once until this instant (a circuit breaker), so
    /// an outage costs the application one timeout per `retry_every`, not one per request.
    next_attempt: Instant,
}

/// The L2 cache on one Redis server (or a proxy in front of a cluster).
pub struct RedisL2 {
    client: redis::Client,
    options: RedisOptions,
    state: Mutex<State>,
    unlock: redis::Script,
}

impl fmt::Debug for RedisL2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: show only where it points.
        let info = self.client.get_connection_info();
        f.debug_struct("RedisL2")
            .field("addr", &info.addr().to_string())
            .finish_non_exhaustive()
    }
}

fn l2(e: impl fmt::Display) -> L2Error {
    L2Error(e.to_string())
}

impl RedisL2 {
    /// A cache on `url` (`redis://host:port[/db]`, `rediss://` for TLS). Does not connect yet:
    /// a Redis that is down at start is not an error.
    pub fn new(url: &str, options: RedisOptions) -> coffer_keys::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::config(format!("invalid Redis URL: {}", e.category())))?;
        Ok(RedisL2 {
            client,
            options,
            state: Mutex::new(State {
                conn: None,
                next_attempt: Instant::now(),
            }),
            // Delete the lock only if it still holds our token (it may have expired and been
            // taken by another process meanwhile).
            unlock: redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                 return redis.call('DEL', KEYS[1]) else return 0 end",
            ),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, L2Error> {
        let mut state = self.state.lock().await;
        if Instant::now() < state.next_attempt {
            return Err(L2Error("Redis unreachable; retrying shortly".into()));
        }
        if let Some(c) = &state.conn {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout))
            .set_response_timeout(Some(self.options.op_timeout))
            .set_number_of_retries(1)
            .set_max_delay(self.options.retry_every);
        let made = tokio::time::timeout(
            self.options.connect_timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await;
        match made {
            Ok(Ok(c)) => {
                state.conn = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => {
                state.next_attempt = Instant::now() + self.options.retry_every;
                Err(l2(e))
            }
            Err(_) => {
                state.next_attempt = Instant::now() + self.options.retry_every;
                Err(L2Error("Redis connection timed out".into()))
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
        let mut conn = self.conn().await?;
        let mut invocation = self.unlock.key(name);
        invocation.arg(lock_token());
        let call = invocation.invoke_async::<i64>(&mut conn);
        let r = tokio::time::timeout(self.options.op_timeout, call).await;
        self.settle(r).map(|_| ())
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
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(listen(self.client.clone(), self.options, on_invalidate));
        }
    }

    async fn delete(&self, names: &[String]) -> Result<(), L2Error> {
        if names.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("DEL");
        for n in names {
            cmd.arg(n);
        }
        self.run::<i64>(&cmd).await.map(|_| ())
    }
}

/// The pub/sub channel invalidations travel on.
pub const INVALIDATION_CHANNEL: &str = "coffer:invalidate";

/// Runs a subscription until the handler says stop, reconnecting after failures.
async fn listen(client: redis::Client, options: RedisOptions, handler: InvalidationHandler) {
    let mut warned = false;
    loop {
        let sub =
            tokio::time::timeout(options.connect_timeout * 2, client.get_async_pubsub()).await;
        let mut pubsub = match sub {
            Ok(Ok(mut p)) => match p.subscribe(INVALIDATION_CHANNEL).await {
                Ok(()) => {
                    if warned {
                        tracing::info!("L2 invalidation channel subscribed again");
                        warned = false;
                    }
                    p
                }
                Err(_) => {
                    if !handler(Vec::new()) {
                        return;
                    }
                    tokio::time::sleep(options.retry_every).await;
                    continue;
                }
            },
            _ => {
                if !warned {
                    tracing::warn!("cannot subscribe to L2 invalidations; retrying");
                    warned = true;
                }
                if !handler(Vec::new()) {
                    return;
                }
                tokio::time::sleep(options.retry_every).await;
                continue;
            }
        };
        let mut messages = pubsub.on_message();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
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
                }
            }
        }
        tokio::time::sleep(options.retry_every).await;
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

//! The PostgreSQL key store's invalidation bus: `NOTIFY` on one channel to publish, a
//! `LISTEN`ing connection per subscribed keyring to receive (coffer_keys::bus). SQLite stores
//! have none: their processes share a file, not a server, and rely on the caches' TTLs or Redis.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coffer_keys::bus::{
    BusEvent, BusHandler, Invalidation, InvalidationBus, decode_notice, encode_notice,
};
use sqlx::AnyPool;
use sqlx::postgres::PgListener;

/// The channel every Coffer process of a database listens on; notices carry their store id.
pub const CHANNEL: &str = "coffer_key_invalidations";

/// How long a subscription waits for a notice before telling its handler it is idle, and
/// between attempts to connect again after the connection was lost.
const TICK: Duration = Duration::from_secs(1);

/// A connection URL, which may hold a password: never shown.
#[derive(Clone)]
pub(crate) struct Url(pub(crate) Arc<str>);

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("postgres://…")
    }
}

/// `NOTIFY`/`LISTEN` on the key store's own database.
#[derive(Debug)]
pub(crate) struct PgBus {
    pub(crate) pool: AnyPool,
    pub(crate) url: Url,
}

#[async_trait]
impl InvalidationBus for PgBus {
    async fn publish(&self, notice: &Invalidation) -> Result<(), String> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(encode_notice(notice))
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| format!("NOTIFY on the key store failed: {e}"))
    }

    fn subscribe(&self, handler: BusHandler) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(listen(self.url.clone(), handler));
        }
    }
}

/// Keeps a `LISTEN` connection until `handler` says stop: connects (again after any loss,
/// telling the handler [`BusEvent::Resumed`], since notices sent meanwhile are gone), passes every
/// notice on, and sends [`BusEvent::Idle`] every [`TICK`] without one.
async fn listen(url: Url, handler: BusHandler) {
    let mut connected_before = false;
    let mut warned = false;
    loop {
        let mut listener = match connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot LISTEN for key invalidations; retrying");
                    warned = true;
                }
                if !handler(BusEvent::Idle) {
                    return;
                }
                tokio::time::sleep(TICK).await;
                continue;
            }
        };
        if connected_before {
            tracing::info!("listening for key invalidations again; dropping cached keys");
            if !handler(BusEvent::Resumed) {
                return;
            }
        }
        connected_before = true;
        warned = false;
        loop {
            match tokio::time::timeout(TICK, listener.try_recv()).await {
                Ok(Ok(Some(n))) => {
                    let Some(notice) = decode_notice(n.payload()) else {
                        continue;
                    };
                    if !handler(BusEvent::Notice(notice)) {
                        return;
                    }
                }
                // The connection was lost (None) or failed: make a new one.
                Ok(Ok(None) | Err(_)) => break,
                Err(_) => {
                    if !handler(BusEvent::Idle) {
                        return;
                    }
                }
            }
        }
    }
}

async fn connect(url: &Url) -> Result<PgListener, sqlx::Error> {
    let mut listener = tokio::time::timeout(TICK * 5, PgListener::connect(&url.0))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

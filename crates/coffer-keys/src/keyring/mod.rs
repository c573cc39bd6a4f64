//! The keyring: what applications (and the service, the file and column layers) call to encrypt
//! and decrypt with scoped, versioned DEKs.
//!
//! Writes use the scope's active version; reads use the version named in the ciphertext header.
//! Keys come through two cache tiers: L1 in process (moka: TTL, size bound, keys zeroized when
//! the last handle drops; single-flight loads, and a hot entry reloaded in the background
//! before it expires) and an optional shared L2 ([`crate::cache`]). A miss in
//! both reaches the KEK provider. Encryptions are counted in blocks leased from the key store;
//! passing the configured limit or age rotates the scope automatically.
//!
//! The module is split along its seams: [`KeyringConfig`] and the counters (`config`), the
//! unwrapped keys and their leases (`live`), scope and version lifecycle (`lifecycle`), KEK
//! rotation (`kek_rotation`), key resolution through the cache tiers (`resolve`), the write path
//! that leases encryptions (`write`), field operations (`fields`) and [`LeasedFieldKey`]
//! (`leased`).

mod check;
mod config;
mod fields;
mod kek_rotation;
mod leased;
mod lifecycle;
mod live;
mod notify;
mod resolve;
mod scale;
mod tombstones;
mod trail;
mod write;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coffer_core::{KeyVersion, ScopeId};
use moka::future::Cache;

use crate::audit::{AuditEvent, Operation};
use crate::cache::{CacheKey, L2Backend};
use crate::error::{Error, Result};
use crate::kek::{KekId, KekRing};
use crate::store::KeyStore;

pub use check::DekCheck;
pub use config::{KeyringConfig, Stats, StatsSnapshot};
pub use fields::{BatchItem, BlindIndexSpec};
pub use kek_rotation::RewrapReport;
pub use leased::LeasedFieldKey;
pub(crate) use live::{ActivePointer, Flights, LiveDek};
pub use scale::BULK_BATCH;
pub use tombstones::TombstoneReport;
pub use trail::{AUDIT_SCOPE, RESERVED_PREFIX, write_anchor};

/// The algorithm label bound into every DEK's metadata tag: a Coffer v1 DEK, used only through
/// HKDF subkeys (docs/FORMAT.md §4).
pub const DEK_ALGORITHM: &str = "coffer-dek-v1";

fn bump(a: &AtomicU64, name: &'static str) {
    a.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(name).increment(1);
}

struct L2 {
    backend: Arc<dyn L2Backend>,
    key: CacheKey,
    degraded: AtomicBool,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    keks: KekRing,
    store_id: [u8; 16],
    epoch: u32,
    l1: Cache<(ScopeId, KeyVersion), Arc<LiveDek>>,
    active: moka::sync::Cache<ScopeId, ActivePointer>,
    /// Cold L1 loads under way, one per (scope, version).
    l1_flights: Flights<(ScopeId, KeyVersion), Arc<LiveDek>>,
    /// Active-pointer reads under way, one per scope.
    pointer_flights: Flights<ScopeId, ActivePointer>,
    l2: Option<L2>,
    /// The key store's invalidation bus, if it has one (PostgreSQL LISTEN/NOTIFY).
    bus: Option<Arc<dyn crate::bus::InvalidationBus>>,
    config: KeyringConfig,
    stats: Stats,
    /// Bumped whenever an active pointer or a key is dropped from this process's caches
    /// (rotation, destroy, compromise, restore, retire, another process's invalidation,
    /// `clear_l1`): see [`Keyring::generation`].
    generation: AtomicU64,
    /// KEK ids this process has proven to be the key the store knows under that id (its
    /// canary opened, or a DEK wrapped under it did): see [`Keyring::prove_kek`].
    proven: std::sync::Mutex<std::collections::HashSet<KekId>>,
    /// Awaited by a cold load between reading the DEK record and unwrapping it: see
    /// [`Keyring::set_load_hook`].
    load_hook: std::sync::Mutex<Option<LoadHook>>,
    /// The store's audit chain key, opened (or created) on the first append.
    chain: tokio::sync::OnceCell<Arc<crate::audit::ChainKey>>,
    /// What this process exported of the audit trail's head.
    head: trail::HeadExport,
}

/// A hook a cold key load awaits after reading the DEK record from the store, before it
/// unwraps the key and fills the caches (tests place a concurrent destroy there).
pub type LoadHook = Arc<
    dyn Fn(&ScopeId, KeyVersion) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

impl Inner {
    fn invalidate_pointer(&self, scope: &ScopeId) {
        self.generation.fetch_add(1, Ordering::Release);
        self.active.invalidate(scope);
    }
}

/// Resolves scoped, versioned DEKs and encrypts with them. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("store_id", &hex::encode(self.inner.store_id))
            .field("keks", &self.inner.keks)
            .field("l2", &self.inner.l2.is_some())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring over `store` with the KEKs in `keks`, without an L2 cache.
    pub async fn new(
        store: Arc<dyn KeyStore>,
        keks: KekRing,
        config: KeyringConfig,
    ) -> Result<Self> {
        Self::build(store, keks, config, None).await
    }

    /// A keyring with an L2 cache sealed under `cache_key`.
    pub async fn with_l2(
        store: Arc<dyn KeyStore>,
        keks: KekRing,
        config: KeyringConfig,
        backend: Arc<dyn L2Backend>,
        cache_key: CacheKey,
    ) -> Result<Self> {
        let l2 = L2 {
            backend,
            key: cache_key,
            degraded: AtomicBool::new(false),
        };
        Self::build(store, keks, config, Some(l2)).await
    }

    async fn build(
        store: Arc<dyn KeyStore>,
        keks: KekRing,
        config: KeyringConfig,
        l2: Option<L2>,
    ) -> Result<Self> {
        if config.lease_block == 0 || config.max_encryptions == 0 {
            return Err(Error::config(
                "lease_block and max_encryptions must be at least 1",
            ));
        }
        let info = store.info().await?;
        let bus = store.invalidation_bus();
        let l1 = Cache::builder()
            .max_capacity(config.l1_capacity)
            .time_to_live(config.l1_ttl)
            .build();
        let active = moka::sync::Cache::builder()
            .max_capacity(config.l1_capacity)
            .time_to_live(config.active_ttl)
            .build();
        let keyring = Keyring {
            inner: Arc::new(Inner {
                store,
                keks,
                store_id: info.store_id,
                epoch: info.epoch,
                l1,
                active,
                l1_flights: Flights::default(),
                pointer_flights: Flights::default(),
                l2,
                bus,
                config,
                stats: Stats::default(),
                generation: AtomicU64::new(0),
                proven: std::sync::Mutex::default(),
                load_hook: std::sync::Mutex::default(),
                chain: tokio::sync::OnceCell::new(),
                head: trail::HeadExport::default(),
            }),
        };
        if let Some(l2) = &keyring.inner.l2 {
            let weak = Arc::downgrade(&keyring.inner);
            l2.backend.subscribe(Arc::new(move |names: Vec<String>| {
                let Some(inner) = weak.upgrade() else {
                    return false;
                };
                if !names.is_empty() {
                    Self::apply_invalidation(&inner, &names);
                }
                true
            }));
        }
        if let Some(bus) = &keyring.inner.bus {
            Self::listen(&keyring.inner, bus);
        }
        Ok(keyring)
    }

    /// The key store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.inner.store
    }

    /// The configured KEKs.
    pub fn keks(&self) -> &KekRing {
        &self.inner.keks
    }

    /// The store id bound into every wrap.
    pub fn store_id(&self) -> &[u8; 16] {
        &self.inner.store_id
    }

    /// Cache and KEK counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The settings.
    pub fn config(&self) -> &KeyringConfig {
        &self.inner.config
    }

    fn event(&self, op: Operation) -> AuditEvent {
        AuditEvent::new(self.inner.config.actor.clone(), op)
    }

    /// A counter that changes whenever this process drops a cached active pointer or key:
    /// rotation, destroy, compromise, restore, retirement, an invalidation published by another
    /// process, [`clear_l1`](Self::clear_l1). A caller that keeps a key from
    /// [`leased_field_key`](Self::leased_field_key) or [`field_key_at`](Self::field_key_at)
    /// drops it when this changes.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Installs (or with `None` removes) a hook that every cold key load of this keyring
    /// awaits after reading the DEK record and before unwrapping it and filling L1 and L2.
    /// For tests that interleave a load with a destroy deterministically; production code
    /// never sets one.
    #[doc(hidden)]
    pub fn set_load_hook(&self, hook: Option<LoadHook>) {
        if let Ok(mut h) = self.inner.load_hook.lock() {
            *h = hook;
        }
    }

    /// How many column keys and blind-index keys the cached DEK of `scope` `version` keeps
    /// (`None` when that DEK is not in L1): each stays at most
    /// [`KeyringConfig::derived_keys`]. A diagnostic (and what the tests of the bound read).
    pub async fn derived_keys_cached(
        &self,
        scope: &ScopeId,
        version: KeyVersion,
    ) -> Option<(usize, usize)> {
        self.inner
            .l1
            .get(&(scope.clone(), version))
            .await
            .map(|live| live.derived_len())
    }

    /// How many DEKs (L1) and active-version pointers this process caches now, after the
    /// cache's pending evictions ran: each stays at most [`KeyringConfig::l1_capacity`],
    /// however many scopes the process touches. A diagnostic (and what the tests of the bound
    /// read).
    pub async fn l1_entries(&self) -> (u64, u64) {
        self.inner.l1.run_pending_tasks().await;
        self.inner.active.run_pending_tasks();
        (self.inner.l1.entry_count(), self.inner.active.entry_count())
    }

    /// Drops every cached key of this process (L1 only; other processes keep theirs until
    /// their TTLs pass).
    pub fn clear_l1(&self) {
        self.inner.generation.fetch_add(1, Ordering::Release);
        self.inner.l1.invalidate_all();
        self.inner.active.invalidate_all();
    }
}

/// The age past which a cached entry that is still being used is reloaded in the background:
/// 80 % of its lifetime (`l1_ttl`, `active_ttl`), so that a hot key never expires under load
/// with every request waiting for one reload.
pub(super) fn refresh_after(ttl: Duration) -> Duration {
    // Integer arithmetic: this runs on every write (`mul_f64` goes through a float and its
    // range checks).
    ttl / 5 * 4
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

//! The keyring: what applications (and the service, the file and column layers) call to encrypt
//! and decrypt with scoped, versioned DEKs.
//!
//! Writes use the scope's active version; reads use the version named in the ciphertext header.
//! Keys come through two cache tiers: L1 in process (moka: TTL, size bound, single-flight, keys
//! zeroized when the last handle drops) and an optional shared L2 ([`crate::cache`]). A miss in
//! both reaches the KEK provider. Encryptions are counted in blocks leased from the key store;
//! passing the configured limit or age rotates the scope automatically.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coffer_core::wrap::{self, KeyMetadata};
use coffer_core::{
    BlindIndexKey, ColumnId, Dek, FieldContext, FieldKey, Header, KeyVersion, Normalizer, ScopeId,
    Suite,
};
use moka::future::Cache;

use crate::audit::{AuditEvent, Operation};
use crate::cache::{CacheKey, EntryBinding, L2Backend};
use crate::error::{Error, Result};
use crate::kek::{KekId, KekRing, WrapContext};
use crate::store::{CreateOutcome, DekRecord, DekState, KeyStore, NewDek, Rewrap, RotateOutcome};

/// DEKs unwrapped and re-wrapped at once during a KEK rotation.
const REWRAP_CONCURRENCY: usize = 16;

/// The algorithm label bound into every DEK's metadata tag: a Coffer v1 DEK, used only through
/// HKDF subkeys (docs/FORMAT.md §4).
pub const DEK_ALGORITHM: &str = "coffer-dek-v1";

/// Keyring settings. `Default` gives the documented defaults (docs/KEYS.md §5).
#[derive(Clone, Debug)]
pub struct KeyringConfig {
    /// L1 time to live (default 60 s).
    pub l1_ttl: Duration,
    /// L1 size bound in DEKs (default 10 000).
    pub l1_capacity: u64,
    /// How long a process trusts its cached "active version" pointer (default 5 s).
    pub active_ttl: Duration,
    /// L2 sliding time to live (default 10 min).
    pub l2_ttl: Duration,
    /// L2 absolute lifetime, counted from the KEK unwrap (default 1 h).
    pub l2_max_lifetime: Duration,
    /// How long an L2 miss waits for another process's unwrap before unwrapping itself.
    pub l2_lock_wait: Duration,
    /// Encryptions per DEK version before automatic rotation (default 2^30).
    pub max_encryptions: u64,
    /// Age of an active version before automatic rotation (`None`: never by age).
    pub max_age: Option<Duration>,
    /// Encryptions leased from the store at a time (default 16 384; a crash over-counts by at
    /// most this many).
    pub lease_block: u64,
    /// Record every KEK unwrap in the audit trail (default on).
    pub audit_unwraps: bool,
    /// Who this process is, for the audit trail.
    pub actor: String,
}

impl Default for KeyringConfig {
    fn default() -> Self {
        KeyringConfig {
            l1_ttl: Duration::from_secs(60),
            l1_capacity: 10_000,
            active_ttl: Duration::from_secs(5),
            l2_ttl: Duration::from_secs(600),
            l2_max_lifetime: Duration::from_secs(3600),
            l2_lock_wait: Duration::from_millis(1000),
            max_encryptions: coffer_core::DEFAULT_ENCRYPTION_LIMIT,
            max_age: None,
            lease_block: 16_384,
            audit_unwraps: true,
            actor: "coffer".to_owned(),
        }
    }
}

/// Counters of cache and KEK traffic since the keyring was built (also exported through the
/// `metrics` facade as `coffer_keys_*`).
#[derive(Debug, Default)]
pub struct Stats {
    /// L1 hits.
    pub l1_hits: AtomicU64,
    /// L1 misses.
    pub l1_misses: AtomicU64,
    /// L2 hits.
    pub l2_hits: AtomicU64,
    /// L2 misses.
    pub l2_misses: AtomicU64,
    /// L2 operations that failed (L2 unreachable).
    pub l2_errors: AtomicU64,
    /// DEKs unwrapped by a KEK provider.
    pub kek_unwraps: AtomicU64,
    /// DEKs wrapped by a KEK provider.
    pub kek_wraps: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// L1 hits.
    pub l1_hits: u64,
    /// L1 misses.
    pub l1_misses: u64,
    /// L2 hits.
    pub l2_hits: u64,
    /// L2 misses.
    pub l2_misses: u64,
    /// L2 failures.
    pub l2_errors: u64,
    /// KEK unwraps.
    pub kek_unwraps: u64,
    /// KEK wraps.
    pub kek_wraps: u64,
}

impl Stats {
    fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            l1_hits: l(&self.l1_hits),
            l1_misses: l(&self.l1_misses),
            l2_hits: l(&self.l2_hits),
            l2_misses: l(&self.l2_misses),
            l2_errors: l(&self.l2_errors),
            kek_unwraps: l(&self.kek_unwraps),
            kek_wraps: l(&self.kek_wraps),
        }
    }
}

fn bump(a: &AtomicU64, name: &'static str) {
    a.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(name).increment(1);
}

/// An unwrapped DEK version held in L1, with the column keys derived from it. Dropping the last
/// handle zeroizes the DEK (and the derived keys, which AWS-LC cleanses).
pub(crate) struct LiveDek {
    pub(crate) dek: Dek,
    version: KeyVersion,
    columns: RwLock<HashMap<(ColumnId, Suite), Arc<FieldKey>>>,
    indexes: RwLock<HashMap<IndexCacheKey, Arc<BlindIndexKey>>>,
    lease: Mutex<Lease>,
    /// Held by the one task that leases the next block when this lease runs out: the others
    /// that find it used up wait for that block instead of each leasing a block of their own,
    /// which under load burned the version's encryption limit 20–30 times faster than values
    /// were sealed and queued every request behind the store's connection pool.
    refill: tokio::sync::Mutex<()>,
    /// Set while a background task leases the next block ahead of need.
    prefetching: AtomicBool,
}

type IndexCacheKey = (ColumnId, String, u16, Vec<Normalizer>);

/// The encryptions this process may still make under a version. Only counts matter: the key
/// store's total is what bounds the version, and every block counted here was added to it.
#[derive(Default)]
struct Lease {
    /// Left of the blocks in use.
    left: u64,
    /// The highest total the key store returned for a block this process leased.
    end: u64,
    /// Leased ahead in the background, not yet in use (0: none).
    spare: u64,
}

impl LiveDek {
    fn new(dek: Dek, version: KeyVersion) -> Self {
        LiveDek {
            dek,
            version,
            columns: RwLock::default(),
            indexes: RwLock::default(),
            lease: Mutex::default(),
            refill: tokio::sync::Mutex::new(()),
            prefetching: AtomicBool::new(false),
        }
    }

    fn field_key(&self, scope: &ScopeId, column: &ColumnId, suite: Suite) -> Result<Arc<FieldKey>> {
        let key = (column.clone(), suite);
        if let Ok(map) = self.columns.read()
            && let Some(k) = map.get(&key)
        {
            return Ok(Arc::clone(k));
        }
        let fk = Arc::new(FieldKey::new(
            &self.dek,
            self.version,
            suite,
            scope,
            column,
        )?);
        if let Ok(mut map) = self.columns.write() {
            map.entry(key).or_insert_with(|| Arc::clone(&fk));
        }
        Ok(fk)
    }

    /// The blind-index key of `spec` under this version, derived once and kept as long as
    /// the DEK itself (dropped with it on eviction, destroy or compromise).
    fn index_key(&self, spec: &BlindIndexSpec) -> Result<Arc<BlindIndexKey>> {
        let key = (
            spec.column.clone(),
            spec.name.clone(),
            spec.bits,
            spec.normalizers.clone(),
        );
        if let Ok(map) = self.indexes.read()
            && let Some(k) = map.get(&key)
        {
            return Ok(Arc::clone(k));
        }
        let k = Arc::new(spec.key(&self.dek)?);
        if let Ok(mut map) = self.indexes.write() {
            map.entry(key).or_insert_with(|| Arc::clone(&k));
        }
        Ok(k)
    }

    /// Takes `n` encryptions from the current lease; `false` if fewer than `n` are left.
    fn take(&self, n: u64) -> bool {
        let Ok(mut l) = self.lease.lock() else {
            return false;
        };
        if l.left >= n {
            l.left -= n;
            return true;
        }
        // The block leased ahead joins what is left.
        if l.left + l.spare >= n {
            l.left = l.left + l.spare - n;
            l.spare = 0;
            return true;
        }
        false
    }

    fn refill(&self, total: u64, block: u64) {
        if let Ok(mut l) = self.lease.lock()
            && total > l.end
        {
            l.end = total;
            l.left += block;
        }
    }

    fn leased(&self) -> u64 {
        self.lease.lock().map(|l| l.end).unwrap_or(u64::MAX)
    }

    /// Whether less than half a block is left with nothing leased ahead.
    fn low(&self, block: u64) -> bool {
        self.lease
            .lock()
            .is_ok_and(|l| l.spare == 0 && l.left < block / 2)
    }

    /// Whether the next block should be leased now: [`low`](Self::low), and no task is
    /// leasing one already.
    fn wants_spare(&self, block: u64) -> bool {
        self.low(block) && !self.prefetching.swap(true, Ordering::AcqRel)
    }

    fn add_spare(&self, total: u64, block: u64) {
        if let Ok(mut l) = self.lease.lock()
            && total > l.end
        {
            l.end = total;
            l.spare += block;
        }
    }
}

/// What a process remembers, for at most `active_ttl`, about a scope's active version.
#[derive(Clone)]
pub(crate) struct ActivePointer {
    pub(crate) version: KeyVersion,
    leased: u64,
    /// When the version passes `max_age`, on this process's monotonic clock (computed from the
    /// database clock when the pointer was read).
    age_deadline: Option<Instant>,
    /// The unwrapped DEK, once this process has it: the write path then needs one lookup.
    live: Option<Arc<LiveDek>>,
    /// The versions searches cover (active and decrypt-only, active first), once read: kept
    /// and invalidated with the pointer, so a search needs no key-store query.
    searchable: Option<Arc<Vec<KeyVersion>>>,
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
    l2: Option<L2>,
    config: KeyringConfig,
    stats: Stats,
    /// Bumped whenever an active pointer or a key is dropped from this process's caches
    /// (rotation, destroy, compromise, restore, retire, another process's invalidation,
    /// `clear_l1`): see [`Keyring::generation`].
    generation: AtomicU64,
}

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

/// What a KEK rotation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// DEKs re-wrapped by this run.
    pub rewrapped: u64,
    /// DEKs that another process re-wrapped (or changed) first.
    pub skipped: u64,
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
                l2,
                config,
                stats: Stats::default(),
                generation: AtomicU64::new(0),
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

    // ---- KEK registry ------------------------------------------------------------------

    /// The scope name canaries are bound to (not a valid application scope: it holds no data).
    const CANARY_SCOPE: &'static str = "coffer:kek-canary";

    fn canary_context<'a>(&'a self, scope: &'a ScopeId, kek: &KekId) -> WrapContext<'a> {
        WrapContext {
            store_id: &self.inner.store_id,
            scope,
            version: KeyVersion(kek.version()),
            key_id: &[0; 16],
        }
    }

    /// Registers every configured KEK the store does not know yet: wraps a random canary key
    /// under it, so that later a wrong key material for this KEK id is reported as such.
    /// Returns the ids registered now.
    pub async fn register_keks(&self) -> Result<Vec<KekId>> {
        let known: Vec<KekId> = self
            .inner
            .store
            .keks()
            .await?
            .into_iter()
            .map(|k| k.id)
            .collect();
        let scope = ScopeId::new(Self::CANARY_SCOPE)?;
        let mut added = Vec::new();
        for id in self.inner.keks.ids() {
            if known.contains(id) {
                continue;
            }
            let kek = self.inner.keks.get(id)?;
            let canary = Dek::generate()?;
            let ctx = self.canary_context(&scope, id);
            let wrapped = kek.wrap(&canary, &ctx).await?;
            let check =
                wrap::metadata_tag(&canary, &self.metadata(&scope, ctx.version, ctx.key_id))?;
            let rec = crate::store::KekRecord {
                id: id.clone(),
                kind: kek.kind().to_owned(),
                canary_wrapped: wrapped,
                canary_check: check.to_vec(),
                registered_at_us: 0,
            };
            if self.inner.store.register_kek(&rec).await? {
                self.audit(
                    self.event(Operation::KekRegister)
                        .kek(id.to_string())
                        .detail(format!("provider {}", kek.kind())),
                )
                .await?;
                added.push(id.clone());
            }
        }
        Ok(added)
    }

    /// Checks every configured KEK that the store knows against its canary: `Ok` if it opens
    /// the canary, [`Error::WrongKek`] if it is other key material, provider errors as they come.
    pub async fn check_keks(&self) -> Result<Vec<(KekId, Result<()>)>> {
        let scope = ScopeId::new(Self::CANARY_SCOPE)?;
        let mut out = Vec::new();
        for rec in self.inner.store.keks().await? {
            let Ok(kek) = self.inner.keks.get(&rec.id) else {
                continue;
            };
            let ctx = self.canary_context(&scope, &rec.id);
            let result = match kek.unwrap(&rec.canary_wrapped, &ctx).await {
                Ok(canary) => wrap::verify_metadata_tag(
                    &canary,
                    &self.metadata(&scope, ctx.version, ctx.key_id),
                    &rec.canary_check,
                )
                .map_err(|_| Error::WrongKek {
                    kek: rec.id.to_string(),
                }),
                Err(Error::Crypto(_)) => Err(Error::WrongKek {
                    kek: rec.id.to_string(),
                }),
                Err(e) => Err(e),
            };
            out.push((rec.id, result));
        }
        Ok(out)
    }

    /// Appends an event to the audit trail (for operations made outside the keyring, such as
    /// `coffer keys init`).
    pub async fn record(&self, event: AuditEvent) -> Result<()> {
        self.audit(event).await
    }

    // ---- scopes and versions ------------------------------------------------------------

    /// Makes a new DEK for `scope` at `version`, wrapped under the primary KEK.
    async fn new_dek(&self, scope: &ScopeId, version: KeyVersion) -> Result<(Dek, NewDek)> {
        let dek = Dek::generate()?;
        let mut key_id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut key_id)
            .map_err(|_| coffer_core::Error::Module("random generator"))?;
        let kek_id = self.inner.keks.primary_id().clone();
        let kek = self.inner.keks.primary()?;
        let ctx = WrapContext {
            store_id: &self.inner.store_id,
            scope,
            version,
            key_id: &key_id,
        };
        let wrapped = kek.wrap(&dek, &ctx).await?;
        bump(&self.inner.stats.kek_wraps, "coffer_keys_kek_wraps_total");
        let check = wrap::metadata_tag(&dek, &self.metadata(scope, version, &key_id))?;
        let new = NewDek {
            scope: scope.clone(),
            version,
            key_id,
            wrapped,
            kek: kek_id,
            wrap_algorithm: kek.algorithm().to_owned(),
            check: check.to_vec(),
        };
        Ok((dek, new))
    }

    pub(crate) fn metadata<'a>(
        &'a self,
        scope: &'a ScopeId,
        version: KeyVersion,
        key_id: &'a [u8; 16],
    ) -> KeyMetadata<'a> {
        KeyMetadata {
            store_id: &self.inner.store_id,
            scope,
            version,
            key_id,
            algorithm: DEK_ALGORITHM,
        }
    }

    /// Creates a scope with its first DEK version. [`Error::ScopeExists`] if it exists (or was
    /// destroyed: a destroyed scope stays a tombstone).
    pub async fn create_scope(&self, scope: &ScopeId) -> Result<DekRecord> {
        if self.inner.store.scope(scope).await?.is_some() {
            return Err(Error::ScopeExists(scope.as_str().to_owned()));
        }
        match self.create_or_get(scope).await? {
            CreateOutcome::Created(rec) => Ok(rec),
            CreateOutcome::Existing(_) => Err(Error::ScopeExists(scope.as_str().to_owned())),
        }
    }

    /// The scope's active version, creating the scope if it does not exist (applications that
    /// make scopes per tenant or per table on first use call this).
    pub async fn ensure_scope(&self, scope: &ScopeId) -> Result<KeyVersion> {
        match self.inner.store.active_dek(scope).await? {
            Some(rec) => Ok(rec.version),
            None => {
                if let Some(s) = self.inner.store.scope(scope).await?
                    && s.is_destroyed()
                {
                    return Err(Error::Destroyed {
                        scope: scope.as_str().to_owned(),
                        version: None,
                    });
                }
                match self.create_or_get(scope).await? {
                    CreateOutcome::Created(r) | CreateOutcome::Existing(r) => Ok(r.version),
                }
            }
        }
    }

    async fn create_or_get(&self, scope: &ScopeId) -> Result<CreateOutcome> {
        let version = KeyVersion(self.inner.store.max_version(scope).await? + 1);
        let (dek, new) = self.new_dek(scope, version).await?;
        let outcome = self.inner.store.create_scope(&new).await?;
        if let CreateOutcome::Created(rec) = &outcome {
            self.keep(scope, version, dek).await;
            self.audit(
                self.event(Operation::Create)
                    .scope(scope.as_str())
                    .version(rec.version.0)
                    .kek(rec.kek.to_string()),
            )
            .await?;
        }
        Ok(outcome)
    }

    /// Rotates a scope: a new DEK version becomes active now; the old one becomes decrypt-only.
    /// Concurrent rotations of one scope make exactly one new version (compare-and-swap).
    pub async fn rotate(&self, scope: &ScopeId) -> Result<DekRecord> {
        let current = self.active_record(scope).await?;
        self.rotate_from(scope, current.version, "requested").await
    }

    /// Compare-and-swap rotation: rotates only if `expected` is still the active version, and
    /// otherwise returns the version that is active now. Many processes that all decided to
    /// rotate away from one version (a counter limit, a compromise) make one new version.
    pub async fn rotate_if_active(
        &self,
        scope: &ScopeId,
        expected: KeyVersion,
    ) -> Result<DekRecord> {
        self.rotate_from(scope, expected, "requested").await
    }

    async fn rotate_from(
        &self,
        scope: &ScopeId,
        expected: KeyVersion,
        why: &str,
    ) -> Result<DekRecord> {
        let version = KeyVersion(self.inner.store.max_version(scope).await? + 1);
        let (dek, new) = self.new_dek(scope, version).await?;
        let rec = match self.inner.store.rotate(expected, &new).await? {
            RotateOutcome::Rotated(rec) => {
                self.keep(scope, version, dek).await;
                self.audit(
                    self.event(Operation::Rotate)
                        .scope(scope.as_str())
                        .version(rec.version.0)
                        .kek(rec.kek.to_string())
                        .detail(format!("{expected} is decrypt-only; {why}")),
                )
                .await?;
                rec
            }
            RotateOutcome::Lost(rec) => rec,
        };
        self.inner.invalidate_pointer(scope);
        Ok(rec)
    }

    /// Puts a DEK this process just created (and committed) into L1, sparing a KEK call on
    /// its first use.
    async fn keep(&self, scope: &ScopeId, version: KeyVersion, dek: Dek) {
        let live = Arc::new(LiveDek::new(dek, version));
        self.inner.l1.insert((scope.clone(), version), live).await;
    }

    async fn active_record(&self, scope: &ScopeId) -> Result<DekRecord> {
        match self.inner.store.active_dek(scope).await? {
            Some(r) => Ok(r),
            None => Err(self.missing(scope, None).await),
        }
    }

    /// The error for a scope (or version) that has no usable key.
    async fn missing(&self, scope: &ScopeId, version: Option<KeyVersion>) -> Error {
        match self.inner.store.scope(scope).await {
            Err(e) => e,
            Ok(None) => Error::UnknownScope(scope.as_str().to_owned()),
            Ok(Some(s)) if s.is_destroyed() => Error::Destroyed {
                scope: scope.as_str().to_owned(),
                version: None,
            },
            Ok(Some(_)) => match version {
                Some(version) => Error::UnknownVersion {
                    scope: scope.as_str().to_owned(),
                    version,
                },
                None => Error::State(format!(
                    "scope '{scope}' has no active key version; rotate it with `coffer keys rotate {scope}`"
                )),
            },
        }
    }

    /// Emergency rotation (seed 002): a new version becomes active at once, every older version
    /// is dropped from L1 and L2 (other processes re-read it from the store and re-check it on
    /// their next miss), and an alerting `compromise` event is audited with the versions to
    /// re-encrypt first. Returns the new active version.
    pub async fn compromise(&self, scope: &ScopeId, reason: &str) -> Result<DekRecord> {
        let deks = self.inner.store.deks(scope).await?;
        let current = self.active_record(scope).await?;
        let rec = self
            .rotate_from(scope, current.version, "compromise")
            .await?;
        let old: Vec<KeyVersion> = deks
            .iter()
            .filter(|d| d.version != rec.version && d.state != DekState::Destroyed)
            .map(|d| d.version)
            .collect();
        self.forget(scope, &old).await;
        let listed: Vec<String> = old.iter().map(ToString::to_string).collect();
        self.audit(
            self.event(Operation::Compromise)
                .scope(scope.as_str())
                .version(rec.version.0)
                .detail(format!(
                    "ALERT: {reason}; re-encrypt data under {} first; new active {}",
                    listed.join(", "),
                    rec.version
                )),
        )
        .await?;
        Ok(rec)
    }

    /// Records that the key store was restored from a backup (docs/KEYS.md §7.7): bumps the
    /// store epoch and skips every scope's next version number `gap` past any it had. Restart
    /// every process afterwards: each reads the epoch when its keyring is built, and entries
    /// cached in L2 under the old epoch are never read again. Returns the new epoch.
    pub async fn mark_restored(&self, gap: u32) -> Result<u32> {
        let epoch = self.inner.store.mark_restored(gap).await?;
        self.clear_l1();
        self.audit(self.event(Operation::Restore).detail(format!(
            "store epoch {epoch}; next versions skip {gap} numbers"
        )))
        .await?;
        Ok(epoch)
    }

    /// Drops versions of a scope from this process's L1 and from L2.
    async fn forget(&self, scope: &ScopeId, versions: &[KeyVersion]) {
        self.inner.invalidate_pointer(scope);
        for v in versions {
            self.inner.l1.invalidate(&(scope.clone(), *v)).await;
        }
        if let Some(l2) = &self.inner.l2 {
            let names: Vec<String> = versions
                .iter()
                .filter_map(|v| {
                    l2.key
                        .entry_name(&EntryBinding {
                            store_id: &self.inner.store_id,
                            epoch: self.inner.epoch,
                            scope,
                            version: *v,
                        })
                        .ok()
                })
                .collect();
            if let Err(e) = l2.backend.delete(&names).await {
                self.l2_failed(l2, &e.0);
            }
            if let Err(e) = l2.backend.publish_invalidation(&names).await {
                self.l2_failed(l2, &e.0);
            }
        }
    }

    /// Drops from L1 every entry whose L2 name is in `names` (an invalidation published by
    /// another process: destroy, compromise).
    fn apply_invalidation(inner: &Inner, names: &[String]) {
        let Some(l2) = &inner.l2 else {
            return;
        };
        let hit: Vec<(ScopeId, KeyVersion)> = inner
            .l1
            .iter()
            .map(|(k, _)| (*k).clone())
            .filter(|(scope, version)| {
                l2.key
                    .entry_name(&EntryBinding {
                        store_id: &inner.store_id,
                        epoch: inner.epoch,
                        scope,
                        version: *version,
                    })
                    .is_ok_and(|n| names.contains(&n))
            })
            .collect();
        for key in &hit {
            inner.invalidate_pointer(&key.0);
        }
        let l1 = inner.l1.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for key in hit {
                    l1.invalidate(&key).await;
                }
            });
        }
    }

    /// Crypto-shreds a scope: erases its wrapped DEKs, drops them from both caches and audits
    /// it. Data under the scope then fails with [`Error::Destroyed`]. Returns the number of
    /// versions that held a key.
    pub async fn destroy(&self, scope: &ScopeId) -> Result<u32> {
        let deks = self.inner.store.deks(scope).await?;
        if self.inner.store.scope(scope).await?.is_none() {
            return Err(Error::UnknownScope(scope.as_str().to_owned()));
        }
        let n = self.inner.store.destroy_scope(scope).await?;
        let versions: Vec<KeyVersion> = deks.iter().map(|d| d.version).collect();
        self.forget(scope, &versions).await;
        self.audit(
            self.event(Operation::Destroy)
                .scope(scope.as_str())
                .detail(format!("{n} key versions erased")),
        )
        .await?;
        Ok(n)
    }

    /// Re-wraps every live DEK that is not under the primary KEK, `batch` at a time, calling
    /// `progress` after each batch. Online (readers and writers go on), idempotent and
    /// resumable: rerun it after a crash and it continues where it stopped. Touches no data.
    pub async fn rotate_kek(
        &self,
        batch: usize,
        mut progress: impl FnMut(&RewrapReport),
    ) -> Result<RewrapReport> {
        let target = self.inner.keks.primary_id().clone();
        let kek = Arc::clone(self.inner.keks.primary()?);
        let mut report = RewrapReport::default();
        loop {
            let todo = self
                .inner
                .store
                .deks_not_under(&target, batch.max(1))
                .await?;
            if todo.is_empty() {
                break;
            }
            // Unwrap and re-wrap the batch a few DEKs at a time (KEK providers may be remote),
            // then commit all its new wraps in one transaction.
            let mut rewraps = Vec::with_capacity(todo.len());
            for chunk in todo.chunks(REWRAP_CONCURRENCY) {
                let mut set = tokio::task::JoinSet::new();
                for rec in chunk {
                    let rec = rec.clone();
                    let this = self.clone();
                    let kek = Arc::clone(&kek);
                    let target = target.clone();
                    set.spawn(async move { this.rewrap_one(&rec, &kek, &target).await });
                }
                while let Some(done) = set.join_next().await {
                    let rewrap =
                        done.map_err(|e| Error::State(format!("re-wrap task failed: {e}")))??;
                    rewraps.extend(rewrap);
                }
            }
            let changed = self.inner.store.replace_wraps(&rewraps).await?;
            report.rewrapped += changed;
            report.skipped += rewraps.len() as u64 - changed;
            let progressed = changed > 0;
            progress(&report);
            if !progressed {
                // Everything in this batch changed under us; read again.
                tokio::task::yield_now().await;
            }
        }
        self.audit(
            self.event(Operation::Rewrap)
                .kek(target.to_string())
                .detail(format!(
                    "{} DEKs re-wrapped ({} already done elsewhere)",
                    report.rewrapped, report.skipped
                )),
        )
        .await?;
        Ok(report)
    }

    async fn rewrap_one(
        &self,
        rec: &DekRecord,
        kek: &Arc<dyn crate::kek::KekProvider>,
        target: &KekId,
    ) -> Result<Option<Rewrap>> {
        let Some(wrapped) = rec.wrapped.as_deref() else {
            return Ok(None);
        };
        let ctx = WrapContext {
            store_id: &self.inner.store_id,
            scope: &rec.scope,
            version: rec.version,
            key_id: &rec.key_id,
        };
        // One Rewrap event covers the whole run; the unwraps are not audited one by one.
        let dek = self.unwrap_for(rec, wrapped, false).await?;
        let new = kek.wrap(&dek, &ctx).await?;
        bump(&self.inner.stats.kek_wraps, "coffer_keys_kek_wraps_total");
        Ok(Some(Rewrap {
            scope: rec.scope.clone(),
            version: rec.version,
            old: rec.kek.clone(),
            new: target.clone(),
            wrapped: new,
            wrap_algorithm: kek.algorithm().to_owned(),
        }))
    }

    async fn audit(&self, event: AuditEvent) -> Result<()> {
        self.inner.store.append_audit(&event).await.map(|_| ())
    }

    // ---- key resolution ---------------------------------------------------------------

    /// The active version for writes, from the short-lived pointer cache.
    pub(crate) async fn active_pointer(&self, scope: &ScopeId) -> Result<ActivePointer> {
        if let Some(p) = self.inner.active.get(scope) {
            return Ok(p);
        }
        let rec = self.active_record(scope).await?;
        let age_deadline = match self.inner.config.max_age {
            None => None,
            Some(max_age) => {
                let age_us = self.inner.store.now_us().await? - rec.created_at_us;
                let left_us = i64::try_from(max_age.as_micros())
                    .unwrap_or(i64::MAX)
                    .saturating_sub(age_us)
                    .max(0);
                Some(Instant::now() + Duration::from_micros(left_us.unsigned_abs()))
            }
        };
        let p = ActivePointer {
            version: rec.version,
            leased: rec.encryptions,
            age_deadline,
            live: None,
            searchable: None,
        };
        self.inner.active.insert(scope.clone(), p.clone());
        Ok(p)
    }

    /// The versions a search must cover: active and decrypt-only, active first, then newest
    /// first. Read from the store once per pointer lifetime (`active_ttl`).
    async fn searchable_versions(&self, scope: &ScopeId) -> Result<Arc<Vec<KeyVersion>>> {
        let p = self.active_pointer(scope).await?;
        if let Some(v) = &p.searchable {
            return Ok(Arc::clone(v));
        }
        let mut deks = self.inner.store.deks(scope).await?;
        deks.retain(|d| matches!(d.state, DekState::Active | DekState::DecryptOnly));
        deks.sort_by_key(|d| (d.state != DekState::Active, std::cmp::Reverse(d.version)));
        let versions = Arc::new(deks.iter().map(|d| d.version).collect::<Vec<_>>());
        if self
            .inner
            .active
            .get(scope)
            .is_some_and(|now| now.version == p.version)
        {
            let with = ActivePointer {
                searchable: Some(Arc::clone(&versions)),
                ..p
            };
            self.inner.active.insert(scope.clone(), with);
        }
        Ok(versions)
    }

    /// The live DEKs of the searchable versions; a version destroyed since the list was read
    /// is skipped.
    async fn searchable(&self, scope: &ScopeId) -> Result<Vec<Arc<LiveDek>>> {
        let mut out = Vec::new();
        for v in self.searchable_versions(scope).await?.iter() {
            match self.live(scope, *v).await {
                Ok(live) => out.push(live),
                Err(Error::Destroyed { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if out.is_empty() {
            return Err(self.missing(scope, None).await);
        }
        Ok(out)
    }

    /// The unwrapped DEK for one version, through L1, L2 and the KEK.
    pub(crate) async fn live(&self, scope: &ScopeId, version: KeyVersion) -> Result<Arc<LiveDek>> {
        let key = (scope.clone(), version);
        if let Some(hit) = self.inner.l1.get(&key).await {
            bump(&self.inner.stats.l1_hits, "coffer_keys_l1_hits_total");
            return Ok(hit);
        }
        // Single flight: concurrent misses for one key wait on one load. Those that waited
        // count as hits: they made no KEK call.
        let loaded = AtomicBool::new(false);
        let live = self
            .inner
            .l1
            .try_get_with(key, async {
                loaded.store(true, Ordering::Relaxed);
                bump(&self.inner.stats.l1_misses, "coffer_keys_l1_misses_total");
                self.load(scope, version).await.map(Arc::new)
            })
            .await
            .map_err(Arc::unwrap_or_clone)?;
        if !loaded.load(Ordering::Relaxed) {
            bump(&self.inner.stats.l1_hits, "coffer_keys_l1_hits_total");
        }
        Ok(live)
    }

    async fn load(&self, scope: &ScopeId, version: KeyVersion) -> Result<LiveDek> {
        let Some(rec) = self.inner.store.dek(scope, version).await? else {
            return Err(self.missing(scope, Some(version)).await);
        };
        let Some(wrapped) = rec
            .wrapped
            .as_deref()
            .filter(|_| rec.state != DekState::Destroyed)
        else {
            let _ = self
                .audit(
                    self.event(Operation::AccessDenied)
                        .scope(scope.as_str())
                        .version(version.0)
                        .detail("key destroyed"),
                )
                .await;
            return Err(Error::Destroyed {
                scope: scope.as_str().to_owned(),
                version: Some(version),
            });
        };
        let dek = match self.l2_get(&rec).await {
            Some(dek) => dek,
            None => self.l2_fill(&rec, wrapped).await?,
        };
        Ok(LiveDek::new(dek, version))
    }

    async fn l2_get(&self, rec: &DekRecord) -> Option<Dek> {
        let l2 = self.inner.l2.as_ref()?;
        let b = EntryBinding {
            store_id: &self.inner.store_id,
            epoch: self.inner.epoch,
            scope: &rec.scope,
            version: rec.version,
        };
        let name = l2.key.entry_name(&b).ok()?;
        match l2.backend.get_touch(&name, self.inner.config.l2_ttl).await {
            Ok(Some(entry)) => {
                self.l2_ok(l2);
                let fresh = |at: u64| {
                    now_s().saturating_sub(at) < self.inner.config.l2_max_lifetime.as_secs()
                };
                match l2.key.open(&b, &entry) {
                    Some((dek, key_id, at))
                        if key_id == rec.key_id
                            && fresh(at)
                            && self.check_tag(rec, &dek).is_ok() =>
                    {
                        bump(&self.inner.stats.l2_hits, "coffer_keys_l2_hits_total");
                        Some(dek)
                    }
                    _ => {
                        bump(&self.inner.stats.l2_misses, "coffer_keys_l2_misses_total");
                        None
                    }
                }
            }
            Ok(None) => {
                self.l2_ok(l2);
                bump(&self.inner.stats.l2_misses, "coffer_keys_l2_misses_total");
                None
            }
            Err(e) => {
                self.l2_failed(l2, &e.0);
                None
            }
        }
    }

    /// L2 miss: unwrap through the KEK, coordinating with other processes through a short L2
    /// lock so that, with L2 up, one process unwraps and the others read its entry.
    async fn l2_fill(&self, rec: &DekRecord, wrapped: &[u8]) -> Result<Dek> {
        let Some(l2) = &self.inner.l2 else {
            return self.unwrap_with_kek(rec, wrapped).await;
        };
        let b = EntryBinding {
            store_id: &self.inner.store_id,
            epoch: self.inner.epoch,
            scope: &rec.scope,
            version: rec.version,
        };
        let name = l2.key.entry_name(&b)?;
        let lock = format!("{name}:lock");
        let wait = self.inner.config.l2_lock_wait;
        match l2.backend.try_lock(&lock, wait * 2).await {
            Ok(true) => {
                // Another process may have filled the entry between our miss and our lock.
                let result = match self.l2_peek(l2, &b, &name, rec).await {
                    Some(dek) => Ok(dek),
                    None => {
                        let unwrapped = self.unwrap_with_kek(rec, wrapped).await;
                        if let Ok(dek) = &unwrapped {
                            // Sealed with the unwrap time: the absolute lifetime counts from here.
                            self.l2_put(l2, &b, &name, rec, dek).await;
                        }
                        unwrapped
                    }
                };
                if let Err(e) = l2.backend.unlock(&lock).await {
                    self.l2_failed(l2, &e.0);
                }
                result
            }
            Ok(false) => {
                // Someone else is unwrapping: wait for their entry, then give up and unwrap.
                let deadline = tokio::time::Instant::now() + wait;
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if let Some(dek) = self.l2_get(rec).await {
                        return Ok(dek);
                    }
                }
                self.unwrap_with_kek(rec, wrapped).await
            }
            Err(e) => {
                self.l2_failed(l2, &e.0);
                self.unwrap_with_kek(rec, wrapped).await
            }
        }
    }

    /// Reads an entry without counting a miss (the re-check after taking the fill lock).
    async fn l2_peek(
        &self,
        l2: &L2,
        b: &EntryBinding<'_>,
        name: &str,
        rec: &DekRecord,
    ) -> Option<Dek> {
        let entry = l2
            .backend
            .get_touch(name, self.inner.config.l2_ttl)
            .await
            .ok()??;
        let (dek, key_id, at) = l2.key.open(b, &entry)?;
        let fresh = now_s().saturating_sub(at) < self.inner.config.l2_max_lifetime.as_secs();
        if key_id == rec.key_id && fresh && self.check_tag(rec, &dek).is_ok() {
            bump(&self.inner.stats.l2_hits, "coffer_keys_l2_hits_total");
            Some(dek)
        } else {
            None
        }
    }

    async fn l2_put(&self, l2: &L2, b: &EntryBinding<'_>, name: &str, rec: &DekRecord, dek: &Dek) {
        let Ok(entry) = l2.key.seal(b, &rec.key_id, now_s(), dek) else {
            return;
        };
        match l2.backend.put(name, &entry, self.inner.config.l2_ttl).await {
            Ok(()) => self.l2_ok(l2),
            Err(e) => self.l2_failed(l2, &e.0),
        }
    }

    fn l2_ok(&self, l2: &L2) {
        if l2.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("L2 cache reachable again; using it");
        }
    }

    fn l2_failed(&self, l2: &L2, why: &str) {
        bump(&self.inner.stats.l2_errors, "coffer_keys_l2_errors_total");
        if !l2.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = why,
                "L2 cache unreachable; falling back to the KEK provider until it is back"
            );
        }
    }

    async fn unwrap_with_kek(&self, rec: &DekRecord, wrapped: &[u8]) -> Result<Dek> {
        self.unwrap_for(rec, wrapped, self.inner.config.audit_unwraps)
            .await
    }

    /// Unwraps a DEK through its KEK and checks its metadata tag; `audit` records the unwrap.
    async fn unwrap_for(&self, rec: &DekRecord, wrapped: &[u8], audit: bool) -> Result<Dek> {
        let kek = self.inner.keks.get(&rec.kek)?;
        let ctx = WrapContext {
            store_id: &self.inner.store_id,
            scope: &rec.scope,
            version: rec.version,
            key_id: &rec.key_id,
        };
        bump(
            &self.inner.stats.kek_unwraps,
            "coffer_keys_kek_unwraps_total",
        );
        let dek = kek.unwrap(wrapped, &ctx).await?;
        self.check_tag(rec, &dek).map_err(|_| Error::WrongKek {
            kek: rec.kek.to_string(),
        })?;
        if audit {
            self.audit(
                self.event(Operation::KekUnwrap)
                    .scope(rec.scope.as_str())
                    .version(rec.version.0)
                    .kek(rec.kek.to_string()),
            )
            .await?;
        }
        Ok(dek)
    }

    fn check_tag(&self, rec: &DekRecord, dek: &Dek) -> Result<()> {
        let meta = self.metadata(&rec.scope, rec.version, &rec.key_id);
        Ok(wrap::verify_metadata_tag(dek, &meta, &rec.check)?)
    }

    /// The active version and its DEK, with one encryption leased (rotating first if the
    /// version is past its limit or age).
    async fn for_write(&self, scope: &ScopeId, n: u64) -> Result<Arc<LiveDek>> {
        // A batch larger than the lease block leases what it needs at once.
        let block = self.inner.config.lease_block.max(n);
        let max = self.inner.config.max_encryptions;
        let mut aged_out = false;
        for _ in 0..8 {
            let p = self.active_pointer(scope).await?;
            // At most one age rotation per write: a version made just now is young enough.
            if !aged_out && p.age_deadline.is_some_and(|d| Instant::now() >= d) {
                self.rotate_from(scope, p.version, "age limit reached")
                    .await?;
                aged_out = true;
                continue;
            }
            let live = match &p.live {
                Some(live) => Arc::clone(live),
                None => {
                    let live = self.live(scope, p.version).await?;
                    // Remember it beside the pointer, unless the pointer changed meanwhile.
                    if self
                        .inner
                        .active
                        .get(scope)
                        .is_some_and(|now| now.version == p.version)
                    {
                        let with_live = ActivePointer {
                            live: Some(Arc::clone(&live)),
                            ..p.clone()
                        };
                        self.inner.active.insert(scope.clone(), with_live);
                    }
                    live
                }
            };
            if live.take(n) {
                if live.wants_spare(block) {
                    self.lease_ahead(scope, p.version, &live, block, max);
                }
                return Ok(live);
            }
            let holder = Arc::clone(&live);
            let _refilling = holder.refill.lock().await;
            if live.take(n) {
                // Another task leased a block while this one waited.
                return Ok(live);
            }
            // The highest total this process has seen leased under the version.
            if live.leased().max(p.leased).saturating_add(block) > max {
                self.rotate_from(scope, p.version, "encryption limit reached")
                    .await?;
                continue;
            }
            match self.inner.store.lease(scope, p.version, block).await? {
                Some(total) if total <= max => {
                    live.refill(total, block);
                    if live.take(n) {
                        return Ok(live);
                    }
                }
                Some(_) => {
                    self.rotate_from(scope, p.version, "encryption limit reached")
                        .await?;
                }
                None => {
                    // No longer active (rotated elsewhere): read the pointer again.
                    self.inner.invalidate_pointer(scope);
                    tokio::task::yield_now().await;
                }
            }
        }
        Err(Error::State(format!(
            "scope '{scope}' kept changing its active version; try again"
        )))
    }

    /// Leases the next block of `version` in a background task, so that the write which
    /// finds the current block used up takes the spare instead of waiting for the key store.
    /// Without a Tokio runtime, or near the version's limit, it does nothing: the write path
    /// then leases (or rotates) as it always did.
    fn lease_ahead(
        &self,
        scope: &ScopeId,
        version: KeyVersion,
        live: &Arc<LiveDek>,
        block: u64,
        max: u64,
    ) {
        let done = |live: &LiveDek| live.prefetching.store(false, Ordering::Release);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            done(live);
            return;
        };
        if live.leased().saturating_add(block) > max {
            done(live);
            return;
        }
        let (kr, scope, live) = (self.clone(), scope.clone(), Arc::clone(live));
        rt.spawn(async move {
            // Under the refill lock, as the write path leases: a write that runs out meanwhile
            // waits for this block instead of leasing one of its own beside it.
            let guard = live.refill.lock().await;
            if live.low(block) && live.leased().saturating_add(block) <= max {
                match kr.inner.store.lease(&scope, version, block).await {
                    Ok(Some(total)) if total <= max => live.add_spare(total, block),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(
                        %scope,
                        error = %e,
                        "leasing ahead failed; the write path will lease"
                    ),
                }
            }
            drop(guard);
            done(&live);
        });
    }

    // ---- data operations ------------------------------------------------------------

    /// Encrypts a field value under the scope's active version.
    pub async fn encrypt(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        suite: Suite,
        ctx: &FieldContext<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let live = self.for_write(scope, 1).await?;
        let key = live.field_key(scope, column, suite)?;
        Ok(key.encrypt(ctx, plaintext)?)
    }

    /// Encrypts an authenticated NULL under the scope's active version.
    pub async fn encrypt_null(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        suite: Suite,
        ctx: &FieldContext<'_>,
    ) -> Result<Vec<u8>> {
        let live = self.for_write(scope, 1).await?;
        let key = live.field_key(scope, column, suite)?;
        Ok(key.encrypt_null(ctx)?)
    }

    /// Encrypts many field values of one scope under its active version, in order: one lease
    /// and one key lookup for the whole batch, and, per run of items with the same column and
    /// suite, the batch path of [`FieldKey::encrypt_batch`] (one CSPRNG draw for all IVs in the
    /// default build). `None` seals an authenticated NULL. Returns the version used.
    pub async fn encrypt_batch(
        &self,
        scope: &ScopeId,
        items: &[BatchItem<'_>],
    ) -> Result<(KeyVersion, Vec<Vec<u8>>)> {
        if items.is_empty() {
            return Ok((self.active_version(scope).await?, Vec::new()));
        }
        let live = self.for_write(scope, items.len() as u64).await?;
        let mut out = Vec::with_capacity(items.len());
        let mut start = 0;
        while start < items.len() {
            let first = &items[start];
            let mut end = start + 1;
            while end < items.len()
                && items[end].column == first.column
                && items[end].suite == first.suite
                && items[end].plaintext.is_some() == first.plaintext.is_some()
            {
                end += 1;
            }
            let key = live.field_key(scope, first.column, first.suite)?;
            let run = &items[start..end];
            if first.plaintext.is_some() {
                let pairs: Vec<(FieldContext<'_>, &[u8])> = run
                    .iter()
                    .map(|i| (i.ctx, i.plaintext.unwrap_or_default()))
                    .collect();
                out.extend(key.encrypt_batch(&pairs)?);
            } else {
                for i in run {
                    out.push(key.encrypt_null(&i.ctx)?);
                }
            }
            start = end;
        }
        Ok((live.version, out))
    }

    /// Encrypts many values of one column under the scope's active version on all cores
    /// (rayon, in the caller's pool when called inside `ThreadPool::install`), in order: one
    /// lease and one key lookup for the whole batch, then
    /// [`FieldKey::encrypt_batch_parallel`]. Returns the version used.
    pub async fn encrypt_batch_parallel(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        suite: Suite,
        items: &[(FieldContext<'_>, &[u8])],
    ) -> Result<(KeyVersion, Vec<Vec<u8>>)> {
        if items.is_empty() {
            return Ok((self.active_version(scope).await?, Vec::new()));
        }
        let live = self.for_write(scope, items.len() as u64).await?;
        let key = live.field_key(scope, column, suite)?;
        Ok((live.version, key.encrypt_batch_parallel(items)?))
    }

    /// Decrypts many values of one column on all cores, in order. The keys every header
    /// names are resolved first, so a value under an unknown or destroyed version fails the
    /// whole call with that error; after that each result stands alone (a value that does
    /// not authenticate is an `Err` in its place).
    pub async fn decrypt_batch_parallel(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        items: &[(FieldContext<'_>, &[u8])],
    ) -> Result<Vec<Result<Option<Vec<u8>>>>> {
        use rayon::prelude::*;
        let mut keys: HashMap<(KeyVersion, Suite), Arc<FieldKey>> = HashMap::new();
        for (_, ct) in items {
            if let Ok((h, _)) = Header::parse(ct)
                && !keys.contains_key(&(h.version, h.suite))
            {
                let live = self.live(scope, h.version).await?;
                keys.insert(
                    (h.version, h.suite),
                    live.field_key(scope, column, h.suite)?,
                );
            }
        }
        Ok(items
            .par_iter()
            .with_min_len(256)
            .map(|(ctx, ct)| {
                let (h, _) =
                    Header::parse(ct).map_err(|_| Error::Crypto(coffer_core::Error::Decrypt))?;
                let key = keys
                    .get(&(h.version, h.suite))
                    .ok_or(Error::Crypto(coffer_core::Error::Decrypt))?;
                Ok(key.decrypt(ctx, ct)?)
            })
            .collect())
    }

    /// A counter that changes whenever this process drops a cached active pointer or key:
    /// rotation, destroy, compromise, restore, retirement, an invalidation published by another
    /// process, [`clear_l1`](Self::clear_l1). A caller that keeps a key from
    /// [`lease_field_key`](Self::lease_field_key) or [`field_key_at`](Self::field_key_at)
    /// drops it when this changes.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Leases `n` encryptions under the scope's active version and returns that version and
    /// the column key, for a binding that seals single values at a high rate without a cache
    /// lookup per value (coffer-py's `Column`). The caller seals at most `n` values with it,
    /// and stops using it once [`generation`](Self::generation) changes or `active_ttl` has
    /// passed: the rules this keyring's own write path follows.
    pub async fn lease_field_key(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        suite: Suite,
        n: u64,
    ) -> Result<(KeyVersion, Arc<FieldKey>)> {
        let live = self.for_write(scope, n.max(1)).await?;
        Ok((live.version, live.field_key(scope, column, suite)?))
    }

    /// The column key of one version (for opening values it sealed), under the same rules as
    /// [`lease_field_key`](Self::lease_field_key) for keeping it (with `l1_ttl`).
    pub async fn field_key_at(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        version: KeyVersion,
        suite: Suite,
    ) -> Result<Arc<FieldKey>> {
        self.live(scope, version)
            .await?
            .field_key(scope, column, suite)
    }

    /// Decrypts a field value with the version its header names: `Some(plaintext)`, or `None`
    /// for an authenticated NULL.
    pub async fn decrypt(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        ctx: &FieldContext<'_>,
        ciphertext: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let (header, _) =
            Header::parse(ciphertext).map_err(|_| Error::Crypto(coffer_core::Error::Decrypt))?;
        let live = self.live(scope, header.version).await?;
        let key = live.field_key(scope, column, header.suite)?;
        Ok(key.decrypt(ctx, ciphertext)?)
    }

    /// The blind index of `values` under the scope's active version (for writes).
    pub async fn blind_index(
        &self,
        scope: &ScopeId,
        index: &BlindIndexSpec,
        values: &[&[u8]],
    ) -> Result<(KeyVersion, Vec<u8>)> {
        let p = self.active_pointer(scope).await?;
        let live = self.live(scope, p.version).await?;
        Ok((p.version, live.index_key(index)?.compute(values)?))
    }

    /// The blind index of `values` under every version that may still have rows indexed
    /// (active and decrypt-only), for searching while a re-encryption runs.
    pub async fn blind_index_terms(
        &self,
        scope: &ScopeId,
        index: &BlindIndexSpec,
        values: &[&[u8]],
    ) -> Result<Vec<(KeyVersion, Vec<u8>)>> {
        let mut out = Vec::new();
        for live in self.searchable(scope).await? {
            out.push((live.version, live.index_key(index)?.compute(values)?));
        }
        Ok(out)
    }

    /// A deterministic (AES-SIV) field value sealed under every version that may still have
    /// rows (active and decrypt-only), active first: the terms of an equality search on a
    /// deterministic column while a re-encryption runs.
    pub async fn deterministic_terms(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        ctx: &FieldContext<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<(KeyVersion, Vec<u8>)>> {
        let mut out = Vec::new();
        for live in self.searchable(scope).await? {
            let key = live.field_key(scope, column, Suite::Siv)?;
            out.push((live.version, key.encrypt(ctx, plaintext)?));
        }
        Ok(out)
    }

    /// The scope's active version, as this process sees it (the cached pointer lives at most
    /// `active_ttl`).
    pub async fn active_version(&self, scope: &ScopeId) -> Result<KeyVersion> {
        Ok(self.active_pointer(scope).await?.version)
    }

    /// The blind-index key of `index` under the scope's active version, for computing many
    /// indexes without a cache lookup or a subkey derivation per value (writers, batch jobs).
    pub async fn blind_index_key(
        &self,
        scope: &ScopeId,
        index: &BlindIndexSpec,
    ) -> Result<(KeyVersion, Arc<BlindIndexKey>)> {
        let p = self.active_pointer(scope).await?;
        let live = self.live(scope, p.version).await?;
        Ok((p.version, live.index_key(index)?))
    }

    /// The blind-index keys of `index` under every version that may still have rows indexed
    /// (active and decrypt-only), active first, for searching while a re-encryption runs.
    pub async fn blind_index_keys(
        &self,
        scope: &ScopeId,
        index: &BlindIndexSpec,
    ) -> Result<Vec<(KeyVersion, Arc<BlindIndexKey>)>> {
        let mut out = Vec::new();
        for live in self.searchable(scope).await? {
            out.push((live.version, live.index_key(index)?));
        }
        Ok(out)
    }

    /// Retires a decrypt-only version once no data is left under it (the caller has checked:
    /// `coffer reencrypt` scans the ciphertext headers first). A retired version still
    /// decrypts (old backups, stragglers), is no longer searched, and may later be destroyed.
    /// Refused, with the time left, while the version left the active state less than the
    /// `grace` ago: writers may hold a cached pointer to it that long.
    pub async fn retire(
        &self,
        scope: &ScopeId,
        version: KeyVersion,
        grace: Duration,
    ) -> Result<()> {
        let Some(rec) = self.inner.store.dek(scope, version).await? else {
            return Err(self.missing(scope, Some(version)).await);
        };
        if rec.state != DekState::DecryptOnly {
            return Err(Error::State(format!(
                "scope '{scope}' {version} is {}, not decrypt-only; only a rotated-out version can be retired",
                rec.state.as_str()
            )));
        }
        let now = self.inner.store.now_us().await?;
        let grace_us = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
        let ready_at = rec.state_changed_at_us.saturating_add(grace_us);
        if now < ready_at {
            return Err(Error::State(format!(
                "scope '{scope}' {version} left the active state {:.1} s ago; wait {:.1} s more \
                 (writers may still use it from a cached pointer)",
                (now - rec.state_changed_at_us) as f64 / 1e6,
                (ready_at - now) as f64 / 1e6
            )));
        }
        if !self
            .inner
            .store
            .set_state(scope, version, DekState::DecryptOnly, DekState::Retired)
            .await?
        {
            return Err(Error::State(format!(
                "scope '{scope}' {version} changed state meanwhile; look with `coffer keys list`"
            )));
        }
        self.inner.invalidate_pointer(scope);
        self.audit(
            self.event(Operation::StateChange)
                .scope(scope.as_str())
                .version(version.0)
                .detail("decrypt-only -> retired: no data left under it"),
        )
        .await?;
        Ok(())
    }

    /// The grace period [`retire`](Self::retire) should wait after a rotation: twice the
    /// lifetime of the cached active pointer, so no writer still uses the old version.
    pub fn retire_grace(&self) -> Duration {
        self.inner.config.active_ttl * 2
    }

    /// Drops every cached key of this process (L1 only; other processes keep theirs until
    /// their TTLs pass).
    pub fn clear_l1(&self) {
        self.inner.generation.fetch_add(1, Ordering::Release);
        self.inner.l1.invalidate_all();
        self.inner.active.invalidate_all();
    }
}

/// One value of [`Keyring::encrypt_batch`].
#[derive(Clone, Copy, Debug)]
pub struct BatchItem<'a> {
    /// The column.
    pub column: &'a ColumnId,
    /// The suite.
    pub suite: Suite,
    /// Row context, domain and value type.
    pub ctx: FieldContext<'a>,
    /// The value, or `None` for an authenticated NULL.
    pub plaintext: Option<&'a [u8]>,
}

/// A blind index definition: column, index name, width and normalizers.
#[derive(Clone, Debug)]
pub struct BlindIndexSpec {
    /// The column.
    pub column: ColumnId,
    /// The index name (one subkey per name).
    pub name: String,
    /// Width in bits.
    pub bits: u16,
    /// Normalizers, in order.
    pub normalizers: Vec<Normalizer>,
}

impl BlindIndexSpec {
    fn key(&self, dek: &Dek) -> Result<BlindIndexKey> {
        Ok(
            BlindIndexKey::new(dek, &self.column, &self.name, self.bits)?
                .with_normalizers(self.normalizers.clone()),
        )
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

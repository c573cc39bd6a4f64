//! The key-store trait and its records: scopes, DEK versions (only ever wrapped), the KEK
//! registry and the audit trail. `coffer-store` implements it on SQLite and PostgreSQL with one
//! schema.
//!
//! Invariants every implementation keeps (and the PostgreSQL tests check under concurrency):
//! at most one active version per scope; version numbers never reused; a DEK row exists before
//! its key is used (insert, then re-read); counters only grow; destroyed scopes stay as
//! tombstones, so a destroyed scope cannot be silently re-created.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use coffer_core::{KeyVersion, ScopeId};

use crate::audit::{AuditEvent, AuditFilter, AuditRecord};
use crate::error::{Error, Result};
use crate::kek::KekId;

/// The state of one DEK version (docs/KEYS.md §2 shows the transitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DekState {
    /// Encrypts new values and decrypts old ones. At most one per scope.
    Active,
    /// Decrypts only; encryptions under it are refused.
    DecryptOnly,
    /// No ciphertext uses it any more (checked by scans); kept until destroyed.
    Retired,
    /// Its wrapped key is erased. Data under it is unrecoverable.
    Destroyed,
}

impl DekState {
    /// The name stored in the key store and shown by `coffer keys list`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DekState::Active => "active",
            DekState::DecryptOnly => "decrypt-only",
            DekState::Retired => "retired",
            DekState::Destroyed => "destroyed",
        }
    }
}

impl fmt::Display for DekState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DekState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "active" => DekState::Active,
            "decrypt-only" => DekState::DecryptOnly,
            "retired" => DekState::Retired,
            "destroyed" => DekState::Destroyed,
            other => {
                return Err(Error::store(format!(
                    "unknown DEK state '{}' in the key store",
                    other.escape_debug()
                )));
            }
        })
    }
}

/// The key store's identity: a random 16-byte id bound into every wrap and metadata tag, so a
/// wrapped DEK copied into another store does not open there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    /// The store id.
    pub store_id: [u8; 16],
    /// The schema version applied.
    pub schema_version: u32,
    /// The restore epoch: bumped by each `coffer keys restored`.
    pub epoch: u32,
}

/// A scope: a DEK chain for a tenant, table, column, ballot or row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeRecord {
    /// The scope.
    pub scope: ScopeId,
    /// When it was created (database clock, µs since the Unix epoch).
    pub created_at_us: i64,
    /// When it was destroyed, if it was.
    pub destroyed_at_us: Option<i64>,
}

impl ScopeRecord {
    /// Whether the scope was crypto-shredded.
    pub fn is_destroyed(&self) -> bool {
        self.destroyed_at_us.is_some()
    }
}

/// One DEK version as stored: wrapped only.
#[derive(Clone, PartialEq, Eq)]
pub struct DekRecord {
    /// The scope.
    pub scope: ScopeId,
    /// The version (1, 2, …; never reused).
    pub version: KeyVersion,
    /// Random 128-bit key id.
    pub key_id: [u8; 16],
    /// State.
    pub state: DekState,
    /// The wrapped DEK (`None` once destroyed).
    pub wrapped: Option<Vec<u8>>,
    /// The KEK version that wrapped it.
    pub kek: KekId,
    /// The provider's wrap algorithm, e.g. `aes256-kwp`.
    pub wrap_algorithm: String,
    /// The metadata tag / key check value (docs/FORMAT.md §6).
    pub check: Vec<u8>,
    /// Encryptions leased under this version so far (an upper bound of those made).
    pub encryptions: u64,
    /// Created (database clock, µs).
    pub created_at_us: i64,
    /// Last state change (database clock, µs).
    pub state_changed_at_us: i64,
}

impl fmt::Debug for DekRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The wrap is not secret, but it is noise; its length is what matters in a log.
        f.debug_struct("DekRecord")
            .field("scope", &self.scope)
            .field("version", &self.version)
            .field("key_id", &hex::encode(self.key_id))
            .field("state", &self.state)
            .field("wrapped_len", &self.wrapped.as_ref().map(Vec::len))
            .field("kek", &self.kek)
            .field("encryptions", &self.encryptions)
            .finish_non_exhaustive()
    }
}

/// A DEK version to insert.
#[derive(Clone, Debug)]
pub struct NewDek {
    /// The scope.
    pub scope: ScopeId,
    /// Its version number.
    pub version: KeyVersion,
    /// Its key id.
    pub key_id: [u8; 16],
    /// The wrapped key.
    pub wrapped: Vec<u8>,
    /// The KEK that wrapped it.
    pub kek: KekId,
    /// The wrap algorithm.
    pub wrap_algorithm: String,
    /// The metadata tag.
    pub check: Vec<u8>,
}

/// A new wrap for one DEK version (KEK rotation).
#[derive(Clone, Debug)]
pub struct Rewrap {
    /// The scope.
    pub scope: ScopeId,
    /// The version.
    pub version: KeyVersion,
    /// The KEK it was wrapped under when read.
    pub old: KekId,
    /// The KEK of the new wrap.
    pub new: KekId,
    /// The new wrap.
    pub wrapped: Vec<u8>,
    /// The new wrap's algorithm.
    pub wrap_algorithm: String,
}

/// A KEK version the store has seen, with a canary that tells a wrong key from a right one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KekRecord {
    /// The KEK id.
    pub id: KekId,
    /// Provider kind (`local`, `pkcs11`, `aws-kms`).
    pub kind: String,
    /// A random key wrapped under this KEK when it was registered.
    pub canary_wrapped: Vec<u8>,
    /// The canary's metadata tag.
    pub canary_check: Vec<u8>,
    /// When it was registered (database clock, µs).
    pub registered_at_us: i64,
}

/// What [`KeyStore::create_scope`] did.
#[derive(Debug)]
pub enum CreateOutcome {
    /// The scope and its first version were inserted.
    Created(DekRecord),
    /// Another caller created it first; this is its active version. Discard your key.
    Existing(DekRecord),
}

/// What [`KeyStore::create_scopes`] did with one scope of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BulkCreate {
    /// The scope and its first version were inserted (database clock, µs).
    Created {
        /// When.
        created_at_us: i64,
    },
    /// The scope existed already and is alive: nothing was written for it.
    Exists,
    /// The scope was destroyed: its name is a tombstone and is never reused.
    Destroyed {
        /// When it was destroyed (database clock, µs).
        destroyed_at_us: i64,
    },
}

/// One page of a scope listing: keyset pagination on the scope name in byte (code point)
/// order, so a page costs the same at any depth of a store with millions of scopes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopePage {
    /// Only scopes whose name starts with this.
    pub prefix: Option<String>,
    /// Only scopes whose name sorts after this one (the last of the previous page).
    pub after: Option<String>,
    /// At most this many (at least 1 is asked for).
    pub limit: usize,
}

impl ScopePage {
    /// Whether `name` belongs to this page's range (prefix and `after`; not the limit).
    pub fn admits(&self, name: &str) -> bool {
        self.prefix.as_deref().is_none_or(|p| name.starts_with(p))
            && self.after.as_deref().is_none_or(|a| name > a)
    }
}

/// The smallest string above every string that starts with `prefix`, in code point order
/// (`None` when no such bound exists: the prefix is empty or only U+10FFFF). A prefix filter
/// then is the index range `prefix <= name < upper`.
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// What [`KeyStore::rotate`] did.
#[derive(Debug)]
pub enum RotateOutcome {
    /// The new version is active; the old one is decrypt-only.
    Rotated(DekRecord),
    /// The active version was no longer the expected one (another rotation won); this is the
    /// current active version. Discard your key.
    Lost(DekRecord),
}

/// Persistent storage of scopes, wrapped DEKs, the KEK registry and the audit trail.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The store's identity (created with the schema).
    async fn info(&self) -> Result<StoreInfo>;

    /// The database clock, µs since the Unix epoch.
    async fn now_us(&self) -> Result<i64>;

    /// Records a KEK version; returns `false` if it was known already (nothing changes then).
    async fn register_kek(&self, kek: &KekRecord) -> Result<bool>;

    /// The KEK registry.
    async fn keks(&self) -> Result<Vec<KekRecord>>;

    /// Creates a scope with its first (active) version, unless it exists.
    async fn create_scope(&self, first: &NewDek) -> Result<CreateOutcome>;

    /// Creates many scopes, each with its first (active) version, in few round trips: one
    /// outcome per entry, in order. A scope that exists or was destroyed is left as it is and
    /// reported so. The entries must name distinct scopes. The default creates them one by one.
    async fn create_scopes(&self, firsts: &[NewDek]) -> Result<Vec<BulkCreate>> {
        let mut out = Vec::with_capacity(firsts.len());
        for first in firsts {
            out.push(match self.create_scope(first).await {
                Ok(CreateOutcome::Created(rec)) => BulkCreate::Created {
                    created_at_us: rec.created_at_us,
                },
                Ok(CreateOutcome::Existing(_)) => BulkCreate::Exists,
                Err(e) => match self.scope(&first.scope).await? {
                    Some(s) => match s.destroyed_at_us {
                        Some(at) => BulkCreate::Destroyed {
                            destroyed_at_us: at,
                        },
                        None => BulkCreate::Exists,
                    },
                    None => return Err(e),
                },
            });
        }
        Ok(out)
    }

    /// A scope.
    async fn scope(&self, scope: &ScopeId) -> Result<Option<ScopeRecord>>;

    /// All scopes, loaded at once: for small stores and tests. Anything that may run against a
    /// store of millions of scopes pages with [`list_scopes`](Self::list_scopes).
    async fn scopes(&self) -> Result<Vec<ScopeRecord>>;

    /// One page of scopes (destroyed ones included), in code point order of their names.
    /// The default filters [`scopes`](Self::scopes); the SQL stores read one index range.
    async fn list_scopes(&self, page: &ScopePage) -> Result<Vec<ScopeRecord>> {
        let mut all: Vec<ScopeRecord> = self
            .scopes()
            .await?
            .into_iter()
            .filter(|s| page.admits(s.scope.as_str()))
            .collect();
        all.sort_by(|a, b| a.scope.as_str().cmp(b.scope.as_str()));
        all.truncate(page.limit.max(1));
        Ok(all)
    }

    /// Up to `limit` active DEKs of live scopes whose name sorts after `after`, in the store's
    /// scope order (what `coffer keys check` walks). The default pages through
    /// [`list_scopes`](Self::list_scopes).
    async fn active_deks_page(
        &self,
        after: Option<&ScopeId>,
        limit: usize,
    ) -> Result<Vec<DekRecord>> {
        let mut out = Vec::new();
        let mut cursor = after.map(|s| s.as_str().to_owned());
        while out.len() < limit.max(1) {
            let page = self
                .list_scopes(&ScopePage {
                    prefix: None,
                    after: cursor.clone(),
                    limit: limit.max(1),
                })
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            cursor = Some(last.scope.as_str().to_owned());
            for s in page.iter().filter(|s| !s.is_destroyed()) {
                if out.len() < limit.max(1)
                    && let Some(d) = self.active_dek(&s.scope).await?
                {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// One DEK version.
    async fn dek(&self, scope: &ScopeId, version: KeyVersion) -> Result<Option<DekRecord>>;

    /// Every version of a scope, oldest first.
    async fn deks(&self, scope: &ScopeId) -> Result<Vec<DekRecord>>;

    /// The active version of a scope.
    async fn active_dek(&self, scope: &ScopeId) -> Result<Option<DekRecord>>;

    /// The highest version number a scope ever had (destroyed ones included), 0 if none.
    async fn max_version(&self, scope: &ScopeId) -> Result<u32>;

    /// Compare-and-swap rotation: if `expected` is still the active version, it becomes
    /// decrypt-only and `new` becomes active, atomically.
    async fn rotate(&self, expected: KeyVersion, new: &NewDek) -> Result<RotateOutcome>;

    /// Leases `n` encryptions under an active version; returns the new total, or `None` if the
    /// version is not active (any more).
    async fn lease(&self, scope: &ScopeId, version: KeyVersion, n: u64) -> Result<Option<u64>>;

    /// Moves a version from one state to another; `false` if it was not in `from`.
    async fn set_state(
        &self,
        scope: &ScopeId,
        version: KeyVersion,
        from: DekState,
        to: DekState,
    ) -> Result<bool>;

    /// Up to `limit` live (not destroyed) DEKs wrapped under a KEK other than `kek`.
    async fn deks_not_under(&self, kek: &KekId, limit: usize) -> Result<Vec<DekRecord>>;

    /// Up to `limit` live DEKs wrapped under a KEK other than `kek` that come after `after`
    /// (scope, version) in the store's order: how a KEK rotation walks millions of DEKs
    /// without reading the ones it already re-wrapped again. The default ignores `after`
    /// (correct, since re-wrapped DEKs no longer match, but each call rescans them).
    async fn deks_not_under_after(
        &self,
        kek: &KekId,
        after: Option<(&ScopeId, KeyVersion)>,
        limit: usize,
    ) -> Result<Vec<DekRecord>> {
        let _ = after;
        self.deks_not_under(kek, limit).await
    }

    /// Up to `limit` live (not destroyed) DEKs wrapped under `kek`: what a KEK with no canary
    /// in the registry is proven against before anything new is wrapped under it. The default
    /// walks the scopes; stores with a query language override it.
    async fn deks_under(&self, kek: &KekId, limit: usize) -> Result<Vec<DekRecord>> {
        let mut out = Vec::new();
        for s in self.scopes().await? {
            if out.len() >= limit {
                break;
            }
            if s.is_destroyed() {
                continue;
            }
            for d in self.deks(&s.scope).await? {
                if out.len() < limit && d.wrapped.is_some() && d.kek == *kek {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// How many live DEKs are wrapped under a KEK other than `kek` (progress of a KEK rotation).
    async fn count_deks_not_under(&self, kek: &KekId) -> Result<u64>;

    /// Replaces DEK wraps in one transaction, each only if the DEK is still wrapped under the
    /// KEK it was read with (idempotent and race-safe: a row another process re-wrapped first is
    /// left alone). Returns how many rows changed.
    async fn replace_wraps(&self, rewraps: &[Rewrap]) -> Result<u64>;

    /// Records that the store was restored from a backup: bumps the epoch and puts every
    /// scope's next version number at least `gap` above any it had. Returns the new epoch.
    async fn mark_restored(&self, gap: u32) -> Result<u32>;

    /// Crypto-shreds a scope: erases every wrapped DEK, marks the scope destroyed (a tombstone
    /// that stops it being re-created). Returns how many versions held a key.
    async fn destroy_scope(&self, scope: &ScopeId) -> Result<u32>;

    /// Appends an event to the hash-chained audit trail: reads the last record and writes the
    /// new one in one transaction, its hash computed with [`crate::audit::record_hash`] (keyed
    /// when `key` is given; the keyring always gives the store's chain key).
    async fn append_audit(
        &self,
        event: &AuditEvent,
        key: Option<std::sync::Arc<crate::audit::ChainKey>>,
    ) -> Result<AuditRecord>;

    /// Appends several events in order, chained as [`append_audit`](Self::append_audit) would
    /// chain them one by one, in few round trips; returns the last record written. The default
    /// appends them one by one.
    async fn append_audits(
        &self,
        events: &[AuditEvent],
        key: Option<std::sync::Arc<crate::audit::ChainKey>>,
    ) -> Result<Option<AuditRecord>> {
        let mut last = None;
        for e in events {
            last = Some(self.append_audit(e, key.clone()).await?);
        }
        Ok(last)
    }

    /// Reads the audit trail, oldest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;

    /// A channel through which the processes sharing this store tell each other which cached
    /// keys to drop, if the store has one (PostgreSQL: `LISTEN`/`NOTIFY`). A keyring subscribes
    /// to it when it is built and publishes every destroy, compromise, retirement and rotation.
    fn invalidation_bus(&self) -> Option<std::sync::Arc<dyn crate::bus::InvalidationBus>> {
        None
    }
}

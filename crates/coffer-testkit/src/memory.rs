//! [`MemoryStore`]: a [`KeyStore`] in process memory, for tests of everything above the store.
//!
//! It keeps the contract of `coffer-store`'s SQL store, which the conformance suite
//! ([`crate::conformance`]) checks on both: versions never reused, at most one active version
//! per scope, compare-and-swap rotation, leases only under an active version, destroyed scopes
//! kept as tombstones, conditional re-wraps, the restore epoch and version floor, and the
//! hash-chained audit trail. Every call runs under one lock, as one transaction.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use coffer_core::{KeyVersion, ScopeId};
use coffer_keys::audit::{self, AuditEvent, AuditFilter, AuditRecord};
use coffer_keys::{
    CreateOutcome, DekRecord, DekState, Error, KekId, KekRecord, KeyStore, NewDek, Result, Rewrap,
    RotateOutcome, ScopePage, ScopeRecord, StoreInfo,
};

/// The schema version the memory store reports: the one `coffer-store` writes, whose contract
/// it keeps.
pub const SCHEMA_VERSION: u32 = 4;

/// A key store held in memory; dropped with the value. Cheap to create: one per test.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    store_id: [u8; 16],
    epoch: u32,
    /// The last time handed out, so the clock never goes backwards.
    last_us: i64,
    keks: BTreeMap<(String, u32), KekRecord>,
    scopes: BTreeMap<String, Scope>,
    deks: BTreeMap<(String, u32), DekRecord>,
    audit: Vec<AuditRecord>,
}

#[derive(Debug)]
struct Scope {
    record: ScopeRecord,
    /// Next versions are numbered above this (set by `mark_restored`).
    version_floor: u32,
}

impl State {
    fn now(&mut self) -> i64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.last_us = self.last_us.max(wall);
        self.last_us
    }

    fn active(&self, scope: &str) -> Option<&DekRecord> {
        self.versions(scope).find(|d| d.state == DekState::Active)
    }

    fn versions<'a>(&'a self, scope: &str) -> impl Iterator<Item = &'a DekRecord> + 'a {
        let scope = scope.to_owned();
        self.deks
            .range((scope.clone(), 0)..=(scope, u32::MAX))
            .map(|(_, d)| d)
    }

    fn max_dek_version(&self, scope: &str) -> u32 {
        self.versions(scope).map(|d| d.version.0).max().unwrap_or(0)
    }

    /// Inserts a new active version, refusing a version number that exists.
    fn insert(&mut self, new: &NewDek, now: i64) -> Result<DekRecord> {
        let key = (new.scope.as_str().to_owned(), new.version.0);
        if new.version.0 == 0 {
            return Err(Error::store("DEK versions start at 1"));
        }
        if self.deks.contains_key(&key) {
            return Err(Error::store(format!(
                "scope '{}' already has a key {}",
                new.scope, new.version
            )));
        }
        let rec = DekRecord {
            scope: new.scope.clone(),
            version: new.version,
            key_id: new.key_id,
            state: DekState::Active,
            wrapped: Some(new.wrapped.clone()),
            kek: new.kek.clone(),
            wrap_algorithm: new.wrap_algorithm.clone(),
            check: new.check.clone(),
            encryptions: 0,
            created_at_us: now,
            state_changed_at_us: now,
        };
        self.deks.insert(key, rec.clone());
        Ok(rec)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with a random store id.
    ///
    /// # Panics
    /// If the CSPRNG fails (the crypto module is broken; nothing in a test can go on).
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let store_id = coffer_core::digest::random_array().expect("the CSPRNG works");
        Self::with_id(store_id)
    }

    /// An empty store with the given store id (two stores with one id, as a copied store has).
    pub fn with_id(store_id: [u8; 16]) -> Self {
        MemoryStore {
            state: Mutex::new(State {
                store_id,
                epoch: 0,
                last_us: 0,
                keks: BTreeMap::new(),
                scopes: BTreeMap::new(),
                deks: BTreeMap::new(),
                audit: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock left no half-made change behind: every
        // call checks before it writes.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the detail of audit record `id` without fixing the chain, as an attacker with
    /// write access to the store would: for tests of chain verification. `false` if there is
    /// no such record.
    pub fn tamper_audit_detail(&self, id: i64, detail: &str) -> bool {
        let mut s = self.lock();
        match s.audit.iter_mut().find(|r| r.id == id) {
            Some(r) => {
                r.event.detail = detail.to_owned();
                true
            }
            None => false,
        }
    }

    /// Replaces the whole audit trail with `records`, as an attacker with write access who
    /// rewrites rows and their hashes would: for tests of chain verification.
    pub fn replace_audit(&self, records: Vec<AuditRecord>) {
        self.lock().audit = records;
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn info(&self) -> Result<StoreInfo> {
        let s = self.lock();
        Ok(StoreInfo {
            store_id: s.store_id,
            schema_version: SCHEMA_VERSION,
            epoch: s.epoch,
        })
    }

    async fn now_us(&self) -> Result<i64> {
        Ok(self.lock().now())
    }

    async fn register_kek(&self, kek: &KekRecord) -> Result<bool> {
        let mut s = self.lock();
        let key = (kek.id.name().to_owned(), kek.id.version());
        if s.keks.contains_key(&key) {
            return Ok(false);
        }
        let rec = KekRecord {
            registered_at_us: s.now(),
            ..kek.clone()
        };
        s.keks.insert(key, rec);
        Ok(true)
    }

    async fn keks(&self) -> Result<Vec<KekRecord>> {
        Ok(self.lock().keks.values().cloned().collect())
    }

    async fn create_scope(&self, first: &NewDek) -> Result<CreateOutcome> {
        let mut s = self.lock();
        let scope = first.scope.as_str();
        match s.scopes.get(scope) {
            None => {
                let now = s.now();
                let rec = s.insert(first, now)?;
                s.scopes.insert(
                    scope.to_owned(),
                    Scope {
                        record: ScopeRecord {
                            scope: first.scope.clone(),
                            created_at_us: now,
                            destroyed_at_us: None,
                        },
                        version_floor: 0,
                    },
                );
                Ok(CreateOutcome::Created(rec))
            }
            Some(existing) => {
                if let Some(active) = s.active(scope) {
                    return Ok(CreateOutcome::Existing(active.clone()));
                }
                Err(if existing.record.is_destroyed() {
                    Error::Destroyed {
                        scope: scope.to_owned(),
                        version: None,
                    }
                } else {
                    Error::State(format!(
                        "scope '{scope}' exists but has no active version; rotate it with \
                         `coffer keys rotate {scope}`"
                    ))
                })
            }
        }
    }

    async fn scope(&self, scope: &ScopeId) -> Result<Option<ScopeRecord>> {
        Ok(self
            .lock()
            .scopes
            .get(scope.as_str())
            .map(|s| s.record.clone()))
    }

    async fn scopes(&self) -> Result<Vec<ScopeRecord>> {
        Ok(self
            .lock()
            .scopes
            .values()
            .map(|s| s.record.clone())
            .collect())
    }

    async fn list_scopes(&self, page: &ScopePage) -> Result<Vec<ScopeRecord>> {
        use std::ops::Bound;
        // The map is ordered by name (byte order = code point order): one range, as the SQL
        // stores read one index range.
        let s = self.lock();
        let lower = match (&page.prefix, &page.after) {
            (Some(p), Some(a)) if a.as_str() < p.as_str() => Bound::Included(p.clone()),
            (_, Some(a)) => Bound::Excluded(a.clone()),
            (Some(p), None) => Bound::Included(p.clone()),
            (None, None) => Bound::Unbounded,
        };
        Ok(s.scopes
            .range::<String, _>((lower, Bound::Unbounded))
            .take_while(|(name, _)| {
                page.prefix
                    .as_ref()
                    .is_none_or(|p| name.starts_with(p.as_str()))
            })
            .filter(|(name, _)| page.admits(name))
            .take(page.limit.max(1))
            .map(|(_, sc)| sc.record.clone())
            .collect())
    }

    async fn dek(&self, scope: &ScopeId, version: KeyVersion) -> Result<Option<DekRecord>> {
        Ok(self
            .lock()
            .deks
            .get(&(scope.as_str().to_owned(), version.0))
            .cloned())
    }

    async fn deks(&self, scope: &ScopeId) -> Result<Vec<DekRecord>> {
        Ok(self.lock().versions(scope.as_str()).cloned().collect())
    }

    async fn active_dek(&self, scope: &ScopeId) -> Result<Option<DekRecord>> {
        Ok(self.lock().active(scope.as_str()).cloned())
    }

    async fn max_version(&self, scope: &ScopeId) -> Result<u32> {
        let s = self.lock();
        let floor = s
            .scopes
            .get(scope.as_str())
            .map_or(0, |sc| sc.version_floor);
        Ok(s.max_dek_version(scope.as_str()).max(floor))
    }

    async fn rotate(&self, expected: KeyVersion, new: &NewDek) -> Result<RotateOutcome> {
        let mut s = self.lock();
        let scope = new.scope.as_str().to_owned();
        let key = (scope.clone(), expected.0);
        let swappable = s
            .deks
            .get(&key)
            .is_some_and(|d| d.state == DekState::Active);
        if swappable {
            if s.deks.contains_key(&(scope.clone(), new.version.0)) {
                return Err(Error::store(format!(
                    "scope '{scope}' already has a key {}",
                    new.version
                )));
            }
            let now = s.now();
            if let Some(old) = s.deks.get_mut(&key) {
                old.state = DekState::DecryptOnly;
                old.state_changed_at_us = now;
            }
            return s.insert(new, now).map(RotateOutcome::Rotated);
        }
        match s.active(&scope) {
            Some(active) => Ok(RotateOutcome::Lost(active.clone())),
            None => Err(Error::State(format!(
                "scope '{scope}' has no active version to rotate from (destroyed or unknown)"
            ))),
        }
    }

    async fn lease(&self, scope: &ScopeId, version: KeyVersion, n: u64) -> Result<Option<u64>> {
        if i64::try_from(n).is_err() {
            return Err(Error::config("lease block too large"));
        }
        let mut s = self.lock();
        let Some(d) = s
            .deks
            .get_mut(&(scope.as_str().to_owned(), version.0))
            .filter(|d| d.state == DekState::Active)
        else {
            return Ok(None);
        };
        d.encryptions = d
            .encryptions
            .checked_add(n)
            .filter(|t| i64::try_from(*t).is_ok())
            .ok_or_else(|| Error::store("the encryption counter overflowed"))?;
        Ok(Some(d.encryptions))
    }

    async fn set_state(
        &self,
        scope: &ScopeId,
        version: KeyVersion,
        from: DekState,
        to: DekState,
    ) -> Result<bool> {
        if to == DekState::Destroyed || from == DekState::Destroyed {
            return Err(Error::State(
                "destroying goes through destroy_scope, which erases the wrapped key".into(),
            ));
        }
        let mut s = self.lock();
        let key = (scope.as_str().to_owned(), version.0);
        if s.deks.get(&key).is_none_or(|d| d.state != from) {
            return Ok(false);
        }
        if to == DekState::Active && from != DekState::Active && s.active(scope.as_str()).is_some()
        {
            return Err(Error::store(format!(
                "scope '{scope}' already has an active version"
            )));
        }
        let now = s.now();
        if let Some(d) = s.deks.get_mut(&key) {
            d.state = to;
            d.state_changed_at_us = now;
        }
        Ok(true)
    }

    async fn deks_not_under(&self, kek: &KekId, limit: usize) -> Result<Vec<DekRecord>> {
        Ok(self
            .lock()
            .deks
            .values()
            .filter(|d| d.wrapped.is_some() && d.kek != *kek)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn count_deks_not_under(&self, kek: &KekId) -> Result<u64> {
        Ok(self
            .lock()
            .deks
            .values()
            .filter(|d| d.wrapped.is_some() && d.kek != *kek)
            .count() as u64)
    }

    async fn replace_wraps(&self, rewraps: &[Rewrap]) -> Result<u64> {
        let mut s = self.lock();
        let mut n = 0;
        for r in rewraps {
            if let Some(d) = s
                .deks
                .get_mut(&(r.scope.as_str().to_owned(), r.version.0))
                .filter(|d| d.wrapped.is_some() && d.kek == r.old)
            {
                d.wrapped = Some(r.wrapped.clone());
                d.kek = r.new.clone();
                d.wrap_algorithm = r.wrap_algorithm.clone();
                n += 1;
            }
        }
        Ok(n)
    }

    async fn mark_restored(&self, gap: u32) -> Result<u32> {
        let mut s = self.lock();
        let epoch = s
            .epoch
            .checked_add(1)
            .ok_or_else(|| Error::store("the store epoch overflowed"))?;
        let names: Vec<String> = s.scopes.keys().cloned().collect();
        for name in names {
            let max = s.max_dek_version(&name);
            if let Some(sc) = s.scopes.get_mut(&name) {
                sc.version_floor = sc
                    .version_floor
                    .checked_add(gap)
                    .and_then(|f| f.checked_add(max))
                    .ok_or_else(|| Error::store("version numbers out of range"))?;
            }
        }
        s.epoch = epoch;
        Ok(epoch)
    }

    async fn destroy_scope(&self, scope: &ScopeId) -> Result<u32> {
        let mut s = self.lock();
        let now = s.now();
        if let Some(sc) = s.scopes.get_mut(scope.as_str())
            && sc.record.destroyed_at_us.is_none()
        {
            sc.record.destroyed_at_us = Some(now);
        }
        let name = scope.as_str().to_owned();
        let mut n = 0;
        for (_, d) in s
            .deks
            .range_mut((name.clone(), 0)..=(name, u32::MAX))
            .filter(|(_, d)| d.wrapped.is_some())
        {
            d.wrapped = None;
            d.state = DekState::Destroyed;
            d.state_changed_at_us = now;
            n += 1;
        }
        Ok(n)
    }

    async fn append_audit(
        &self,
        event: &AuditEvent,
        key: Option<std::sync::Arc<audit::ChainKey>>,
    ) -> Result<AuditRecord> {
        let mut s = self.lock();
        let at_us = s.now();
        let (id, prev) = match s.audit.last() {
            Some(last) => (last.id + 1, last.hash),
            None => (1, audit::GENESIS),
        };
        let hash = audit::record_hash(key.as_deref(), &prev, id, at_us, event)?;
        let rec = AuditRecord {
            id,
            at_us,
            event: event.clone(),
            prev_hash: prev,
            hash,
        };
        s.audit.push(rec.clone());
        Ok(rec)
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let limit = filter.limit.map_or(usize::MAX, |l| l as usize);
        Ok(self
            .lock()
            .audit
            .iter()
            .filter(|r| {
                filter
                    .scope
                    .as_ref()
                    .is_none_or(|s| r.event.scope.as_ref() == Some(s))
                    && filter.since_us.is_none_or(|t| r.at_us >= t)
            })
            .take(limit)
            .cloned()
            .collect())
    }
}

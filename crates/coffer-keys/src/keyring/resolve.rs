//! Key resolution: the cached active pointer, then L1, L2 and the KEK provider, with the
//! checks that a key read from L2 or unwrapped by a KEK is the one the store records.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use coffer_core::wrap;
use coffer_core::{Dek, KeyVersion, ScopeId};

use super::{ActivePointer, Keyring, L2, LiveDek, bump, now_s, refresh_after};
use crate::audit::Operation;
use crate::cache::EntryBinding;
use crate::error::{Error, Result};
use crate::kek::WrapContext;
use crate::store::{DekRecord, DekState};

impl Keyring {
    /// The active version for writes, from the short-lived pointer cache. A pointer is trusted
    /// for `active_ttl` from its read; one still in use past 80 % of that is re-read by one
    /// background task, and concurrent misses share one read.
    pub(crate) async fn active_pointer(&self, scope: &ScopeId) -> Result<ActivePointer> {
        Self::refuse_reserved(scope)?;
        let ttl = self.inner.config.active_ttl;
        if let Some(p) = self.inner.active.get(scope) {
            let age = p.read_at.elapsed();
            if age < ttl {
                if age >= refresh_after(ttl) && !p.refreshing.swap(true, Ordering::AcqRel) {
                    self.refresh_pointer(scope, &p);
                }
                return Ok(p);
            }
        }
        let generation = self.generation();
        let (p, _) = self
            .inner
            .pointer_flights
            .run(scope, || async {
                // Another flight may have filled it between our miss and this one.
                if let Some(p) = self.inner.active.get(scope)
                    && p.read_at.elapsed() < ttl
                {
                    return Ok(p);
                }
                bump(
                    &self.inner.stats.active_misses,
                    "coffer_keys_active_misses_total",
                );
                let p = self.read_pointer(scope, None).await?;
                self.inner.active.insert(scope.clone(), p.clone());
                Ok(p)
            })
            .await;
        let p = p?;
        if self.generation() != generation {
            // An invalidation raced the read: the pointer may predate it. This caller uses
            // it once; the next one reads it again.
            self.inner.active.invalidate(scope);
        }
        Ok(p)
    }

    /// The scope's active version read from the key store, as a pointer (keeping `live` from
    /// `prev` when the version is the same: its own age bounds it).
    async fn read_pointer(
        &self,
        scope: &ScopeId,
        prev: Option<&ActivePointer>,
    ) -> Result<ActivePointer> {
        let read_at = Instant::now();
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
        let live = prev
            .filter(|p| p.version == rec.version)
            .and_then(|p| p.live.clone());
        Ok(ActivePointer {
            version: rec.version,
            leased: rec.encryptions,
            age_deadline,
            live,
            searchable: None,
            read_at,
            refreshing: Arc::default(),
        })
    }

    /// Re-reads `scope`'s pointer in a background task and replaces the cached one, unless an
    /// invalidation came in meanwhile (then the cached one expires or is already gone, and the
    /// next write reads the store itself).
    fn refresh_pointer(&self, scope: &ScopeId, prev: &ActivePointer) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            prev.refreshing.store(false, Ordering::Release);
            return;
        };
        let (kr, scope, prev) = (self.clone(), scope.clone(), prev.clone());
        rt.spawn(async move {
            let generation = kr.generation();
            match kr.read_pointer(&scope, Some(&prev)).await {
                Ok(p) if kr.generation() == generation => {
                    kr.inner.active.insert(scope.clone(), p);
                    if kr.generation() != generation {
                        kr.inner.active.invalidate(&scope);
                    }
                }
                Ok(_) => prev.refreshing.store(false, Ordering::Release),
                Err(e) => {
                    tracing::debug!(%scope, error = %e, "re-reading the active version failed");
                    // Let a later write try again, not every write from now on.
                    tokio::time::sleep(retry_pause(kr.inner.config.active_ttl)).await;
                    prev.refreshing.store(false, Ordering::Release);
                }
            }
        });
    }

    /// The versions a search must cover: active and decrypt-only, active first, then newest
    /// first. Read from the store once per pointer lifetime (`active_ttl`).
    pub(super) async fn searchable_versions(
        &self,
        scope: &ScopeId,
    ) -> Result<Arc<Vec<KeyVersion>>> {
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
    pub(super) async fn searchable(&self, scope: &ScopeId) -> Result<Vec<Arc<LiveDek>>> {
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

    /// The unwrapped DEK for one version, through L1, L2 and the KEK. A hit on an entry older
    /// than 80 % of `l1_ttl` starts one background reload of it (see
    /// [`refresh_live`](Self::refresh_live)); concurrent misses share one load.
    pub(crate) async fn live(&self, scope: &ScopeId, version: KeyVersion) -> Result<Arc<LiveDek>> {
        Self::refuse_reserved(scope)?;
        let key = (scope.clone(), version);
        if let Some(hit) = self.inner.l1.get(&key).await {
            bump(&self.inner.stats.l1_hits, "coffer_keys_l1_hits_total");
            self.refresh_if_due(&key, &hit);
            return Ok(hit);
        }
        // Read before the load reads the store: a destroy committed after that read bumps it.
        let generation = self.generation();
        // Single flight: concurrent misses for one key wait on one load. Those that waited
        // count as hits: they made no KEK call.
        let (live, loaded) = self
            .inner
            .l1_flights
            .run(&key, || async {
                // A flight that ended between our miss and this one filled L1.
                if let Some(hit) = self.inner.l1.get(&key).await {
                    return Ok(hit);
                }
                bump(&self.inner.stats.l1_misses, "coffer_keys_l1_misses_total");
                let live = Arc::new(self.load(scope, version).await?);
                self.inner.l1.insert(key.clone(), Arc::clone(&live)).await;
                Ok(live)
            })
            .await;
        let live = live?;
        if !loaded {
            bump(&self.inner.stats.l1_hits, "coffer_keys_l1_hits_total");
        }
        if self.generation() != generation {
            // Something was invalidated while the key loaded (a destroy may have committed
            // after the load read the record, and dropped the caches before the load filled
            // them): the store decides whether the key may stay cached.
            self.recheck(scope, version).await?;
        }
        Ok(live)
    }

    /// A live DEK a write keeps beside the active pointer, if it is still within `l1_ttl` of
    /// its load (starting its reload when due, as an L1 hit does).
    pub(super) fn kept_live(&self, scope: &ScopeId, live: &Arc<LiveDek>) -> Option<Arc<LiveDek>> {
        let age = live.loaded_at.elapsed();
        if age >= self.inner.config.l1_ttl {
            return None;
        }
        if age >= refresh_after(self.inner.config.l1_ttl) {
            self.refresh_if_due(&(scope.clone(), live.version), live);
        }
        Some(Arc::clone(live))
    }

    fn refresh_if_due(&self, key: &(ScopeId, KeyVersion), live: &Arc<LiveDek>) {
        if live.loaded_at.elapsed() >= refresh_after(self.inner.config.l1_ttl)
            && !live.refreshing.swap(true, Ordering::AcqRel)
        {
            self.refresh_live(key, live);
        }
    }

    /// Reloads `old` in a background task, through the key store and L2 (or the KEK) as a cold
    /// load does, and puts the new copy in L1 (and beside the active pointer) in its place,
    /// sharing `old`'s lease. Meanwhile hits are served `old`, which L1 drops at `l1_ttl` as
    /// ever: a reload slower than the rest of the lifetime leaves a plain miss, never a key
    /// served past `l1_ttl`. An invalidation during the reload (destroy, compromise, rotation,
    /// `clear_l1`) wins: the reloaded copy is not cached, or, if the invalidation came just
    /// after it was, the store is asked again as after a cold load.
    fn refresh_live(&self, key: &(ScopeId, KeyVersion), old: &Arc<LiveDek>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            old.refreshing.store(false, Ordering::Release);
            return;
        };
        let (kr, key, old) = (self.clone(), key.clone(), Arc::clone(old));
        rt.spawn(async move {
            let (scope, version) = (&key.0, key.1);
            let generation = kr.generation();
            let fresh = match kr.load(scope, version).await {
                Ok(loaded) => Arc::new(old.renewed(loaded)),
                Err(
                    e @ (Error::Destroyed { .. }
                    | Error::UnknownScope(_)
                    | Error::UnknownVersion { .. }
                    | Error::ScopeDestroyed { .. }),
                ) => {
                    tracing::debug!(%scope, version = version.0, error = %e, "cached key is gone");
                    kr.inner.l1.invalidate(&key).await;
                    bump(&kr.inner.stats.l1_refreshes, "coffer_keys_l1_refreshes_total");
                    return;
                }
                Err(e) => {
                    tracing::debug!(%scope, version = version.0, error = %e, "reloading a cached key failed");
                    tokio::time::sleep(retry_pause(kr.inner.config.l1_ttl)).await;
                    old.refreshing.store(false, Ordering::Release);
                    return;
                }
            };
            if kr.generation() == generation {
                kr.inner.l1.insert(key.clone(), Arc::clone(&fresh)).await;
                if let Some(p) = kr.inner.active.get(scope)
                    && p.live.as_ref().is_some_and(|l| Arc::ptr_eq(l, &old))
                {
                    let with = ActivePointer {
                        live: Some(Arc::clone(&fresh)),
                        ..p
                    };
                    kr.inner.active.insert(scope.clone(), with);
                }
            }
            if kr.generation() != generation {
                // An invalidation came in during the reload, or just after its insert: what
                // the reload put in L1 (and L2, through the load) stays only if the store
                // still has the key, as after a cold load; the pointer is read again.
                if kr.inner.active.get(scope).is_some_and(|p| p.version == version) {
                    kr.inner.active.invalidate(scope);
                }
                if kr.recheck(scope, version).await.is_ok() {
                    old.refreshing.store(false, Ordering::Release);
                }
            }
            bump(&kr.inner.stats.l1_refreshes, "coffer_keys_l1_refreshes_total");
        });
    }

    /// After a load that raced an invalidation: if the version is destroyed (or gone) in the
    /// store now, drops what the load put in L1 and L2 and fails as a destroyed key does.
    async fn recheck(&self, scope: &ScopeId, version: KeyVersion) -> Result<()> {
        let rec = self.inner.store.dek(scope, version).await?;
        if rec
            .as_ref()
            .is_some_and(|r| r.wrapped.is_some() && r.state != DekState::Destroyed)
        {
            return Ok(());
        }
        self.inner.l1.invalidate(&(scope.clone(), version)).await;
        if let Some(l2) = &self.inner.l2
            && let Ok(name) = l2.key.entry_name(&EntryBinding {
                store_id: &self.inner.store_id,
                epoch: self.inner.epoch,
                scope,
                version,
            })
            && let Err(e) = l2.backend.delete(&[name]).await
        {
            self.l2_failed(l2, &e.0);
        }
        match rec {
            None => Err(self.missing(scope, Some(version)).await),
            Some(_) => Err(Error::Destroyed {
                scope: scope.as_str().to_owned(),
                version: Some(version),
            }),
        }
    }

    pub(super) async fn load(&self, scope: &ScopeId, version: KeyVersion) -> Result<LiveDek> {
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
        let hook = self.inner.load_hook.lock().ok().and_then(|h| h.clone());
        if let Some(hook) = hook {
            hook(scope, version).await;
        }
        let dek = match self.l2_get(&rec).await {
            Some(dek) => dek,
            None => self.l2_fill(&rec, wrapped).await?,
        };
        Ok(LiveDek::new(dek, version, self.inner.config.derived_keys))
    }

    pub(super) async fn l2_get(&self, rec: &DekRecord) -> Option<Dek> {
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
    pub(super) async fn l2_fill(&self, rec: &DekRecord, wrapped: &[u8]) -> Result<Dek> {
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
    pub(super) async fn l2_peek(
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

    pub(super) async fn l2_put(
        &self,
        l2: &L2,
        b: &EntryBinding<'_>,
        name: &str,
        rec: &DekRecord,
        dek: &Dek,
    ) {
        let Ok(entry) = l2.key.seal(b, &rec.key_id, now_s(), dek) else {
            return;
        };
        match l2.backend.put(name, &entry, self.inner.config.l2_ttl).await {
            Ok(()) => self.l2_ok(l2),
            Err(e) => self.l2_failed(l2, &e.0),
        }
    }

    pub(super) fn l2_ok(&self, l2: &L2) {
        if l2.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("L2 cache reachable again; using it");
        }
    }

    pub(super) fn l2_failed(&self, l2: &L2, why: &str) {
        bump(&self.inner.stats.l2_errors, "coffer_keys_l2_errors_total");
        if !l2.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = why,
                "L2 cache unreachable; falling back to the KEK provider until it is back"
            );
        }
    }

    pub(super) async fn unwrap_with_kek(&self, rec: &DekRecord, wrapped: &[u8]) -> Result<Dek> {
        self.unwrap_for(rec, wrapped, self.inner.config.audit_unwraps)
            .await
    }

    /// Unwraps a DEK through its KEK and checks its metadata tag; `audit` records the unwrap.
    pub(super) async fn unwrap_for(
        &self,
        rec: &DekRecord,
        wrapped: &[u8],
        audit: bool,
    ) -> Result<Dek> {
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

    pub(super) fn check_tag(&self, rec: &DekRecord, dek: &Dek) -> Result<()> {
        let meta = self.metadata(&rec.scope, rec.version, &rec.key_id);
        Ok(wrap::verify_metadata_tag(dek, &meta, &rec.check)?)
    }
}

/// How long a failed background reload waits before a later hit may start another: a
/// twentieth of the lifetime, between 10 ms and 1 s.
fn retry_pause(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

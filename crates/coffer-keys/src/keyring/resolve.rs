//! Key resolution: the cached active pointer, then L1, L2 and the KEK provider, with the
//! checks that a key read from L2 or unwrapped by a KEK is the one the store records.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use coffer_core::wrap;
use coffer_core::{Dek, KeyVersion, ScopeId};

use super::{ActivePointer, Keyring, L2, LiveDek, bump, now_s};
use crate::audit::Operation;
use crate::cache::EntryBinding;
use crate::error::{Error, Result};
use crate::kek::WrapContext;
use crate::store::{DekRecord, DekState};

impl Keyring {
    /// The active version for writes, from the short-lived pointer cache.
    pub(crate) async fn active_pointer(&self, scope: &ScopeId) -> Result<ActivePointer> {
        Self::refuse_reserved(scope)?;
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

    /// The unwrapped DEK for one version, through L1, L2 and the KEK.
    pub(crate) async fn live(&self, scope: &ScopeId, version: KeyVersion) -> Result<Arc<LiveDek>> {
        Self::refuse_reserved(scope)?;
        let key = (scope.clone(), version);
        if let Some(hit) = self.inner.l1.get(&key).await {
            bump(&self.inner.stats.l1_hits, "coffer_keys_l1_hits_total");
            return Ok(hit);
        }
        // Single flight: concurrent misses for one key wait on one load. Those that waited
        // count as hits: they made no KEK call.
        let loaded = AtomicBool::new(false);
        // Read before the load reads the store: a destroy committed after that read bumps it.
        let generation = self.generation();
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
        if self.generation() != generation {
            // Something was invalidated while the key loaded (a destroy may have committed
            // after the load read the record, and dropped the caches before the load filled
            // them): the store decides whether the key may stay cached.
            self.recheck(scope, version).await?;
        }
        Ok(live)
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

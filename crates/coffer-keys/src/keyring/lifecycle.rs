//! Scope and version lifecycle: the KEK registry and its canaries, creating scopes, rotation
//! (requested, by limit, by age, on compromise), restore, cache invalidation, crypto-shredding
//! and retirement, each audited.

use std::sync::Arc;
use std::time::Duration;

use coffer_core::wrap::{self, KeyMetadata};
use coffer_core::{Dek, KeyVersion, ScopeId};

use super::{DEK_ALGORITHM, Inner, Keyring, LiveDek, bump};
use crate::audit::Operation;
use crate::cache::EntryBinding;
use crate::error::{Error, Result};
use crate::kek::{KekId, WrapContext};
use crate::store::{CreateOutcome, DekRecord, DekState, NewDek, RotateOutcome};

impl Keyring {
    // ---- KEK registry ------------------------------------------------------------------

    /// The scope name canaries are bound to (not a valid application scope: it holds no data).
    const CANARY_SCOPE: &'static str = "coffer:kek-canary";

    pub(super) fn canary_context<'a>(&'a self, scope: &'a ScopeId, kek: &KekId) -> WrapContext<'a> {
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
            // A KEK id new to the registry may still wrap DEKs (a store from before canaries):
            // a wrong key under that id must not get a canary that vouches for it.
            self.prove_kek(id, None).await?;
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
            self.audit_ready().await?;
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
        let mut out = Vec::new();
        for rec in self.inner.store.keks().await? {
            if self.inner.keks.get(&rec.id).is_err() {
                continue;
            }
            let result = self.check_canary(&rec).await;
            if result.is_ok() {
                self.proven(&rec.id);
            }
            out.push((rec.id, result));
        }
        Ok(out)
    }

    /// Opens a KEK's canary with the configured key of that id and checks its tag.
    async fn check_canary(&self, rec: &crate::store::KekRecord) -> Result<()> {
        let scope = ScopeId::new(Self::CANARY_SCOPE)?;
        let kek = self.inner.keks.get(&rec.id)?;
        let ctx = self.canary_context(&scope, &rec.id);
        match kek.unwrap(&rec.canary_wrapped, &ctx).await {
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
        }
    }

    fn proven(&self, id: &KekId) {
        if let Ok(mut set) = self.inner.proven.lock() {
            set.insert(id.clone());
        }
    }

    /// Proves that the configured key of KEK `id` is the key the store knows under that id,
    /// before anything is wrapped under it: against the store's canary for `id`, or, when the
    /// registry has none, by unwrapping a DEK already wrapped under `id` (one of `scope`'s
    /// first, else any in the store). A KEK id the store has never seen has nothing to prove
    /// against and passes. A successful proof is remembered for the life of this keyring, so
    /// it costs one registry read and one unwrap per KEK per process.
    ///
    /// Every wrap of a DEK goes through this ([`Error::WrongKek`] then, and nothing written),
    /// so a wrong key can never write keys that the right key cannot open.
    pub async fn prove_kek(&self, id: &KekId, scope: Option<&ScopeId>) -> Result<()> {
        if self.inner.proven.lock().is_ok_and(|set| set.contains(id)) {
            return Ok(());
        }
        self.inner.keks.get(id)?;
        let canary = self
            .inner
            .store
            .keks()
            .await?
            .into_iter()
            .find(|k| k.id == *id);
        match canary {
            Some(rec) => self.check_canary(&rec).await?,
            None => {
                let mut sample = None;
                if let Some(scope) = scope {
                    sample = self
                        .inner
                        .store
                        .deks(scope)
                        .await?
                        .into_iter()
                        .find(|d| d.kek == *id && d.wrapped.is_some());
                }
                if sample.is_none() {
                    sample = self.inner.store.deks_under(id, 1).await?.into_iter().next();
                }
                if let Some(rec) = sample
                    && let Some(wrapped) = rec.wrapped.as_deref()
                {
                    match self.unwrap_for(&rec, wrapped, false).await {
                        Ok(_) => {}
                        Err(Error::Crypto(_)) => {
                            return Err(Error::WrongKek {
                                kek: id.to_string(),
                            });
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        self.proven(id);
        Ok(())
    }

    /// The one place a DEK is wrapped for the key store: proves the KEK first
    /// ([`prove_kek`](Self::prove_kek)), then wraps.
    pub(super) async fn wrap_under(
        &self,
        id: &KekId,
        dek: &Dek,
        ctx: &WrapContext<'_>,
    ) -> Result<Vec<u8>> {
        self.prove_kek(id, Some(ctx.scope)).await?;
        let kek = self.inner.keks.get(id)?;
        let wrapped = kek.wrap(dek, ctx).await?;
        bump(&self.inner.stats.kek_wraps, "coffer_keys_kek_wraps_total");
        Ok(wrapped)
    }

    // ---- scopes and versions ------------------------------------------------------------

    /// Makes a new DEK for `scope` at `version`, wrapped under the primary KEK.
    pub(super) async fn new_dek(
        &self,
        scope: &ScopeId,
        version: KeyVersion,
    ) -> Result<(Dek, NewDek)> {
        let dek = Dek::generate()?;
        let key_id: [u8; 16] = coffer_core::digest::random_array()?;
        let kek_id = self.inner.keks.primary_id().clone();
        let kek = self.inner.keks.primary()?;
        let ctx = WrapContext {
            store_id: &self.inner.store_id,
            scope,
            version,
            key_id: &key_id,
        };
        let wrapped = self.wrap_under(&kek_id, &dek, &ctx).await?;
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

    /// Creates a scope with its first DEK version. [`Error::ScopeExists`] if it exists,
    /// [`Error::ScopeDestroyed`] (with when) if it was destroyed: a destroyed scope stays a
    /// tombstone and its name is never reused.
    pub async fn create_scope(&self, scope: &ScopeId) -> Result<DekRecord> {
        Self::refuse_reserved(scope)?;
        if let Some(s) = self.inner.store.scope(scope).await? {
            return Err(match s.destroyed_at_us {
                Some(at) => Error::ScopeDestroyed {
                    scope: scope.as_str().to_owned(),
                    destroyed_at_us: Some(at),
                },
                None => Error::ScopeExists(scope.as_str().to_owned()),
            });
        }
        match self.create_or_get(scope).await? {
            CreateOutcome::Created(rec) => Ok(rec),
            CreateOutcome::Existing(_) => Err(Error::ScopeExists(scope.as_str().to_owned())),
        }
    }

    /// The scope's active version, creating the scope if it does not exist (applications that
    /// make scopes per tenant or per table on first use call this).
    pub async fn ensure_scope(&self, scope: &ScopeId) -> Result<KeyVersion> {
        Self::refuse_reserved(scope)?;
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

    pub(super) async fn create_or_get(&self, scope: &ScopeId) -> Result<CreateOutcome> {
        self.audit_ready().await?;
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

    pub(super) async fn rotate_from(
        &self,
        scope: &ScopeId,
        expected: KeyVersion,
        why: &str,
    ) -> Result<DekRecord> {
        Self::refuse_reserved(scope)?;
        self.audit_ready().await?;
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
        self.announce(scope, &[]).await;
        Ok(rec)
    }

    /// Puts a DEK this process just created (and committed) into L1, sparing a KEK call on
    /// its first use.
    pub(super) async fn keep(&self, scope: &ScopeId, version: KeyVersion, dek: Dek) {
        let live = Arc::new(LiveDek::new(dek, version, self.inner.config.derived_keys));
        self.inner.l1.insert((scope.clone(), version), live).await;
    }

    pub(super) async fn active_record(&self, scope: &ScopeId) -> Result<DekRecord> {
        match self.inner.store.active_dek(scope).await? {
            Some(r) => Ok(r),
            None => Err(self.missing(scope, None).await),
        }
    }

    /// The error for a scope (or version) that has no usable key.
    pub(super) async fn missing(&self, scope: &ScopeId, version: Option<KeyVersion>) -> Error {
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
        Self::refuse_reserved(scope)?;
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
        self.audit_ready().await?;
        let epoch = self.inner.store.mark_restored(gap).await?;
        self.clear_l1();
        self.audit(self.event(Operation::Restore).detail(format!(
            "store epoch {epoch}; next versions skip {gap} numbers"
        )))
        .await?;
        Ok(epoch)
    }

    /// Drops versions of a scope from this process's L1 and from L2.
    pub(super) async fn forget(&self, scope: &ScopeId, versions: &[KeyVersion]) {
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
        self.announce(scope, versions).await;
    }

    /// Drops from L1 every entry whose L2 name is in `names` (an invalidation published by
    /// another process: destroy, compromise).
    pub(super) fn apply_invalidation(inner: &Inner, names: &[String]) {
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
        // Bumped even when nothing cached matches: a load in flight for one of these keys
        // re-checks the store before it keeps what it loaded.
        inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
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
        self.shred(scope, Operation::Destroy, "").await
    }

    /// [`destroy`](Self::destroy), audited as `op` with `why` before the count in its detail.
    pub(super) async fn shred(&self, scope: &ScopeId, op: Operation, why: &str) -> Result<u32> {
        Self::refuse_reserved(scope)?;
        let deks = self.inner.store.deks(scope).await?;
        if self.inner.store.scope(scope).await?.is_none() {
            return Err(Error::UnknownScope(scope.as_str().to_owned()));
        }
        self.audit_ready().await?;
        let n = self.inner.store.destroy_scope(scope).await?;
        let versions: Vec<KeyVersion> = deks.iter().map(|d| d.version).collect();
        self.forget(scope, &versions).await;
        self.audit(
            self.event(op)
                .scope(scope.as_str())
                .detail(if why.is_empty() {
                    format!("{n} key versions erased")
                } else {
                    format!("{why}: {n} key versions erased")
                }),
        )
        .await?;
        let at = self
            .inner
            .store
            .scope(scope)
            .await?
            .and_then(|s| s.destroyed_at_us)
            .unwrap_or_default();
        self.append_tombstone(scope, at).await?;
        Ok(n)
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
        Self::refuse_reserved(scope)?;
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
        self.audit_ready().await?;
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
        self.announce(scope, &[version]).await;
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
}

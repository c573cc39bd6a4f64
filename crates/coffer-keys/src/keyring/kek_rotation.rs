//! KEK rotation: re-wrapping every live DEK under the primary KEK, online and resumable.

use std::sync::Arc;

use super::Keyring;
use crate::audit::Operation;
use crate::error::{Error, Result};
use crate::kek::{KekId, WrapContext};
use crate::store::{DekRecord, Rewrap};

/// DEKs unwrapped and re-wrapped at once during a KEK rotation.
const REWRAP_CONCURRENCY: usize = 16;

/// What a KEK rotation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// DEKs re-wrapped by this run.
    pub rewrapped: u64,
    /// DEKs that another process re-wrapped (or changed) first.
    pub skipped: u64,
}

impl Keyring {
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
        // Refused before the first re-wrap if the primary is not the key the store knows.
        self.prove_kek(&target, None).await?;
        // Opened (under the KEK it is wrapped under now) before that wrap is replaced.
        self.audit_ready().await?;
        // Keyset pagination on (scope, version): each batch starts after the last one read, so
        // millions of DEKs are walked once, not rescanned from the start per batch. A pass that
        // ends with DEKs still not under the primary (written behind the cursor meanwhile by a
        // process with the old primary) starts another from the beginning.
        let mut after: Option<(coffer_core::ScopeId, coffer_core::KeyVersion)> = None;
        loop {
            let todo = self
                .inner
                .store
                .deks_not_under_after(&target, after.as_ref().map(|(s, v)| (s, *v)), batch.max(1))
                .await?;
            let Some(last) = todo.last() else {
                if after.is_some() && self.inner.store.count_deks_not_under(&target).await? > 0 {
                    after = None;
                    continue;
                }
                break;
            };
            after = Some((last.scope.clone(), last.version));
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
            progress(&report);
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

    pub(super) async fn rewrap_one(
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
        let new = self.wrap_under(target, &dek, &ctx).await?;
        Ok(Some(Rewrap {
            scope: rec.scope.clone(),
            version: rec.version,
            old: rec.kek.clone(),
            new: target.clone(),
            wrapped: new,
            wrap_algorithm: kek.algorithm().to_owned(),
        }))
    }
}

//! The write path: encryptions leased from the key store in blocks (one block leased ahead in the
//! background), and automatic rotation when a version reaches its limit or age.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use coffer_core::{KeyVersion, ScopeId};

use super::{ActivePointer, Keyring, LiveDek};
use crate::error::{Error, Result};

impl Keyring {
    /// The active version and its DEK, with one encryption leased (rotating first if the
    /// version is past its limit or age).
    pub(super) async fn for_write(&self, scope: &ScopeId, n: u64) -> Result<Arc<LiveDek>> {
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
            let live = match p.live.as_ref().and_then(|l| self.kept_live(scope, l)) {
                Some(live) => live,
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
    pub(super) fn lease_ahead(
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
}

//! The keyring's side of the key store's invalidation bus ([`crate::bus`]): publishing what this
//! process changed, and applying what others did.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use coffer_core::{KeyVersion, ScopeId};

use super::{Inner, Keyring};
use crate::bus::{BusEvent, Invalidation, InvalidationBus};

impl Keyring {
    /// Tells the other processes of this store (through the store's bus, if it has one) to drop
    /// `versions` of `scope` from their L1 and to re-read its active version; an empty list
    /// asks only the latter. A failure is logged: the caches' TTLs bound what a missed notice
    /// costs.
    pub(super) async fn announce(&self, scope: &ScopeId, versions: &[KeyVersion]) {
        let Some(bus) = &self.inner.bus else {
            return;
        };
        let notice = Invalidation {
            store_id: self.inner.store_id,
            scope: scope.clone(),
            versions: versions.to_vec(),
            every_version: false,
        };
        if let Err(e) = bus.publish(&notice).await {
            metrics::counter!("coffer_invalidation_publish_failures_total").increment(1);
            tracing::warn!(
                error = %e,
                "could not publish a key invalidation; other processes drop the keys when their \
                 cache lifetimes pass"
            );
        }
    }

    /// Subscribes `inner`'s keyring to `bus`; the subscription ends when the keyring is dropped.
    pub(super) fn listen(inner: &Arc<Inner>, bus: &Arc<dyn InvalidationBus>) {
        let weak = Arc::downgrade(inner);
        bus.subscribe(Arc::new(move |event: BusEvent| {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            match event {
                BusEvent::Notice(n) if n.store_id == inner.store_id => apply(&inner, &n),
                BusEvent::Notice(_) | BusEvent::Idle => {}
                BusEvent::Resumed => {
                    // Notices may have been missed while the channel was down.
                    inner.generation.fetch_add(1, Ordering::Release);
                    inner.l1.invalidate_all();
                    inner.active.invalidate_all();
                }
            }
            true
        }));
    }
}

/// Drops what a notice names from this process's caches.
fn apply(inner: &Inner, notice: &Invalidation) {
    inner.invalidate_pointer(&notice.scope);
    let keys: Vec<(ScopeId, KeyVersion)> = if notice.every_version {
        inner
            .l1
            .iter()
            .map(|(k, _)| (*k).clone())
            .filter(|(scope, _)| *scope == notice.scope)
            .collect()
    } else {
        notice
            .versions
            .iter()
            .map(|v| (notice.scope.clone(), *v))
            .collect()
    };
    if keys.is_empty() {
        return;
    }
    metrics::counter!("coffer_invalidations_applied_total").increment(1);
    let l1 = inner.l1.clone();
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            for key in keys {
                l1.invalidate(&key).await;
            }
        });
    }
}

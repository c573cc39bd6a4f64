//! Data-access audit (docs/DESIGN.md §S5, seed 002): one hash-chained record per token, scope and
//! operation per interval (a minute by default), with how many items succeeded and failed.
//! Failed decryptions are always counted, never sampled away. Denied requests are recorded
//! at once by [`crate::app::App::authorize`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use coffer_keys::{AuditEvent, Keyring, Operation};

#[derive(Default, Clone, Copy)]
struct Counts {
    ok: u64,
    failed: u64,
}

/// Token id, tenant, scope and operation.
type Key = (String, String, String, &'static str);

/// Counts gathered since the last flush.
#[derive(Default)]
pub(crate) struct AccessLog {
    counts: Mutex<BTreeMap<Key, Counts>>,
}

impl AccessLog {
    /// Adds `ok` successful and `failed` failed items for one token, tenant, scope and operation.
    pub(crate) fn add(
        &self,
        token_id: &str,
        tenant: &str,
        scope: &str,
        op: &'static str,
        ok: u64,
        failed: u64,
    ) {
        if let Ok(mut m) = self.counts.lock() {
            let c = m
                .entry((token_id.to_owned(), tenant.to_owned(), scope.to_owned(), op))
                .or_default();
            c.ok += ok;
            c.failed += failed;
        }
    }

    /// Writes one audit record per entry and starts over. Entries that could not be written
    /// are kept for the next flush; at shutdown (`last`) they go to the log instead, so no
    /// count is lost silently.
    pub(crate) async fn flush(&self, keyring: &Keyring, last: bool) {
        let taken = match self.counts.lock() {
            Ok(mut m) => std::mem::take(&mut *m),
            Err(_) => return,
        };
        for ((token, tenant, scope, op), c) in taken {
            let event = AuditEvent::new(format!("token:{token}"), Operation::DataAccess)
                .scope(scope.clone())
                .detail(format!(
                    "tenant={tenant} operation={op} ok={} failed={}",
                    c.ok, c.failed
                ));
            if let Err(e) = keyring.record(event).await {
                if last {
                    tracing::error!(error = %e, token_id = %token, tenant = %tenant, scope = %scope, operation = op, ok = c.ok, failed = c.failed, "could not write a data-access audit record at shutdown; its counts are in this log line");
                    continue;
                }
                tracing::error!(error = %e, "could not write a data-access audit record; keeping it for the next flush");
                if let Ok(mut m) = self.counts.lock() {
                    let k = m.entry((token, tenant, scope, op)).or_default();
                    k.ok += c.ok;
                    k.failed += c.failed;
                }
            }
        }
    }
}

//! Data-access audit (docs/DESIGN.md §S5, seed 002): one hash-chained record per token, scope and
//! operation per interval (a minute by default), with how many items succeeded and failed.
//! Failed decryptions are always counted, never sampled away. Denied requests (a tenant's
//! token naming a scope its tenant does not own) are counted the same way, one record per
//! token, scope and reason per interval with the count, so a prober cannot turn its requests
//! into key-store writes one for one.
//!
//! Counts held only in memory are lost if the process dies without a SIGTERM (kill -9, a
//! crash, the machine failing). Their number is bounded: the service never answers while more
//! than `[service] audit_max_unrecorded` items of answered requests are unwritten. A request
//! that takes the count past the bound writes every pending record before its answer leaves
//! ([`AccessLog::settle`]); if that write fails, the answer is withheld (503 `audit_unavailable`)
//! so that no data leaves unrecorded beyond the bound (docs/SERVICE.md §10).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use coffer_keys::{AuditEvent, Keyring, Operation};

#[derive(Default, Clone, Copy)]
struct Counts {
    ok: u64,
    failed: u64,
}

/// Token id, tenant, scope and operation.
type Key = (String, String, String, &'static str);

/// Token id, tenant, scope and reason of refused requests.
type DenialKey = (String, String, String, &'static str);

/// Most distinct keys kept per map between two flushes; past it, counts go to one entry per
/// token whose scope is `*` (the memory does not grow with the scope names a caller sends).
const MAX_KEYS: usize = 10_000;

/// Counts gathered since the last flush.
#[derive(Default)]
pub(crate) struct AccessLog {
    counts: Mutex<BTreeMap<Key, Counts>>,
    denials: Mutex<BTreeMap<DenialKey, u64>>,
    /// Items (and refused requests) counted but not yet in the key store: raised when counted,
    /// lowered only once their record is written (or, at shutdown, logged).
    unrecorded: AtomicU64,
    /// One flush at a time, so that a request that waited for the lock knows that every count
    /// made before it took the lock has been through a write attempt.
    flushing: tokio::sync::Mutex<()>,
}

/// The answer to a request that would leave more items unrecorded than the bound allows.
#[derive(Debug)]
pub(crate) struct Unrecorded(pub(crate) u64);

impl AccessLog {
    /// Items counted but not yet written.
    pub(crate) fn unrecorded(&self) -> u64 {
        self.unrecorded.load(Ordering::Acquire)
    }

    /// Returns once at most `bound` counted items are unwritten, writing the pending records
    /// first when there are more. Fails (with how many remain unwritten) if the write fails:
    /// the caller must then not answer with data.
    pub(crate) async fn settle(&self, keyring: &Keyring, bound: u64) -> Result<(), Unrecorded> {
        if self.unrecorded() <= bound {
            return Ok(());
        }
        // This request's counts were made before the flush lock was taken: this flush (or one
        // that finished before it) has tried them. Counts added meanwhile are their requests'
        // own business.
        if self.flush(keyring, false).await {
            Ok(())
        } else {
            Err(Unrecorded(self.unrecorded()))
        }
    }

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
            let mut key = (token_id.to_owned(), tenant.to_owned(), scope.to_owned(), op);
            if m.len() >= MAX_KEYS && !m.contains_key(&key) {
                key.2 = "*".to_owned();
            }
            let c = m.entry(key).or_default();
            c.ok += ok;
            c.failed += failed;
            self.unrecorded.fetch_add(ok + failed, Ordering::AcqRel);
        }
    }

    /// Counts one refused request.
    pub(crate) fn deny(&self, token_id: &str, tenant: &str, scope: &str, reason: &'static str) {
        if let Ok(mut m) = self.denials.lock() {
            let mut key = (
                token_id.to_owned(),
                tenant.to_owned(),
                scope.to_owned(),
                reason,
            );
            if m.len() >= MAX_KEYS && !m.contains_key(&key) {
                key.2 = "*".to_owned();
            }
            *m.entry(key).or_default() += 1;
            self.unrecorded.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Writes one audit record per entry and starts over. Entries that could not be written
    /// are kept for the next flush; at shutdown (`last`) they go to the log instead, so no
    /// count is lost silently. Returns whether every record was written.
    pub(crate) async fn flush(&self, keyring: &Keyring, last: bool) -> bool {
        let _one = self.flushing.lock().await;
        let mut all = true;
        let denials = match self.denials.lock() {
            Ok(mut m) => std::mem::take(&mut *m),
            Err(_) => BTreeMap::new(),
        };
        for ((token, tenant, scope, reason), n) in denials {
            let event = AuditEvent::new(format!("token:{token}"), Operation::AccessDenied)
                .scope(scope.clone())
                .detail(format!("tenant={tenant} reason={reason} count={n}"));
            if let Err(e) = keyring.record(event).await {
                if last {
                    tracing::error!(error = %e, token_id = %token, tenant = %tenant, scope = %scope, reason, count = n, "could not write an access-denied audit record at shutdown; its count is in this log line");
                    self.recorded(n);
                    continue;
                }
                all = false;
                tracing::error!(error = %e, "could not write an access-denied audit record; keeping it for the next flush");
                if let Ok(mut m) = self.denials.lock() {
                    *m.entry((token, tenant, scope, reason)).or_default() += n;
                }
            } else {
                self.recorded(n);
            }
        }
        let taken = match self.counts.lock() {
            Ok(mut m) => std::mem::take(&mut *m),
            Err(_) => return false,
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
                    self.recorded(c.ok + c.failed);
                    continue;
                }
                all = false;
                tracing::error!(error = %e, "could not write a data-access audit record; keeping it for the next flush");
                if let Ok(mut m) = self.counts.lock() {
                    let k = m.entry((token, tenant, scope, op)).or_default();
                    k.ok += c.ok;
                    k.failed += c.failed;
                }
            } else {
                self.recorded(c.ok + c.failed);
            }
        }
        all
    }

    /// Lowers the unwritten count by `n` items whose record was written.
    fn recorded(&self, n: u64) {
        // Never below zero: `fetch_update` retries on a concurrent change.
        let _ = self
            .unrecorded
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            });
    }
}

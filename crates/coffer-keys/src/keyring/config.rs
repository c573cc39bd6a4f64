//! Keyring settings and the cache and KEK counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Keyring settings. `Default` gives the documented defaults (docs/KEYS.md §5).
#[derive(Clone, Debug)]
pub struct KeyringConfig {
    /// L1 time to live (default 60 s).
    pub l1_ttl: Duration,
    /// L1 size bound in DEKs (default 10 000).
    pub l1_capacity: u64,
    /// Column keys, and blind-index keys, each cached DEK keeps at most (default 256; the
    /// least recently used are dropped and derived again when needed).
    pub derived_keys: usize,
    /// How long a process trusts its cached "active version" pointer (default 5 s).
    pub active_ttl: Duration,
    /// L2 sliding time to live (default 10 min).
    pub l2_ttl: Duration,
    /// L2 absolute lifetime, counted from the KEK unwrap (default 1 h).
    pub l2_max_lifetime: Duration,
    /// How long an L2 miss waits for another process's unwrap before unwrapping itself.
    pub l2_lock_wait: Duration,
    /// Encryptions per DEK version before automatic rotation (default 2^30).
    pub max_encryptions: u64,
    /// Age of an active version before automatic rotation (`None`: never by age).
    pub max_age: Option<Duration>,
    /// Encryptions leased from the store at a time (default 16 384; a crash over-counts by at
    /// most this many).
    pub lease_block: u64,
    /// Record every KEK unwrap in the audit trail (default on).
    pub audit_unwraps: bool,
    /// Who this process is, for the audit trail.
    pub actor: String,
    /// A file rewritten (atomically, mode 0600) with the audit trail's head (`id hash-hex`)
    /// after each append, for `coffer keys audit --verify --anchor FILE` (docs/KEYS.md §4).
    pub audit_anchor_file: Option<std::path::PathBuf>,
    /// The tombstone ledger (`[audit] tombstone_file`): every destroy appends a line; the
    /// start-up check and `apply_tombstones` destroy again any listed scope the store holds
    /// alive.
    pub tombstone_file: Option<std::path::PathBuf>,
}

impl Default for KeyringConfig {
    fn default() -> Self {
        KeyringConfig {
            l1_ttl: Duration::from_secs(60),
            l1_capacity: 10_000,
            derived_keys: 256,
            active_ttl: Duration::from_secs(5),
            l2_ttl: Duration::from_secs(600),
            l2_max_lifetime: Duration::from_secs(3600),
            l2_lock_wait: Duration::from_millis(1000),
            max_encryptions: coffer_core::DEFAULT_ENCRYPTION_LIMIT,
            max_age: None,
            lease_block: 16_384,
            audit_unwraps: true,
            actor: "coffer".to_owned(),
            audit_anchor_file: None,
            tombstone_file: None,
        }
    }
}

/// Counters of cache and KEK traffic since the keyring was built (also exported through the
/// `metrics` facade as `coffer_keys_*`).
#[derive(Debug, Default)]
pub struct Stats {
    /// L1 hits.
    pub l1_hits: AtomicU64,
    /// L1 misses.
    pub l1_misses: AtomicU64,
    /// L2 hits.
    pub l2_hits: AtomicU64,
    /// L2 misses.
    pub l2_misses: AtomicU64,
    /// L2 operations that failed (L2 unreachable).
    pub l2_errors: AtomicU64,
    /// DEKs unwrapped by a KEK provider.
    pub kek_unwraps: AtomicU64,
    /// DEKs wrapped by a KEK provider.
    pub kek_wraps: AtomicU64,
    /// Background reloads of L1 entries ahead of their expiry that finished (the reloaded key
    /// kept, or dropped because an invalidation came in meanwhile).
    pub l1_refreshes: AtomicU64,
    /// Reads of a scope's active version that a caller waited for (no pointer cached, or it
    /// expired); the background re-reads of a pointer still in use are not counted.
    pub active_misses: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// L1 hits.
    pub l1_hits: u64,
    /// L1 misses.
    pub l1_misses: u64,
    /// L2 hits.
    pub l2_hits: u64,
    /// L2 misses.
    pub l2_misses: u64,
    /// L2 failures.
    pub l2_errors: u64,
    /// KEK unwraps.
    pub kek_unwraps: u64,
    /// KEK wraps.
    pub kek_wraps: u64,
    /// Background L1 reloads finished.
    pub l1_refreshes: u64,
    /// Active-version reads a caller waited for.
    pub active_misses: u64,
}

impl Stats {
    pub(super) fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            l1_hits: l(&self.l1_hits),
            l1_misses: l(&self.l1_misses),
            l2_hits: l(&self.l2_hits),
            l2_misses: l(&self.l2_misses),
            l2_errors: l(&self.l2_errors),
            kek_unwraps: l(&self.kek_unwraps),
            kek_wraps: l(&self.kek_wraps),
            l1_refreshes: l(&self.l1_refreshes),
            active_misses: l(&self.active_misses),
        }
    }
}

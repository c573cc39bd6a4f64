//! Unwrapped DEK versions as L1 holds them, with their derived column and blind-index keys and
//! the lease of encryptions this process may still make under each; and the cached pointer to a
//! scope's active version.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use coffer_core::{BlindIndexKey, ColumnId, Dek, FieldKey, KeyVersion, Normalizer, ScopeId, Suite};

use super::BlindIndexSpec;
use crate::error::Result;

/// Keys derived from one DEK, by the names a caller sent (columns, blind indexes), at most
/// `cap` of them: when full, the least recently used quarter is dropped. Derived keys are cheap
/// to derive again, and a dropped key is zeroized when its last handle goes (AWS-LC cleanses
/// it), so the bound costs a re-derivation, never a wrong or lost key; without it, a caller
/// sending ever new names would grow the process without limit.
pub(crate) struct Derived<K, V> {
    map: RwLock<HashMap<K, (Arc<V>, AtomicU64)>>,
    clock: AtomicU64,
    cap: usize,
}

impl<K: Eq + Hash, V> Derived<K, V> {
    pub(super) fn new(cap: usize) -> Self {
        Derived {
            map: RwLock::default(),
            clock: AtomicU64::new(0),
            cap: cap.max(1),
        }
    }

    /// The key kept under `key`, or the one `make` derives (kept unless another task kept one
    /// first: then that one).
    pub(super) fn get_or_make(&self, key: K, make: impl FnOnce() -> Result<V>) -> Result<Arc<V>> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Ok(map) = self.map.read()
            && let Some((v, used)) = map.get(&key)
        {
            used.store(now, Ordering::Relaxed);
            return Ok(Arc::clone(v));
        }
        let made = Arc::new(make()?);
        let Ok(mut map) = self.map.write() else {
            return Ok(made);
        };
        if !map.contains_key(&key) && map.len() >= self.cap {
            Self::evict(&mut map, self.cap);
        }
        let (v, _) = map
            .entry(key)
            .or_insert_with(|| (made, AtomicU64::new(now)));
        Ok(Arc::clone(v))
    }

    /// Drops the least recently used quarter (at least one entry). Every entry's last use is
    /// a distinct clock value, so exactly that many go.
    fn evict(map: &mut HashMap<K, (Arc<V>, AtomicU64)>, cap: usize) {
        let keep = cap - (cap / 4).max(1);
        let drop = map.len().saturating_sub(keep);
        if drop == 0 {
            return;
        }
        let mut ticks: Vec<u64> = map
            .values()
            .map(|(_, t)| t.load(Ordering::Relaxed))
            .collect();
        let (_, cutoff, _) = ticks.select_nth_unstable(drop - 1);
        let cutoff = *cutoff;
        map.retain(|_, (_, t)| t.load(Ordering::Relaxed) > cutoff);
    }

    /// How many keys are kept.
    pub(super) fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }
}

/// An unwrapped DEK version held in L1, with the column keys derived from it. Dropping the last
/// handle zeroizes the DEK (and the derived keys, which AWS-LC cleanses).
pub(crate) struct LiveDek {
    pub(crate) dek: Dek,
    pub(super) version: KeyVersion,
    pub(super) columns: Derived<(ColumnId, Suite), FieldKey>,
    pub(super) indexes: Derived<IndexCacheKey, BlindIndexKey>,
    lease: Mutex<Lease>,
    /// Held by the one task that leases the next block when this lease runs out: the others
    /// that find it used up wait for that block instead of each leasing a block of their own,
    /// which under load burned the version's encryption limit 20–30 times faster than values
    /// were sealed and queued every request behind the store's connection pool.
    pub(super) refill: tokio::sync::Mutex<()>,
    /// Set while a background task leases the next block ahead of need.
    pub(super) prefetching: AtomicBool,
}

type IndexCacheKey = (ColumnId, String, u16, Vec<Normalizer>);

/// The encryptions this process may still make under a version. Only counts matter: the key
/// store's total is what bounds the version, and every block counted here was added to it.
#[derive(Default)]
struct Lease {
    /// Left of the blocks in use.
    left: u64,
    /// The highest total the key store returned for a block this process leased.
    end: u64,
    /// Leased ahead in the background, not yet in use (0: none).
    spare: u64,
}

impl LiveDek {
    /// A live DEK keeping at most `derived` column keys and `derived` blind-index keys.
    pub(super) fn new(dek: Dek, version: KeyVersion, derived: usize) -> Self {
        LiveDek {
            dek,
            version,
            columns: Derived::new(derived),
            indexes: Derived::new(derived),
            lease: Mutex::default(),
            refill: tokio::sync::Mutex::new(()),
            prefetching: AtomicBool::new(false),
        }
    }

    pub(super) fn field_key(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        suite: Suite,
    ) -> Result<Arc<FieldKey>> {
        self.columns.get_or_make((column.clone(), suite), || {
            Ok(FieldKey::new(
                &self.dek,
                self.version,
                suite,
                scope,
                column,
            )?)
        })
    }

    /// The blind-index key of `spec` under this version, derived once and kept while it is
    /// among the `derived` most recently used (and at most as long as the DEK itself: dropped
    /// with it on eviction, destroy or compromise).
    pub(super) fn index_key(&self, spec: &BlindIndexSpec) -> Result<Arc<BlindIndexKey>> {
        let key = (
            spec.column.clone(),
            spec.name.clone(),
            spec.bits,
            spec.normalizers.clone(),
        );
        self.indexes.get_or_make(key, || spec.key(&self.dek))
    }

    /// How many column and blind-index keys this DEK keeps.
    pub(super) fn derived_len(&self) -> (usize, usize) {
        (self.columns.len(), self.indexes.len())
    }

    /// Takes `n` encryptions from the current lease; `false` if fewer than `n` are left.
    pub(super) fn take(&self, n: u64) -> bool {
        let Ok(mut l) = self.lease.lock() else {
            return false;
        };
        if l.left >= n {
            l.left -= n;
            return true;
        }
        // The block leased ahead joins what is left.
        if l.left + l.spare >= n {
            l.left = l.left + l.spare - n;
            l.spare = 0;
            return true;
        }
        false
    }

    pub(super) fn refill(&self, total: u64, block: u64) {
        if let Ok(mut l) = self.lease.lock()
            && total > l.end
        {
            l.end = total;
            l.left += block;
        }
    }

    pub(super) fn leased(&self) -> u64 {
        self.lease.lock().map(|l| l.end).unwrap_or(u64::MAX)
    }

    /// Whether less than half a block is left with nothing leased ahead.
    pub(super) fn low(&self, block: u64) -> bool {
        self.lease
            .lock()
            .is_ok_and(|l| l.spare == 0 && l.left < block / 2)
    }

    /// Whether the next block should be leased now: [`low`](Self::low), and no task is
    /// leasing one already.
    pub(super) fn wants_spare(&self, block: u64) -> bool {
        self.low(block) && !self.prefetching.swap(true, Ordering::AcqRel)
    }

    pub(super) fn add_spare(&self, total: u64, block: u64) {
        if let Ok(mut l) = self.lease.lock()
            && total > l.end
        {
            l.end = total;
            l.spare += block;
        }
    }
}

/// What a process remembers, for at most `active_ttl`, about a scope's active version.
#[derive(Clone)]
pub(crate) struct ActivePointer {
    pub(crate) version: KeyVersion,
    pub(super) leased: u64,
    /// When the version passes `max_age`, on this process's monotonic clock (computed from the
    /// database clock when the pointer was read).
    pub(super) age_deadline: Option<Instant>,
    /// The unwrapped DEK, once this process has it: the write path then needs one lookup.
    pub(super) live: Option<Arc<LiveDek>>,
    /// The versions searches cover (active and decrypt-only, active first), once read: kept
    /// and invalidated with the pointer, so a search needs no key-store query.
    pub(super) searchable: Option<Arc<Vec<KeyVersion>>>,
}

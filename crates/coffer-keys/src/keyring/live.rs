//! Unwrapped DEK versions as L1 holds them, with their derived column and blind-index keys and
//! the lease of encryptions this process may still make under each; and the cached pointer to a
//! scope's active version.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
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
        match self.kept(&key, now) {
            Some(v) => Ok(v),
            None => self.make(key, make, now),
        }
    }

    /// As [`get_or_make`](Self::get_or_make), looked up by a borrowed form of the key: the
    /// owned key (`own`) is built only when the key is not kept yet.
    pub(super) fn get_or_make_by<Q: ?Sized + Eq + Hash>(
        &self,
        probe: &Q,
        own: impl FnOnce() -> K,
        make: impl FnOnce() -> Result<V>,
    ) -> Result<Arc<V>>
    where
        K: Borrow<Q>,
    {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        match self.kept(probe, now) {
            Some(v) => Ok(v),
            None => self.make(own(), make, now),
        }
    }

    /// The key kept under `probe`, marked used at `now`.
    fn kept<Q: ?Sized + Eq + Hash>(&self, probe: &Q, now: u64) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
    {
        let map = self.map.read().ok()?;
        let (v, used) = map.get(probe)?;
        used.store(now, Ordering::Relaxed);
        Some(Arc::clone(v))
    }

    /// Derives the key of `key` and keeps it (unless another task kept one first: then that
    /// one).
    fn make(&self, key: K, make: impl FnOnce() -> Result<V>, now: u64) -> Result<Arc<V>> {
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
    pub(super) columns: Derived<ColumnKey, FieldKey>,
    pub(super) indexes: Derived<IndexCacheKey, BlindIndexKey>,
    /// When this copy was read from L2 or unwrapped: L1 serves it for at most `l1_ttl` from
    /// here, and reloads it in the background once it is older than
    /// [`refresh_after`](super::refresh_after).
    pub(super) loaded_at: Instant,
    /// Set while one background task reloads this version ahead of its expiry.
    pub(super) refreshing: AtomicBool,
    /// Shared with the copy a refresh loads in its place (the same version, the same count in
    /// the key store): the encryptions leased under this version are not lost at a reload.
    lease: Arc<Mutex<Lease>>,
    /// Held by the one task that leases the next block when this lease runs out: the others
    /// that find it used up wait for that block instead of each leasing a block of their own,
    /// which under load burned the version's encryption limit 20–30 times faster than values
    /// were sealed and queued every request behind the store's connection pool.
    pub(super) refill: Arc<tokio::sync::Mutex<()>>,
    /// Set while a background task leases the next block ahead of need.
    pub(super) prefetching: Arc<AtomicBool>,
}

type IndexCacheKey = (ColumnId, String, u16, Vec<Normalizer>);

/// The column and suite a column key is kept under.
pub(crate) struct ColumnKey(ColumnId, Suite);

/// A column and suite, owned ([`ColumnKey`]) or borrowed: the write path looks a column key up
/// without copying the column name (`HashMap::get` takes any form the key borrows as).
pub(crate) trait ColumnLookup {
    fn parts(&self) -> (&str, Suite);
}

impl ColumnLookup for ColumnKey {
    fn parts(&self) -> (&str, Suite) {
        (self.0.as_str(), self.1)
    }
}

impl ColumnLookup for (&ColumnId, Suite) {
    fn parts(&self) -> (&str, Suite) {
        (self.0.as_str(), self.1)
    }
}

impl<'a> Borrow<dyn ColumnLookup + 'a> for ColumnKey {
    fn borrow(&self) -> &(dyn ColumnLookup + 'a) {
        self
    }
}

// Both forms hash and compare by `parts`, as `Borrow` requires.
impl Hash for dyn ColumnLookup + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for dyn ColumnLookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn ColumnLookup + '_ {}

impl Hash for ColumnKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for ColumnKey {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for ColumnKey {}

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
            loaded_at: Instant::now(),
            refreshing: AtomicBool::new(false),
            lease: Arc::default(),
            refill: Arc::new(tokio::sync::Mutex::new(())),
            prefetching: Arc::default(),
        }
    }

    /// `fresh`, the same version loaded again, sharing this copy's lease of encryptions.
    pub(super) fn renewed(&self, fresh: LiveDek) -> Self {
        LiveDek {
            lease: Arc::clone(&self.lease),
            refill: Arc::clone(&self.refill),
            prefetching: Arc::clone(&self.prefetching),
            ..fresh
        }
    }

    pub(super) fn field_key(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        suite: Suite,
    ) -> Result<Arc<FieldKey>> {
        self.columns.get_or_make_by(
            &(column, suite) as &dyn ColumnLookup,
            || ColumnKey(column.clone(), suite),
            || {
                Ok(FieldKey::new(
                    &self.dek,
                    self.version,
                    suite,
                    scope,
                    column,
                )?)
            },
        )
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
    /// When the pointer was read from the key store: trusted for `active_ttl` from here (also
    /// when it is re-inserted with `live` or `searchable` filled in), re-read in the background
    /// once older than [`refresh_after`](super::refresh_after).
    pub(super) read_at: Instant,
    /// Set while one background task re-reads this pointer.
    pub(super) refreshing: Arc<AtomicBool>,
}

/// The result of one load, shared by every task that waited for it.
type Flight<V> = Arc<tokio::sync::OnceCell<std::result::Result<V, crate::error::Error>>>;

/// Single-flight loads by key: the first task to miss loads, the others wait for its result,
/// and all of them are woken together when it is there (a `OnceCell` closes its semaphore,
/// which wakes every waiter at once; moka's `try_get_with` hands the wake-up on from waiter to
/// waiter, one at a time, which at a thousand waiters made the tail of an expiry as long as
/// the queue). A finished (or abandoned) load leaves the map, so it holds only loads under way.
pub(crate) struct Flights<K, V> {
    map: Mutex<HashMap<K, Flight<V>>>,
}

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights {
            map: Mutex::default(),
        }
    }
}

/// Removes a flight from its map when the load ends, finished or cancelled.
struct Landing<'a, K: Eq + Hash, V> {
    flights: &'a Flights<K, V>,
    key: &'a K,
    cell: &'a Flight<V>,
}

impl<K: Eq + Hash, V> Drop for Landing<'_, K, V> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.flights.map.lock()
            && map.get(self.key).is_some_and(|c| Arc::ptr_eq(c, self.cell))
        {
            map.remove(self.key);
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Flights<K, V> {
    /// The result of `load` for `key`, run by one task at a time; the `bool` is whether this
    /// task ran it (the others waited and made no call of their own).
    pub(super) async fn run<F, Fut>(&self, key: &K, load: F) -> (Result<V>, bool)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V>>,
    {
        let cell: Flight<V> = match self.map.lock() {
            Ok(mut map) => Arc::clone(map.entry(key.clone()).or_default()),
            Err(_) => Arc::default(),
        };
        let mut ran = false;
        let out = cell
            .get_or_init(|| async {
                ran = true;
                let _landing = Landing {
                    flights: self,
                    key,
                    cell: &cell,
                };
                load().await
            })
            .await
            .clone();
        (out, ran)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A column key looked up by a borrowed column and suite finds the one kept under the
    /// owned key: nothing is derived twice, and each suite has its own key.
    #[test]
    fn borrowed_lookup_finds_the_kept_key() {
        let kept: Derived<ColumnKey, u32> = Derived::new(8);
        let ssn = ColumnId::new("patients.ssn").unwrap();
        let made = std::cell::Cell::new(0);
        let get = |column: &ColumnId, suite: Suite| {
            kept.get_or_make_by(
                &(column, suite) as &dyn ColumnLookup,
                || ColumnKey(column.clone(), suite),
                || {
                    made.set(made.get() + 1);
                    Ok(made.get())
                },
            )
            .unwrap()
        };
        let a = get(&ssn, Suite::Gcm96);
        let b = get(&ColumnId::new("patients.ssn").unwrap(), Suite::Gcm96);
        assert!(Arc::ptr_eq(&a, &b));
        let c = get(&ssn, Suite::Gcm128);
        assert!(!Arc::ptr_eq(&a, &c));
        let d = get(&ColumnId::new("patients.email").unwrap(), Suite::Gcm96);
        assert_eq!((*a, *c, *d), (1, 2, 3));
        assert_eq!(made.get(), 3);
        assert_eq!(kept.len(), 3);
        // The owned form finds the same entries.
        let e = kept
            .get_or_make(ColumnKey(ssn.clone(), Suite::Gcm128), || Ok(99))
            .unwrap();
        assert!(Arc::ptr_eq(&c, &e));
    }
}

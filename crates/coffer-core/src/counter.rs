//! Encryption counters: how many values a key has sealed, against a limit.
//!
//! A random 96-bit IV bounds a GCM key to 2^32 encryptions (SP 800-38D §8.3). Coffer's default
//! limit is 2^30, a quarter of that, so rotation happens long before the bound. The key store
//! (coffer-keys) persists counts in leased blocks; here is the in-process part.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Default per-key limit: 2^30 encryptions.
pub const DEFAULT_ENCRYPTION_LIMIT: u64 = 1 << 30;

/// Counts encryptions made under one key and refuses those past its limit.
#[derive(Debug)]
pub struct EncryptionCounter {
    count: AtomicU64,
    limit: u64,
}

impl EncryptionCounter {
    /// A counter starting at `start` (for example the count persisted in a key store).
    pub fn new(start: u64, limit: u64) -> Self {
        EncryptionCounter {
            count: AtomicU64::new(start),
            limit,
        }
    }

    /// Reserves `n` encryptions, or refuses if that would pass the limit (nothing is reserved then).
    pub fn reserve(&self, n: u64) -> Result<()> {
        let limit = self.limit;
        self.count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                c.checked_add(n).filter(|&next| next <= limit)
            })
            .map(|_| ())
            .map_err(|_| Error::EncryptionLimit { limit })
    }

    /// Encryptions counted so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl Default for EncryptionCounter {
    fn default() -> Self {
        Self::new(0, DEFAULT_ENCRYPTION_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_without_counting() {
        let c = EncryptionCounter::new(0, 3);
        c.reserve(2).unwrap();
        assert!(matches!(
            c.reserve(2),
            Err(Error::EncryptionLimit { limit: 3 })
        ));
        assert_eq!(c.count(), 2);
        c.reserve(1).unwrap();
        assert!(c.reserve(1).is_err());
        assert_eq!(c.count(), 3);
    }
}

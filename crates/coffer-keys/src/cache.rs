//! The shared second cache tier (L2) and the cache key that seals its entries.
//!
//! The keyring talks to L2 through [`L2Backend`], a plain byte store with TTLs and a short lock
//! (`coffer-redis` implements it on Redis). Every entry is a DEK sealed with AES-256-GCM under a
//! subkey of the cache key, bound through the AAD to the store, scope, version, key id, cache-key
//! version and unwrap time; entry names are HMACs, so Redis holds neither a raw DEK nor a scope
//! string (docs/DESIGN.md §K5, docs/FORMAT.md §7). The bytes and their crypto are coffer-core's
//! [`coffer_core::cache_entry`].

use std::time::Duration;

use async_trait::async_trait;
use coffer_core::Dek;
use coffer_core::cache_entry::CacheSealKey;
pub(crate) use coffer_core::cache_entry::EntryBinding;

use crate::error::{Error, Result};

/// An L2 failure: the cache is unreachable or misbehaving. The keyring never fails a request
/// for one; it falls back to the KEK provider.
#[derive(Debug, thiserror::Error)]
#[error("L2 cache unavailable: {0}")]
pub struct L2Error(pub String);

/// A shared byte cache with expiry (Redis in production).
#[async_trait]
pub trait L2Backend: Send + Sync + 'static {
    /// Reads an entry and resets its time to live to `ttl` (sliding expiry).
    async fn get_touch(&self, name: &str, ttl: Duration) -> Result<Option<Vec<u8>>, L2Error>;

    /// Writes an entry that expires after `ttl`.
    async fn put(&self, name: &str, value: &[u8], ttl: Duration) -> Result<(), L2Error>;

    /// Takes a lock that expires by itself after `ttl`; `false` if someone holds it.
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, L2Error>;

    /// Releases a lock taken with [`L2Backend::try_lock`].
    async fn unlock(&self, name: &str) -> Result<(), L2Error>;

    /// Deletes entries (crypto-shredding, compromise).
    async fn delete(&self, names: &[String]) -> Result<(), L2Error>;

    /// Tells every process subscribed through [`L2Backend::subscribe`] to drop these entries
    /// from their own L1 (the names are the opaque entry names, never scopes).
    async fn publish_invalidation(&self, names: &[String]) -> Result<(), L2Error>;

    /// Calls `on_invalidate` with the entry names of every invalidation published by any process,
    /// from a background task that reconnects by itself; it also calls it with no names about
    /// once a second, and stops when it returns `false` (its keyring is gone). Called once per
    /// keyring.
    fn subscribe(&self, on_invalidate: InvalidationHandler);
}

/// What [`L2Backend::subscribe`] calls with the published entry names; `false` means stop.
pub type InvalidationHandler = std::sync::Arc<dyn Fn(Vec<String>) -> bool + Send + Sync>;

/// The cache key: its own secret (never a KEK), versioned so it can be rotated. An entry sealed
/// under another cache-key version is a miss. The entry format and its crypto are
/// [`coffer_core::cache_entry`]; this type adds the keyring's error type.
#[derive(Debug)]
pub struct CacheKey(CacheSealKey);

impl CacheKey {
    /// A cache key from 32 secret bytes (e.g. `env:COFFER_CACHE_KEY`) and its version.
    pub fn new(secret: &[u8; 32], version: u32) -> Result<Self> {
        Ok(CacheKey(CacheSealKey::new(secret, version)?))
    }

    /// The cache key's version.
    pub fn version(&self) -> u32 {
        self.0.version()
    }

    /// The entry name: `coffer:dek:` and the hex HMAC of store, scope and version.
    pub(crate) fn entry_name(&self, b: &EntryBinding<'_>) -> Result<String> {
        Ok(self.0.entry_name(b)?)
    }

    /// Seals a DEK for L2: `format ‖ cache-key version ‖ unwrapped-at (s) ‖ key id ‖ GCM`.
    pub(crate) fn seal(
        &self,
        b: &EntryBinding<'_>,
        key_id: &[u8; 16],
        unwrapped_at_s: u64,
        dek: &Dek,
    ) -> Result<Vec<u8>> {
        Ok(self.0.seal(b, key_id, unwrapped_at_s, dek)?)
    }

    /// Opens an entry; `None` for anything that is not a valid entry for this binding and
    /// cache-key version (a miss, never an error).
    pub(crate) fn open(&self, b: &EntryBinding<'_>, entry: &[u8]) -> Option<(Dek, [u8; 16], u64)> {
        let e = self.0.open(b, entry)?;
        Some((e.dek, e.key_id, e.unwrapped_at_s))
    }
}

/// Parses a cache key from standard base64 text.
pub fn cache_key_from_base64(text: &str, version: u32) -> Result<CacheKey> {
    let k = Dek::from_base64(text)
        .map_err(|_| Error::config("the cache key is not a base64 256-bit key"))?;
    CacheKey::new(k.expose_secret(), version)
}

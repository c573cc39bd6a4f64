//! The shared second cache tier (L2) and the cache key that seals its entries.
//!
//! The keyring talks to L2 through [`L2Backend`], a plain byte store with TTLs and a short lock
//! (`coffer-redis` implements it on Redis). All cryptography stays here: every entry is a DEK
//! sealed with AES-256-GCM under a subkey of the cache key, bound through the AAD to the store,
//! scope, version, key id, cache-key version and unwrap time; entry names are HMACs, so Redis
//! holds neither a raw DEK nor a scope string (DESIGN §9 F7/F19, docs/FORMAT.md §7).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use aws_lc_rs::hmac;
use coffer_core::encoding::{self, tag};
use coffer_core::kdf::{self, Purpose};
use coffer_core::{Dek, KeyVersion, ScopeId, SubKey};
use zeroize::Zeroizing;

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

/// Entry format version.
const ENTRY_FORMAT: u8 = 1;
/// Bytes before the sealed DEK: format, cache-key version, unwrap time, key id.
const ENTRY_HEADER: usize = 1 + 4 + 8 + 16;

/// The cache key: its own secret (never a KEK), versioned so it can be rotated. An entry sealed
/// under another cache-key version is a miss.
pub struct CacheKey {
    version: u32,
    seal: RandomizedNonceKey,
    name: hmac::Key,
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheKey")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Where an entry belongs, bound into its AAD.
pub(crate) struct EntryBinding<'a> {
    pub store_id: &'a [u8],
    pub epoch: u32,
    pub scope: &'a ScopeId,
    pub version: KeyVersion,
}

impl CacheKey {
    /// A cache key from 32 secret bytes (e.g. `env:COFFER_CACHE_KEY`) and its version.
    pub fn new(secret: &[u8; 32], version: u32) -> Result<Self> {
        // The HKDF input is a DEK-typed copy of the cache key; it never keys a primitive itself.
        let root = Dek::from_bytes(*secret);
        let v = version.to_be_bytes();
        let seal: SubKey<32> = kdf::derive(
            &root,
            Purpose::Cache,
            &[(tag::EXTRA, b"seal".as_slice()), (tag::VERSION, &v)],
        )?;
        let name: SubKey<32> = kdf::derive(
            &root,
            Purpose::Cache,
            &[(tag::EXTRA, b"name".as_slice()), (tag::VERSION, &v)],
        )?;
        let seal = RandomizedNonceKey::new(&AES_256_GCM, seal.expose_secret())
            .map_err(|_| coffer_core::Error::Module("AES-GCM key setup"))?;
        Ok(CacheKey {
            version,
            seal,
            name: hmac::Key::new(hmac::HMAC_SHA256, name.expose_secret()),
        })
    }

    /// The cache key's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The entry name: `coffer:dek:` and the hex HMAC of store, scope and version.
    pub(crate) fn entry_name(&self, b: &EntryBinding<'_>) -> Result<String> {
        let v = b.version.0.to_be_bytes();
        let e = b.epoch.to_be_bytes();
        let input = encoding::encode(&[
            (tag::STORE, b.store_id),
            (tag::EXTRA, &e),
            (tag::SCOPE, b.scope.as_str().as_bytes()),
            (tag::VERSION, &v),
        ])?;
        let mac = hmac::sign(&self.name, &input);
        Ok(format!("coffer:dek:{}", hex::encode(&mac.as_ref()[..20])))
    }

    fn aad(&self, b: &EntryBinding<'_>, header: &[u8]) -> Result<Vec<u8>> {
        let v = b.version.0.to_be_bytes();
        let e = b.epoch.to_be_bytes();
        Ok(encoding::encode(&[
            (tag::PURPOSE, b"l2-entry".as_slice()),
            (tag::STORE, b.store_id),
            (tag::EXTRA, &e),
            (tag::SCOPE, b.scope.as_str().as_bytes()),
            (tag::VERSION, &v),
            (tag::HEADER, header),
        ])?)
    }

    /// Seals a DEK for L2: `format ‖ cache-key version ‖ unwrapped-at (s) ‖ key id ‖ GCM`.
    pub(crate) fn seal(
        &self,
        b: &EntryBinding<'_>,
        key_id: &[u8; 16],
        unwrapped_at_s: u64,
        dek: &Dek,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ENTRY_HEADER + 12 + 32 + 16);
        out.push(ENTRY_FORMAT);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&unwrapped_at_s.to_be_bytes());
        out.extend_from_slice(key_id);
        let aad = self.aad(b, &out)?;
        let mut body = Zeroizing::new(dek.expose_secret().to_vec());
        let nonce = self
            .seal
            .seal_in_place_append_tag(Aad::from(&aad[..]), &mut *body)
            .map_err(|_| coffer_core::Error::Module("AES-GCM seal"))?;
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens an entry; `None` for anything that is not a valid entry for this binding and
    /// cache-key version (a miss, never an error).
    pub(crate) fn open(&self, b: &EntryBinding<'_>, entry: &[u8]) -> Option<(Dek, [u8; 16], u64)> {
        if entry.len() != ENTRY_HEADER + 12 + 32 + 16 || entry[0] != ENTRY_FORMAT {
            return None;
        }
        let (header, rest) = entry.split_at(ENTRY_HEADER);
        if header[1..5] != self.version.to_be_bytes() {
            return None;
        }
        let at = u64::from_be_bytes(header[5..13].try_into().ok()?);
        let key_id: [u8; 16] = header[13..29].try_into().ok()?;
        let aad = self.aad(b, header).ok()?;
        let (nonce, sealed) = rest.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .seal
            .open_in_place(nonce, Aad::from(&aad[..]), &mut buf)
            .ok()?;
        let dek = Dek::try_from_slice(plain).ok()?;
        Some((dek, key_id, at))
    }
}

/// Parses a cache key from standard base64 text.
pub fn cache_key_from_base64(text: &str, version: u32) -> Result<CacheKey> {
    let k = Dek::from_base64(text)
        .map_err(|_| Error::config("the cache key is not a base64 256-bit key"))?;
    CacheKey::new(k.expose_secret(), version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_are_bound() {
        let ck = CacheKey::new(&[3; 32], 1).unwrap();
        let scope = ScopeId::new("tenant:acme").unwrap();
        let other_scope = ScopeId::new("tenant:other").unwrap();
        let b = EntryBinding {
            store_id: &[1; 16],
            epoch: 0,
            scope: &scope,
            version: KeyVersion(2),
        };
        let dek = Dek::generate().unwrap();
        let e = ck.seal(&b, &[5; 16], 1234, &dek).unwrap();
        let (back, kid, at) = ck.open(&b, &e).unwrap();
        assert_eq!(back.expose_secret(), dek.expose_secret());
        assert_eq!((kid, at), ([5; 16], 1234));
        // Another scope, version, store or cache-key version: a miss.
        let moved = EntryBinding {
            scope: &other_scope,
            ..b
        };
        assert!(ck.open(&moved, &e).is_none());
        let v3 = EntryBinding {
            version: KeyVersion(3),
            ..b
        };
        assert!(ck.open(&v3, &e).is_none());
        assert!(CacheKey::new(&[3; 32], 2).unwrap().open(&b, &e).is_none());
        let restored = EntryBinding { epoch: 1, ..b };
        assert!(ck.open(&restored, &e).is_none());
        assert_ne!(
            ck.entry_name(&restored).unwrap(),
            ck.entry_name(&b).unwrap()
        );
        // Any changed byte (the unwrap time included): a miss.
        for i in 0..e.len() {
            let mut bad = e.clone();
            bad[i] ^= 1;
            assert!(ck.open(&b, &bad).is_none(), "byte {i}");
        }
        // Names hide the scope and differ per version.
        let name = ck.entry_name(&b).unwrap();
        assert!(!name.contains("acme"));
        assert_ne!(name, ck.entry_name(&v3).unwrap());
        assert!(e.windows(4).all(|w| w != b"acme"));
    }
}

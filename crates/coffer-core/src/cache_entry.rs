//! Sealed entries of the shared (L2) DEK cache and their names (docs/FORMAT.md §7).
//!
//! Every entry is a DEK sealed with AES-256-GCM under a subkey of the cache key, bound through the
//! AAD to the store, its epoch, the scope, the key version, the key id, the cache-key version and
//! the unwrap time. Entry names are HMACs, so the cache holds neither a raw DEK nor a scope string.
//! The cache itself (Redis, TTLs, locks) lives in outer crates; only the bytes are made here.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use crate::encoding::{self, tag};
use crate::error::{Error, Result};
use crate::kdf::{self, Purpose};
use crate::{Dek, KeyVersion, ScopeId, SubKey};

/// Entry format version.
const ENTRY_FORMAT: u8 = 1;
/// Bytes before the sealed DEK: format, cache-key version, unwrap time, key id.
const ENTRY_HEADER: usize = 1 + 4 + 8 + 16;
/// Length of every entry: header, 96-bit nonce, sealed 256-bit DEK, 128-bit tag.
pub const ENTRY_LEN: usize = ENTRY_HEADER + 12 + 32 + 16;

/// The cache key's two working keys (seal and name), derived from its 32 secret bytes and its
/// version. An entry sealed under another cache-key version does not open.
pub struct CacheSealKey {
    version: u32,
    seal: RandomizedNonceKey,
    name: hmac::Key,
}

impl fmt::Debug for CacheSealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheSealKey")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Where an entry belongs, bound into its AAD and its name.
#[derive(Clone, Copy, Debug)]
pub struct EntryBinding<'a> {
    /// The key store's id.
    pub store_id: &'a [u8],
    /// The key store's epoch (a restored store gets a new one).
    pub epoch: u32,
    /// The scope.
    pub scope: &'a ScopeId,
    /// The DEK's version.
    pub version: KeyVersion,
}

/// What [`CacheSealKey::open`] recovers from an entry.
pub struct OpenedEntry {
    /// The DEK.
    pub dek: Dek,
    /// The DEK's key id.
    pub key_id: [u8; 16],
    /// When the DEK was unwrapped from its KEK (seconds since the epoch).
    pub unwrapped_at_s: u64,
}

impl fmt::Debug for OpenedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedEntry")
            .field("unwrapped_at_s", &self.unwrapped_at_s)
            .finish_non_exhaustive()
    }
}

impl CacheSealKey {
    /// The working keys of a cache key from its 32 secret bytes and its version.
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
            .map_err(|_| Error::Module("AES-GCM key setup"))?;
        Ok(CacheSealKey {
            version,
            seal,
            name: hmac::Key::new(hmac::HMAC_SHA256, name.expose_secret()),
        })
    }

    /// The cache key's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The entry name: `coffer:dek:` and the hex of the first 20 bytes of the HMAC of store,
    /// epoch, scope and version.
    pub fn entry_name(&self, b: &EntryBinding<'_>) -> Result<String> {
        let v = b.version.0.to_be_bytes();
        let e = b.epoch.to_be_bytes();
        let input = encoding::encode(&[
            (tag::STORE, b.store_id),
            (tag::EXTRA, &e),
            (tag::SCOPE, b.scope.as_str().as_bytes()),
            (tag::VERSION, &v),
        ])?;
        let mac = hmac::sign(&self.name, &input);
        let mut name = String::with_capacity(11 + 40);
        name.push_str("coffer:dek:");
        for byte in &mac.as_ref()[..20] {
            name.push_str(&format!("{byte:02x}"));
        }
        Ok(name)
    }

    fn aad(b: &EntryBinding<'_>, header: &[u8]) -> Result<Vec<u8>> {
        let v = b.version.0.to_be_bytes();
        let e = b.epoch.to_be_bytes();
        encoding::encode(&[
            (tag::PURPOSE, b"l2-entry".as_slice()),
            (tag::STORE, b.store_id),
            (tag::EXTRA, &e),
            (tag::SCOPE, b.scope.as_str().as_bytes()),
            (tag::VERSION, &v),
            (tag::HEADER, header),
        ])
    }

    /// Seals a DEK: `format ‖ cache-key version ‖ unwrapped-at (s) ‖ key id ‖ nonce ‖ GCM`.
    pub fn seal(
        &self,
        b: &EntryBinding<'_>,
        key_id: &[u8; 16],
        unwrapped_at_s: u64,
        dek: &Dek,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ENTRY_LEN);
        out.push(ENTRY_FORMAT);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&unwrapped_at_s.to_be_bytes());
        out.extend_from_slice(key_id);
        let aad = Self::aad(b, &out)?;
        let mut body = Zeroizing::new(dek.expose_secret().to_vec());
        let nonce = self
            .seal
            .seal_in_place_append_tag(Aad::from(&aad[..]), &mut *body)
            .map_err(|_| Error::Module("AES-GCM seal"))?;
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens an entry; `None` for anything that is not a valid entry for this binding and
    /// cache-key version (a cache miss, never an error).
    pub fn open(&self, b: &EntryBinding<'_>, entry: &[u8]) -> Option<OpenedEntry> {
        if entry.len() != ENTRY_LEN || entry[0] != ENTRY_FORMAT {
            return None;
        }
        let (header, rest) = entry.split_at(ENTRY_HEADER);
        if header[1..5] != self.version.to_be_bytes() {
            return None;
        }
        let unwrapped_at_s = u64::from_be_bytes(header[5..13].try_into().ok()?);
        let key_id: [u8; 16] = header[13..29].try_into().ok()?;
        let aad = Self::aad(b, header).ok()?;
        let (nonce, sealed) = rest.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .seal
            .open_in_place(nonce, Aad::from(&aad[..]), &mut buf)
            .ok()?;
        let dek = Dek::try_from_slice(plain).ok()?;
        Some(OpenedEntry {
            dek,
            key_id,
            unwrapped_at_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_are_bound() {
        let ck = CacheSealKey::new(&[3; 32], 1).unwrap();
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
        assert_eq!(e.len(), ENTRY_LEN);
        let back = ck.open(&b, &e).unwrap();
        assert_eq!(back.dek.expose_secret(), dek.expose_secret());
        assert_eq!((back.key_id, back.unwrapped_at_s), ([5; 16], 1234));
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
        let store2 = EntryBinding {
            store_id: &[2; 16],
            ..b
        };
        assert!(ck.open(&store2, &e).is_none());
        assert!(
            CacheSealKey::new(&[3; 32], 2)
                .unwrap()
                .open(&b, &e)
                .is_none()
        );
        let restored = EntryBinding { epoch: 1, ..b };
        assert!(ck.open(&restored, &e).is_none());
        assert_ne!(
            ck.entry_name(&restored).unwrap(),
            ck.entry_name(&b).unwrap()
        );
        // Any changed byte (the unwrap time included), or a truncation: a miss.
        for i in 0..e.len() {
            let mut bad = e.clone();
            bad[i] ^= 1;
            assert!(ck.open(&b, &bad).is_none(), "byte {i}");
        }
        assert!(ck.open(&b, &e[..e.len() - 1]).is_none());
        // Names hide the scope and differ per version.
        let name = ck.entry_name(&b).unwrap();
        assert!(!name.contains("acme"));
        assert_ne!(name, ck.entry_name(&v3).unwrap());
        assert!(e.windows(4).all(|w| w != b"acme"));
    }

    #[test]
    fn entry_names_are_pinned() {
        // The name is shared by every process on the cache: it must not change between releases.
        let ck = CacheSealKey::new(&[0x5a; 32], 1).unwrap();
        let scope = ScopeId::new("tenant:acme").unwrap();
        let b = EntryBinding {
            store_id: &[1; 16],
            epoch: 0,
            scope: &scope,
            version: KeyVersion(2),
        };
        let name = ck.entry_name(&b).unwrap();
        assert_eq!(name.len(), 11 + 40);
        assert_eq!(name, PINNED_NAME);
    }

    /// Computed outside Rust (Python's hmac and hashlib, HKDF per RFC 5869 with the info of
    /// docs/FORMAT.md) when the format moved here from coffer-keys.
    const PINNED_NAME: &str = "coffer:dek:2359b9fa7a7742a409f7d2705f17ca88517acc12";
}

//! The audit chain's MAC key.
//!
//! A [`ChainKey`] is an HKDF-SHA-256 subkey (purpose `audit-chain`) of a DEK that the key store
//! holds only wrapped under the KEKs, bound to that DEK's creation time. Records chained with it
//! are `HMAC-SHA-256(chain key, previous hash ‖ body)`: without the KEK nobody can recompute them.
//!
//! ```
//! use coffer_core::{Dek, audit::ChainKey};
//!
//! let dek = Dek::generate()?;
//! let key = ChainKey::derive(&dek, 1_700_000_000_000_000)?;
//! let tag = key.mac(&[0; 32], b"body");
//! assert!(key.verify(&[0; 32], b"body", &tag));
//! assert!(!key.verify(&[0; 32], b"other", &tag));
//! # Ok::<(), coffer_core::Error>(())
//! ```

use std::fmt;

use aws_lc_rs::hmac;

use crate::digest::constant_time_eq;
use crate::encoding::tag;
use crate::error::Result;
use crate::kdf::{self, Purpose};
use crate::secret::{Dek, SubKey};

/// The 32 bytes in front of every tombstone-ledger body under the chain key.
pub const TOMBSTONE_DOMAIN: [u8; 32] = *b"coffer/tombstone-ledger/v1\0\0\0\0\0\0";

/// The HMAC-SHA-256 key of the audit chain (zeroized on drop; never printed).
pub struct ChainKey {
    key: SubKey<32>,
    created_at_us: i64,
}

impl ChainKey {
    /// Derives the chain key from the audit DEK and the time that DEK was created (µs since the
    /// Unix epoch). Binding the time means a changed creation time in the store yields another
    /// key, under which no genuine record verifies.
    pub fn derive(dek: &Dek, created_at_us: i64) -> Result<Self> {
        let at = created_at_us.to_be_bytes();
        let key = kdf::derive::<32>(dek, Purpose::AuditChain, &[(tag::EXTRA, &at)])?;
        Ok(ChainKey { key, created_at_us })
    }

    /// When the DEK behind this key was created (µs since the Unix epoch).
    pub fn created_at_us(&self) -> i64 {
        self.created_at_us
    }

    /// `HMAC-SHA-256(key, prev ‖ body)`.
    pub fn mac(&self, prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
        let k = hmac::Key::new(hmac::HMAC_SHA256, self.key.expose_secret());
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(prev);
        ctx.update(body);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Whether `hash` is the MAC of `prev ‖ body` (constant time).
    pub fn verify(&self, prev: &[u8; 32], body: &[u8], hash: &[u8; 32]) -> bool {
        constant_time_eq(&self.mac(prev, body), hash)
    }

    /// The MAC of a tombstone-ledger entry: `HMAC-SHA-256(key, TOMBSTONE_DOMAIN ‖ body)`. The
    /// domain stands where a chain record has its previous hash, so an entry's MAC is never a
    /// valid chain hash and the reverse (docs/FORMAT.md, "Tombstone ledger").
    pub fn tombstone_mac(&self, body: &[u8]) -> [u8; 32] {
        self.mac(&TOMBSTONE_DOMAIN, body)
    }

    /// Whether `mac` is the tombstone MAC of `body` (constant time).
    pub fn verify_tombstone(&self, body: &[u8], mac: &[u8; 32]) -> bool {
        constant_time_eq(&self.tombstone_mac(body), mac)
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainKey")
            .field("created_at_us", &self.created_at_us)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_depends_on_the_dek_and_the_creation_time() {
        let dek = Dek::from_bytes([7; 32]);
        let a = ChainKey::derive(&dek, 1).unwrap().mac(&[0; 32], b"x");
        assert_eq!(a, ChainKey::derive(&dek, 1).unwrap().mac(&[0; 32], b"x"));
        assert_ne!(a, ChainKey::derive(&dek, 2).unwrap().mac(&[0; 32], b"x"));
        let other = Dek::from_bytes([8; 32]);
        assert_ne!(a, ChainKey::derive(&other, 1).unwrap().mac(&[0; 32], b"x"));
        assert_ne!(a, ChainKey::derive(&dek, 1).unwrap().mac(&[1; 32], b"x"));
        // Not a plain SHA-256 of the same input.
        let mut plain = crate::digest::Sha256::new();
        plain.update(&[0; 32]);
        plain.update(b"x");
        assert_ne!(a, plain.finish());
    }

    #[test]
    fn verify_rejects_a_changed_body_or_hash() {
        let key = ChainKey::derive(&Dek::from_bytes([7; 32]), 5).unwrap();
        let mut tag = key.mac(&[3; 32], b"body");
        assert!(key.verify(&[3; 32], b"body", &tag));
        assert!(!key.verify(&[3; 32], b"bodY", &tag));
        assert!(!key.verify(&[4; 32], b"body", &tag));
        tag[0] ^= 1;
        assert!(!key.verify(&[3; 32], b"body", &tag));
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn debug_shows_no_key() {
        let key = ChainKey::derive(&Dek::from_bytes([0xAB; 32]), 5).unwrap();
        let text = format!("{key:?}");
        assert!(!text.contains(&format!("{:?}", key.key.expose_secret())));
        assert!(!text.contains(&hex_of(key.key.expose_secret())));
        assert!(text.contains("created_at_us"));
    }
}

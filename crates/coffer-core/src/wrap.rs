//! Key wrap (AES-KWP, RFC 5649; AES-KW, RFC 3394; both SP 800-38F) and the metadata tag that binds
//! a wrapped DEK to where it belongs (docs/FORMAT.md §6).
//!
//! ```
//! use coffer_core::{Dek, Kek, WrapAlgorithm};
//!
//! let kek = Kek::generate()?;
//! let dek = Dek::generate()?;
//! let wrapped = kek.wrap_dek(&dek, WrapAlgorithm::AesKwp)?;
//! assert_eq!(wrapped.len(), 40);
//! let back = kek.unwrap_dek(&wrapped, WrapAlgorithm::AesKwp)?;
//! assert_eq!(back.expose_secret(), dek.expose_secret());
//! # Ok::<(), coffer_core::Error>(())
//! ```

use aws_lc_rs::{constant_time, hmac};

use crate::encoding::tag;
use crate::error::{Error, Result};
use crate::hazmat;
use crate::ids::{KeyVersion, ScopeId};
use crate::kdf::{self, Purpose};
use crate::secret::{Dek, KEY_LEN, Kek, SubKey};

/// Length of a wrapped 256-bit key (both algorithms).
pub const WRAPPED_LEN: usize = KEY_LEN + 8;

/// Key-wrap algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WrapAlgorithm {
    /// AES-256 key wrap with padding (RFC 5649). The default.
    AesKwp,
    /// AES-256 key wrap (RFC 3394).
    AesKw,
}

impl WrapAlgorithm {
    /// The name stored beside a wrapped key.
    pub const fn name(self) -> &'static str {
        match self {
            WrapAlgorithm::AesKwp => "aes256-kwp",
            WrapAlgorithm::AesKw => "aes256-kw",
        }
    }
}

impl Kek {
    /// Wraps a DEK (40 bytes out).
    pub fn wrap_dek(&self, dek: &Dek, alg: WrapAlgorithm) -> Result<Vec<u8>> {
        let k = self.expose_secret();
        match alg {
            WrapAlgorithm::AesKwp => hazmat::aes_kwp_wrap(k, dek.expose_secret()),
            WrapAlgorithm::AesKw => hazmat::aes_kw_wrap(k, dek.expose_secret()),
        }
    }

    /// Unwraps a DEK. A wrong KEK or altered bytes give [`Error::Unwrap`].
    pub fn unwrap_dek(&self, wrapped: &[u8], alg: WrapAlgorithm) -> Result<Dek> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(Error::Unwrap);
        }
        let k = self.expose_secret();
        let mut out = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        let n = match alg {
            WrapAlgorithm::AesKwp => hazmat::aes_kwp_unwrap_into(k, wrapped, &mut out[..]),
            WrapAlgorithm::AesKw => hazmat::aes_kw_unwrap_into(k, wrapped, &mut out[..]),
        }
        .map_err(|_| Error::Unwrap)?;
        if n != KEY_LEN {
            return Err(Error::Unwrap);
        }
        Ok(Dek::from_bytes(*out))
    }
}

/// Where a wrapped DEK belongs. The metadata tag binds the DEK to all of it, so a wrap copied to
/// another store, scope or version, or relabelled with another algorithm, is refused.
#[derive(Clone, Copy, Debug)]
pub struct KeyMetadata<'a> {
    /// The key store's id.
    pub store_id: &'a [u8],
    /// The scope.
    pub scope: &'a ScopeId,
    /// The DEK version.
    pub version: KeyVersion,
    /// The DEK's random 128-bit key id.
    pub key_id: &'a [u8; 16],
    /// The algorithm the DEK is for (e.g. `aes256-gcm`).
    pub algorithm: &'a str,
}

/// Length of a metadata tag.
pub const METADATA_TAG_LEN: usize = 32;

/// `HMAC-SHA-256(HKDF(DEK, "meta"), STORE ‖ SCOPE ‖ VERSION ‖ KEY_ID ‖ ALGORITHM)`, the
/// components canonically encoded. Also serves as the key check value.
pub fn metadata_tag(dek: &Dek, meta: &KeyMetadata<'_>) -> Result<[u8; METADATA_TAG_LEN]> {
    let sub: SubKey<32> = kdf::derive(dek, Purpose::Meta, &[])?;
    let version = meta.version.0.to_be_bytes();
    let input = crate::encoding::encode(&[
        (tag::STORE, meta.store_id),
        (tag::SCOPE, meta.scope.as_str().as_bytes()),
        (tag::VERSION, &version),
        (tag::KEY_ID, meta.key_id),
        (tag::ALGORITHM, meta.algorithm.as_bytes()),
    ])?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, sub.expose_secret());
    let mut out = [0u8; METADATA_TAG_LEN];
    out.copy_from_slice(hmac::sign(&key, &input).as_ref());
    Ok(out)
}

/// Checks a metadata tag in constant time; a mismatch is [`Error::Unwrap`].
pub fn verify_metadata_tag(dek: &Dek, meta: &KeyMetadata<'_>, tag: &[u8]) -> Result<()> {
    let expected = metadata_tag(dek, meta)?;
    constant_time::verify_slices_are_equal(&expected, tag).map_err(|_| Error::Unwrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_algorithms_round_trip_and_reject_wrong_keks() {
        let kek = Kek::generate().unwrap();
        let other = Kek::generate().unwrap();
        let dek = Dek::generate().unwrap();
        for alg in [WrapAlgorithm::AesKwp, WrapAlgorithm::AesKw] {
            let w = kek.wrap_dek(&dek, alg).unwrap();
            assert_eq!(w.len(), WRAPPED_LEN);
            assert_eq!(
                kek.unwrap_dek(&w, alg).unwrap().expose_secret(),
                dek.expose_secret()
            );
            assert!(matches!(other.unwrap_dek(&w, alg), Err(Error::Unwrap)));
            assert!(matches!(kek.unwrap_dek(&w[..39], alg), Err(Error::Unwrap)));
            let mut bad = w.clone();
            bad[5] ^= 1;
            assert!(matches!(kek.unwrap_dek(&bad, alg), Err(Error::Unwrap)));
        }
        // The two algorithms have different integrity checks.
        let w = kek.wrap_dek(&dek, WrapAlgorithm::AesKwp).unwrap();
        assert!(kek.unwrap_dek(&w, WrapAlgorithm::AesKw).is_err());
    }

    #[test]
    fn metadata_tag_binds_every_field() {
        let dek = Dek::generate().unwrap();
        let scope = ScopeId::new("tenant:a").unwrap();
        let other_scope = ScopeId::new("tenant:b").unwrap();
        let kid = [9u8; 16];
        let m = KeyMetadata {
            store_id: b"store-1",
            scope: &scope,
            version: KeyVersion(3),
            key_id: &kid,
            algorithm: "aes256-gcm",
        };
        let t = metadata_tag(&dek, &m).unwrap();
        verify_metadata_tag(&dek, &m, &t).unwrap();
        let variants = [
            KeyMetadata {
                store_id: b"store-2",
                ..m
            },
            KeyMetadata {
                scope: &other_scope,
                ..m
            },
            KeyMetadata {
                version: KeyVersion(4),
                ..m
            },
            KeyMetadata {
                key_id: &[8u8; 16],
                ..m
            },
            KeyMetadata {
                algorithm: "aes256-siv",
                ..m
            },
        ];
        for v in &variants {
            assert!(verify_metadata_tag(&dek, v, &t).is_err());
        }
        assert!(verify_metadata_tag(&Dek::generate().unwrap(), &m, &t).is_err());
    }
}

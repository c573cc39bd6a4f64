//! Typed key material: data keys, key-encryption keys and derived subkeys.
//!
//! Every type here is zeroized on drop, prints as `Name(<redacted>)`, has no `Serialize`, and hands
//! its bytes out only through `expose_secret`.

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};

/// Length in bytes of Coffer's 256-bit keys.
pub const KEY_LEN: usize = 32;

macro_rules! secret_key_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            /// A fresh random key from the crypto module's CSPRNG.
            pub fn generate() -> Result<Self> {
                let mut k = [0u8; KEY_LEN];
                aws_lc_rs::rand::fill(&mut k).map_err(|_| Error::Module("random generator"))?;
                Ok(Self(k))
            }

            /// Takes ownership of raw key bytes (for example, just unwrapped or read from a vault).
            pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(bytes)
            }

            /// Copies a key from a slice, which must be exactly 32 bytes long.
            pub fn try_from_slice(bytes: &[u8]) -> Result<Self> {
                let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
                    Error::invalid("key", format!("expected {KEY_LEN} bytes, got {}", bytes.len()))
                })?;
                Ok(Self(arr))
            }

            /// Decodes a key written as standard base64 (surrounding whitespace ignored).
            pub fn from_base64(text: &str) -> Result<Self> {
                use base64::Engine as _;
                let bytes = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(text.trim())
                        .map_err(|_| Error::invalid("key", "not valid base64"))?,
                );
                Self::try_from_slice(&bytes)
            }

            /// The key as base64, for `coffer keygen`. The result is zeroized on drop.
            pub fn to_base64(&self) -> Zeroizing<String> {
                use base64::Engine as _;
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0))
            }

            /// The raw key bytes. Named so that every use is easy to find in review.
            pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

secret_key_type!(
    /// A data-encryption key: 256 random bits per scope and version. Never keys a primitive
    /// directly; every use goes through an HKDF subkey (docs/FORMAT.md §4).
    Dek
);

secret_key_type!(
    /// A key-encryption key: wraps DEKs (AES-KWP or AES-KW).
    Kek
);

/// A subkey derived from a DEK for one purpose; `N` is its length (32, or 64 for AES-SIV).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SubKey<const N: usize>([u8; N]);

impl<const N: usize> SubKey<N> {
    pub(crate) fn from_bytes(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// The raw subkey bytes.
    pub fn expose_secret(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for SubKey<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubKey<{N}>(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let dek = Dek::from_bytes([0xAB; KEY_LEN]);
        let kek = Kek::from_bytes([0xAB; KEY_LEN]);
        let sub = SubKey::<64>::from_bytes([0xAB; 64]);
        for s in [
            format!("{dek:?}"),
            format!("{kek:?}"),
            format!("{sub:?}"),
            format!("{dek:#?}"),
        ] {
            assert!(!s.to_lowercase().contains("ab, "), "{s}");
            assert!(!s.to_lowercase().contains("abab"), "{s}");
            assert!(!s.contains("171"), "{s}");
            assert!(s.contains("redacted"), "{s}");
        }
    }

    #[test]
    fn base64_round_trip_and_length_check() {
        let k = Kek::generate().unwrap();
        let back = Kek::from_base64(&k.to_base64()).unwrap();
        assert_eq!(k.expose_secret(), back.expose_secret());
        let err = Kek::from_base64("AAAA").unwrap_err().to_string();
        assert!(err.contains("expected 32 bytes"), "{err}");
        assert!(Kek::from_base64("not base64!").is_err());
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(
            Dek::generate().unwrap().expose_secret(),
            Dek::generate().unwrap().expose_secret()
        );
    }
}

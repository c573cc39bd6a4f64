//! Subkey derivation: HKDF-SHA-256 from a DEK, one label per purpose (docs/FORMAT.md §4).
//!
//! `subkey = HKDF-SHA-256(salt = 32 zero bytes, ikm = DEK,
//!                        info = "coffer/v1/" ‖ C(PURPOSE, label) ‖ components, L)`
//! where `C` is the canonical component encoding of [`crate::encoding`].

use aws_lc_rs::hkdf;

use crate::encoding::{self, tag};
use crate::error::{Error, Result};
use crate::secret::{Dek, SubKey};

/// The fixed prefix of every HKDF info string.
pub const INFO_PREFIX: &[u8] = b"coffer/v1/";

/// What a subkey is for. Each purpose has its own label and length (docs/FORMAT.md §4, table 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Purpose {
    /// AES-256-GCM field encryption, per column (L = 32).
    Aead,
    /// AES-256-SIV deterministic encryption, per column (L = 64: SIV needs a 512-bit key).
    Siv,
    /// A blind index, per column and index name (L = 32).
    BlindIndex,
    /// The metadata tag that binds a wrapped DEK to its scope and version (L = 32).
    Meta,
    /// Wrapping the data keys of files keyed by this scope (L = 32).
    FileWrap,
    /// Wrapping DEKs held in the shared (Redis) cache (L = 32).
    Cache,
    /// Wrapping data keys kept in the application's rows (per-row DEKs) under a scope DEK
    /// (L = 32).
    DataKey,
    /// The MAC key of the audit chain, derived from the store's reserved audit DEK (L = 32).
    AuditChain,
}

impl Purpose {
    /// The label written into the HKDF info.
    pub const fn label(self) -> &'static str {
        match self {
            Purpose::Aead => "aead",
            Purpose::Siv => "siv",
            Purpose::BlindIndex => "bidx",
            Purpose::Meta => "meta",
            Purpose::FileWrap => "file-wrap",
            Purpose::Cache => "cache",
            Purpose::DataKey => "data-key",
            Purpose::AuditChain => "audit-chain",
        }
    }

    /// The subkey length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Purpose::Siv => 64,
            _ => 32,
        }
    }
}

/// HKDF output length (`hkdf::KeyType` wants a type, not a number).
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Builds the HKDF info for `purpose` and the given components.
pub fn info(purpose: Purpose, components: &[(u8, &[u8])]) -> Result<Vec<u8>> {
    let mut out = INFO_PREFIX.to_vec();
    encoding::push(&mut out, tag::PURPOSE, purpose.label().as_bytes())?;
    for (t, b) in components {
        encoding::push(&mut out, *t, b)?;
    }
    Ok(out)
}

/// Derives an `N`-byte subkey of `dek` for `purpose`. `N` must equal `purpose.key_len()`.
pub fn derive<const N: usize>(
    dek: &Dek,
    purpose: Purpose,
    components: &[(u8, &[u8])],
) -> Result<SubKey<N>> {
    if N != purpose.key_len() {
        return Err(Error::invalid(
            "subkey length",
            format!(
                "{} keys are {} bytes, not {N}",
                purpose.label(),
                purpose.key_len()
            ),
        ));
    }
    let info = info(purpose, components)?;
    let mut out = [0u8; N];
    hkdf_sha256(&[0u8; 32], dek.expose_secret(), &info, &mut out)?;
    Ok(SubKey::from_bytes(out))
}

/// Plain HKDF-SHA-256 (RFC 5869) into `out` (at most 255 × 32 bytes).
pub(crate) fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) -> Result<()> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let infos = [info];
    let okm = prk
        .expand(&infos, Len(out.len()))
        .map_err(|_| Error::invalid("HKDF output length", "at most 8160 bytes"))?;
    okm.fill(out)
        .map_err(|_| Error::invalid("HKDF output length", "at most 8160 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_columns_give_distinct_keys() {
        let dek = Dek::from_bytes([7; 32]);
        let a: SubKey<32> = derive(&dek, Purpose::Aead, &[(tag::COLUMN, b"ssn")]).unwrap();
        let b: SubKey<32> = derive(&dek, Purpose::Aead, &[(tag::COLUMN, b"email")]).unwrap();
        let c: SubKey<32> = derive(&dek, Purpose::BlindIndex, &[(tag::COLUMN, b"ssn")]).unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.expose_secret(), c.expose_secret());
        assert_ne!(a.expose_secret(), dek.expose_secret());
    }

    #[test]
    fn wrong_length_is_refused() {
        let dek = Dek::from_bytes([7; 32]);
        assert!(derive::<32>(&dek, Purpose::Siv, &[]).is_err());
        assert!(derive::<64>(&dek, Purpose::Siv, &[]).is_ok());
    }
}

//! Data-key blobs: a 256-bit key kept in the application's own row (per-row or per-ballot DEKs),
//! sealed under a scope DEK (docs/FORMAT.md §8).
//!
//! A blob is `format (1) ‖ parent version (u32) ‖ key id (16) ‖ KWP(wrapping key, data key) (40)
//! ‖ metadata tag (32)`, 93 bytes. The wrapping key is `HKDF(parent DEK, "data-key", KEY_ID)`; the
//! metadata tag binds the data key to the store, scope, parent version, key id and
//! [`ALGORITHM`]. Sealing is deterministic given the key id, so golden vectors pin the layout;
//! fetching the parent DEK (and drawing the key id) is the keyring's job.

use crate::encoding::tag;
use crate::error::{Error, Result};
use crate::kdf::{self, Purpose};
use crate::wrap::{self, KeyMetadata};
use crate::{Dek, Kek, KeyVersion, SubKey, WrapAlgorithm};

/// Blob format version.
const FORMAT: u8 = 1;
/// Bytes before the wrapped key: format, parent version, key id.
const HEADER: usize = 1 + 4 + 16;
/// Length of a data-key blob.
pub const BLOB_LEN: usize = HEADER + wrap::WRAPPED_LEN + wrap::METADATA_TAG_LEN;
/// The algorithm label bound into a data key's metadata tag.
pub const ALGORITHM: &str = "coffer-data-key-v1";

fn wrapping_key(parent: &Dek, key_id: &[u8; 16]) -> Result<Kek> {
    let sub: SubKey<32> = kdf::derive(parent, Purpose::DataKey, &[(tag::KEY_ID, key_id)])?;
    Ok(Kek::from_bytes(*sub.expose_secret()))
}

/// Seals `data_key` into a blob under `parent`, the scope DEK at `meta.version`. `meta.algorithm`
/// should be [`ALGORITHM`].
pub fn seal(parent: &Dek, meta: &KeyMetadata<'_>, data_key: &Dek) -> Result<Vec<u8>> {
    let wrapped = wrapping_key(parent, meta.key_id)?.wrap_dek(data_key, WrapAlgorithm::AesKwp)?;
    let tag = wrap::metadata_tag(data_key, meta)?;
    let mut blob = Vec::with_capacity(BLOB_LEN);
    blob.push(FORMAT);
    blob.extend_from_slice(&meta.version.0.to_be_bytes());
    blob.extend_from_slice(meta.key_id);
    blob.extend_from_slice(&wrapped);
    blob.extend_from_slice(&tag);
    Ok(blob)
}

/// The parent version and key id a blob names ([`Error::Format`] if it is not a blob).
pub fn parse(blob: &[u8]) -> Result<(KeyVersion, [u8; 16])> {
    if blob.len() != BLOB_LEN || blob[0] != FORMAT {
        return Err(Error::Format("not a Coffer data-key blob"));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&blob[1..5]);
    let mut key_id = [0u8; 16];
    key_id.copy_from_slice(&blob[5..HEADER]);
    Ok((KeyVersion(u32::from_be_bytes(v)), key_id))
}

/// Opens a blob under `parent`, checking its metadata tag against `meta` (which should name the
/// version and key id [`parse`] read). A wrong parent, a blob moved to another scope or store, or
/// any altered byte gives [`Error::Unwrap`].
pub fn open(parent: &Dek, meta: &KeyMetadata<'_>, blob: &[u8]) -> Result<Dek> {
    parse(blob)?;
    let wrapped = &blob[HEADER..HEADER + wrap::WRAPPED_LEN];
    let tag = &blob[HEADER + wrap::WRAPPED_LEN..];
    let data_key = wrapping_key(parent, meta.key_id)?
        .unwrap_dek(wrapped, WrapAlgorithm::AesKwp)
        .map_err(|_| Error::Unwrap)?;
    wrap::verify_metadata_tag(&data_key, meta, tag)?;
    Ok(data_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScopeId;

    #[test]
    fn blobs_round_trip_and_refuse_other_bindings() {
        let parent = Dek::from_bytes([7; 32]);
        let scope = ScopeId::new("table:ballots").unwrap();
        let key_id = [9u8; 16];
        let meta = KeyMetadata {
            store_id: &[1; 16],
            scope: &scope,
            version: KeyVersion(4),
            key_id: &key_id,
            algorithm: ALGORITHM,
        };
        let data_key = Dek::generate().unwrap();
        let blob = seal(&parent, &meta, &data_key).unwrap();
        assert_eq!(blob.len(), BLOB_LEN);
        assert_eq!(parse(&blob).unwrap(), (KeyVersion(4), key_id));
        let back = open(&parent, &meta, &blob).unwrap();
        assert_eq!(back.expose_secret(), data_key.expose_secret());
        // Another parent or store: refused as an unwrap failure.
        let other = Dek::from_bytes([8; 32]);
        assert!(matches!(open(&other, &meta, &blob), Err(Error::Unwrap)));
        let moved = KeyMetadata {
            store_id: &[2; 16],
            ..meta
        };
        assert!(matches!(open(&parent, &moved, &blob), Err(Error::Unwrap)));
        // Any changed byte after the header fails; a short blob is not a blob.
        for i in HEADER..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 1;
            assert!(open(&parent, &meta, &bad).is_err(), "byte {i}");
        }
        assert!(matches!(
            parse(&blob[..BLOB_LEN - 1]),
            Err(Error::Format(_))
        ));
        let mut wrong_format = blob.clone();
        wrong_format[0] = 2;
        assert!(matches!(
            open(&parent, &meta, &wrong_format),
            Err(Error::Format(_))
        ));
    }
}

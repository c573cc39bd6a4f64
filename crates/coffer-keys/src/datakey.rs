//! Data keys kept in the application's own rows (per-row or per-ballot DEKs, DESIGN §9 F18).
//!
//! [`Keyring::generate_data_key`] makes a fresh 256-bit key and seals it into a 93-byte blob the
//! application stores beside the row (e.g. `ballots.encrypted_dek`); [`Keyring::open_data_key`]
//! opens it. The parent is a scope's DEK (through the two-tier cache), so opening a row key costs
//! an HKDF, a KWP unwrap and an HMAC, and never a KEK call once the scope DEK is cached.
//! Destroying the parent scope shreds every row key under it. Layout: docs/FORMAT.md §8.
//!
//! Search keys (deterministic, blind index) belong to table or column scopes, never to a row key.

use coffer_core::encoding::tag;
use coffer_core::kdf::{self, Purpose};
use coffer_core::wrap::{self, KeyMetadata};
use coffer_core::{Dek, Kek, KeyVersion, ScopeId, SubKey, WrapAlgorithm};

use crate::error::{Error, Result};
use crate::keyring::Keyring;

/// Blob format version.
const FORMAT: u8 = 1;
/// Length of a data-key blob.
pub const DATA_KEY_BLOB_LEN: usize = 1 + 4 + 16 + wrap::WRAPPED_LEN + wrap::METADATA_TAG_LEN;
/// The algorithm label bound into a data key's metadata tag.
pub const DATA_KEY_ALGORITHM: &str = "coffer-data-key-v1";

fn wrapping_key(parent: &Dek, key_id: &[u8; 16]) -> Result<Kek> {
    let sub: SubKey<32> = kdf::derive(parent, Purpose::DataKey, &[(tag::KEY_ID, key_id)])?;
    Ok(Kek::from_bytes(*sub.expose_secret()))
}

impl Keyring {
    /// A fresh data key for a row of `scope`, and the blob to store beside the row.
    pub async fn generate_data_key(&self, scope: &ScopeId) -> Result<(Dek, Vec<u8>)> {
        let version = self.active_pointer(scope).await?.version;
        let live = self.live(scope, version).await?;
        let data_key = Dek::generate()?;
        let mut key_id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut key_id)
            .map_err(|_| coffer_core::Error::Module("random generator"))?;
        let wrapped =
            wrapping_key(&live.dek, &key_id)?.wrap_dek(&data_key, WrapAlgorithm::AesKwp)?;
        let tag = wrap::metadata_tag(&data_key, &self.data_key_meta(scope, version, &key_id))?;
        let mut blob = Vec::with_capacity(DATA_KEY_BLOB_LEN);
        blob.push(FORMAT);
        blob.extend_from_slice(&version.0.to_be_bytes());
        blob.extend_from_slice(&key_id);
        blob.extend_from_slice(&wrapped);
        blob.extend_from_slice(&tag);
        Ok((data_key, blob))
    }

    /// Opens a blob made by [`Keyring::generate_data_key`] for the same scope. A blob moved to
    /// another scope or store, or altered, fails; a destroyed scope gives [`Error::Destroyed`].
    pub async fn open_data_key(&self, scope: &ScopeId, blob: &[u8]) -> Result<Dek> {
        if blob.len() != DATA_KEY_BLOB_LEN || blob[0] != FORMAT {
            return Err(coffer_core::Error::Format("not a Coffer data-key blob").into());
        }
        let mut v = [0u8; 4];
        v.copy_from_slice(&blob[1..5]);
        let version = KeyVersion(u32::from_be_bytes(v));
        let mut key_id = [0u8; 16];
        key_id.copy_from_slice(&blob[5..21]);
        let wrapped = &blob[21..21 + wrap::WRAPPED_LEN];
        let tag = &blob[21 + wrap::WRAPPED_LEN..];
        let live = self.live(scope, version).await?;
        let data_key = wrapping_key(&live.dek, &key_id)?
            .unwrap_dek(wrapped, WrapAlgorithm::AesKwp)
            .map_err(|_| Error::Crypto(coffer_core::Error::Unwrap))?;
        wrap::verify_metadata_tag(&data_key, &self.data_key_meta(scope, version, &key_id), tag)?;
        Ok(data_key)
    }

    fn data_key_meta<'a>(
        &'a self,
        scope: &'a ScopeId,
        version: KeyVersion,
        key_id: &'a [u8; 16],
    ) -> KeyMetadata<'a> {
        KeyMetadata {
            algorithm: DATA_KEY_ALGORITHM,
            ..self.metadata(scope, version, key_id)
        }
    }
}

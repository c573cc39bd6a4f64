//! Data keys kept in the application's own rows (per-row or per-ballot DEKs, docs/DESIGN.md §K6).
//!
//! [`Keyring::generate_data_key`] makes a fresh 256-bit key and seals it into a 93-byte blob the
//! application stores beside the row (e.g. `ballots.encrypted_dek`); [`Keyring::open_data_key`]
//! opens it. The parent is a scope's DEK (through the two-tier cache), so opening a row key costs
//! an HKDF, a KWP unwrap and an HMAC, and never a KEK call once the scope DEK is cached.
//! Destroying the parent scope shreds every row key under it. Layout and crypto:
//! [`coffer_core::datakey`], docs/FORMAT.md §8.
//!
//! Search keys (deterministic, blind index) belong to table or column scopes, never to a row key.

use coffer_core::datakey;
use coffer_core::digest::random_array;
use coffer_core::wrap::KeyMetadata;
use coffer_core::{Dek, KeyVersion, ScopeId};

use crate::error::Result;
use crate::keyring::Keyring;

/// Length of a data-key blob.
pub const DATA_KEY_BLOB_LEN: usize = datakey::BLOB_LEN;
/// The algorithm label bound into a data key's metadata tag.
pub const DATA_KEY_ALGORITHM: &str = datakey::ALGORITHM;

impl Keyring {
    /// A fresh data key for a row of `scope`, and the blob to store beside the row.
    pub async fn generate_data_key(&self, scope: &ScopeId) -> Result<(Dek, Vec<u8>)> {
        let version = self.active_pointer(scope).await?.version;
        let live = self.live(scope, version).await?;
        let data_key = Dek::generate()?;
        let key_id: [u8; 16] = random_array()?;
        let blob = datakey::seal(
            &live.dek,
            &self.data_key_meta(scope, version, &key_id),
            &data_key,
        )?;
        Ok((data_key, blob))
    }

    /// Opens a blob made by [`Keyring::generate_data_key`] for the same scope. A blob moved to
    /// another scope or store, or altered, fails; a destroyed scope gives
    /// [`Error::Destroyed`](crate::Error::Destroyed).
    pub async fn open_data_key(&self, scope: &ScopeId, blob: &[u8]) -> Result<Dek> {
        let (version, key_id) = datakey::parse(blob)?;
        let live = self.live(scope, version).await?;
        Ok(datakey::open(
            &live.dek,
            &self.data_key_meta(scope, version, &key_id),
            blob,
        )?)
    }

    /// Re-seals a blob under the scope's active version (the data key itself is unchanged):
    /// `None` when it is already under the active version.
    pub async fn rewrap_data_key(&self, scope: &ScopeId, blob: &[u8]) -> Result<Option<Vec<u8>>> {
        let (version, _) = datakey::parse(blob)?;
        let active = self.active_pointer(scope).await?.version;
        if version == active {
            // Still authenticate it: a rewrap never vouches for a blob it has not opened.
            self.open_data_key(scope, blob).await?;
            return Ok(None);
        }
        let data_key = self.open_data_key(scope, blob).await?;
        let live = self.live(scope, active).await?;
        let key_id: [u8; 16] = random_array()?;
        let sealed = datakey::seal(
            &live.dek,
            &self.data_key_meta(scope, active, &key_id),
            &data_key,
        )?;
        Ok(Some(sealed))
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

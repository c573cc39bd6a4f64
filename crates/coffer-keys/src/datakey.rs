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

/// Seals `data_key` into a blob under `parent` (the scope DEK at `version`); deterministic, so the
/// golden vectors can pin the layout. [`Keyring::generate_data_key`] draws the key and key id.
pub(crate) fn seal_blob(parent: &Dek, meta: &KeyMetadata<'_>, data_key: &Dek) -> Result<Vec<u8>> {
    let wrapped = wrapping_key(parent, meta.key_id)?.wrap_dek(data_key, WrapAlgorithm::AesKwp)?;
    let tag = wrap::metadata_tag(data_key, meta)?;
    let mut blob = Vec::with_capacity(DATA_KEY_BLOB_LEN);
    blob.push(FORMAT);
    blob.extend_from_slice(&meta.version.0.to_be_bytes());
    blob.extend_from_slice(meta.key_id);
    blob.extend_from_slice(&wrapped);
    blob.extend_from_slice(&tag);
    Ok(blob)
}

/// The parent version and key id a blob names, or a format error.
pub(crate) fn parse_blob(blob: &[u8]) -> Result<(KeyVersion, [u8; 16])> {
    if blob.len() != DATA_KEY_BLOB_LEN || blob[0] != FORMAT {
        return Err(coffer_core::Error::Format("not a Coffer data-key blob").into());
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&blob[1..5]);
    let mut key_id = [0u8; 16];
    key_id.copy_from_slice(&blob[5..21]);
    Ok((KeyVersion(u32::from_be_bytes(v)), key_id))
}

/// Opens a blob under `parent`, checking its metadata tag against `meta`.
pub(crate) fn open_blob(parent: &Dek, meta: &KeyMetadata<'_>, blob: &[u8]) -> Result<Dek> {
    let wrapped = &blob[21..21 + wrap::WRAPPED_LEN];
    let tag = &blob[21 + wrap::WRAPPED_LEN..];
    let data_key = wrapping_key(parent, meta.key_id)?
        .unwrap_dek(wrapped, WrapAlgorithm::AesKwp)
        .map_err(|_| Error::Crypto(coffer_core::Error::Unwrap))?;
    wrap::verify_metadata_tag(&data_key, meta, tag)?;
    Ok(data_key)
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
        let blob = seal_blob(
            &live.dek,
            &self.data_key_meta(scope, version, &key_id),
            &data_key,
        )?;
        Ok((data_key, blob))
    }

    /// Opens a blob made by [`Keyring::generate_data_key`] for the same scope. A blob moved to
    /// another scope or store, or altered, fails; a destroyed scope gives [`Error::Destroyed`].
    pub async fn open_data_key(&self, scope: &ScopeId, blob: &[u8]) -> Result<Dek> {
        let (version, key_id) = parse_blob(blob)?;
        let live = self.live(scope, version).await?;
        open_blob(
            &live.dek,
            &self.data_key_meta(scope, version, &key_id),
            blob,
        )
    }

    /// Re-seals a blob under the scope's active version (the data key itself is unchanged):
    /// `None` when it is already under the active version.
    pub async fn rewrap_data_key(&self, scope: &ScopeId, blob: &[u8]) -> Result<Option<Vec<u8>>> {
        let (version, _) = parse_blob(blob)?;
        let active = self.active_pointer(scope).await?.version;
        if version == active {
            // Still authenticate it: a rewrap never vouches for a blob it has not opened.
            self.open_data_key(scope, blob).await?;
            return Ok(None);
        }
        let data_key = self.open_data_key(scope, blob).await?;
        let live = self.live(scope, active).await?;
        let mut key_id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut key_id)
            .map_err(|_| coffer_core::Error::Module("random generator"))?;
        let sealed = seal_blob(
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

#[cfg(test)]
mod tests {
    //! Golden vectors for the data-key blob (tests/data/golden/coffer-keys-v1.json, docs/FORMAT.md
    //! §9): never changed once released. Written once with `COFFER_WRITE_GOLDEN=1` while absent.
    use super::*;

    const PATH: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/golden/coffer-keys-v1.json"
    );

    fn cases() -> Vec<(u32, &'static str, [u8; 16], [u8; 32])> {
        vec![
            (
                1,
                "table:ballots",
                [0x11; 16],
                core::array::from_fn(|i| 0x40 + i as u8),
            ),
            (
                7,
                "row:3f2a9c",
                core::array::from_fn(|i| i as u8),
                [0xee; 32],
            ),
            (
                300,
                "tenant:acme",
                [0xff; 16],
                core::array::from_fn(|i| 0x80 + i as u8),
            ),
        ]
    }

    fn parent() -> Dek {
        Dek::from_bytes(core::array::from_fn(|i| i as u8))
    }

    const STORE: [u8; 16] = [0x5a; 16];

    fn meta<'a>(scope: &'a ScopeId, version: u32, key_id: &'a [u8; 16]) -> KeyMetadata<'a> {
        KeyMetadata {
            store_id: &STORE,
            scope,
            version: KeyVersion(version),
            key_id,
            algorithm: DATA_KEY_ALGORITHM,
        }
    }

    fn generate() -> String {
        let mut out = String::from("{\n  \"parent_dek\": \"");
        out.push_str(&hex::encode(parent().expose_secret()));
        out.push_str("\",\n  \"store_id\": \"");
        out.push_str(&hex::encode(STORE));
        out.push_str("\",\n  \"data_keys\": [\n");
        let cases = cases();
        for (i, (version, scope, key_id, key)) in cases.iter().enumerate() {
            let s = ScopeId::new(*scope).unwrap();
            let blob = seal_blob(
                &parent(),
                &meta(&s, *version, key_id),
                &Dek::from_bytes(*key),
            )
            .unwrap();
            out.push_str(&format!(
                "    {{\"scope\": \"{scope}\", \"parent_version\": {version}, \"key_id\": \"{}\", \"data_key\": \"{}\", \"blob\": \"{}\"}}{}\n",
                hex::encode(key_id),
                hex::encode(key),
                hex::encode(&blob),
                if i + 1 < cases.len() { "," } else { "" }
            ));
        }
        out.push_str("  ]\n}\n");
        out
    }

    #[test]
    fn golden_data_key_blobs() {
        let text = match std::fs::read_to_string(PATH) {
            Ok(t) => t,
            Err(_) if std::env::var_os("COFFER_WRITE_GOLDEN").is_some() => {
                std::fs::write(PATH, generate()).unwrap();
                panic!("wrote {PATH}; review and commit it, then run again");
            }
            Err(e) => panic!("{PATH}: {e} (golden vectors are part of the repository)"),
        };
        // The file is exactly what the code produces: same layout, same bytes.
        assert_eq!(text, generate(), "the data-key blob format changed");
        for (version, scope, key_id, key) in cases() {
            let s = ScopeId::new(scope).unwrap();
            let blob = seal_blob(
                &parent(),
                &meta(&s, version, &key_id),
                &Dek::from_bytes(key),
            )
            .unwrap();
            assert_eq!(parse_blob(&blob).unwrap(), (KeyVersion(version), key_id));
            let opened = open_blob(&parent(), &meta(&s, version, &key_id), &blob).unwrap();
            assert_eq!(opened.expose_secret(), &key);
            let other = ScopeId::new("elsewhere").unwrap();
            assert!(open_blob(&parent(), &meta(&other, version, &key_id), &blob).is_err());
        }
    }
}

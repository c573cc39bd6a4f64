//! Key-encryption keys: the provider trait every KEK source implements, the ring of configured
//! KEK versions (one primary), and the local provider for keys held in process memory.
//!
//! A provider wraps and unwraps DEKs; it never hands out its own key. Every wrap is bound to
//! where the DEK belongs ([`WrapContext`]): providers with an AEAD (PKCS#11 AES-GCM, AWS KMS)
//! authenticate it directly, and for all of them the key store keeps the metadata tag of
//! docs/FORMAT.md §6, checked after every unwrap.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use coffer_core::encoding::{self, tag};
use coffer_core::{Dek, Kek, KeyVersion, ScopeId, WrapAlgorithm};

use crate::error::{Error, Result};

/// One KEK version: an operator-chosen name and a version number, shown as `name/vN`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KekId {
    name: String,
    version: u32,
}

impl KekId {
    /// A KEK id. Names are 1–64 characters of `[A-Za-z0-9._-]`; versions start at 1.
    pub fn new(name: impl Into<String>, version: u32) -> Result<Self> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(Error::config(format!(
                "KEK name '{}' must be 1-64 characters of letters, digits, '.', '_' or '-'",
                name.escape_debug()
            )));
        }
        if version == 0 {
            return Err(Error::config("KEK versions start at 1"));
        }
        Ok(KekId { name, version })
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version.
    pub fn version(&self) -> u32 {
        self.version
    }
}

impl fmt::Display for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/v{}", self.name, self.version)
    }
}

/// Where a wrapped DEK belongs. Providers with an AEAD bind it as associated data (or as the KMS
/// encryption context); the metadata tag binds it for all.
#[derive(Clone, Copy, Debug)]
pub struct WrapContext<'a> {
    /// The key store's 16-byte id.
    pub store_id: &'a [u8],
    /// The scope.
    pub scope: &'a ScopeId,
    /// The DEK version.
    pub version: KeyVersion,
    /// The DEK's random key id.
    pub key_id: &'a [u8; 16],
}

impl WrapContext<'_> {
    /// The canonical associated data: `STORE ‖ SCOPE ‖ VERSION ‖ KEY_ID` components
    /// (docs/FORMAT.md §1), prefixed by a purpose component so it is never confused with
    /// another AAD.
    pub fn aad(&self) -> Result<Vec<u8>> {
        let version = self.version.0.to_be_bytes();
        Ok(encoding::encode(&[
            (tag::PURPOSE, b"kek-wrap".as_slice()),
            (tag::STORE, self.store_id),
            (tag::SCOPE, self.scope.as_str().as_bytes()),
            (tag::VERSION, &version),
            (tag::KEY_ID, self.key_id),
        ])?)
    }

    /// An encryption context for a KMS: opaque ids only (store id and key id in hex), never the
    /// scope string, which may name a tenant or a patient and would land in the KMS's logs.
    pub fn opaque_context(&self) -> Vec<(&'static str, String)> {
        vec![
            ("coffer:store", hex::encode(self.store_id)),
            ("coffer:key-id", hex::encode(self.key_id)),
            ("coffer:version", self.version.0.to_string()),
        ]
    }
}

/// A source of one KEK version. Implementations: [`LocalKek`] (env, file, passphrase),
/// `coffer-pkcs11` (an HSM token), `coffer-aws-kms` (AWS KMS).
#[async_trait]
pub trait KekProvider: Send + Sync + 'static {
    /// The provider kind, stored in the KEK registry: `local`, `pkcs11`, `aws-kms`.
    fn kind(&self) -> &'static str;

    /// The wrap algorithm stored beside each DEK it wraps, e.g. `aes256-kwp`.
    fn algorithm(&self) -> &'static str;

    /// Wraps a DEK. The result is opaque to the caller and stored as is.
    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<Vec<u8>>;

    /// Unwraps what [`KekProvider::wrap`] returned for the same context.
    async fn unwrap(&self, wrapped: &[u8], ctx: &WrapContext<'_>) -> Result<Dek>;
}

/// A KEK held in process memory (from `env:`, `file:` or `passphrase:`), wrapping with AES-KWP.
pub struct LocalKek {
    kek: Kek,
    id: KekId,
}

impl LocalKek {
    /// A provider for `kek`, reporting errors under `id`.
    pub fn new(id: KekId, kek: Kek) -> Self {
        LocalKek { kek, id }
    }
}

impl fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl KekProvider for LocalKek {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn algorithm(&self) -> &'static str {
        WrapAlgorithm::AesKwp.name()
    }

    async fn wrap(&self, dek: &Dek, _ctx: &WrapContext<'_>) -> Result<Vec<u8>> {
        Ok(self.kek.wrap_dek(dek, WrapAlgorithm::AesKwp)?)
    }

    async fn unwrap(&self, wrapped: &[u8], _ctx: &WrapContext<'_>) -> Result<Dek> {
        self.kek
            .unwrap_dek(wrapped, WrapAlgorithm::AesKwp)
            .map_err(|_| Error::WrongKek {
                kek: self.id.to_string(),
            })
    }
}

/// The configured KEK versions, one of them primary (new DEKs are wrapped under it).
#[derive(Clone)]
pub struct KekRing {
    keks: BTreeMap<KekId, Arc<dyn KekProvider>>,
    primary: KekId,
}

impl fmt::Debug for KekRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KekRing")
            .field("keks", &self.keks.keys().collect::<Vec<_>>())
            .field("primary", &self.primary)
            .finish()
    }
}

impl KekRing {
    /// A ring with a single KEK, which is primary.
    pub fn single(id: KekId, provider: Arc<dyn KekProvider>) -> Self {
        let mut keks = BTreeMap::new();
        keks.insert(id.clone(), provider);
        KekRing { keks, primary: id }
    }

    /// A ring of several KEK versions; `primary` must be one of them.
    pub fn new(
        keks: impl IntoIterator<Item = (KekId, Arc<dyn KekProvider>)>,
        primary: KekId,
    ) -> Result<Self> {
        let keks: BTreeMap<_, _> = keks.into_iter().collect();
        if !keks.contains_key(&primary) {
            return Err(Error::config(format!(
                "the primary KEK {primary} is not among the configured KEKs"
            )));
        }
        Ok(KekRing { keks, primary })
    }

    /// The primary KEK's id.
    pub fn primary_id(&self) -> &KekId {
        &self.primary
    }

    /// The primary KEK.
    pub fn primary(&self) -> Result<&Arc<dyn KekProvider>> {
        self.get(&self.primary)
    }

    /// A configured KEK, or [`Error::UnknownKek`].
    pub fn get(&self, id: &KekId) -> Result<&Arc<dyn KekProvider>> {
        self.keks.get(id).ok_or_else(|| Error::UnknownKek {
            kek: id.to_string(),
        })
    }

    /// Every configured KEK id.
    pub fn ids(&self) -> impl Iterator<Item = &KekId> {
        self.keks.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_parts() -> (Vec<u8>, ScopeId, [u8; 16]) {
        (vec![7; 16], ScopeId::new("tenant:acme").unwrap(), [9; 16])
    }

    #[tokio::test]
    async fn local_kek_round_trips_and_names_itself_on_a_wrong_key() {
        let (store, scope, key_id) = ctx_parts();
        let ctx = WrapContext {
            store_id: &store,
            scope: &scope,
            version: KeyVersion(1),
            key_id: &key_id,
        };
        let id = KekId::new("main", 1).unwrap();
        let a = LocalKek::new(id.clone(), Kek::generate().unwrap());
        let b = LocalKek::new(id, Kek::generate().unwrap());
        let dek = Dek::generate().unwrap();
        let w = a.wrap(&dek, &ctx).await.unwrap();
        assert_eq!(
            a.unwrap(&w, &ctx).await.unwrap().expose_secret(),
            dek.expose_secret()
        );
        let err = b.unwrap(&w, &ctx).await.unwrap_err();
        assert!(err.to_string().contains("main/v1"), "{err}");
        assert!(!format!("{a:?}").contains("Kek("), "no key in Debug");
    }

    #[test]
    fn kek_ids_are_checked() {
        assert!(KekId::new("main", 1).is_ok());
        assert!(KekId::new("", 1).is_err());
        assert!(KekId::new("a b", 1).is_err());
        assert!(KekId::new("main", 0).is_err());
        assert_eq!(KekId::new("hsm-1", 3).unwrap().to_string(), "hsm-1/v3");
    }

    #[test]
    fn the_aad_separates_every_field() {
        let (store, scope, key_id) = ctx_parts();
        let base = WrapContext {
            store_id: &store,
            scope: &scope,
            version: KeyVersion(1),
            key_id: &key_id,
        };
        let other = WrapContext {
            version: KeyVersion(2),
            ..base
        };
        assert_ne!(base.aad().unwrap(), other.aad().unwrap());
        assert!(
            base.opaque_context()
                .iter()
                .all(|(_, v)| !v.contains("acme"))
        );
    }
}

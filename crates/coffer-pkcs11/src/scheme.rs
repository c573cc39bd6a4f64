//! [`Scheme`]: this crate as the `pkcs11:` KEK provider of coffer-assembly's registry.

use std::sync::Arc;

use async_trait::async_trait;
use coffer_keys::files::FileKeyring;
use coffer_keys::{KekId, KekProvider, KekScheme, Result};

use crate::{Pkcs11FileKeyring, Pkcs11Kek, Pkcs11Ref};

/// The `pkcs11:` scheme: KEKs on an HSM token (references as in the crate documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct Scheme;

#[async_trait]
impl KekScheme for Scheme {
    fn scheme(&self) -> &'static str {
        crate::KIND
    }

    fn check_reference(&self, reference: &str) -> Result<()> {
        Pkcs11Ref::parse(reference).map(|_| ())
    }

    async fn open_kek(&self, reference: &str, id: &KekId) -> Result<Arc<dyn KekProvider>> {
        Ok(Arc::new(Pkcs11Kek::open(reference)?.with_id(id)))
    }

    async fn open_file_keyring(
        &self,
        reference: &str,
        key_name: Option<&str>,
    ) -> Result<Box<dyn FileKeyring>> {
        let kek = Pkcs11Kek::open(reference)?;
        Ok(Box::new(match key_name {
            Some(n) => Pkcs11FileKeyring::new(kek, n),
            None => Pkcs11FileKeyring::any_name(kek),
        }))
    }

    /// Generates the key on the token (non-extractable AES-256) unless its label exists.
    async fn create_kek(&self, reference: &str) -> Result<bool> {
        Pkcs11Kek::open_or_generate(reference).map(|(_, created)| created)
    }
}

//! [`Pkcs11FileKeyring`]: message data keys wrapped on the token in the raw AES keyring layout.

use async_trait::async_trait;
use coffer_core::Dek;
use coffer_core::stream::{EncryptedDataKey, EncryptionContext};
use coffer_keys::files::{FileKeyring, NAMESPACE};
use coffer_keys::{Error, Result};

use crate::Pkcs11Kek;

/// Wraps a message's data key with the token's key (`C_Encrypt`, `CKM_AES_GCM`, AAD = the
/// serialized encryption context) in exactly the raw AES keyring layout, so the AWS Encryption
/// SDKs open it given the same AES key (for a key that was imported or escrowed; a key generated
/// non-extractable on the token is only usable through the token).
#[derive(Clone, Debug)]
pub struct Pkcs11FileKeyring {
    kek: Pkcs11Kek,
    /// `None`: opens EDKs of any name (decryption only).
    name: Option<String>,
}

impl Pkcs11FileKeyring {
    /// A keyring under namespace `coffer` and key name `name` (e.g. `<store-id>/<kek-id>/v2`).
    pub fn new(kek: Pkcs11Kek, name: impl Into<String>) -> Self {
        Pkcs11FileKeyring {
            kek,
            name: Some(name.into()),
        }
    }

    /// A keyring for decryption that tries the token's key on every `coffer` EDK, whatever its
    /// key name; it cannot wrap.
    pub fn any_name(kek: Pkcs11Kek) -> Self {
        Pkcs11FileKeyring { kek, name: None }
    }
}

#[async_trait]
impl FileKeyring for Pkcs11FileKeyring {
    fn label(&self) -> String {
        format!(
            "{NAMESPACE}/{} (pkcs11)",
            self.name.as_deref().unwrap_or("*")
        )
    }

    async fn wrap(&self, data_key: &Dek, context: &EncryptionContext) -> Result<EncryptedDataKey> {
        let name = self.name.as_deref().ok_or_else(|| {
            Error::config("a PKCS#11 file keyring without a key name cannot wrap")
        })?;
        let (iv, sealed) = self.kek.gcm_seal(context.serialize()?, data_key).await?;
        Ok(EncryptedDataKey::raw_aes(NAMESPACE, name, &iv, sealed))
    }

    async fn unwrap(
        &self,
        edk: &EncryptedDataKey,
        context: &EncryptionContext,
    ) -> Result<Option<Dek>> {
        let Some(iv) = edk.raw_aes_iv(NAMESPACE, self.name.as_deref())? else {
            return Ok(None);
        };
        match self
            .kek
            .gcm_open(iv, context.serialize()?, edk.ciphertext.clone())
            .await
        {
            Ok(dk) => Ok(Some(dk)),
            // Another key under the same name (or any name): not this keyring's EDK.
            Err(Error::WrongKek { .. }) if self.name.is_none() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

//! The raw AES keyring: the data key wrapped with AES-256-GCM under a key the application holds,
//! in the layout the AWS SDKs' raw AES keyring reads (provider id = key namespace; provider info =
//! key name ‖ tag bits (u32 = 128) ‖ IV length (u32 = 12) ‖ IV; the AAD is the serialized
//! encryption context).

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, RandomizedNonceKey, UnboundKey};
use zeroize::Zeroizing;

use super::context::EncryptionContext;
use super::frame::{IV_LEN, TAG_LEN};
use super::header::EncryptedDataKey;
use crate::error::{Error, Result};
use crate::secret::{Dek, Kek};

/// A wrapping key with its namespace and name (Coffer puts its key id and version in the name,
/// e.g. `coffer/<store-id>/<kek-id>/v3`).
pub struct RawAesKeyring {
    namespace: String,
    name: String,
    key: Kek,
    any_name: bool,
}

impl fmt::Debug for RawAesKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawAesKeyring")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RawAesKeyring {
    /// A keyring. The namespace `aws-kms` is reserved by the SDKs and refused.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, key: Kek) -> Result<Self> {
        let (namespace, name) = (namespace.into(), name.into());
        if namespace.is_empty() || namespace.starts_with("aws-kms") || name.is_empty() {
            return Err(Error::invalid(
                "raw AES keyring",
                "namespace and name must be non-empty, and the namespace not aws-kms",
            ));
        }
        if namespace.len() > 1024 || name.len() > 1024 {
            return Err(Error::invalid(
                "raw AES keyring",
                "namespace or name longer than 1 KiB",
            ));
        }
        Ok(RawAesKeyring {
            namespace,
            name,
            key,
            any_name: false,
        })
    }

    /// A keyring for decryption that tries its key on every EDK of `namespace`, whatever its key
    /// name (for a command line given a key without the name it was filed under).
    pub fn any_name(namespace: impl Into<String>, key: Kek) -> Result<Self> {
        let mut k = Self::new(namespace, "*", key)?;
        k.any_name = true;
        Ok(k)
    }

    /// The namespace (the EDK's provider id).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wraps a data key (IV from the module's generator).
    pub(crate) fn wrap(
        &self,
        data_key: &Dek,
        context: &EncryptionContext,
    ) -> Result<EncryptedDataKey> {
        let key = RandomizedNonceKey::new(&AES_256_GCM, self.key.expose_secret())
            .map_err(|_| Error::Module("AES-GCM key setup"))?;
        let aad = context.serialize()?;
        let mut buf = data_key.expose_secret().to_vec();
        let nonce = key
            .seal_in_place_append_tag(Aad::from(&aad[..]), &mut buf)
            .map_err(|_| Error::Module("AES-GCM seal"))?;
        let mut info = self.name.as_bytes().to_vec();
        info.extend_from_slice(&((TAG_LEN * 8) as u32).to_be_bytes());
        info.extend_from_slice(&(IV_LEN as u32).to_be_bytes());
        info.extend_from_slice(nonce.as_ref());
        Ok(EncryptedDataKey {
            provider_id: self.namespace.clone(),
            provider_info: info,
            ciphertext: buf,
        })
    }

    /// Unwraps an EDK addressed to this keyring; `Ok(None)` if it is addressed elsewhere,
    /// `Err(Decrypt)` if it is addressed here but does not open.
    pub(crate) fn unwrap(
        &self,
        edk: &EncryptedDataKey,
        context: &EncryptionContext,
    ) -> Result<Option<Dek>> {
        if edk.provider_id != self.namespace {
            return Ok(None);
        }
        let info = &edk.provider_info;
        let n = if self.any_name {
            match info.len().checked_sub(8 + IV_LEN) {
                Some(n) => n,
                None => return Ok(None),
            }
        } else {
            self.name.len()
        };
        if info.len() != n + 8 + IV_LEN || (!self.any_name && &info[..n] != self.name.as_bytes()) {
            return Ok(None);
        }
        if info[n..n + 4] != ((TAG_LEN * 8) as u32).to_be_bytes()
            || info[n + 4..n + 8] != (IV_LEN as u32).to_be_bytes()
            || edk.ciphertext.len() != 32 + TAG_LEN
        {
            return Err(Error::Decrypt);
        }
        let iv: [u8; IV_LEN] = info[n + 8..].try_into().map_err(|_| Error::Decrypt)?;
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, self.key.expose_secret())
                .map_err(|_| Error::Module("AES-GCM key setup"))?,
        );
        let aad = context.serialize()?;
        let mut buf = Zeroizing::new(edk.ciphertext.clone());
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(iv),
                Aad::from(&aad[..]),
                &mut buf[..],
            )
            .map_err(|_| Error::Decrypt)?;
        Ok(Some(Dek::try_from_slice(plain)?))
    }
}

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
    pub fn wrap(&self, data_key: &Dek, context: &EncryptionContext) -> Result<EncryptedDataKey> {
        let key = RandomizedNonceKey::new(&AES_256_GCM, self.key.expose_secret())
            .map_err(|_| Error::Module("AES-GCM key setup"))?;
        let aad = context.serialize()?;
        let mut buf = data_key.expose_secret().to_vec();
        let nonce = key
            .seal_in_place_append_tag(Aad::from(&aad[..]), &mut buf)
            .map_err(|_| Error::Module("AES-GCM seal"))?;
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(nonce.as_ref());
        Ok(EncryptedDataKey::raw_aes(
            &self.namespace,
            &self.name,
            &iv,
            buf,
        ))
    }

    /// Unwraps an EDK addressed to this keyring; `Ok(None)` if it is addressed elsewhere,
    /// `Err(Decrypt)` if it is addressed here but does not open.
    pub fn unwrap(
        &self,
        edk: &EncryptedDataKey,
        context: &EncryptionContext,
    ) -> Result<Option<Dek>> {
        let name = (!self.any_name).then_some(self.name.as_str());
        let Some(iv) = edk.raw_aes_iv(&self.namespace, name)? else {
            return Ok(None);
        };
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

impl EncryptedDataKey {
    /// An EDK in the raw AES keyring layout: provider id = `namespace`; provider info = `name` ‖
    /// tag bits (u32 = 128) ‖ IV length (u32 = 12) ‖ `iv`; ciphertext = `sealed` (the wrapped
    /// 32-byte data key ‖ its 16-byte tag, sealed with AAD = the serialized encryption context).
    /// For wrapping keys held elsewhere (an HSM) that produce the same AES-GCM output.
    pub fn raw_aes(namespace: &str, name: &str, iv: &[u8; IV_LEN], sealed: Vec<u8>) -> Self {
        let mut info = name.as_bytes().to_vec();
        info.extend_from_slice(&((TAG_LEN * 8) as u32).to_be_bytes());
        info.extend_from_slice(&(IV_LEN as u32).to_be_bytes());
        info.extend_from_slice(iv);
        EncryptedDataKey {
            provider_id: namespace.to_owned(),
            provider_info: info,
            ciphertext: sealed,
        }
    }

    /// For a raw AES EDK addressed to `namespace` and `name` (any name when `None`), its IV;
    /// `Ok(None)` when addressed elsewhere; `Err(Decrypt)` when addressed here with parameters
    /// other than AES-GCM, 12-byte IV, 16-byte tag, 32-byte key.
    pub fn raw_aes_iv(&self, namespace: &str, name: Option<&str>) -> Result<Option<[u8; IV_LEN]>> {
        if self.provider_id != namespace {
            return Ok(None);
        }
        let info = &self.provider_info;
        let Some(n) = info.len().checked_sub(8 + IV_LEN) else {
            return Ok(None);
        };
        if name.is_some_and(|name| name.as_bytes() != &info[..n]) {
            return Ok(None);
        }
        if info[n..n + 4] != ((TAG_LEN * 8) as u32).to_be_bytes()
            || info[n + 4..n + 8] != (IV_LEN as u32).to_be_bytes()
            || self.ciphertext.len() != 32 + TAG_LEN
        {
            return Err(Error::Decrypt);
        }
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&info[n + 8..]);
        Ok(Some(iv))
    }
}

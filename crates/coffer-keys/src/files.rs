//! Keys for streamed messages (files, backups, S3 objects) in the AWS Encryption SDK format.
//!
//! A message's data key is fresh per message and wrapped by every [`FileKeyring`] given: a raw
//! AES keyring around a local KEK (`env:`, `file:`), an HSM key producing the same raw-AES layout
//! (coffer-pkcs11), or AWS KMS producing the SDKs' KMS layout (coffer-aws-kms). The AWS
//! Encryption SDKs open any of these given the same wrapping key. [`seal`] makes the data key
//! and its EDKs for [`coffer_core::stream::Encryptor::with_data_key`]; [`open`] finds an EDK one of
//! the caller's keyrings opens, for [`coffer_core::stream::Decryptor::with_data_key`].

use async_trait::async_trait;
use coffer_core::Dek;
use coffer_core::stream::{EncryptedDataKey, EncryptionContext, MessageHeader, RawAesKeyring};

use crate::error::{Error, Result};

/// The EDK namespace (raw AES provider id) of Coffer's own wrapping keys.
pub const NAMESPACE: &str = "coffer";

/// Something that wraps and unwraps a message's data key.
#[async_trait]
pub trait FileKeyring: Send + Sync {
    /// How the keyring names itself in messages and errors (`coffer/<name>`, `aws-kms/<arn>`).
    fn label(&self) -> String;

    /// Wraps `data_key`, binding it to the encryption context.
    async fn wrap(&self, data_key: &Dek, context: &EncryptionContext) -> Result<EncryptedDataKey>;

    /// Unwraps `edk` if it is addressed to this keyring: `Ok(None)` if it is addressed elsewhere,
    /// an error if it is addressed here and does not open (wrong key, tampered) or the provider
    /// failed.
    async fn unwrap(
        &self,
        edk: &EncryptedDataKey,
        context: &EncryptionContext,
    ) -> Result<Option<Dek>>;
}

#[async_trait]
impl FileKeyring for RawAesKeyring {
    fn label(&self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }

    async fn wrap(&self, data_key: &Dek, context: &EncryptionContext) -> Result<EncryptedDataKey> {
        Ok(RawAesKeyring::wrap(self, data_key, context)?)
    }

    async fn unwrap(
        &self,
        edk: &EncryptedDataKey,
        context: &EncryptionContext,
    ) -> Result<Option<Dek>> {
        Ok(RawAesKeyring::unwrap(self, edk, context)?)
    }
}

/// A fresh data key wrapped by every keyring, in order (the first is the primary).
pub async fn seal(
    keyrings: &[&dyn FileKeyring],
    context: &EncryptionContext,
) -> Result<(Dek, Vec<EncryptedDataKey>)> {
    if keyrings.is_empty() {
        return Err(Error::config("a message needs at least one wrapping key"));
    }
    let data_key = Dek::generate()?;
    let edks = wrap(&data_key, keyrings, context).await?;
    Ok((data_key, edks))
}

/// An existing message's data key wrapped by every keyring, in order (for
/// [`coffer_core::stream::rewrap_header`]).
pub async fn wrap(
    data_key: &Dek,
    keyrings: &[&dyn FileKeyring],
    context: &EncryptionContext,
) -> Result<Vec<EncryptedDataKey>> {
    let mut edks = Vec::with_capacity(keyrings.len());
    for k in keyrings {
        edks.push(k.wrap(data_key, context).await?);
    }
    Ok(edks)
}

/// Opens the message's data key with the first keyring that unwraps one of its EDKs. When none
/// does, the error names the message's EDKs and, if a provider failed (rather than finding the
/// key wrong), what it said.
pub async fn open(header: &MessageHeader, keyrings: &[&dyn FileKeyring]) -> Result<Dek> {
    let mut failure = None;
    for edk in &header.edks {
        for k in keyrings {
            match k.unwrap(edk, &header.context).await {
                Ok(Some(dk)) => return Ok(dk),
                Ok(None) => {}
                Err(e @ Error::Provider { .. }) => failure = Some(e),
                // Another key filed under the same name: keep trying.
                Err(_) => {}
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Err(Error::NoMatchingKey {
        names: describe_edks(header),
        tried: keyrings
            .iter()
            .map(|k| k.label())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The message's EDKs as `provider/name` (the key name of a raw AES EDK, the key ARN of a KMS
/// one), comma-separated.
pub fn describe_edks(header: &MessageHeader) -> String {
    header
        .edks
        .iter()
        .map(describe_edk)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One EDK as `provider/name`.
pub fn describe_edk(edk: &EncryptedDataKey) -> String {
    format!("{}/{}", edk.provider_id, key_name(edk).unwrap_or("?"))
}

/// The name an EDK is filed under: the key name of a raw AES EDK, the whole provider info of a
/// provider that files its EDKs under a printable key id (a KMS key ARN). A raw AES EDK's info
/// ends in the binary tag length and IV, so it never reads as printable text.
pub fn key_name(edk: &EncryptedDataKey) -> Option<&str> {
    if edk.provider_id != NAMESPACE {
        if let Some(id) = std::str::from_utf8(&edk.provider_info)
            .ok()
            .filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
        {
            return Some(id);
        }
    }
    edk.key_name()
}

/// Files keyed by a key-store scope: the wrapping key is a subkey of the scope's DEK (purpose
/// `file-wrap`), so tenant isolation, rotation and crypto-shredding apply to files as to fields.
/// The EDK is a raw AES one in namespace `coffer`, named `<store-id>/<check>/v<N>`: the store id,
/// an 8-byte check value of the wrapping key (opaque: it names neither scope nor tenant) and the
/// DEK version. Such files carry no offline-recovery EDK by design (docs/DESIGN.md §K7): destroying the
/// scope destroys them.
impl crate::Keyring {
    /// The keyring that wraps new files of `scope` (its active version).
    pub async fn scope_file_keyring(&self, scope: &coffer_core::ScopeId) -> Result<RawAesKeyring> {
        let version = self.active_pointer(scope).await?.version;
        self.scope_file_keyring_at(scope, version).await
    }

    async fn scope_file_keyring_at(
        &self,
        scope: &coffer_core::ScopeId,
        version: coffer_core::KeyVersion,
    ) -> Result<RawAesKeyring> {
        use coffer_core::encoding::tag;
        use coffer_core::kdf::{Purpose, derive};
        let live = self.live(scope, version).await?;
        let scope_bytes = scope.as_str().as_bytes();
        let wrapping: coffer_core::SubKey<32> =
            derive(&live.dek, Purpose::FileWrap, &[(tag::SCOPE, scope_bytes)])?;
        let check: coffer_core::SubKey<32> = derive(
            &live.dek,
            Purpose::FileWrap,
            &[(tag::SCOPE, scope_bytes), (tag::DOMAIN, b"key-check")],
        )?;
        let name = format!(
            "{}/{}/{version}",
            hex::encode(self.store_id()),
            hex::encode(&check.expose_secret()[..8]),
        );
        Ok(RawAesKeyring::new(
            NAMESPACE,
            name,
            coffer_core::Kek::from_bytes(*wrapping.expose_secret()),
        )?)
    }

    /// Opens the data key of a message keyed by `scope` (any of its live versions). A destroyed
    /// scope or version gives [`Error::Destroyed`]; a message keyed by another scope or store
    /// gives [`Error::NoMatchingKey`].
    pub async fn open_scope_file(
        &self,
        scope: &coffer_core::ScopeId,
        header: &MessageHeader,
    ) -> Result<Dek> {
        let prefix = format!("{}/", hex::encode(self.store_id()));
        for edk in &header.edks {
            let Some(name) = edk
                .key_name()
                .filter(|_| edk.provider_id == NAMESPACE)
                .and_then(|n| n.strip_prefix(&prefix))
            else {
                continue;
            };
            let Some(version) = name
                .rsplit_once("/v")
                .and_then(|(_, v)| v.parse::<u32>().ok())
                .map(coffer_core::KeyVersion)
            else {
                continue;
            };
            let keyring = self.scope_file_keyring_at(scope, version).await?;
            if let Some(dk) = RawAesKeyring::unwrap(&keyring, edk, &header.context)? {
                return Ok(dk);
            }
        }
        Err(Error::NoMatchingKey {
            names: describe_edks(header),
            tried: format!(
                "scope '{}' of store {}",
                scope.as_str(),
                hex::encode(self.store_id())
            ),
        })
    }
}

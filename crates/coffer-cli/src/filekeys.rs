//! Wrapping keys for streamed messages (`coffer file`, `coffer backup`, `coffer s3`): KEK
//! references turned into coffer-keys [`FileKeyring`]s.
//!
//! `env:VAR` / `file:PATH` → a raw AES keyring (namespace `coffer`, the given key name);
//! `pkcs11:…` → the token's key in the same raw AES layout; `aws-kms:…` → a KMS keyring (the SDKs'
//! KMS layout). Passphrase references are refused: a message has nowhere to keep KDF parameters.

use anyhow::{Context as _, Result, bail};
use std::path::Path;

use coffer_core::stream::{MessageHeader, RawAesKeyring};
use coffer_core::{Dek, ScopeId};
use coffer_keys::config::Config;

use crate::cli::WrapKeys;
use coffer_keys::files::{FileKeyring, NAMESPACE};
use coffer_keys::{KekSource, SecretRef};

/// The keyrings to seal a message for: the primary KEK under `name`, then the optional recovery
/// KEK under `recovery_name`.
pub async fn for_encrypt(
    kek: &str,
    name: &str,
    recovery: Option<&str>,
    recovery_name: &str,
) -> Result<Vec<Box<dyn FileKeyring>>> {
    let mut out = vec![keyring(kek, Some(name)).await?];
    if let Some(r) = recovery {
        out.push(keyring(r, Some(recovery_name)).await?);
    }
    Ok(out)
}

/// [`for_encrypt`] for the `--kek`/`--key-name`/`--recovery-kek`/`--recovery-name` arguments.
pub async fn for_keys(keys: &WrapKeys) -> Result<Vec<Box<dyn FileKeyring>>> {
    for_encrypt(
        &keys.kek,
        &keys.key_name,
        keys.recovery_kek.as_deref(),
        &keys.recovery_name,
    )
    .await
}

/// The keyrings to open a message with: each key is tried on every EDK it could have made,
/// whatever name it was filed under.
pub async fn for_decrypt(keks: &[&str]) -> Result<Vec<Box<dyn FileKeyring>>> {
    let mut out = Vec::with_capacity(keks.len());
    for k in keks {
        out.push(keyring(k, None).await?);
    }
    Ok(out)
}

/// A Tokio runtime for the key operations around a stream (HSM and KMS calls are async).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Borrows boxed keyrings as the slice coffer-keys takes.
pub fn refs(keyrings: &[Box<dyn FileKeyring>]) -> Vec<&dyn FileKeyring> {
    keyrings.iter().map(AsRef::as_ref).collect()
}

async fn keyring(reference: &str, name: Option<&str>) -> Result<Box<dyn FileKeyring>> {
    match KekSource::parse(reference)? {
        KekSource::Key(secret) => local(&secret, name),
        KekSource::Passphrase(_) => bail!(
            "--kek {reference}: passphrase keys are not supported for files (a message has no \
             place for KDF parameters); use env:VAR or file:PATH holding a 256-bit key, or an \
             HSM or KMS key"
        ),
        KekSource::Pkcs11(r) => pkcs11(&r, name),
        KekSource::AwsKms(r) => aws_kms(&r).await,
    }
}

fn local(secret: &SecretRef, name: Option<&str>) -> Result<Box<dyn FileKeyring>> {
    let kek = secret.load_kek()?;
    Ok(Box::new(match name {
        Some(n) => RawAesKeyring::new(NAMESPACE, n, kek)?,
        None => RawAesKeyring::any_name(NAMESPACE, kek)?,
    }))
}

#[cfg(feature = "pkcs11")]
fn pkcs11(reference: &str, name: Option<&str>) -> Result<Box<dyn FileKeyring>> {
    let kek = coffer_pkcs11::Pkcs11Kek::open(reference)?;
    Ok(Box::new(match name {
        Some(n) => coffer_pkcs11::Pkcs11FileKeyring::new(kek, n),
        None => coffer_pkcs11::Pkcs11FileKeyring::any_name(kek),
    }))
}

#[cfg(not(feature = "pkcs11"))]
fn pkcs11(_reference: &str, _name: Option<&str>) -> Result<Box<dyn FileKeyring>> {
    bail!("this coffer was built without PKCS#11 support (rebuild with --features pkcs11)")
}

#[cfg(feature = "aws-kms")]
async fn aws_kms(reference: &str) -> Result<Box<dyn FileKeyring>> {
    let kek = coffer_aws_kms::AwsKmsKek::from_reference(reference).await?;
    Ok(Box::new(coffer_aws_kms::AwsKmsFileKeyring::new(kek)))
}

#[cfg(not(feature = "aws-kms"))]
async fn aws_kms(_reference: &str) -> Result<Box<dyn FileKeyring>> {
    bail!("this coffer was built without AWS KMS support (rebuild with --features aws-kms)")
}

/// The keyring that wraps new files of a key-store scope (its active version).
pub async fn for_scope(config: &Path, scope: &str) -> Result<Box<dyn FileKeyring>> {
    let keyring = crate::open::keyring(&Config::load(config)?).await?;
    let scope = ScopeId::new(scope)?;
    Ok(Box::new(keyring.scope_file_keyring(&scope).await?))
}

/// Opens the data key of a file keyed by a key-store scope.
pub async fn open_scope(config: &Path, scope: &str, header: &MessageHeader) -> Result<Dek> {
    let keyring = crate::open::keyring(&Config::load(config)?).await?;
    let scope = ScopeId::new(scope)?;
    keyring
        .open_scope_file(&scope, header)
        .await
        .map_err(crate::file::key_error)
}

//! Wrapping keys for streamed messages (files, backups, S3 objects): KEK references and key-store
//! scopes turned into coffer-keys [`FileKeyring`]s.

use std::path::Path;

use coffer_core::stream::MessageHeader;
use coffer_core::{Dek, ScopeId};
use coffer_keys::config::Config;
use coffer_keys::files::FileKeyring;

use crate::error::Result;
use crate::registry::Registry;

/// The keyrings to seal a message for: `kek` filed under `name`, then the optional recovery KEK
/// filed under `recovery_name`.
pub async fn file_keyrings_for_encrypt(
    kek: &str,
    name: &str,
    recovery: Option<&str>,
    recovery_name: &str,
) -> Result<Vec<Box<dyn FileKeyring>>> {
    let registry = Registry::global();
    let mut out = vec![registry.file_keyring(kek, Some(name)).await?];
    if let Some(r) = recovery {
        out.push(registry.file_keyring(r, Some(recovery_name)).await?);
    }
    Ok(out)
}

/// The keyrings to open a message with: each key is tried on every EDK it could have made,
/// whatever name it was filed under.
pub async fn file_keyrings_for_decrypt(keks: &[&str]) -> Result<Vec<Box<dyn FileKeyring>>> {
    let mut out = Vec::with_capacity(keks.len());
    for k in keks {
        out.push(Registry::global().file_keyring(k, None).await?);
    }
    Ok(out)
}

/// Borrows boxed keyrings as the slice [`coffer_keys::files`] takes.
pub fn refs(keyrings: &[Box<dyn FileKeyring>]) -> Vec<&dyn FileKeyring> {
    keyrings.iter().map(AsRef::as_ref).collect()
}

/// The keyring that wraps new files of a key-store scope (its active version), from the
/// coffer.toml at `config_path`.
pub async fn scope_file_keyring(config_path: &Path, scope: &str) -> Result<Box<dyn FileKeyring>> {
    let keyring = crate::open_keyring(&Config::load(config_path)?).await?;
    let scope = ScopeId::new(scope).map_err(coffer_keys::Error::from)?;
    Ok(Box::new(keyring.scope_file_keyring(&scope).await?))
}

/// Opens the data key of a message keyed by a key-store scope, from the coffer.toml at
/// `config_path`.
pub async fn open_scope_file(
    config_path: &Path,
    scope: &str,
    header: &MessageHeader,
) -> Result<Dek> {
    let keyring = crate::open_keyring(&Config::load(config_path)?).await?;
    let scope = ScopeId::new(scope).map_err(coffer_keys::Error::from)?;
    Ok(keyring.open_scope_file(&scope, header).await?)
}

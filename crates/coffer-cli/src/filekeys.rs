//! The CLI side of streamed-message keys (`coffer file`, `coffer backup`, `coffer s3`): the
//! `--kek`/`--recovery-kek` arguments handed to coffer-assembly, which turns references into
//! keyrings, and the runtime the key operations run on.

use anyhow::{Context as _, Result};
use coffer_keys::files::FileKeyring;

use crate::cli::WrapKeys;

/// The keyrings to seal a message for, from the `--kek`/`--key-name`/`--recovery-kek`/
/// `--recovery-name` arguments.
pub async fn for_keys(keys: &WrapKeys) -> Result<Vec<Box<dyn FileKeyring>>> {
    Ok(coffer_assembly::file_keyrings_for_encrypt(
        &keys.kek,
        &keys.key_name,
        keys.recovery_kek.as_deref(),
        &keys.recovery_name,
    )
    .await?)
}

/// A Tokio runtime for the key operations around a stream (HSM and KMS calls are async).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

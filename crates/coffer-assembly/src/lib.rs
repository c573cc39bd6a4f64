//! Coffer's composition root: a `coffer.toml` (or a KEK reference) in, a ready [`Keyring`], file
//! keyrings and key stores out. The CLI, the service, the Python package and applications such
//! as apps/ballots all assemble through here, so they accept the same sources.
//!
//! A Rust application needs one call, [`keyring_from_file`]:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("coffer.toml");
//! # coffer_keys::source::create_key_file(&dir.path().join("kek"))?;
//! # std::fs::write(&path, format!(
//! #     "[store]\nurl = \"sqlite:{0}/keys.db\"\n[[kek]]\nname = \"main\"\nversion = 1\n\
//! #      source = \"file:{0}/kek\"\nprimary = true\n", dir.path().display()))?;
//! let keyring = coffer_assembly::keyring_from_file(&path).await?;
//! let scope = coffer_core::ScopeId::new("tenant-1")?;
//! keyring.create_scope(&scope).await?;
//! # Ok(()) }
//! ```
//!
//! KEK sources: `env:VAR`, `file:PATH` and `passphrase:…` are built in; every other `SCHEME:…`
//! is opened by the [`coffer_keys::KekScheme`] registered for it in the [`Registry`]. Each
//! provider crate is one cargo feature here (`pkcs11`, `aws-kms`); a source whose provider is
//! not compiled in fails with [`Error::NotCompiledIn`], naming the feature to enable.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod files;
mod keyring;
mod registry;

pub use coffer_keys::Keyring;
pub use coffer_keys::config::Config;
pub use error::{Error, Result};
pub use files::{
    file_keyrings_for_decrypt, file_keyrings_for_encrypt, open_scope_file, refs, scope_file_keyring,
};
pub use keyring::{
    check_tombstones, kek_ring, keyring_from_file, keyring_on, open_keyring, open_keyring_with,
    open_store, prove_keks, start, start_with,
};
pub use registry::Registry;

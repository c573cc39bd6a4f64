//! Opens a keyring from coffer.toml through coffer-assembly, exactly as the `coffer` CLI does:
//! the key store, every `[[kek]]` provider this build has, and the Redis L2 when configured.

use std::path::PathBuf;

use coffer_keys::Keyring;
use coffer_keys::config::Config;
use pyo3::PyResult;

use crate::errors;

/// Where the configuration comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A file; `None`: `COFFER_CONFIG`, else `coffer.toml` in the working directory.
    Path(Option<PathBuf>),
    /// TOML text (environment overrides applied as for a file).
    Text(String),
}

impl Source {
    /// The file it names, for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Path(p) => resolve(p).display().to_string(),
            Source::Text(_) => "<toml text>".into(),
        }
    }

    /// Reads and checks the configuration.
    pub fn load(&self) -> PyResult<Config> {
        match self {
            Source::Path(p) => Config::load(&resolve(p)).map_err(errors::keys),
            Source::Text(t) => {
                let mut c = Config::from_toml(t).map_err(errors::keys)?;
                c.apply_env();
                c.check().map_err(errors::keys)?;
                Ok(c)
            }
        }
    }
}

fn resolve(p: &Option<PathBuf>) -> PathBuf {
    p.clone().unwrap_or_else(|| {
        std::env::var_os("COFFER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("coffer.toml"))
    })
}

/// A coffer-assembly error as a Python exception: key errors as [`errors::keys`], a source this
/// build cannot open as a `ConfigError`.
pub fn assembly_err(e: coffer_assembly::Error) -> pyo3::PyErr {
    match e {
        coffer_assembly::Error::Keys(k) => errors::keys(k),
        other => errors::config(other.to_string()),
    }
}

/// The keyring of the configuration (coffer-assembly: store, every `[[kek]]` provider this
/// build has, the Redis L2 when configured), with its KEKs proven: each KEK the store knows
/// must open its canary, and the primary must open what the store holds under its id, so a
/// wrong key fails here (`WrongKekError`) rather than at the first write. Nothing is written,
/// unless the tombstone ledger shows the store was restored to before a destroy (then the
/// listed scopes are destroyed again; docs/KEYS.md §7.7).
pub async fn keyring(config: Config) -> PyResult<Keyring> {
    let keyring = coffer_assembly::open_keyring(&config)
        .await
        .map_err(assembly_err)?;
    for (_, result) in keyring.check_keks().await.map_err(errors::keys)? {
        result.map_err(errors::keys)?;
    }
    keyring
        .prove_kek(keyring.keks().primary_id(), None)
        .await
        .map_err(errors::keys)?;
    coffer_assembly::check_tombstones(&keyring)
        .await
        .map_err(assembly_err)?;
    Ok(keyring)
}

//! Opens a keyring from coffer.toml exactly as the `coffer` CLI does (crates/coffer-cli's
//! open.rs): the key store, every `[[kek]]` provider, and the Redis L2 when configured.

use std::path::PathBuf;
use std::sync::Arc;

use coffer_keys::config::{Config, KekConfig, local_provider};
use coffer_keys::{KekProvider, KekRing, KekSource, KeyStore, Keyring};
use coffer_store::SqlStore;
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

async fn provider(kek: &KekConfig) -> PyResult<Arc<dyn KekProvider>> {
    if let Some(p) = local_provider(kek).map_err(errors::keys)? {
        return Ok(p);
    }
    match kek.source().map_err(errors::keys)? {
        KekSource::Pkcs11(reference) => pkcs11(kek, &reference),
        _ => Err(errors::config(format!(
            "[[kek]] {}/v{}: this source needs a provider the Python package is not built \
             with (it has env:, file:, passphrase: and pkcs11:); use the `coffer` CLI built \
             with --features aws-kms for AWS KMS keys",
            kek.name, kek.version
        ))),
    }
}

#[cfg(feature = "pkcs11")]
fn pkcs11(kek: &KekConfig, reference: &str) -> PyResult<Arc<dyn KekProvider>> {
    let id = kek.id().map_err(errors::keys)?;
    let p = coffer_pkcs11::Pkcs11Kek::open(reference)
        .map_err(|e| errors::config(format!("[[kek]] {}/v{}: {e}", kek.name, kek.version)))?
        .with_id(&id);
    Ok(Arc::new(p))
}

#[cfg(not(feature = "pkcs11"))]
fn pkcs11(kek: &KekConfig, _reference: &str) -> PyResult<Arc<dyn KekProvider>> {
    Err(errors::config(format!(
        "[[kek]] {}/v{} is a pkcs11: source, but this package was built without PKCS#11",
        kek.name, kek.version
    )))
}

/// The keyring of the configuration.
pub async fn keyring(config: Config) -> PyResult<Keyring> {
    let store: Arc<dyn KeyStore> = Arc::new(
        SqlStore::connect(&config.store.url)
            .await
            .map_err(errors::keys)?,
    );
    let mut keks = Vec::new();
    for k in &config.keks {
        keks.push((k.id().map_err(errors::keys)?, provider(k).await?));
    }
    let primary = config
        .primary()
        .and_then(|p| p.id())
        .map_err(errors::keys)?;
    let ring = KekRing::new(keks, primary).map_err(errors::keys)?;
    let kc = config.keyring_config().map_err(errors::keys)?;
    coffer_redis::keyring_on(&config, store, ring, kc)
        .await
        .map_err(errors::keys)
}

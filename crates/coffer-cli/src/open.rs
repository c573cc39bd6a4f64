//! Builds a keyring from coffer.toml: the key store, every configured KEK provider (local ones
//! from coffer-keys, PKCS#11 and AWS KMS from their crates when compiled in) and the L2 cache.

use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use coffer_keys::config::{Config, KekConfig, local_provider};
use coffer_keys::{KekProvider, KekRing, KekSource, KeyStore, Keyring};
use coffer_store::SqlStore;

/// Opens the KEK provider of one `[[kek]]` entry.
pub async fn provider(kek: &KekConfig) -> Result<Arc<dyn KekProvider>> {
    if let Some(p) = local_provider(kek)? {
        return Ok(p);
    }
    match kek.source()? {
        KekSource::Pkcs11(reference) => pkcs11(kek, &reference).await,
        KekSource::AwsKms(reference) => aws_kms(kek, &reference).await,
        KekSource::Key(_) | KekSource::Passphrase(_) => bail!("unreachable: local source"),
    }
}

#[cfg(feature = "pkcs11")]
async fn pkcs11(kek: &KekConfig, reference: &str) -> Result<Arc<dyn KekProvider>> {
    let id = kek.id()?;
    let p = coffer_pkcs11::Pkcs11Kek::open(reference)?.with_id(&id);
    Ok(Arc::new(p))
}

#[cfg(not(feature = "pkcs11"))]
async fn pkcs11(kek: &KekConfig, _reference: &str) -> Result<Arc<dyn KekProvider>> {
    bail!(
        "[[kek]] {}/v{} is a pkcs11: source, but this coffer was built without PKCS#11 \
         support (rebuild with --features pkcs11)",
        kek.name,
        kek.version
    )
}

#[cfg(feature = "aws-kms")]
async fn aws_kms(kek: &KekConfig, reference: &str) -> Result<Arc<dyn KekProvider>> {
    let id = kek.id()?;
    let p = coffer_aws_kms::AwsKmsKek::from_reference(reference)
        .await?
        .with_kek_id(&id);
    Ok(Arc::new(p))
}

#[cfg(not(feature = "aws-kms"))]
async fn aws_kms(kek: &KekConfig, _reference: &str) -> Result<Arc<dyn KekProvider>> {
    bail!(
        "[[kek]] {}/v{} is an aws-kms: source, but this coffer was built without AWS KMS \
         support (rebuild with --features aws-kms)",
        kek.name,
        kek.version
    )
}

/// Opens the store named by the config.
pub async fn store(config: &Config) -> Result<Arc<SqlStore>> {
    Ok(Arc::new(SqlStore::connect(&config.store.url).await?))
}

/// The KEK ring of the config.
pub async fn ring(config: &Config) -> Result<KekRing> {
    let mut keks = Vec::new();
    for k in &config.keks {
        let p = provider(k)
            .await
            .with_context(|| format!("opening KEK {}/v{}", k.name, k.version))?;
        keks.push((k.id()?, p));
    }
    Ok(KekRing::new(keks, config.primary()?.id()?)?)
}

/// The keyring of the config, with L2 when `[cache] redis_url` is set.
pub async fn keyring(config: &Config) -> Result<Keyring> {
    let store: Arc<dyn KeyStore> = store(config).await?;
    let ring = ring(config).await?;
    keyring_on(config, store, ring).await
}

/// The keyring of the config on a store and KEK ring already opened.
pub async fn keyring_on(
    config: &Config,
    store: Arc<dyn KeyStore>,
    ring: KekRing,
) -> Result<Keyring> {
    let kc = config.keyring_config()?;
    Ok(coffer_redis::keyring_on(config, store, ring, kc).await?)
}

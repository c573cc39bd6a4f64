//! coffer.toml → key store, KEK ring, L2 cache → a [`Keyring`], and the start-up proof of the KEKs.

use std::path::Path;
use std::sync::Arc;

use coffer_keys::config::Config;
use coffer_keys::{CacheKey, KekId, KekRing, KeyStore, Keyring, KeyringConfig, SecretRef};
use coffer_redis::{RedisL2, RedisOptions};
use coffer_store::SqlStore;

use crate::error::Result;
use crate::registry::Registry;

/// Opens the key store `[store] url` names (SQLite or PostgreSQL; migrations applied).
pub async fn open_store(config: &Config) -> Result<Arc<SqlStore>> {
    Ok(Arc::new(SqlStore::connect(&config.store.url).await?))
}

/// The ring of every `[[kek]]` provider of this build ([`Registry::global`]).
pub async fn kek_ring(config: &Config) -> Result<KekRing> {
    Registry::global().kek_ring(config).await
}

/// The keyring `config` describes on a store and KEK ring already opened: with the Redis L2 when
/// `[cache] redis_url` (one server) or `redis_cluster` (a Redis Cluster's seed nodes) and
/// `cache_key` are set, in-process caching only otherwise.
pub async fn keyring_on(
    config: &Config,
    store: Arc<dyn KeyStore>,
    ring: KekRing,
    keyring_config: KeyringConfig,
) -> Result<Keyring> {
    let l2 = match (&config.cache.redis_url, &config.cache.redis_cluster) {
        (Some(_), Some(_)) => {
            // Config::check refuses this; a Config built in code may still hold both.
            return Err(coffer_keys::Error::config(
                "[cache] has both redis_url and redis_cluster: keep one",
            )
            .into());
        }
        (Some(url), None) => Some(RedisL2::new(url, RedisOptions::default())?),
        (None, Some(seeds)) => Some(RedisL2::cluster(seeds, RedisOptions::default())?),
        (None, None) => None,
    };
    match (l2, &config.cache.cache_key) {
        (Some(l2), Some(ck)) => {
            let secret = SecretRef::parse(ck)?
                .load_key()
                .map_err(|e| coffer_keys::Error::config(format!("[cache] cache_key: {e}")))?;
            let key = CacheKey::new(&secret, config.cache.cache_key_version)?;
            Ok(Keyring::with_l2(store, ring, keyring_config, Arc::new(l2), key).await?)
        }
        _ => Ok(Keyring::new(store, ring, keyring_config).await?),
    }
}

/// The keyring of `config` with its own [`KeyringConfig`] (e.g. another audit actor): store,
/// KEK ring and L2 opened. Nothing is checked or written; see [`start_with`].
pub async fn open_keyring_with(config: &Config, keyring_config: KeyringConfig) -> Result<Keyring> {
    let store: Arc<dyn KeyStore> = open_store(config).await?;
    let ring = match kek_ring(config).await {
        Ok(ring) => ring,
        // A KEK's variable is missing: advise by what the store holds under that KEK.
        Err(crate::Error::Keys(e)) => {
            return Err(coffer_keys::config::missing_kek_secret(&*store, config, e)
                .await
                .into());
        }
        Err(e) => return Err(e),
    };
    keyring_on(config, store, ring, keyring_config).await
}

/// The keyring of `config`: store, KEK ring and L2 opened. Nothing is checked or written; see
/// [`start`] for a service or an application starting up.
pub async fn open_keyring(config: &Config) -> Result<Keyring> {
    open_keyring_with(config, config.keyring_config()?).await
}

/// The start-up proof: every KEK the store knows must open its canary (a wrong key stops here,
/// before anything is written), then KEKs new to the store are registered. Returns the ids
/// registered now. Then the tombstone ledger's start-up check (`[audit] tombstone_file`): a
/// store restored to before the latest destroy has every listed scope destroyed again before
/// anything is served (docs/KEYS.md §7.7).
pub async fn prove_keks(keyring: &Keyring) -> Result<Vec<KekId>> {
    for (_, result) in keyring.check_keks().await? {
        result?;
    }
    let registered = keyring.register_keks().await?;
    check_tombstones(keyring).await?;
    Ok(registered)
}

/// The tombstone ledger's start-up check, logged when it destroyed anything again.
pub async fn check_tombstones(keyring: &Keyring) -> Result<()> {
    let report = keyring.check_tombstones_at_start().await?;
    if !report.reapplied.is_empty() {
        tracing::warn!(
            scopes = report.reapplied.len(),
            "destroyed again from the tombstone ledger: the key store had been restored from an \
             older copy (run `coffer keys restored --yes` to bump its epoch)"
        );
    }
    Ok(())
}

/// [`open_keyring_with`], then [`prove_keks`].
pub async fn start_with(config: &Config, keyring_config: KeyringConfig) -> Result<Keyring> {
    let keyring = open_keyring_with(config, keyring_config).await?;
    prove_keks(&keyring).await?;
    Ok(keyring)
}

/// [`open_keyring`], then [`prove_keks`]: the keyring a service or an application starts with.
pub async fn start(config: &Config) -> Result<Keyring> {
    start_with(config, config.keyring_config()?).await
}

/// The one call for a Rust application: reads `path` (a coffer.toml; `COFFER_STORE_URL`,
/// `COFFER_REDIS_URL` and `COFFER_REDIS_CLUSTER` override it), opens the store, every KEK and the L2 cache, proves the KEKs
/// and registers new ones ([`start`]).
pub async fn keyring_from_file(path: impl AsRef<Path>) -> Result<Keyring> {
    start(&Config::load(path.as_ref())?).await
}

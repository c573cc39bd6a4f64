//! `coffer.toml`: one file for the key store, the KEKs, the caches, rotation and audit, with
//! environment overrides. Every option is documented in docs/KEYS.md §5; unknown keys are
//! errors, so a typo never silently falls back to a default.
//!
//! ```
//! let cfg = coffer_keys::config::Config::from_toml(r#"
//!     [store]
//!     url = "sqlite:keys.db"
//!
//!     [[kek]]
//!     name = "main"
//!     version = 1
//!     source = "env:COFFER_KEK"
//!     primary = true
//! "#)?;
//! assert_eq!(cfg.keyring_config()?.l1_ttl.as_secs(), 60);
//! # Ok::<(), coffer_keys::Error>(())
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use coffer_core::KdfParams;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kek::{KekId, KekProvider, LocalKek};
use crate::keyring::KeyringConfig;
use crate::source::{KekSource, SecretRef};

/// Environment variable naming the config file (default `./coffer.toml`).
pub const ENV_CONFIG: &str = "COFFER_CONFIG";
/// Overrides `[store] url`.
pub const ENV_STORE_URL: &str = "COFFER_STORE_URL";
/// Overrides `[cache] redis_url` and `redis_cluster`: a URL means that one Redis server, empty
/// disables L2.
pub const ENV_REDIS_URL: &str = "COFFER_REDIS_URL";
/// Overrides `[cache] redis_cluster` (and `redis_url`, unless `COFFER_REDIS_URL` is set too):
/// the seed nodes of a Redis Cluster, separated by commas; empty disables L2.
pub const ENV_REDIS_CLUSTER: &str = "COFFER_REDIS_CLUSTER";

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[store]`.
    pub store: StoreConfig,
    /// `[[kek]]`, one per KEK version.
    #[serde(default, rename = "kek")]
    pub keks: Vec<KekConfig>,
    /// `[cache]`.
    #[serde(default)]
    pub cache: CacheConfig,
    /// `[rotation]`.
    #[serde(default)]
    pub rotation: RotationConfig,
    /// `[audit]`.
    #[serde(default)]
    pub audit: AuditConfig,
    /// `[service]`: the options of `coffer serve`, read and checked by the service itself
    /// (docs/SERVICE.md); other commands carry it through untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<toml::Table>,
    /// `[app]`: the options of an application built on Coffer that shares this file (e.g.
    /// apps/ballots), read and checked by that application; Coffer carries it through untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<toml::Table>,
}

/// `[store]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite:PATH` or `postgres://…` (env `COFFER_STORE_URL`).
    pub url: String,
}

/// One `[[kek]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KekConfig {
    /// Name (e.g. `main`).
    pub name: String,
    /// Version (1, 2, …).
    pub version: u32,
    /// `env:VAR`, `file:PATH`, `passphrase:env:VAR`, or `SCHEME:…` of a registered KEK provider.
    pub source: String,
    /// KDF parameters for `passphrase:` sources (`$pbkdf2-sha256$…` or `$argon2id$…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<String>,
    /// Whether new DEKs are wrapped under this one. Exactly one entry is primary.
    #[serde(default)]
    pub primary: bool,
}

impl KekConfig {
    /// The KEK id.
    pub fn id(&self) -> Result<KekId> {
        KekId::new(self.name.clone(), self.version)
    }

    /// The parsed source.
    pub fn source(&self) -> Result<KekSource> {
        KekSource::parse(&self.source)
            .map_err(|e| Error::config(format!("[[kek]] {}/v{}: {e}", self.name, self.version)))
    }
}

/// `[cache]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// L1 time to live, e.g. `60s`.
    pub l1_ttl: String,
    /// L1 size bound (DEKs).
    pub l1_capacity: u64,
    /// Column keys, and blind-index keys, each cached DEK keeps at most.
    pub derived_keys: usize,
    /// How long the cached active-version pointer is trusted, e.g. `5s`.
    pub active_ttl: String,
    /// Redis URL for L2 (env `COFFER_REDIS_URL`); absent: no L2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster for L2 (`redis://host:port` each); instead of `redis_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cluster: Option<Vec<String>>,
    /// L2 sliding time to live, e.g. `10m`.
    pub l2_ttl: String,
    /// L2 absolute lifetime from the KEK unwrap, e.g. `1h`.
    pub l2_max_lifetime: String,
    /// The cache key (`env:VAR` or `file:PATH`), required with `redis_url` or `redis_cluster`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// The cache key's version; bump it when the key changes.
    pub cache_key_version: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            l1_ttl: "60s".into(),
            l1_capacity: 10_000,
            derived_keys: 256,
            active_ttl: "5s".into(),
            redis_url: None,
            redis_cluster: None,
            l2_ttl: "10m".into(),
            l2_max_lifetime: "1h".into(),
            cache_key: None,
            cache_key_version: 1,
        }
    }
}

/// `[rotation]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    /// Encryptions per DEK version before automatic rotation (at most 2^31).
    pub max_encryptions: u64,
    /// Age of the active version before automatic rotation, e.g. `90d`; absent: never by age.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// Encryptions leased from the store at a time.
    pub lease_block: u64,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            max_encryptions: coffer_core::DEFAULT_ENCRYPTION_LIMIT,
            max_age: None,
            lease_block: 16_384,
        }
    }
}

/// `[audit]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Who this process is in the audit trail (default `user@host`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Record every KEK unwrap.
    pub unwraps: bool,
    /// A file to keep the audit trail's head in, outside the key store (`id hash-hex`,
    /// rewritten atomically after each append): `coffer keys audit --verify --anchor FILE`
    /// checks the store against it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor_file: Option<std::path::PathBuf>,
    /// The tombstone ledger: a file outside the key store with one MAC'd line per destroyed
    /// scope, so that restoring an older key store cannot bring a destroyed scope back
    /// (docs/KEYS.md §7.7).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tombstone_file: Option<std::path::PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            actor: None,
            unwraps: true,
            anchor_file: None,
            tombstone_file: None,
        }
    }
}

/// Largest `max_encryptions` accepted: half the 2^32 random-IV bound.
pub const MAX_ENCRYPTIONS_CAP: u64 = 1 << 31;

impl Config {
    /// The embedded defaults of a program that runs without a file: the store at `store_url`,
    /// one KEK `main/v1` from `source` (a local source: `env:`, `file:`), no L2; environment
    /// overrides applied, then checked.
    pub fn embedded(store_url: &str, source: String) -> Result<Self> {
        let mut cfg = Config {
            store: StoreConfig {
                url: store_url.to_owned(),
            },
            keks: vec![KekConfig {
                name: "main".to_owned(),
                version: 1,
                source,
                kdf: None,
                primary: true,
            }],
            ..Config::default()
        };
        cfg.apply_env();
        cfg.check()?;
        Ok(cfg)
    }

    /// Parses TOML text and checks it (no environment overrides).
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: Config = toml::from_str(text).map_err(|e| Error::config(e.message()))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Reads a file, applies `COFFER_STORE_URL` / `COFFER_REDIS_URL` / `COFFER_REDIS_CLUSTER`,
    /// and checks it.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!(
                "cannot read {}: {e}; create one with `coffer keys init`",
                path.display()
            ))
        })?;
        let mut cfg: Config = toml::from_str(&text)
            .map_err(|e| Error::config(format!("{}: {}", path.display(), e)))?;
        cfg.apply_env();
        cfg.check()
            .map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    /// Applies the environment overrides.
    pub fn apply_env(&mut self) {
        self.apply_overrides(|name| std::env::var(name).ok());
    }

    /// Applies the overrides that `var` gives for [`ENV_STORE_URL`], [`ENV_REDIS_URL`] and
    /// [`ENV_REDIS_CLUSTER`] (the environment, in [`Config::apply_env`]).
    pub fn apply_overrides(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(url) = var(ENV_STORE_URL).filter(|u| !u.is_empty()) {
            self.store.url = url;
        }
        let redis_url = var(ENV_REDIS_URL);
        if let Some(url) = &redis_url {
            self.cache.redis_url = (!url.is_empty()).then(|| url.clone());
            self.cache.redis_cluster = None;
        }
        if let Some(nodes) = var(ENV_REDIS_CLUSTER) {
            let nodes: Vec<String> = nodes
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect();
            if redis_url.is_none() {
                self.cache.redis_url = None;
            }
            self.cache.redis_cluster = (!nodes.is_empty()).then_some(nodes);
        }
    }

    /// Checks everything that can be checked without reading secrets.
    pub fn check(&self) -> Result<()> {
        if self.store.url.is_empty() {
            return Err(Error::config("[store] url is missing"));
        }
        if self.keks.is_empty() {
            return Err(Error::config(
                "no [[kek]] entry: at least one KEK is needed",
            ));
        }
        let primaries = self.keks.iter().filter(|k| k.primary).count();
        if primaries != 1 {
            return Err(Error::config(format!(
                "exactly one [[kek]] must have primary = true (found {primaries})"
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for k in &self.keks {
            let id = k.id()?;
            if !seen.insert(id.clone()) {
                return Err(Error::config(format!("[[kek]] {id} appears twice")));
            }
            let source = k.source()?;
            match (&source, &k.kdf) {
                (KekSource::Passphrase(_), None) => {
                    return Err(Error::config(format!(
                        "[[kek]] {id}: a passphrase source needs kdf = \"…\" (written by `coffer keys init`)"
                    )));
                }
                (KekSource::Passphrase(_), Some(kdf)) => {
                    KdfParams::parse(kdf)
                        .map_err(|e| Error::config(format!("[[kek]] {id}: kdf: {e}")))?;
                }
                (_, Some(_)) => {
                    return Err(Error::config(format!(
                        "[[kek]] {id}: kdf applies to passphrase sources only"
                    )));
                }
                _ => {}
            }
        }
        match (&self.cache.redis_url, &self.cache.redis_cluster) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "[cache] has both redis_url and redis_cluster (from the file, or from \
                     COFFER_REDIS_URL and COFFER_REDIS_CLUSTER): keep redis_url for one Redis \
                     server, or redis_cluster for the seed nodes of a Redis Cluster",
                ));
            }
            (None, Some(seeds)) if seeds.is_empty() => {
                return Err(Error::config(
                    "[cache] redis_cluster lists no seed node: list at least one \
                     (redis_cluster = [\"redis://host:7000\", …]) or remove the line for no L2",
                ));
            }
            (None, Some(_)) if self.cache.cache_key.is_none() => {
                return Err(Error::config(
                    "[cache] redis_cluster needs cache_key = \"env:VAR\" (its own secret, not a \
                     KEK; make one with `coffer keygen`)",
                ));
            }
            _ => {}
        }
        if self.cache.redis_url.is_some() && self.cache.cache_key.is_none() {
            return Err(Error::config(
                "[cache] redis_url needs cache_key = \"env:VAR\" (its own secret, not a KEK; \
                 make one with `coffer keygen`)",
            ));
        }
        if let Some(ck) = &self.cache.cache_key {
            SecretRef::parse(ck).map_err(|e| Error::config(format!("[cache] cache_key: {e}")))?;
        }
        self.keyring_config().map(|_| ())
    }

    /// The primary KEK's entry.
    pub fn primary(&self) -> Result<&KekConfig> {
        self.keks
            .iter()
            .find(|k| k.primary)
            .ok_or_else(|| Error::config("no [[kek]] has primary = true"))
    }

    /// The keyring settings these options give.
    pub fn keyring_config(&self) -> Result<KeyringConfig> {
        let c = &self.cache;
        let r = &self.rotation;
        if r.max_encryptions == 0 || r.max_encryptions > MAX_ENCRYPTIONS_CAP {
            return Err(Error::config(format!(
                "[rotation] max_encryptions must be between 1 and {MAX_ENCRYPTIONS_CAP} \
                 (random 96-bit IVs allow 2^32 per key)"
            )));
        }
        if r.lease_block == 0 || r.lease_block > r.max_encryptions {
            return Err(Error::config(
                "[rotation] lease_block must be between 1 and max_encryptions",
            ));
        }
        Ok(KeyringConfig {
            l1_ttl: duration("[cache] l1_ttl", &c.l1_ttl)?,
            l1_capacity: c.l1_capacity.max(1),
            derived_keys: c.derived_keys.max(1),
            active_ttl: duration("[cache] active_ttl", &c.active_ttl)?,
            l2_ttl: duration("[cache] l2_ttl", &c.l2_ttl)?,
            l2_max_lifetime: duration("[cache] l2_max_lifetime", &c.l2_max_lifetime)?,
            max_encryptions: r.max_encryptions,
            max_age: r
                .max_age
                .as_deref()
                .map(|a| duration("[rotation] max_age", a))
                .transpose()?,
            lease_block: r.lease_block,
            audit_unwraps: self.audit.unwraps,
            actor: self.audit.actor.clone().unwrap_or_else(default_actor),
            audit_anchor_file: self.audit.anchor_file.clone(),
            tombstone_file: self.audit.tombstone_file.clone(),
            ..KeyringConfig::default()
        })
    }

    /// Writes the file (TOML), refusing to overwrite an existing one.
    pub fn write_new(&self, path: &Path) -> Result<()> {
        use std::io::Write as _;
        let text = toml::to_string_pretty(self).map_err(Error::config)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::config(format!("cannot create {}: {e}", path.display())))?;
        f.write_all(HEADER.as_bytes())
            .and_then(|()| f.write_all(text.as_bytes()))
            .map_err(|e| Error::config(format!("cannot write {}: {e}", path.display())))
    }
}

const HEADER: &str = "# Coffer configuration. Every option: docs/KEYS.md §5.\n\
# Secrets are never written here: KEK and cache-key sources are references (env:, file:, …).\n\n";

/// `user@host` of the OS user running this process, for the audit trail: `USER` or `LOGNAME`,
/// else the name /etc/passwd gives the process's uid, else `uid N`.
pub fn default_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(os_user)
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

/// The process's real uid, by name when /etc/passwd has it (Linux).
fn os_user() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)? == uid).then(|| name.to_owned())
        })
    });
    Some(name.unwrap_or_else(|| format!("uid {uid}")))
}

/// Parses `30s`, `10m`, `1h`, `90d` (or a bare number of seconds).
pub fn duration(what: &str, text: &str) -> Result<Duration> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map_or((t, "s"), |i| t.split_at(i));
    let n: u64 = num.parse().map_err(|_| {
        Error::config(format!(
            "{what}: '{text}' is not a duration like 60s, 10m, 1h, 90d"
        ))
    })?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        "ms" => return Ok(Duration::from_millis(n)),
        _ => {
            return Err(Error::config(format!(
                "{what}: unknown unit in '{text}' (use ms, s, m, h or d)"
            )));
        }
    };
    Ok(Duration::from_secs(secs))
}

/// Builds the provider for a local source (`env:`, `file:`, `passphrase:`); `None` for external
/// sources (`SCHEME:…`), which the crate registered for the scheme builds (coffer-assembly).
pub fn local_provider(kek: &KekConfig) -> Result<Option<Arc<dyn KekProvider>>> {
    let id = kek.id()?;
    let key = match kek.source()? {
        KekSource::Key(r) => r.load_kek()?,
        KekSource::Passphrase(r) => {
            let params = KdfParams::parse(kek.kdf.as_deref().unwrap_or_default())
                .map_err(|e| Error::config(format!("[[kek]] {id}: kdf: {e}")))?;
            let pass = r.read_text()?;
            let pass = pass.trim_end_matches(['\r', '\n']);
            if pass.is_empty() {
                return Err(Error::config(format!(
                    "[[kek]] {id}: the passphrase in {r} is empty"
                )));
            }
            params.derive_kek(pass.as_bytes())?
        }
        KekSource::External { .. } => return Ok(None),
    };
    Ok(Some(Arc::new(LocalKek::new(id, key))))
}

/// The error for a `[[kek]]` whose `env:` variable is not set (`err` is
/// [`Error::SecretNotSet`]; any other error is returned as it is), with advice that depends on
/// what `store` holds. If the store has a canary or DEKs under that KEK id, the key exists
/// somewhere and must be restored: a new key cannot open the store, so `coffer keygen` is not
/// offered. Only when nothing in the store is under that id (a new store, a new KEK version) is
/// a new key the right answer. When the store cannot be read, the advice is the cautious one.
pub async fn missing_kek_secret(
    store: &dyn crate::store::KeyStore,
    config: &Config,
    err: Error,
) -> Error {
    let Error::SecretNotSet { var } = &err else {
        return err;
    };
    let named = config.keks.iter().find_map(|k| match k.source() {
        Ok(KekSource::Key(SecretRef::Env(v))) if v == *var => Some((k, "key")),
        Ok(KekSource::Passphrase(SecretRef::Env(v))) if v == *var => Some((k, "passphrase")),
        _ => None,
    });
    let Some((kek, what)) = named else {
        return err;
    };
    let Ok(id) = kek.id() else {
        return err;
    };
    let canary = store
        .keks()
        .await
        .map(|keks| keks.into_iter().find(|k| k.id == id));
    let deks = store.deks_under(&id, 1).await.map(|d| d.len());
    match (canary, deks) {
        (Ok(None), Ok(0)) => {
            let create = if what == "key" {
                format!("create a key with `export {var}=$(coffer keygen)`")
            } else {
                format!("choose a passphrase and export it as {var}")
            };
            Error::config(format!(
                "[[kek]] {id}: environment variable {var} is not set; the key store holds \
                 nothing under KEK {id} yet, so {create} and keep a copy somewhere safe (losing \
                 it loses every key wrapped under it)"
            ))
        }
        (canary, _) => {
            let since = match canary {
                Ok(Some(rec)) if rec.registered_at_us > 0 => {
                    format!(" (registered {})", crate::error::utc(rec.registered_at_us))
                }
                _ => String::new(),
            };
            Error::config(format!(
                "[[kek]] {id}: environment variable {var} is not set. The key store already \
                 holds keys wrapped under KEK {id}{since}: set {var} to the {what} it was set up \
                 with, restored from where it was kept (a secrets manager, a vault, an offline \
                 copy). A new {what} cannot open this store: do not make one"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [store]
        url = "sqlite:keys.db"
        [[kek]]
        name = "main"
        version = 1
        source = "env:COFFER_KEK"
        primary = true
    "#;

    #[test]
    fn defaults_are_the_documented_ones() {
        let cfg = Config::from_toml(MINIMAL).unwrap();
        let k = cfg.keyring_config().unwrap();
        assert_eq!(k.l1_ttl, Duration::from_secs(60));
        assert_eq!(k.l2_ttl, Duration::from_secs(600));
        assert_eq!(k.l2_max_lifetime, Duration::from_secs(3600));
        assert_eq!(k.max_encryptions, 1 << 30);
        assert_eq!(k.max_age, None);
        assert_eq!(k.derived_keys, 256);
        let set = Config::from_toml(&format!("{MINIMAL}\n[cache]\nderived_keys = 32")).unwrap();
        assert_eq!(set.keyring_config().unwrap().derived_keys, 32);
    }

    #[test]
    fn environment_overrides_pick_one_redis_or_a_cluster() {
        let with = |file: &str, env: &[(&str, &str)]| {
            let mut cfg = Config::from_toml(&format!("{MINIMAL}\n[cache]\n{file}")).unwrap();
            cfg.apply_overrides(|name| {
                env.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            });
            cfg
        };
        let one = "redis_url = \"redis://one:6379\"\ncache_key = \"env:K\"";
        let cluster = "redis_cluster = [\"redis://c:7000\"]\ncache_key = \"env:K\"";
        // The cluster variable replaces a single server from the file, seed list trimmed.
        let c = with(
            one,
            &[(ENV_REDIS_CLUSTER, " redis://a:7000, redis://b:7001 ,")],
        );
        assert_eq!(c.cache.redis_url, None);
        assert_eq!(
            c.cache.redis_cluster.as_deref(),
            Some(&["redis://a:7000".to_owned(), "redis://b:7001".to_owned()][..])
        );
        c.check().unwrap();
        // The single-server variable replaces a cluster from the file.
        let c = with(cluster, &[(ENV_REDIS_URL, "redis://r:6379")]);
        assert_eq!(
            (c.cache.redis_url.as_deref(), c.cache.redis_cluster),
            (Some("redis://r:6379"), None)
        );
        // Empty disables L2.
        let c = with(cluster, &[(ENV_REDIS_CLUSTER, "")]);
        assert_eq!((c.cache.redis_url, c.cache.redis_cluster), (None, None));
        // Both set: a clear error naming the variables.
        let c = with(
            "",
            &[
                (ENV_REDIS_URL, "redis://r:6379"),
                (ENV_REDIS_CLUSTER, "redis://a:7000"),
            ],
        );
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("COFFER_REDIS_CLUSTER"), "{e}");
        // Nothing set: the file stands.
        let c = with(cluster, &[]);
        assert_eq!(c.cache.redis_cluster.map(|n| n.len()), Some(1));
    }

    #[test]
    fn malformed_configs_are_clear_errors() {
        let cases = [
            (
                MINIMAL.replace("primary = true", "primary = false"),
                "exactly one",
            ),
            (
                MINIMAL.replace("url = \"sqlite:keys.db\"", "url = \"\""),
                "url is missing",
            ),
            (
                format!("{MINIMAL}\n[cache]\nl1_tll = \"5s\""),
                "unknown field",
            ),
            (
                format!("{MINIMAL}\n[cache]\nl1_ttl = \"5 parsecs\""),
                "l1_ttl",
            ),
            (
                format!("{MINIMAL}\n[cache]\nredis_url = \"redis://x\""),
                "cache_key",
            ),
            (
                format!("{MINIMAL}\n[cache]\nredis_cluster = [\"redis://x:7000\"]"),
                "redis_cluster needs cache_key",
            ),
            (
                format!(
                    "{MINIMAL}\n[cache]\nredis_url = \"redis://x\"\n\
                     redis_cluster = [\"redis://x:7000\"]\ncache_key = \"env:K\""
                ),
                "both redis_url and redis_cluster",
            ),
            (
                format!("{MINIMAL}\n[cache]\nredis_cluster = []\ncache_key = \"env:K\""),
                "lists no seed node",
            ),
            (
                format!("{MINIMAL}\n[rotation]\nmax_encryptions = 8589934592"),
                "max_encryptions",
            ),
            (MINIMAL.replace("env:COFFER_KEK", "hunter2"), "not a secret"),
            (MINIMAL.replace("env:COFFER_KEK", "passphrase:env:P"), "kdf"),
            (MINIMAL.replace("version = 1", "version = 0"), "start at 1"),
            ("[store\n".to_owned(), ""),
        ];
        for (text, needle) in cases {
            let err = Config::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            duration("x", "90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(duration("x", "250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("x", "15").unwrap(), Duration::from_secs(15));
        assert!(duration("x", "1y").is_err());
        assert!(duration("x", "").is_err());
    }

    #[test]
    fn round_trips_through_toml() {
        let cfg = Config::from_toml(MINIMAL).unwrap();
        let text = toml::to_string_pretty(&cfg).unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), cfg);
    }
}

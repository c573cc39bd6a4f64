//! Configuration: one TOML file shared with the `coffer` CLI (its `[store]`, `[[kek]]`, `[cache]`
//! tables) plus an `[app]` table for Ballots, or the embedded defaults when there is no file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use coffer_keys::config::{Config, duration};
use serde::Deserialize;

/// The embedded default database of ballots.
pub const DEFAULT_DATABASE: &str = "sqlite:ballots.db";
/// The embedded default key store.
pub const DEFAULT_KEY_STORE: &str = "sqlite:ballots-keys.db";
/// The environment variable the embedded defaults read the KEK from.
pub const MASTER_KEY_ENV: &str = "COFFER_MASTER_KEY";
/// The development KEK file `--dev` creates.
pub const DEV_KEY_FILE: &str = "ballots-dev.key";

/// Where the application runs: `production` refuses the settings that exist only for
/// development and measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    /// The default.
    Production,
    /// A developer's machine or a benchmark.
    Development,
}

/// The `[app]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppTable {
    environment: Option<String>,
    listen: Option<String>,
    database_url: Option<String>,
    retention: Option<String>,
    shred_interval: Option<String>,
    key_cache_ttl: Option<String>,
    status_cache_ttl: Option<String>,
    max_batch: Option<usize>,
    database_connections: Option<u32>,
    encryption: Option<bool>,
    metrics_token: Option<String>,
    secure_cookies: Option<bool>,
}

/// The application's settings, checked.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// `environment` (default production).
    pub environment: Environment,
    /// `listen` (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// `database_url`: `postgres://…` or `sqlite:PATH` (default the key store's database).
    pub database_url: String,
    /// `retention`: how long after closing a ballot its key is destroyed (default 30d).
    pub retention: Duration,
    /// `shred_interval`: how often the shredder looks for ballots past retention (default 1m).
    pub shred_interval: Duration,
    /// `key_cache_ttl`: how long a worker keeps an opened ballot key (default 60s).
    pub key_cache_ttl: Duration,
    /// `status_cache_ttl`: how long the ballot page trusts a ballot's open/closed state
    /// (default 1s; votes always check it in their transaction).
    pub status_cache_ttl: Duration,
    /// `max_batch`: votes written per transaction at most (default 2048).
    pub max_batch: usize,
    /// `database_connections` (default 16; SQLite: 4).
    pub database_connections: u32,
    /// `encryption` (default true). `false` stores texts in plaintext: it exists only to
    /// measure Coffer's overhead and is refused in production.
    pub encryption: bool,
    /// `metrics_token`: where the bearer token of `GET /metrics` is (`env:VAR` or `file:PATH`),
    /// kept only as its hash. Without it, `/metrics` refuses every request.
    pub metrics_token_hash: Option<[u8; 32]>,
    /// `secure_cookies`: mark every cookie `Secure` (`true`), never (`false`), or, when unset,
    /// exactly when the request came over HTTPS as the TLS-terminating proxy reports it
    /// (`X-Forwarded-Proto: https`).
    pub secure_cookies: Option<bool>,
}

/// The environment variable the embedded defaults read the metrics token from, when it is set.
pub const METRICS_TOKEN_ENV: &str = "BALLOTS_METRICS_TOKEN";

/// Shortest metrics token accepted, in bytes (`coffer keygen` gives 44).
pub const MIN_METRICS_TOKEN: usize = 16;

/// The hash `GET /metrics` compares a presented token with (constant time).
pub fn metrics_token_hash(token: &str) -> [u8; 32] {
    coffer_core::token::hash_token(METRICS_TOKEN_DOMAIN, token)
}

/// The hash domain of the metrics token.
pub const METRICS_TOKEN_DOMAIN: &[u8] = b"ballots/metrics/v1";

/// Everything `ballots serve` needs: the keyring's configuration and the application's.
#[derive(Debug)]
pub struct Settings {
    /// The Coffer part (`[store]`, `[[kek]]`, `[cache]`, …).
    pub coffer: Config,
    /// The `[app]` part.
    pub app: AppConfig,
}

/// Where the configuration comes from.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// An explicit file (`--config`).
    pub file: Option<PathBuf>,
    /// `--dev`: embedded defaults with a generated development key, environment development.
    pub dev: bool,
}

impl Settings {
    /// Reads the file when there is one (`--config`, or ./ballots.toml), else the embedded
    /// defaults.
    pub fn resolve(source: &Source) -> Result<Settings> {
        let path = source
            .file
            .clone()
            .or_else(|| Some(PathBuf::from("ballots.toml")).filter(|p| p.exists()));
        match path {
            Some(path) => {
                if source.dev {
                    bail!(
                        "--dev applies to the embedded defaults only; {} configures the keys",
                        path.display()
                    );
                }
                let coffer = Config::load(&path)?;
                let app = AppConfig::from_table(coffer.app.as_ref(), &coffer.store.url)
                    .with_context(|| format!("{}: [app]", path.display()))?;
                Ok(Settings { coffer, app })
            }
            None => Self::embedded(source.dev),
        }
    }

    fn embedded(dev: bool) -> Result<Settings> {
        let store_file = DEFAULT_KEY_STORE.trim_start_matches("sqlite:");
        let store_exists = Path::new(store_file).exists();
        let source = if dev {
            if store_exists && !Path::new(DEV_KEY_FILE).exists() {
                bail!(
                    "--dev: {store_file} is here but {DEV_KEY_FILE} is not, so its ballot keys \
                     were made under another master key and a new development key could not \
                     open them. Run without --dev and set {MASTER_KEY_ENV} to the key that made \
                     it, or remove {store_file} and {} to start over",
                    DEFAULT_DATABASE.trim_start_matches("sqlite:")
                );
            }
            coffer_keys::source::create_key_file(Path::new(DEV_KEY_FILE))?;
            format!("file:{DEV_KEY_FILE}")
        } else {
            if std::env::var_os(MASTER_KEY_ENV).is_none() && store_exists {
                bail!(
                    "{MASTER_KEY_ENV} is not set, and {store_file} here holds ballot keys wrapped \
                     under the master key it was made with: set {MASTER_KEY_ENV} to that same \
                     key (restore it from where you keep it; a new one cannot open them), or \
                     pass --config FILE"
                );
            }
            if std::env::var_os(MASTER_KEY_ENV).is_none() {
                bail!(
                    "no ballots.toml here and {MASTER_KEY_ENV} is not set: export \
                     {MASTER_KEY_ENV}=$(coffer keygen) (keep it safe: it wraps every ballot key), \
                     pass --config FILE, or try `ballots serve --dev` for a throwaway \
                     development key"
                );
            }
            format!("env:{MASTER_KEY_ENV}")
        };
        let coffer = Config::embedded(DEFAULT_KEY_STORE, source)?;
        let mut table = toml::Table::new();
        table.insert("database_url".into(), DEFAULT_DATABASE.into());
        if dev {
            table.insert("environment".into(), "development".into());
        }
        if std::env::var_os(METRICS_TOKEN_ENV).is_some() {
            table.insert(
                "metrics_token".into(),
                format!("env:{METRICS_TOKEN_ENV}").into(),
            );
        }
        let app = AppConfig::from_table(Some(&table), &coffer.store.url)?;
        Ok(Settings { coffer, app })
    }
}

impl AppConfig {
    /// Parses and checks the `[app]` table; `key_store_url` is the default database.
    pub fn from_table(table: Option<&toml::Table>, key_store_url: &str) -> Result<AppConfig> {
        let t: AppTable = match table {
            Some(t) => t
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", e.message().trim_end()))?,
            None => AppTable::default(),
        };
        let dur = |what: &str, v: &Option<String>, default: Duration| -> Result<Duration> {
            match v {
                Some(text) => Ok(duration(what, text)?),
                None => Ok(default),
            }
        };
        let database_url = t
            .database_url
            .unwrap_or_else(|| key_store_url.to_owned())
            .trim()
            .to_owned();
        if !(database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
            || database_url.starts_with("sqlite:"))
        {
            bail!("database_url must start with postgres:// or sqlite:");
        }
        let listen = t.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("listen = {listen:?} is not an address:port"))?;
        let environment = match t.environment.as_deref() {
            None | Some("production") => Environment::Production,
            Some("development") => Environment::Development,
            Some(other) => {
                bail!("environment = {other:?}: choose \"production\" or \"development\"")
            }
        };
        let encryption = t.encryption.unwrap_or(true);
        if !encryption && environment == Environment::Production {
            bail!(
                "encryption = false exists only to measure what encryption costs and is refused \
                 in production: set environment = \"development\" on a benchmark machine"
            );
        }
        let max_batch = t.max_batch.unwrap_or(2048);
        if !(1..=8192).contains(&max_batch) {
            bail!("max_batch must be 1–8192");
        }
        let sqlite = database_url.starts_with("sqlite:");
        let database_connections = t
            .database_connections
            .unwrap_or(if sqlite { 4 } else { 16 });
        if database_connections < 2 {
            bail!("database_connections must be at least 2 (one is the vote writer's)");
        }
        let metrics_token_hash = match &t.metrics_token {
            None => None,
            Some(reference) => {
                let source = coffer_keys::source::SecretRef::parse(reference)
                    .map_err(|e| anyhow::anyhow!("metrics_token: {e}"))?;
                let token = source
                    .read_text()
                    .map_err(|e| anyhow::anyhow!("metrics_token: {e}"))?;
                let token = token.trim();
                if token.len() < MIN_METRICS_TOKEN {
                    bail!(
                        "metrics_token: the token is shorter than {MIN_METRICS_TOKEN} bytes; \
                         use a random one, e.g. $(coffer keygen)"
                    );
                }
                Some(metrics_token_hash(token))
            }
        };
        Ok(AppConfig {
            environment,
            listen,
            database_url,
            retention: dur("retention", &t.retention, Duration::from_secs(30 * 86_400))?,
            shred_interval: dur("shred_interval", &t.shred_interval, Duration::from_secs(60))?,
            key_cache_ttl: dur("key_cache_ttl", &t.key_cache_ttl, Duration::from_secs(60))?,
            status_cache_ttl: dur(
                "status_cache_ttl",
                &t.status_cache_ttl,
                Duration::from_secs(1),
            )?,
            max_batch,
            database_connections,
            encryption,
            metrics_token_hash,
            secure_cookies: t.secure_cookies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap_or_default()
    }

    #[test]
    fn defaults_and_overrides() {
        let c = AppConfig::from_table(None, "sqlite:k.db").map_err(|e| e.to_string());
        let c = c
            .as_ref()
            .map(|c| (c.database_url.as_str(), c.encryption, c.retention));
        assert_eq!(
            c,
            Ok(("sqlite:k.db", true, Duration::from_secs(30 * 86_400)))
        );
        let t = table("retention = \"2s\"\nmax_batch = 10\nlisten = \"127.0.0.1:9\"");
        let c = AppConfig::from_table(Some(&t), "postgres://x").map_err(|e| e.to_string());
        assert_eq!(
            c.map(|c| (c.retention, c.max_batch, c.listen.port())),
            Ok((Duration::from_secs(2), 10, 9))
        );
    }

    #[test]
    fn plaintext_mode_is_refused_in_production() {
        let err = AppConfig::from_table(Some(&table("encryption = false")), "postgres://x")
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            matches!(&err, Err(m) if m.contains("refused in production")),
            "{err:?}"
        );
        let ok = AppConfig::from_table(
            Some(&table("encryption = false\nenvironment = \"development\"")),
            "postgres://x",
        );
        assert!(ok.is_ok_and(|c| !c.encryption));
    }

    #[test]
    fn bad_values_are_named() {
        for (text, needle) in [
            ("bogus = 1", "unknown field"),
            ("retention = \"soon\"", "retention"),
            ("listen = \"nowhere\"", "listen"),
            ("database_url = \"mysql://x\"", "database_url"),
            ("max_batch = 0", "max_batch"),
            ("environment = \"staging\"", "environment"),
        ] {
            let err = AppConfig::from_table(Some(&table(text)), "postgres://x")
                .map(|_| ())
                .map_err(|e| format!("{e:#}"));
            assert!(
                matches!(&err, Err(m) if m.contains(needle)),
                "{text}: {err:?}"
            );
        }
    }
}

//! `coffer serve` (the encryption service, coffer-server) and `coffer tokens` (its API tokens).
//!
//! Both read coffer.toml when there is one (`--config`, `COFFER_CONFIG` or ./coffer.toml), and
//! otherwise the embedded defaults: a SQLite key store in ./coffer-keys.db, the in-process cache
//! only, and the KEK `main/v1` from `COFFER_MASTER_KEY` (or, with `--dev`, from a development key
//! file generated once).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use coffer_keys::config::Config;
use coffer_keys::{KeyStore, Keyring};
use coffer_server::tokens::{Role, TokenStore};
use coffer_server::{App, ServiceConfig};

use crate::input;

/// The embedded default key store.
pub const DEFAULT_STORE: &str = "sqlite:coffer-keys.db";
/// The environment variable the embedded defaults read the KEK from.
pub const MASTER_KEY_ENV: &str = "COFFER_MASTER_KEY";
/// The development KEK file `--dev` creates.
pub const DEV_KEY_FILE: &str = "coffer-dev.key";

pub const SERVE_AFTER_HELP: &str =
    "With no coffer.toml, `coffer serve` runs on embedded defaults: key store
sqlite:coffer-keys.db, in-process key cache, KEK main/v1 from COFFER_MASTER_KEY (standard-base64,
256 bits). --dev instead generates ./coffer-dev.key (mode 0600) once and uses it: for development
only. With a coffer.toml (written by `coffer keys init`), a [service] table sets the listen
address, TLS (tls_cert, tls_key), limits and logging; docs/SERVICE.md lists every option.

Without TLS the service listens on loopback only, unless --insecure-no-tls. Logs are JSON lines on
stderr with personal data masked. Core dumps are disabled. SIGTERM or Ctrl-C stops accepting
connections and waits for requests in flight ([service] shutdown_timeout, 30 s).

Exit status: 0 stopped cleanly; 1 the configured KEK does not match the key store; 2
configuration error; 3 the key store or KEK provider is unreachable.

Examples:
  export COFFER_MASTER_KEY=$(coffer keygen)
  ADMIN=$(coffer tokens create --admin --label ops)
  TOKEN=$(coffer tokens create --tenant acme --label billing-api --expires 90d)
  coffer serve &
  URL=http://127.0.0.1:8200; JSON='content-type: application/json'
  curl -s -H \"Authorization: Bearer $ADMIN\" -H \"$JSON\" \\
       -d '{\"scope\":\"acme:patients\",\"tenant\":\"acme\"}' $URL/v1/admin/scopes
  BODY='{\"encoding\":\"utf8\",\"items\":[{\"column\":\"ssn\",\"plaintext\":\"123-45-6789\"}]}'
  curl -s -H \"Authorization: Bearer $TOKEN\" -H \"$JSON\" -d \"$BODY\" \\
       $URL/v1/scopes/acme:patients/encrypt";

pub const TOKENS_AFTER_HELP: &str = "A tenant token reaches only the scopes its tenant owns (an admin gives a scope to a tenant with
POST /v1/admin/scopes); an admin token administers keys and reaches no data. The token is printed
once, on stdout; the key store keeps only its SHA-256 hash. A revocation takes effect within
[service] token_cache_ttl (5 s) on every running service.

Examples:
  coffer tokens create --tenant acme --label billing-api --expires 90d
  coffer tokens create --admin --label ops
  coffer tokens list
  coffer tokens revoke 3f2a9c0d1e4b5a69";

/// Where `coffer serve` and `coffer tokens` find their configuration.
#[derive(Debug, Args)]
pub struct ServiceConfigArgs {
    /// The configuration file (default: ./coffer.toml if it exists, else the embedded defaults)
    #[arg(long, value_name = "FILE", env = "COFFER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Development mode: with the embedded defaults, use (and on first run generate)
    /// ./coffer-dev.key as the KEK instead of COFFER_MASTER_KEY. Never in production.
    #[arg(long)]
    pub dev: bool,
}

/// `coffer serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ServiceConfigArgs,
    /// Listen on this address and port (overrides `listen` of the `[service]` table), e.g. 127.0.0.1:8200
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Allow plain HTTP on a non-loopback address (only on a network you trust)
    #[arg(long)]
    pub insecure_no_tls: bool,
}

/// `coffer tokens …`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it (once)
    Create(CreateTokenArgs),
    /// List tokens (ids, tenants, labels, expiry, revocation; never secrets)
    List(ListTokensArgs),
    /// Revoke a token by id
    Revoke(RevokeTokenArgs),
}

/// `coffer tokens create`.
#[derive(Debug, Args)]
pub struct CreateTokenArgs {
    #[command(flatten)]
    pub config: ServiceConfigArgs,
    /// The tenant whose scopes the token reaches
    #[arg(
        long,
        value_name = "TENANT",
        required_unless_present = "admin",
        conflicts_with = "admin"
    )]
    pub tenant: Option<String>,
    /// An admin token (key administration, no data)
    #[arg(long)]
    pub admin: bool,
    /// A label for the operator (who holds it, what for)
    #[arg(long, default_value = "")]
    pub label: String,
    /// Expire after this long, e.g. 90d, 12h (default: never)
    #[arg(long, value_name = "DURATION")]
    pub expires: Option<String>,
}

/// `coffer tokens list`.
#[derive(Debug, Args)]
pub struct ListTokensArgs {
    #[command(flatten)]
    pub config: ServiceConfigArgs,
    /// JSON output
    #[arg(long)]
    pub json: bool,
}

/// `coffer tokens revoke`.
#[derive(Debug, Args)]
pub struct RevokeTokenArgs {
    #[command(flatten)]
    pub config: ServiceConfigArgs,
    /// The token id (the 16 hex digits after `cft_`, as `coffer tokens list` shows)
    pub id: String,
}

/// The configuration: the file when there is one, else the embedded defaults.
pub fn resolve(args: &ServiceConfigArgs, need_kek: bool) -> Result<Config> {
    let explicit = args.config.clone();
    let path = explicit
        .clone()
        .or_else(|| Some(PathBuf::from("coffer.toml")).filter(|p| p.exists()));
    if let Some(path) = path {
        if args.dev {
            bail!(
                "--dev applies to the embedded defaults only; {} configures the KEKs",
                path.display()
            );
        }
        return Ok(Config::load(&path)?);
    }
    let source = if args.dev {
        if need_kek {
            coffer_keys::source::create_key_file(Path::new(DEV_KEY_FILE))?;
        }
        format!("file:{DEV_KEY_FILE}")
    } else {
        let store_file = DEFAULT_STORE
            .strip_prefix("sqlite:")
            .unwrap_or(DEFAULT_STORE);
        if need_kek && std::env::var_os(MASTER_KEY_ENV).is_none() && Path::new(store_file).exists()
        {
            // A store is here already: a new key would not open it.
            bail!(
                "no coffer.toml here and {MASTER_KEY_ENV} is not set, but {store_file} here \
                 already holds keys: set {MASTER_KEY_ENV} to the key this service was started \
                 with (restored from where it was kept); a new key from `coffer keygen` cannot \
                 open this store. Or pass --config FILE"
            );
        }
        if need_kek && std::env::var_os(MASTER_KEY_ENV).is_none() {
            bail!(
                "no coffer.toml here and {MASTER_KEY_ENV} is not set: export \
                 {MASTER_KEY_ENV}=$(coffer keygen) (and keep it safe: it wraps every key), pass \
                 --config FILE, or try `coffer serve --dev` for a throwaway development key"
            );
        }
        format!("env:{MASTER_KEY_ENV}")
    };
    Ok(Config::embedded(DEFAULT_STORE, source)?)
}

/// The token table, with a keyring to audit token changes in the keyed trail (so token
/// commands need the KEK, as `coffer serve` does).
async fn token_store(args: &ServiceConfigArgs) -> Result<TokenStore> {
    let cfg = resolve(args, true)?;
    let store = coffer_assembly::open_store(&cfg).await?;
    let ring = coffer_assembly::kek_ring(&cfg).await?;
    let dyn_store: Arc<dyn KeyStore> = store.clone();
    let keyring: Keyring =
        coffer_assembly::keyring_on(&cfg, dyn_store, ring, cfg.keyring_config()?).await?;
    Ok(TokenStore::new(store.as_ref().clone(), keyring))
}

/// `coffer serve`.
pub fn serve(a: &ServeArgs) -> Result<()> {
    // Before any key is in memory.
    coffer_server::disable_core_dumps()?;
    let cfg = resolve(&a.config, true)?;
    let mut service = ServiceConfig::from_table(cfg.service.as_ref())?;
    if let Some(l) = &a.listen {
        service.listen = l
            .parse()
            .with_context(|| format!("--listen '{l}': expected an address and port"))?;
    }
    let redactor = Arc::new(coffer_server::telemetry::Redactor::new(
        &service.log_redact_patterns,
        &service.log_sensitive_fields,
    )?);
    coffer_server::telemetry::init_logging(&service.log_level, redactor)?;
    if a.config.dev {
        tracing::warn!(
            key_file = DEV_KEY_FILE,
            "DEVELOPMENT MODE: the KEK is a plain file next to the key store; anyone who can \
             read this directory can decrypt everything. Never use --dev for real data."
        );
    }
    let metrics = coffer_server::telemetry::init_metrics()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let store = coffer_assembly::open_store(&cfg).await?;
        let ring = coffer_assembly::kek_ring(&cfg).await?;
        let dyn_store: Arc<dyn KeyStore> = store.clone();
        let keyring: Keyring =
            coffer_assembly::keyring_on(&cfg, dyn_store, ring, cfg.keyring_config()?).await?;
        coffer_assembly::prove_keks(&keyring).await?;
        let tokens = TokenStore::new(store.as_ref().clone(), keyring.clone());
        let app = App::new(keyring, tokens, service, Some(metrics));
        coffer_server::serve(app, a.insecure_no_tls, |l| {
            let scheme = if l.tls { "https" } else { "http" };
            // One plain line on stdout for scripts; everything else is in the JSON log.
            let _ = input::write_stdout(format!("listening on {scheme}://{}\n", l.addr).as_bytes());
        })
        .await
    })
}

/// `coffer tokens …`.
pub fn tokens(cmd: &TokensCommand) -> Result<()> {
    let rt = crate::filekeys::runtime()?;
    rt.block_on(async {
        match cmd {
            TokensCommand::Create(a) => {
                let role = match (&a.tenant, a.admin) {
                    (Some(t), false) => {
                        if t.is_empty() || t.len() > 128 || t.chars().any(char::is_control) {
                            bail!("--tenant must be 1 to 128 characters, no control characters");
                        }
                        Role::Tenant(t.clone())
                    }
                    (None, true) => Role::Admin,
                    _ => bail!("give --tenant TENANT or --admin"),
                };
                let ttl = a
                    .expires
                    .as_deref()
                    .map(|e| coffer_keys::config::duration("--expires", e))
                    .transpose()?;
                let store = token_store(&a.config).await?;
                let (info, secret) = store.create(&role, &a.label, ttl).await?;
                eprintln!(
                    "created token {} ({}){}; it is shown once, below",
                    info.id,
                    info.tenant
                        .as_deref()
                        .map(|t| format!("tenant {t}"))
                        .unwrap_or_else(|| "admin".to_owned()),
                    info.expires_at
                        .as_deref()
                        .map(|e| format!(", expires {e}"))
                        .unwrap_or_default()
                );
                input::write_stdout(format!("{}\n", secret.expose()).as_bytes())
            }
            TokensCommand::List(a) => {
                let store = token_store(&a.config).await?;
                let list = store.list().await?;
                if a.json {
                    let text = serde_json::to_string_pretty(&list)?;
                    return input::write_stdout(format!("{text}\n").as_bytes());
                }
                let mut out = String::from("ID                ROLE    TENANT        LABEL                 EXPIRES                  STATUS\n");
                for t in list {
                    let status = if t.revoked_at.is_some() {
                        "revoked"
                    } else if t.expired {
                        "expired"
                    } else {
                        "active"
                    };
                    out.push_str(&format!(
                        "{:<17} {:<7} {:<13} {:<21} {:<24} {status}\n",
                        t.id,
                        t.role,
                        t.tenant.as_deref().unwrap_or("-"),
                        t.label,
                        t.expires_at.as_deref().unwrap_or("never"),
                    ));
                }
                input::write_stdout(out.as_bytes())
            }
            TokensCommand::Revoke(a) => {
                let store = token_store(&a.config).await?;
                if store.revoke(&a.id).await? {
                    eprintln!("revoked token {}; running services refuse it within their token_cache_ttl", a.id);
                    Ok(())
                } else {
                    bail!("no active token with id '{}' (see `coffer tokens list`)", a.id)
                }
            }
        }
    })
}

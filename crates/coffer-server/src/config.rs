//! The `[service]` table of coffer.toml: where the service listens, its TLS certificate, its
//! limits and its logging. Every option has a default; unknown keys are errors. docs/SERVICE.md §6
//! lists them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// The service's options, after parsing and checking.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Address and port to listen on (default `127.0.0.1:8200`).
    pub listen: SocketAddr,
    /// PEM certificate chain and private key: TLS is on when both are set.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Largest request body, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// Most items in one batch request (default 1 000).
    pub max_batch: usize,
    /// Requests per second allowed per token, sustained (default 1 000).
    pub rate_limit: u32,
    /// Requests a token may send at once above the sustained rate (default 2 000).
    pub rate_burst: u32,
    /// Failed authentications (missing, malformed, unknown, expired or revoked tokens) allowed
    /// per second per client address, sustained (default 2).
    pub auth_failure_rate: u32,
    /// Failed authentications a client address may have at once above that rate (default 20).
    /// Past it, every request from the address gets 429 until the limit refills.
    pub auth_failure_burst: u32,
    /// Time limit for one request (default 30 s).
    pub request_timeout: Duration,
    /// How long a shutdown waits for requests in flight (default 30 s).
    pub shutdown_timeout: Duration,
    /// How long a verified token is trusted without reading the store again; a revocation takes
    /// effect within this time (default 5 s; `0s` reads the store on every request).
    pub token_cache_ttl: Duration,
    /// How often data-access audit records are written (one per token, scope and operation).
    pub audit_interval: Duration,
    /// Most items of answered requests whose data-access count may be unwritten at any time
    /// (what a kill -9 can lose); a request past it writes the pending records before its
    /// answer leaves. 0: every data request is recorded before it is answered.
    pub audit_max_unrecorded: u64,
    /// Whether request metrics carry a `tenant` label (default off: tenant names may be
    /// sensitive, and each one multiplies the series).
    pub metrics_tenant_label: bool,
    /// Log level filter (default `info`; `RUST_LOG` overrides).
    pub log_level: String,
    /// Extra regular expressions whose matches are masked in every log line.
    pub log_redact_patterns: Vec<String>,
    /// Extra field names whose values are masked in every log line.
    pub log_sensitive_fields: Vec<String>,
    /// Routes that exist for the load benchmark only (`POST /v1/bench/echo/{scope}`).
    pub bench_endpoints: bool,
    /// The hash of the token that may scrape `/metrics` besides admin tokens, read from the
    /// `metrics_token` reference (`env:NAME` or `file:PATH`) at start.
    pub metrics_token: Option<MetricsToken>,
    /// Networks of the proxies in front of the service (`trusted_proxies`, CIDR). A request
    /// from one of them is attributed to the client its `X-Forwarded-For` names (the nearest
    /// address that is not itself a trusted proxy), for the failed-authentication limit and the
    /// request log. Empty (the default): the peer address, and the header is never read.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// The hash of the `/metrics` scrape token (the token itself is not kept).
#[derive(Clone)]
pub struct MetricsToken([u8; 32]);

/// Hash domain of the scrape token (apart from API tokens).
const METRICS_DOMAIN: &[u8] = b"coffer/metrics-token/v1";

impl MetricsToken {
    /// From the token text (at least 32 characters).
    pub fn new(token: &str) -> Result<Self, ConfigError> {
        if token.len() < 32 || token.chars().any(|c| c.is_control() || c == ' ') {
            return Err(ConfigError(
                "[service] metrics_token: the token must be at least 32 characters without \
                 spaces or control characters (e.g. `openssl rand -hex 32`)"
                    .into(),
            ));
        }
        Ok(MetricsToken(coffer_core::token::hash_token(
            METRICS_DOMAIN,
            token,
        )))
    }

    /// Whether `token` is this one (constant time).
    pub fn verify(&self, token: &str) -> bool {
        coffer_core::token::verify_token(METRICS_DOMAIN, token, &self.0)
    }

    /// Reads `env:NAME` or `file:PATH`.
    fn load(reference: &str) -> Result<Self, ConfigError> {
        let text = if let Some(name) = reference.strip_prefix("env:") {
            zeroize::Zeroizing::new(std::env::var(name).map_err(|_| {
                ConfigError(format!(
                    "[service] metrics_token: environment variable {name} is not set"
                ))
            })?)
        } else if let Some(path) = reference.strip_prefix("file:") {
            zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("[service] metrics_token: cannot read {path}: {e}"))
            })?)
        } else {
            return Err(ConfigError(
                "[service] metrics_token is a reference, `env:NAME` or `file:PATH`, never the \
                 token itself"
                    .into(),
            ));
        };
        Self::new(text.trim())
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(..)")
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8200)),
            tls: None,
            max_body_bytes: 1 << 20,
            max_batch: 1000,
            rate_limit: 1000,
            rate_burst: 2000,
            auth_failure_rate: 2,
            auth_failure_burst: 20,
            request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            token_cache_ttl: Duration::from_secs(5),
            audit_interval: Duration::from_secs(60),
            audit_max_unrecorded: 256,
            metrics_tenant_label: false,
            log_level: "info".to_owned(),
            log_redact_patterns: Vec::new(),
            log_sensitive_fields: Vec::new(),
            bench_endpoints: false,
            metrics_token: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    max_batch: Option<usize>,
    rate_limit: Option<u32>,
    rate_burst: Option<u32>,
    auth_failure_rate: Option<u32>,
    auth_failure_burst: Option<u32>,
    request_timeout: Option<String>,
    shutdown_timeout: Option<String>,
    token_cache_ttl: Option<String>,
    audit_interval: Option<String>,
    audit_max_unrecorded: Option<u64>,
    trusted_proxies: Option<Vec<String>>,
    metrics_tenant_label: Option<bool>,
    log_level: Option<String>,
    log_redact_patterns: Option<Vec<String>>,
    log_sensitive_fields: Option<Vec<String>>,
    bench_endpoints: Option<bool>,
    metrics_token: Option<String>,
}

fn duration(what: &str, text: &str) -> Result<Duration, ConfigError> {
    coffer_keys::config::duration(&format!("[service] {what}"), text)
        .map_err(|e| ConfigError(e.to_string()))
}

/// A `trusted_proxies` entry: a network (`10.0.0.0/8`) or one address (`127.0.0.1`).
fn proxy_network(text: &str) -> Result<ipnet::IpNet, ConfigError> {
    let t = text.trim();
    t.parse::<ipnet::IpNet>()
        .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            ConfigError(format!(
                "[service] trusted_proxies: '{text}' is not an address or network; write e.g. \
                 \"10.0.0.0/8\" or \"127.0.0.1\""
            ))
        })
}

impl ServiceConfig {
    /// Parses the `[service]` table (absent: every default).
    pub fn from_table(table: Option<&toml::Table>) -> Result<Self, ConfigError> {
        let raw: Raw = match table {
            None => Raw::default(),
            Some(t) => t
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError(format!("[service]: {}", e.message())))?,
        };
        let d = ServiceConfig::default();
        let listen = match raw.listen {
            None => d.listen,
            Some(l) => l.parse().map_err(|_| {
                ConfigError(format!(
                    "[service] listen = '{l}': expected an address and port, e.g. 127.0.0.1:8200"
                ))
            })?,
        };
        let tls = match (raw.tls_cert, raw.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(ConfigError(
                    "[service] tls_cert and tls_key go together: set both for TLS, or neither"
                        .into(),
                ));
            }
        };
        let cfg = ServiceConfig {
            listen,
            tls,
            max_body_bytes: raw.max_body_bytes.unwrap_or(d.max_body_bytes),
            max_batch: raw.max_batch.unwrap_or(d.max_batch),
            rate_limit: raw.rate_limit.unwrap_or(d.rate_limit),
            rate_burst: raw.rate_burst.unwrap_or(d.rate_burst),
            auth_failure_rate: raw.auth_failure_rate.unwrap_or(d.auth_failure_rate),
            auth_failure_burst: raw.auth_failure_burst.unwrap_or(d.auth_failure_burst),
            request_timeout: raw
                .request_timeout
                .map(|t| duration("request_timeout", &t))
                .transpose()?
                .unwrap_or(d.request_timeout),
            shutdown_timeout: raw
                .shutdown_timeout
                .map(|t| duration("shutdown_timeout", &t))
                .transpose()?
                .unwrap_or(d.shutdown_timeout),
            token_cache_ttl: raw
                .token_cache_ttl
                .map(|t| duration("token_cache_ttl", &t))
                .transpose()?
                .unwrap_or(d.token_cache_ttl),
            audit_interval: raw
                .audit_interval
                .map(|t| duration("audit_interval", &t))
                .transpose()?
                .unwrap_or(d.audit_interval),
            audit_max_unrecorded: raw.audit_max_unrecorded.unwrap_or(d.audit_max_unrecorded),
            trusted_proxies: raw
                .trusted_proxies
                .unwrap_or_default()
                .iter()
                .map(|n| proxy_network(n))
                .collect::<Result<_, _>>()?,
            metrics_tenant_label: raw.metrics_tenant_label.unwrap_or(false),
            log_level: raw.log_level.unwrap_or(d.log_level),
            log_redact_patterns: raw.log_redact_patterns.unwrap_or_default(),
            log_sensitive_fields: raw.log_sensitive_fields.unwrap_or_default(),
            bench_endpoints: raw.bench_endpoints.unwrap_or(false),
            metrics_token: raw
                .metrics_token
                .as_deref()
                .map(MetricsToken::load)
                .transpose()?,
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 || self.max_body_bytes > 256 << 20 {
            return Err(ConfigError(
                "[service] max_body_bytes must be between 1024 and 268435456".into(),
            ));
        }
        if self.max_batch == 0 || self.max_batch > 100_000 {
            return Err(ConfigError(
                "[service] max_batch must be between 1 and 100000".into(),
            ));
        }
        if self.rate_limit == 0 || self.rate_burst == 0 {
            return Err(ConfigError(
                "[service] rate_limit and rate_burst must be at least 1".into(),
            ));
        }
        if self.auth_failure_rate == 0 || self.auth_failure_burst == 0 {
            return Err(ConfigError(
                "[service] auth_failure_rate and auth_failure_burst must be at least 1".into(),
            ));
        }
        if self.request_timeout.is_zero() || self.audit_interval.is_zero() {
            return Err(ConfigError(
                "[service] request_timeout and audit_interval must be longer than 0s".into(),
            ));
        }
        for p in &self.log_redact_patterns {
            regex::Regex::new(p).map_err(|e| {
                ConfigError(format!(
                    "[service] log_redact_patterns: '{p}' is not a regex: {e}"
                ))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn defaults_and_overrides() {
        let d = ServiceConfig::from_table(None).unwrap();
        assert_eq!(d.listen.to_string(), "127.0.0.1:8200");
        assert!(d.tls.is_none());
        let c = ServiceConfig::from_table(Some(&table(
            "listen = \"0.0.0.0:9000\"\nmax_batch = 10\ntoken_cache_ttl = \"0s\"",
        )))
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_batch, 10);
        assert!(c.token_cache_ttl.is_zero());
    }

    #[test]
    fn mistakes_are_named() {
        let e = |t: &str| {
            ServiceConfig::from_table(Some(&table(t)))
                .unwrap_err()
                .to_string()
        };
        assert!(e("listn = \"x\"").contains("unknown field"));
        assert!(e("listen = \"nowhere\"").contains("expected an address"));
        assert!(e("tls_cert = \"a.pem\"").contains("go together"));
        assert!(e("max_batch = 0").contains("max_batch"));
        assert!(e("log_redact_patterns = [\"(\"]").contains("not a regex"));
        assert!(e("request_timeout = \"soon\"").contains("request_timeout"));
    }
}

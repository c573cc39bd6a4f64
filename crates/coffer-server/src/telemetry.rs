//! Logs and metrics.
//!
//! Logs are JSON lines through `tracing`. Every line passes a [`Redactor`] on its way out, after
//! formatting and before it reaches stderr: values of sensitive fields are masked wherever they
//! appear in the JSON, and every string is scanned for personal data (SSNs, card numbers that
//! pass the Luhn check, national-id-like digit runs, e-mail addresses, and the configured
//! patterns). Panics are logged through the same path, so a panic message is redacted too. The
//! service never logs request or response bodies in the first place; this is the second line of
//! defence for the incident the requirements describe (decrypted national ids logged for 24 h).

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::error::ConfigError;

/// What a masked value is replaced with.
const MASK: &str = "[REDACTED]";

/// Field names whose values are always masked (matched case-insensitively; any name that starts
/// with `sensitive` is masked as well, e.g. `tracing::info!(sensitive.national_id = ..)`).
pub const SENSITIVE_FIELDS: &[&str] = &[
    "plaintext",
    "ssn",
    "national_id",
    "card_number",
    "email",
    "password",
    "secret",
    "authorization",
    "api_key",
    "data_key",
];

/// Masks personal data in log lines.
#[derive(Debug)]
pub struct Redactor {
    patterns: Vec<(&'static str, Regex)>,
    card: Regex,
    sensitive: HashSet<String>,
}

fn luhn(digits: &str) -> bool {
    let mut sum = 0u32;
    let mut n = 0;
    for (i, d) in digits
        .bytes()
        .rev()
        .filter(u8::is_ascii_digit)
        .map(|b| u32::from(b - b'0'))
        .enumerate()
    {
        n += 1;
        sum += if i % 2 == 1 {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
    }
    n >= 13 && sum % 10 == 0
}

impl Redactor {
    /// The default patterns plus `extra_patterns`; the default sensitive fields plus
    /// `extra_fields`.
    pub fn new(extra_patterns: &[String], extra_fields: &[String]) -> Result<Self, ConfigError> {
        let re = |p: &str| {
            Regex::new(p).map_err(|e| ConfigError(format!("log redaction pattern '{p}': {e}")))
        };
        let mut patterns = vec![
            ("ssn", re(r"\b\d{3}[- ]\d{2}[- ]\d{4}\b")?),
            (
                "email",
                re(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")?,
            ),
            ("national-id", re(r"\b\d{9,12}\b")?),
        ];
        for p in extra_patterns {
            patterns.push(("pattern", re(p)?));
        }
        let mut sensitive: HashSet<String> =
            SENSITIVE_FIELDS.iter().map(|s| (*s).to_owned()).collect();
        sensitive.extend(extra_fields.iter().map(|f| f.to_ascii_lowercase()));
        Ok(Redactor {
            patterns,
            card: re(r"\b\d(?:[ -]?\d){12,18}\b")?,
            sensitive,
        })
    }

    fn is_sensitive(&self, key: &str) -> bool {
        let k = key.to_ascii_lowercase();
        k.starts_with("sensitive") || self.sensitive.contains(&k)
    }

    /// Masks personal data in free text.
    pub fn redact_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        // Cards first: a card number holds digit runs the national-id pattern would split.
        if self.card.is_match(&out) {
            let replaced = self
                .card
                .replace_all(&out, |c: &regex::Captures<'_>| {
                    if luhn(&c[0]) {
                        "[REDACTED:card]".to_owned()
                    } else {
                        c[0].to_owned()
                    }
                })
                .into_owned();
            out = Cow::Owned(replaced);
        }
        for (name, re) in &self.patterns {
            if re.is_match(&out) {
                let replaced = re
                    .replace_all(&out, format!("[REDACTED:{name}]").as_str())
                    .into_owned();
                out = Cow::Owned(replaced);
            }
        }
        out
    }

    fn redact_value(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact_text(s) {
                    *s = r;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.redact_value(x)),
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if self.is_sensitive(k) {
                        *x = Value::String(MASK.to_owned());
                    } else {
                        self.redact_value(x);
                    }
                }
            }
            _ => {}
        }
    }

    /// Masks one log line: as JSON when it parses, else as text.
    pub fn redact_line(&self, line: &str) -> String {
        match serde_json::from_str::<Value>(line) {
            Ok(mut v) => {
                self.redact_value(&mut v);
                v.to_string()
            }
            Err(_) => self.redact_text(line).into_owned(),
        }
    }
}

/// A [`MakeWriter`] that passes every formatted line through a [`Redactor`].
#[derive(Clone)]
pub struct RedactingMakeWriter<M> {
    redactor: Arc<Redactor>,
    inner: M,
}

impl<M> RedactingMakeWriter<M> {
    /// Wraps `inner`.
    pub fn new(redactor: Arc<Redactor>, inner: M) -> Self {
        RedactingMakeWriter { redactor, inner }
    }
}

/// Collects one event's output and writes it, redacted, when dropped.
pub struct RedactingWriter<'r, W: Write> {
    redactor: &'r Redactor,
    buf: Vec<u8>,
    inner: W,
}

impl<W: Write> Write for RedactingWriter<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for RedactingWriter<'_, W> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let mut out = String::with_capacity(text.len() + 16);
        for line in text.lines() {
            out.push_str(&self.redactor.redact_line(line));
            out.push('\n');
        }
        let _ = self.inner.write_all(out.as_bytes());
        let _ = self.inner.flush();
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = RedactingWriter<'a, M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            redactor: &self.redactor,
            buf: Vec::with_capacity(256),
            inner: self.inner.make_writer(),
        }
    }
}

/// Installs JSON logging to stderr through the redactor, and a panic hook that logs panics the
/// same way (instead of printing them raw). Call once per process.
pub fn init_logging(level: &str, redactor: Arc<Redactor>) -> Result<(), ConfigError> {
    init_logging_to(level, redactor, io::stderr)
}

/// [`init_logging`] with another destination (tests read the lines back).
pub fn init_logging_to<M>(level: &str, redactor: Arc<Redactor>, out: M) -> Result<(), ConfigError>
where
    M: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        // sqlx reports every migration notice at info; keep the service log to the service.
        .or_else(|_| EnvFilter::try_new(format!("{level},sqlx=warn")))
        .map_err(|e| ConfigError(format!("[service] log_level '{level}': {e}")))?;
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(RedactingMakeWriter::new(redactor, out))
        .try_init()
        .map_err(|e| ConfigError(format!("logging: {e}")))?;
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(panic.message = %message, panic.location = %location, "panic");
    }));
    Ok(())
}

/// Installs the Prometheus recorder and describes the service's metrics; the handle renders
/// `/metrics`.
pub fn init_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, ConfigError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ],
        )
        .map_err(|e| ConfigError(format!("metrics: {e}")))?
        .install_recorder()
        .map_err(|e| ConfigError(format!("metrics: {e}")))?;
    metrics::describe_counter!(
        "coffer_service_requests_total",
        "Requests by operation and outcome (ok, client_error, denied, rate_limited, decryption_failed, server_error)"
    );
    metrics::describe_histogram!(
        "coffer_service_request_duration_seconds",
        metrics::Unit::Seconds,
        "Request latency by operation and outcome"
    );
    metrics::describe_counter!(
        "coffer_service_items_total",
        "Batch items (fields, data keys) processed, by operation"
    );
    metrics::describe_gauge!("coffer_service_requests_in_flight", "Requests being served");
    metrics::describe_counter!(
        "coffer_keys_l1_hits_total",
        "DEK lookups served from the in-process cache"
    );
    metrics::describe_counter!(
        "coffer_keys_l1_misses_total",
        "DEK lookups the in-process cache missed"
    );
    metrics::describe_counter!("coffer_keys_l2_hits_total", "DEK lookups served from Redis");
    metrics::describe_counter!("coffer_keys_l2_misses_total", "DEK lookups Redis missed");
    metrics::describe_counter!(
        "coffer_keys_l2_errors_total",
        "Redis operations that failed (the service goes on without L2)"
    );
    metrics::describe_counter!(
        "coffer_keys_kek_wraps_total",
        "DEKs wrapped by a KEK provider (new scopes and versions)"
    );
    metrics::describe_counter!(
        "coffer_service_access_denied_total",
        "Requests refused because the token's tenant does not own the scope"
    );
    metrics::describe_counter!(
        "coffer_keys_kek_unwraps_total",
        "DEKs unwrapped by a KEK provider (calls to the HSM/KMS)"
    );
    metrics::describe_gauge!(
        "coffer_keys_deks_pending_kek_rotation",
        "Live DEKs not yet wrapped under the primary KEK (KEK rotation progress)"
    );
    metrics::describe_counter!(
        "coffer_service_key_counts_total",
        "Counts of DEKs pending KEK rotation run against the key store (at most one per 30 s)"
    );
    // Counters exist at 0 from the start, so dashboards and rate() see them before the first
    // cache miss or KEK call.
    for name in [
        "coffer_keys_l1_hits_total",
        "coffer_keys_l1_misses_total",
        "coffer_keys_l2_hits_total",
        "coffer_keys_l2_misses_total",
        "coffer_keys_l2_errors_total",
        "coffer_keys_kek_unwraps_total",
        "coffer_keys_kek_wraps_total",
        "coffer_service_access_denied_total",
        "coffer_service_key_counts_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Redactor {
        Redactor::new(&["MRN-\\d{6}".to_owned()], &["diagnosis".to_owned()]).unwrap()
    }

    #[test]
    fn masks_personal_data_in_text() {
        let r = r();
        let t = r.redact_text("ssn 123-45-6789 card 4111 1111 1111 1111 id 987654321 mail ann@example.org MRN-123456 ok 1234");
        for leak in [
            "123-45-6789",
            "4111",
            "987654321",
            "ann@example.org",
            "MRN-123456",
        ] {
            assert!(!t.contains(leak), "{leak} in {t}");
        }
        assert!(t.contains("[REDACTED:card]"));
        assert!(t.contains("ok 1234"), "short numbers stay: {t}");
        // A 16-digit run that fails the Luhn check is not a card, but is still too long to keep
        // whole only if it matches another pattern; a timestamp stays.
        assert_eq!(
            r.redact_text("2026-11-23T23:20:51.123Z"),
            "2026-11-23T23:20:51.123Z"
        );
    }

    #[test]
    fn masks_sensitive_fields_in_json() {
        let r = r();
        let line = r#"{"level":"INFO","fields":{"message":"saw 123-45-6789","diagnosis":"E11.9","sensitive.note":"x","plaintext":"abc","n":3}}"#;
        let out = r.redact_line(line);
        assert!(!out.contains("E11.9") && !out.contains("abc") && !out.contains("6789"));
        assert!(out.contains("\"n\":3"));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["fields"]["sensitive.note"], MASK);
    }

    #[test]
    fn luhn_check() {
        assert!(luhn("4111111111111111"));
        assert!(!luhn("4111111111111112"));
        assert!(!luhn("12345"));
    }
}

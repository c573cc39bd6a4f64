//! The errors of coffer-keys.
//!
//! Key selection fails with distinct, actionable errors (unknown scope, unknown version, destroyed,
//! wrong KEK); a ciphertext that does not authenticate is still the one opaque
//! [`coffer_core::Error::Decrypt`], carried in [`Error::Crypto`].

use coffer_core::KeyVersion;

/// Everything that can go wrong while resolving, creating or rotating keys.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The scope does not exist in the key store.
    #[error("scope '{0}' does not exist; create it with `coffer keys create-scope {0}`")]
    UnknownScope(String),

    /// The scope exists but has no version with this number.
    #[error("scope '{scope}' has no key {version}")]
    UnknownVersion {
        /// The scope.
        scope: String,
        /// The version named by the ciphertext or the caller.
        version: KeyVersion,
    },

    /// The scope (or this version of it) was crypto-shredded: the data under it is gone for good.
    #[error(
        "key destroyed: scope '{scope}'{} was crypto-shredded; data encrypted under it cannot be recovered",
        version.map(|v| format!(" {v}")).unwrap_or_default()
    )]
    Destroyed {
        /// The scope.
        scope: String,
        /// The version, when one version (not the whole scope) was destroyed.
        version: Option<KeyVersion>,
    },

    /// The scope already exists.
    #[error("scope '{0}' already exists")]
    ScopeExists(String),

    /// The scope was crypto-shredded: its name stays a tombstone and cannot be created again.
    #[error(
        "scope '{scope}' was destroyed{}; the name of a destroyed scope cannot be reused (nothing \
         new is ever sealed under a name whose data was shredded): create the scope under a new \
         name",
        destroyed_at_us.map(|us| format!(" on {}", utc(us))).unwrap_or_default()
    )]
    ScopeDestroyed {
        /// The scope.
        scope: String,
        /// When it was destroyed (µs since the Unix epoch), if known.
        destroyed_at_us: Option<i64>,
    },

    /// An environment variable named by a secret reference (`env:VAR`) is not set.
    #[error(
        "environment variable {var} is not set (named by env:{var}); set it to the key it \
         names (a new key from `coffer keygen` opens nothing encrypted before)"
    )]
    SecretNotSet {
        /// The variable.
        var: String,
    },

    /// A DEK names a KEK version that is not configured in this process.
    #[error(
        "key-encryption key '{kek}' is not configured; add it to [[kek]] in coffer.toml \
         (every KEK version that still wraps DEKs must stay configured until `coffer keys rotate-kek` has run)"
    )]
    UnknownKek {
        /// The KEK id and version, e.g. `main/v2`.
        kek: String,
    },

    /// The configured KEK does not open the keys wrapped under its name: it is the wrong key.
    #[error(
        "key-encryption key '{kek}' does not match the key store: wrong key material for this \
         KEK version (its check value differs, or a DEK failed to unwrap)"
    )]
    WrongKek {
        /// The KEK id and version.
        kek: String,
    },

    /// The KEK provider could not be reached or refused the operation (HSM, KMS).
    #[error("key-encryption key provider '{kek}' failed: {reason}")]
    Provider {
        /// The KEK id and version.
        kek: String,
        /// What the provider said (never key material).
        reason: String,
    },

    /// None of the caller's keys opens any of a message's encrypted data keys.
    #[error("none of the given keys ({tried}) opens this message; it was encrypted for: {names}")]
    NoMatchingKey {
        /// The message's EDKs, `provider/name`.
        names: String,
        /// The keyrings tried.
        tried: String,
    },

    /// The key store failed (connection, query, migration).
    #[error("key store error: {0}")]
    Store(String),

    /// The configuration is malformed or incomplete.
    #[error("configuration error: {0}")]
    Config(String),

    /// A request that the key's state forbids (e.g. destroying nothing, rotating a destroyed scope).
    #[error("{0}")]
    State(String),

    /// A failure of the core: crypto (opaque), limits, invalid parameters.
    #[error(transparent)]
    Crypto(#[from] coffer_core::Error),
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What kind of failure this is (docs: [`coffer_core::ErrorKind`]); frontends map kinds.
    pub fn kind(&self) -> coffer_core::ErrorKind {
        use coffer_core::ErrorKind as K;
        match self {
            Error::UnknownScope(_) | Error::UnknownVersion { .. } => K::NotFound,
            Error::Destroyed { .. } => K::Destroyed,
            Error::ScopeExists(_) | Error::ScopeDestroyed { .. } | Error::State(_) => K::Conflict,
            // A KEK version missing from this process's configuration: fix coffer.toml.
            Error::UnknownKek { .. } | Error::Config(_) | Error::SecretNotSet { .. } => {
                K::InvalidInput
            }
            Error::WrongKek { .. } => K::WrongKek,
            Error::Provider { .. } | Error::Store(_) => K::Unavailable,
            // None of the caller's keys authenticates the message: a failed decryption.
            Error::NoMatchingKey { .. } => K::Decrypt,
            Error::Crypto(e) => e.kind(),
        }
    }

    /// Builds a [`Error::Store`] from any displayable store error.
    pub fn store(e: impl std::fmt::Display) -> Self {
        Error::Store(e.to_string())
    }

    /// Builds a [`Error::Config`].
    pub fn config(e: impl std::fmt::Display) -> Self {
        Error::Config(e.to_string())
    }

    /// Builds a [`Error::Provider`].
    pub fn provider(kek: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Error::Provider {
            kek: kek.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// A time from the key store's clock (µs since the Unix epoch) as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc(us: i64) -> String {
    // Days to a civil date (proleptic Gregorian), after H. Hinnant's `civil_from_days`.
    let secs = us.div_euclid(1_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::ErrorKind as K;

    #[test]
    fn store_times_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_793_491_200_000_000), "2026-11-01 00:00:00 UTC");
        assert_eq!(
            utc(951_825_600_000_000 + 3_723_000_000),
            "2000-02-29 13:02:03 UTC"
        );
        assert_eq!(utc(-1_000_000), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn kinds_classify_every_variant() {
        let v = KeyVersion(2);
        let table: Vec<(Error, K)> = vec![
            (Error::UnknownScope("s".into()), K::NotFound),
            (
                Error::UnknownVersion {
                    scope: "s".into(),
                    version: v,
                },
                K::NotFound,
            ),
            (
                Error::Destroyed {
                    scope: "s".into(),
                    version: None,
                },
                K::Destroyed,
            ),
            (Error::ScopeExists("s".into()), K::Conflict),
            (
                Error::ScopeDestroyed {
                    scope: "s".into(),
                    destroyed_at_us: None,
                },
                K::Conflict,
            ),
            (Error::SecretNotSet { var: "V".into() }, K::InvalidInput),
            (Error::UnknownKek { kek: "k/v1".into() }, K::InvalidInput),
            (Error::WrongKek { kek: "k/v1".into() }, K::WrongKek),
            (Error::provider("k/v1", "timeout"), K::Unavailable),
            (
                Error::NoMatchingKey {
                    names: "a".into(),
                    tried: "b".into(),
                },
                K::Decrypt,
            ),
            (Error::store("down"), K::Unavailable),
            (Error::config("bad"), K::InvalidInput),
            (Error::State("retired".into()), K::Conflict),
            (Error::Crypto(coffer_core::Error::Decrypt), K::Decrypt),
            (Error::Crypto(coffer_core::Error::Unwrap), K::WrongKek),
            (
                Error::Crypto(coffer_core::Error::Module("rng")),
                K::Internal,
            ),
        ];
        for (e, kind) in table {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }
}

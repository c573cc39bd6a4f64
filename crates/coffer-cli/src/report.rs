//! How a failed command ends: the message on stderr and the exit status.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | decryption or authentication failed, or the input is not a Coffer ciphertext |
//! | 2 | usage or input error (clap's own errors also exit with 2) |
//! | 3 | the key store or a KEK provider is unreachable |
//!
//! Messages come from coffer-core's errors and this crate's; none of them carries key bytes or
//! plaintext.

use std::fmt;

use coffer_core::Error as CoreError;
use coffer_keys::Error as KeysError;

/// Exit status for a decryption or authentication failure.
const EXIT_DECRYPT: u8 = 1;

/// Exit status for a usage or input error, as clap uses for bad arguments.
const EXIT_USAGE: u8 = 2;

/// Exit status when the key store or a KEK provider cannot be reached.
const EXIT_UNAVAILABLE: u8 = 3;

/// A coffer-core error with advice for the user, printed on a line of its own after the error.
///
/// It displays as the error alone, and is classified as the error is.
#[derive(Debug)]
pub struct Hinted {
    error: CoreError,
    hint: String,
}

impl Hinted {
    /// Attaches `hint` to `error`.
    pub fn new(error: CoreError, hint: String) -> Self {
        Hinted { error, hint }
    }
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

// No `source`: the wrapped error is displayed in place, not as a cause after it.
impl std::error::Error for Hinted {}

/// The exit status for `err`: decided by the first coffer-core error in its chain, and 2 for
/// every error that is not coffer-core's (key references, files, options, I/O, a NULL).
fn keys_exit_code(k: &KeysError) -> u8 {
    match k {
        KeysError::Crypto(CoreError::Decrypt | CoreError::Unwrap | CoreError::Format(_))
        | KeysError::WrongKek { .. }
        | KeysError::NoMatchingKey { .. } => EXIT_DECRYPT,
        KeysError::Store(_) | KeysError::Provider { .. } => EXIT_UNAVAILABLE,
        _ => EXIT_USAGE,
    }
}

pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err
        .chain()
        .any(|c| c.is::<crate::keys::AuditBroken>() || c.is::<crate::backup::Refused>())
    {
        return EXIT_DECRYPT;
    }
    #[cfg(feature = "s3")]
    if let Some(e) = err
        .chain()
        .find_map(|c| c.downcast_ref::<coffer_s3::Error>())
    {
        use coffer_s3::Error as S3;
        return match e {
            S3::Store { .. } | S3::Changed { .. } => EXIT_UNAVAILABLE,
            S3::Crypto(CoreError::Decrypt | CoreError::Unwrap | CoreError::Format(_))
            | S3::Keys(KeysError::NoMatchingKey { .. } | KeysError::WrongKek { .. }) => {
                EXIT_DECRYPT
            }
            S3::Keys(KeysError::Store(_) | KeysError::Provider { .. }) => EXIT_UNAVAILABLE,
            _ => EXIT_USAGE,
        };
    }
    if let Some(e) = err
        .chain()
        .find_map(|c| c.downcast_ref::<coffer_postgres::Error>())
    {
        use coffer_postgres::Error as Pg;
        return match e {
            Pg::Db(_) | Pg::Busy { .. } => EXIT_UNAVAILABLE,
            Pg::Row { .. } => EXIT_DECRYPT,
            Pg::Keys(k) => keys_exit_code(k),
            _ => EXIT_USAGE,
        };
    }
    if let Some(a) = err
        .chain()
        .find_map(|c| c.downcast_ref::<coffer_assembly::Error>())
    {
        return a.as_keys().map_or(EXIT_USAGE, keys_exit_code);
    }
    if let Some(k) = err.chain().find_map(|c| c.downcast_ref::<KeysError>()) {
        return keys_exit_code(k);
    }
    let core = err.chain().find_map(|cause| {
        cause
            .downcast_ref::<Hinted>()
            .map(|h| &h.error)
            .or_else(|| cause.downcast_ref::<CoreError>())
    });
    match core {
        Some(CoreError::Decrypt | CoreError::Unwrap | CoreError::Format(_)) => EXIT_DECRYPT,
        _ => EXIT_USAGE,
    }
}

/// Prints `err` to stderr as `coffer: message: cause…`, then its hint if it has one.
pub fn print(err: &anyhow::Error) {
    eprintln!("coffer: {err:#}");
    if let Some(h) = err.chain().find_map(|c| c.downcast_ref::<Hinted>()) {
        eprintln!("coffer: hint: {}", h.hint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_core_error() {
        let code = |e: anyhow::Error| exit_code(&e);
        assert_eq!(code(CoreError::Decrypt.into()), 1);
        assert_eq!(code(CoreError::Unwrap.into()), 1);
        assert_eq!(code(CoreError::Format("x").into()), 1);
        assert_eq!(
            code(anyhow::Error::from(CoreError::Decrypt).context("while decrypting")),
            1
        );
        assert_eq!(
            code(Hinted::new(CoreError::Decrypt, "check --mode".into()).into()),
            1
        );
        assert_eq!(code(CoreError::RowContextInDeterministic.into()), 2);
        assert_eq!(code(anyhow::anyhow!("bad key reference")), 2);
    }

    #[test]
    fn a_hinted_error_displays_as_its_error() {
        let e = Hinted::new(CoreError::Decrypt, "check --mode".into());
        assert_eq!(e.to_string(), "decryption failed");
    }
}

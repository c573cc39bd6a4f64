//! How a failed command ends: the message on stderr and the exit status.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | decryption or authentication failed, or the input is not a Coffer ciphertext |
//! | 2 | usage or input error (clap's own errors also exit with 2) |
//! | 3 | the key store or a KEK provider is unreachable |
//!
//! The status follows the error's [`ErrorKind`] (every library error has `kind()`): decryption
//! failures and a wrong KEK give 1, an unreachable dependency 3, everything else 2. Messages come
//! from the libraries' errors and this crate's; none of them carries key bytes or plaintext.

use std::fmt;

use coffer_core::Error as CoreError;
use coffer_core::ErrorKind;
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

    /// The wrapped error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

// No `source`: the wrapped error is displayed in place, not as a cause after it.
impl std::error::Error for Hinted {}

/// The exit status of an error kind.
fn exit_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Decrypt | ErrorKind::WrongKek => EXIT_DECRYPT,
        ErrorKind::Unavailable => EXIT_UNAVAILABLE,
        ErrorKind::NotFound
        | ErrorKind::Destroyed
        | ErrorKind::Denied
        | ErrorKind::Conflict
        | ErrorKind::InvalidInput
        | ErrorKind::Internal => EXIT_USAGE,
        // A kind added later: the usage status until it is given its own.
        _ => EXIT_USAGE,
    }
}

/// A backup that does not authenticate or does not match its manifest (tampered, missing or
/// foreign parts, wrong key): exit status 1. Other coffer-backup errors keep the status of
/// their cause (a KEK provider's 3) or 2.
fn backup_refused(c: &(dyn std::error::Error + 'static)) -> bool {
    use coffer_core::ErrorKind as K;
    c.downcast_ref::<coffer_backup::Error>()
        .is_some_and(|e| matches!(e.kind(), K::Decrypt | K::NotFound))
}

/// The kind of `err`: that of the first Coffer error in its chain, looked for from the outer
/// layers in (a broken audit chain or a refused backup, S3, the column layer, the keyring, then
/// coffer-core's own errors), or `None` for an error that is no library's (key references,
/// files, options, I/O).
fn kind_of(err: &anyhow::Error) -> Option<ErrorKind> {
    if err
        .chain()
        .any(|c| c.is::<crate::keys::AuditBroken>() || backup_refused(c))
    {
        // Tampered evidence: the audit chain or a backup did not authenticate.
        return Some(ErrorKind::Decrypt);
    }
    if err.chain().any(|c| c.is::<crate::keys::AuditUnchecked>()) {
        // Keyed records this configuration cannot open: run it with the KEKs.
        return Some(ErrorKind::InvalidInput);
    }
    #[cfg(feature = "s3")]
    if let Some(e) = err
        .chain()
        .find_map(|c| c.downcast_ref::<coffer_s3::Error>())
    {
        return Some(e.kind());
    }
    if let Some(e) = err
        .chain()
        .find_map(|c| c.downcast_ref::<coffer_postgres::Error>())
    {
        return Some(e.kind());
    }
    if let Some(a) = err
        .chain()
        .find_map(|c| c.downcast_ref::<coffer_assembly::Error>())
    {
        return Some(a.kind());
    }
    if let Some(d) = err
        .chain()
        .find_map(|c| c.downcast_ref::<crate::keys::DeksUnreadable>())
    {
        return Some(d.kind);
    }
    if let Some(k) = err.chain().find_map(|c| c.downcast_ref::<KeysError>()) {
        return Some(k.kind());
    }
    err.chain().find_map(|cause| {
        cause
            .downcast_ref::<Hinted>()
            .map(Hinted::kind)
            .or_else(|| cause.downcast_ref::<CoreError>().map(CoreError::kind))
    })
}

/// The exit status for `err`: by the kind of the first Coffer error in its chain, and 2 for an
/// error that is no library's.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    kind_of(err).map_or(EXIT_USAGE, exit_for)
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
    fn every_kind_has_a_status() {
        for kind in ErrorKind::ALL {
            let status = exit_for(kind);
            assert!((1..=3).contains(&status), "{kind}");
        }
        assert_eq!(exit_for(ErrorKind::Decrypt), EXIT_DECRYPT);
        assert_eq!(exit_for(ErrorKind::WrongKek), EXIT_DECRYPT);
        assert_eq!(exit_for(ErrorKind::Unavailable), EXIT_UNAVAILABLE);
        assert_eq!(exit_for(ErrorKind::Destroyed), EXIT_USAGE);
    }

    #[test]
    fn statuses_of_the_library_errors_and_local_ones() {
        let code = |e: anyhow::Error| exit_code(&e);
        assert_eq!(code(KeysError::WrongKek { kek: "k".into() }.into()), 1);
        assert_eq!(
            code(
                KeysError::NoMatchingKey {
                    names: "a".into(),
                    tried: "b".into()
                }
                .into()
            ),
            1
        );
        assert_eq!(code(KeysError::store("down").into()), 3);
        assert_eq!(code(KeysError::provider("k", "timeout").into()), 3);
        assert_eq!(code(KeysError::UnknownScope("s".into()).into()), 2);
        assert_eq!(code(KeysError::config("bad").into()), 2);
        assert_eq!(
            code(coffer_postgres::Error::Db(sqlx::Error::PoolTimedOut).into()),
            3
        );
        assert_eq!(
            code(
                coffer_postgres::Error::Row {
                    table: "t".into(),
                    row: "1".into(),
                    reason: "x".into()
                }
                .into()
            ),
            1
        );
        assert_eq!(code(coffer_postgres::Error::Schema("x".into()).into()), 2);
        assert_eq!(code(crate::keys::AuditBroken("row 3".into()).into()), 1);
        assert_eq!(
            code(coffer_backup::Error::Refused("manifest".into()).into()),
            1
        );
    }

    #[test]
    fn a_hinted_error_displays_as_its_error() {
        let e = Hinted::new(CoreError::Decrypt, "check --mode".into());
        assert_eq!(e.to_string(), "decryption failed");
    }
}

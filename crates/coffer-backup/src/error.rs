//! The one error type of backups and restores, classified by [`Error::kind`].

use std::io;
use std::path::PathBuf;

use coffer_core::ErrorKind;

/// What went wrong in a backup or a restore. No variant carries key bytes or dump data: only
/// file names, counts, ids and the messages of `pg_dump`/`pg_restore`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backup does not authenticate or does not match its manifest (tampered, truncated,
    /// swapped or foreign part, changed manifest).
    #[error("{0}")]
    Refused(String),

    /// A part the manifest lists is not in the backup directory.
    #[error("{name} is missing (the manifest lists {parts} parts)")]
    MissingPart {
        /// The part's file name.
        name: String,
        /// How many parts the manifest lists.
        parts: usize,
    },

    /// The directory holds no manifest: not a backup, or one that never finished.
    #[error("{} has no manifest.cfr: not a Coffer backup, or one that never finished", dir.display())]
    NoManifest {
        /// The directory given.
        dir: PathBuf,
    },

    /// None of the keys given opens a message of the backup.
    #[error("{what}: decryption failed")]
    NoKey {
        /// Which message.
        what: String,
        /// The keyrings' answer (which keys the message was encrypted for).
        #[source]
        source: coffer_keys::Error,
    },

    /// A keyring failed (a KEK provider did not answer, a key reference is unusable).
    #[error("{what}")]
    Keys {
        /// What was being done.
        what: String,
        /// The keyring's error.
        #[source]
        source: coffer_keys::Error,
    },

    /// Encrypting or decrypting a message failed.
    #[error("{what}")]
    Crypto {
        /// What was being done.
        what: String,
        /// coffer-core's error.
        #[source]
        source: coffer_core::Error,
    },

    /// Reading or writing the backup's files failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Writing the restored data to its destination failed (pg_restore gone, disk full): not the
    /// backup's fault.
    #[error("writing the restored data")]
    Sink(#[source] io::Error),

    /// `pg_dump` or `pg_restore` could not run or failed; its messages are included.
    #[error("{program} failed ({status}){}{stderr}", if stderr.is_empty() { "" } else { ":\n" })]
    Tool {
        /// `pg_dump` or `pg_restore`.
        program: &'static str,
        /// Its exit status, or why it could not start.
        status: String,
        /// The end of what it wrote on stderr.
        stderr: String,
    },

    /// An argument or option is out of range or malformed; the message says which.
    #[error("{0}")]
    InvalidInput(String),

    /// A restore stopped part-way; `what` says what that left behind.
    #[error("{what}")]
    Stopped {
        /// What the stop left behind.
        what: &'static str,
        /// Why it stopped.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// What kind of failure this is: a refused, tampered or undecryptable backup is
    /// [`ErrorKind::Decrypt`], a missing part or manifest [`ErrorKind::NotFound`], a failing
    /// `pg_dump`/`pg_restore`, KEK provider or disk [`ErrorKind::Unavailable`], a bad argument
    /// [`ErrorKind::InvalidInput`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Refused(_) | Error::NoKey { .. } => ErrorKind::Decrypt,
            Error::MissingPart { .. } | Error::NoManifest { .. } => ErrorKind::NotFound,
            Error::Keys { source, .. } => keys_kind(source),
            Error::Crypto { source, .. } => source.kind(),
            Error::Io { .. } | Error::Sink(_) | Error::Tool { .. } => ErrorKind::Unavailable,
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::Stopped { source, .. } => source.kind(),
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    pub(crate) fn crypto(what: impl Into<String>) -> impl FnOnce(coffer_core::Error) -> Error {
        let what = what.into();
        move |source| Error::Crypto { what, source }
    }

    /// A keyring's error: wrong or foreign key → [`Error::NoKey`], anything else
    /// [`Error::Keys`].
    pub(crate) fn keys(what: impl Into<String>) -> impl FnOnce(coffer_keys::Error) -> Error {
        let what = what.into();
        move |source| match source {
            coffer_keys::Error::NoMatchingKey { .. } | coffer_keys::Error::WrongKek { .. } => {
                Error::NoKey { what, source }
            }
            source => Error::Keys { what, source },
        }
    }

    /// An error of a stream (encryptor or decryptor): coffer-core's error when it carries one,
    /// a refusal when the stream refused the data, an I/O error otherwise.
    pub(crate) fn stream(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |e| {
            if let Some(core) = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<coffer_core::Error>())
            {
                return Error::Crypto {
                    what,
                    source: core.clone(),
                };
            }
            if e.kind() == io::ErrorKind::PermissionDenied {
                return Error::Refused(format!("{what}: {e}"));
            }
            Error::Io { what, source: e }
        }
    }
}

/// The kind of a keyring error met in a backup: a provider or store that did not answer is
/// unavailable, a wrong key fails to decrypt; the rest is the key configuration given.
fn keys_kind(e: &coffer_keys::Error) -> ErrorKind {
    use coffer_keys::Error as K;
    match e {
        K::NoMatchingKey { .. } | K::WrongKek { .. } => ErrorKind::Decrypt,
        K::Provider { .. } | K::Store(_) => ErrorKind::Unavailable,
        K::Destroyed { .. } => ErrorKind::Destroyed,
        K::Crypto(c) => c.kind(),
        _ => ErrorKind::InvalidInput,
    }
}

/// coffer-backup's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_kind() {
        let io = || io::Error::other("disk on fire");
        let cases = [
            (Error::Refused("x".into()), ErrorKind::Decrypt),
            (
                Error::MissingPart {
                    name: "part-000002.cfr".into(),
                    parts: 3,
                },
                ErrorKind::NotFound,
            ),
            (Error::NoManifest { dir: "/b".into() }, ErrorKind::NotFound),
            (
                Error::keys("opening")(coffer_keys::Error::NoMatchingKey {
                    names: "coffer/a".into(),
                    tried: "coffer/b".into(),
                }),
                ErrorKind::Decrypt,
            ),
            (
                Error::keys("sealing")(coffer_keys::Error::Store("down".into())),
                ErrorKind::Unavailable,
            ),
            (
                Error::crypto("sealing")(coffer_core::Error::Decrypt),
                ErrorKind::Decrypt,
            ),
            (Error::io("reading")(io()), ErrorKind::Unavailable),
            (Error::Sink(io()), ErrorKind::Unavailable),
            (
                Error::Tool {
                    program: "pg_dump",
                    status: "exit status: 1".into(),
                    stderr: String::new(),
                },
                ErrorKind::Unavailable,
            ),
            (
                Error::InvalidInput("--jobs".into()),
                ErrorKind::InvalidInput,
            ),
            (
                Error::Stopped {
                    what: "stopped",
                    source: Box::new(Error::Refused("x".into())),
                },
                ErrorKind::Decrypt,
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }

    #[test]
    fn stream_errors_keep_the_core_error() {
        let e = Error::stream("decrypting part-000001.cfr")(io::Error::other(
            coffer_core::Error::Decrypt,
        ));
        assert!(matches!(
            e,
            Error::Crypto {
                source: coffer_core::Error::Decrypt,
                ..
            }
        ));
        let e = Error::stream("x")(io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(e.kind(), ErrorKind::Decrypt);
        let e = Error::stream("x")(io::Error::from(io::ErrorKind::UnexpectedEof));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn tool_failures_show_their_stderr() {
        let e = Error::Tool {
            program: "pg_dump",
            status: "exit status: 1".into(),
            stderr: "pg_dump: error: no such database".into(),
        };
        assert_eq!(
            e.to_string(),
            "pg_dump failed (exit status: 1):\npg_dump: error: no such database"
        );
    }
}

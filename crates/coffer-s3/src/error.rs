//! The errors of coffer-s3.
//!
//! A ciphertext that does not authenticate is coffer-core's one opaque
//! [`coffer_core::Error::Decrypt`] (in [`Error::Crypto`]); keys that open none of the object's
//! data keys are coffer-keys' [`coffer_keys::Error::NoMatchingKey`] (in [`Error::Keys`]). Every
//! other failure names the object (`s3://bucket/key`) and says what to do.

use std::io;

/// Everything that can go wrong while storing or fetching an encrypted object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist (or the credentials may not see it).
    #[error("s3://{bucket}/{key}: no such object")]
    NotFound {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
    },

    /// The bucket does not exist (or the credentials may not see it).
    #[error("bucket '{bucket}' does not exist")]
    NoSuchBucket {
        /// The bucket.
        bucket: String,
    },

    /// The object changed (another upload replaced it) between two requests of one read.
    #[error("s3://{bucket}/{key} was replaced while it was being read; read it again")]
    Changed {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
    },

    /// The object store failed or refused a request: network, credentials, permissions, a
    /// missing bucket, throttling. An upload that fails this way is aborted.
    #[error("s3://{bucket}/{key}: {error}")]
    Store {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// What the store said (never key material: requests carry ciphertext only).
        error: object_store::Error,
    },

    /// Key selection or a key provider failed; [`coffer_keys::Error::NoMatchingKey`] when none
    /// of the keys given opens the object.
    #[error(transparent)]
    Keys(#[from] coffer_keys::Error),

    /// The object does not authenticate ([`coffer_core::Error::Decrypt`]), is not an AWS
    /// Encryption SDK message Coffer reads ([`coffer_core::Error::Format`]), or a parameter is
    /// out of range ([`coffer_core::Error::Invalid`]).
    #[error(transparent)]
    Crypto(#[from] coffer_core::Error),

    /// Reading the plaintext to upload failed; the upload was aborted and no object was made.
    #[error("reading the input failed, so the upload was aborted: {0}")]
    Source(io::Error),

    /// Writing the decrypted plaintext failed.
    #[error("writing the output failed: {0}")]
    Output(io::Error),

    /// A byte range outside the plaintext.
    #[error("range {start}..{end} is outside the plaintext (0..{len})")]
    Range {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The plaintext length.
        len: u64,
    },

    /// An option is out of range or malformed.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why, in words a user can act on.
        reason: String,
    },

    /// A background task panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What kind of failure this is (docs: [`coffer_core::ErrorKind`]); frontends map kinds.
    pub fn kind(&self) -> coffer_core::ErrorKind {
        use coffer_core::ErrorKind as K;
        match self {
            Error::NotFound { .. } | Error::NoSuchBucket { .. } => K::NotFound,
            // Replaced mid-read: transient, reading again succeeds.
            Error::Changed { .. } | Error::Store { .. } => K::Unavailable,
            Error::Keys(k) => k.kind(),
            Error::Crypto(c) => c.kind(),
            Error::Source(_) | Error::Output(_) | Error::Range { .. } | Error::Invalid { .. } => {
                K::InvalidInput
            }
            Error::Internal(_) => K::Internal,
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            reason: reason.into(),
        }
    }

    /// Turns an error of coffer-core's stream reader or writer back into the error it carries:
    /// one of ours (a failed GET inside the reader), coffer-core's, or else `other(e)`.
    pub(crate) fn from_stream(e: io::Error, other: impl FnOnce(io::Error) -> Error) -> Error {
        let carries_ours = e.get_ref().is_some_and(|i| i.is::<Error>());
        let carries_core = e.get_ref().is_some_and(|i| i.is::<coffer_core::Error>());
        if carries_ours {
            if let Some(inner) = e.into_inner() {
                if let Ok(ours) = inner.downcast::<Error>() {
                    return *ours;
                }
            }
            return Error::Internal("a stream error lost its cause".into());
        }
        if carries_core {
            if let Some(core) = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<coffer_core::Error>())
            {
                return Error::Crypto(core.clone());
            }
        }
        other(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::ErrorKind as K;

    #[test]
    fn kinds_classify_every_variant() {
        let table: Vec<(Error, K)> = vec![
            (
                Error::NotFound {
                    bucket: "b".into(),
                    key: "k".into(),
                },
                K::NotFound,
            ),
            (Error::NoSuchBucket { bucket: "b".into() }, K::NotFound),
            (
                Error::Changed {
                    bucket: "b".into(),
                    key: "k".into(),
                },
                K::Unavailable,
            ),
            (
                Error::Store {
                    bucket: "b".into(),
                    key: "k".into(),
                    error: object_store::Error::Generic {
                        store: "S3",
                        source: "timeout".into(),
                    },
                },
                K::Unavailable,
            ),
            (
                Error::Keys(coffer_keys::Error::NoMatchingKey {
                    names: "a".into(),
                    tried: "b".into(),
                }),
                K::Decrypt,
            ),
            (Error::Crypto(coffer_core::Error::Format("x")), K::Decrypt),
            (Error::Source(io::Error::other("read")), K::InvalidInput),
            (Error::Output(io::Error::other("write")), K::InvalidInput),
            (
                Error::Range {
                    start: 5,
                    end: 9,
                    len: 4,
                },
                K::InvalidInput,
            ),
            (Error::invalid("part size", "too small"), K::InvalidInput),
            (Error::Internal("task".into()), K::Internal),
        ];
        for (e, kind) in table {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }

    #[test]
    fn stream_errors_give_back_what_they_carry() {
        let ours = io::Error::other(Error::NotFound {
            bucket: "b".into(),
            key: "k".into(),
        });
        assert!(matches!(
            Error::from_stream(ours, Error::Output),
            Error::NotFound { .. }
        ));
        let core = io::Error::new(io::ErrorKind::InvalidData, coffer_core::Error::Decrypt);
        assert!(matches!(
            Error::from_stream(core, Error::Output),
            Error::Crypto(coffer_core::Error::Decrypt)
        ));
        let plain = io::Error::new(io::ErrorKind::BrokenPipe, "pipe");
        assert!(matches!(
            Error::from_stream(plain, Error::Output),
            Error::Output(_)
        ));
    }
}

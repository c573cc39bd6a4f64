//! The errors of coffer-core.

/// Everything that can go wrong in coffer-core.
///
/// Authentication failures of any kind (wrong key, tampered bytes, wrong context, truncation) are the
/// single opaque [`Error::Decrypt`]: it never says which check failed. Other variants say what to do.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Authentication failed. Deliberately says nothing more.
    #[error("decryption failed")]
    Decrypt,

    /// A key could not be unwrapped: the wrapping key is wrong or the wrapped bytes were changed.
    #[error("key unwrap failed: wrong key-encryption key, or the wrapped key was altered")]
    Unwrap,

    /// Input that is not a Coffer value at all (wrong text prefix, bad base64).
    #[error("not a Coffer ciphertext: {0}")]
    Format(&'static str),

    /// A well-formed message of a kind Coffer does not read (another format version, a signed or
    /// non-committing suite, non-framed content) or one over the configured limits. The message
    /// says what the input is and what to do; nothing was decrypted.
    #[error("{0}")]
    Unsupported(&'static str),

    /// A message whose final frame ends before its input does: data was appended to it (or the
    /// copy was padded). Nothing was decrypted.
    #[error(
        "the input has {extra} bytes after the end of the message (its final frame ends at byte \
         {message_len}): the file holds more than one message or was appended to; nothing was \
         decrypted. If the extra bytes are known padding, keep only the first {message_len} bytes \
         (e.g. `head -c {message_len}`) and decrypt again"
    )]
    TrailingBytes {
        /// Bytes after the final frame.
        extra: u64,
        /// Where the message ends.
        message_len: u64,
    },

    /// An algorithm outside the FIPS boundary was asked for in the `fips` build.
    #[error(
        "{algorithm} is not a FIPS-approved algorithm and is disabled in this FIPS build; {instead}"
    )]
    NotFipsApproved {
        /// The refused algorithm.
        algorithm: &'static str,
        /// What to use instead.
        instead: &'static str,
    },

    /// The key has sealed as many values as its limit allows.
    #[error(
        "this key has reached its limit of {limit} encryptions (random-IV safety bound); \
         rotate to a new key version"
    )]
    EncryptionLimit {
        /// The configured limit.
        limit: u64,
    },

    /// Deterministic encryption was given a row context.
    #[error(
        "deterministic encryption cannot bind a row: equal values must encrypt equally; \
         pass a search domain (e.g. the tenant) instead of a row context"
    )]
    RowContextInDeterministic,

    /// A column configured for authenticated NULLs read an SQL NULL.
    #[error(
        "the column stores authenticated NULLs but the value read is an SQL NULL \
         (it was written without Coffer or erased outside it)"
    )]
    UnauthenticatedNull,

    /// A parameter is out of range or malformed.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why, in words a user can act on.
        reason: String,
    },

    /// The CSPRNG or the crypto module failed; nothing was produced.
    #[error("the cryptographic module failed ({0})")]
    Module(&'static str),
}

impl Error {
    /// What kind of failure this is (docs: [`ErrorKind`](crate::ErrorKind)).
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            Error::Decrypt | Error::UnauthenticatedNull => K::Decrypt,
            Error::Unwrap => K::WrongKek,
            Error::Format(_) => K::Decrypt,
            Error::Unsupported(_) => K::InvalidInput,
            Error::TrailingBytes { .. } => K::Decrypt,
            Error::NotFipsApproved { .. } | Error::RowContextInDeterministic => K::InvalidInput,
            Error::Invalid { .. } => K::InvalidInput,
            Error::EncryptionLimit { .. } => K::Conflict,
            Error::Module(_) => K::Internal,
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            reason: reason.into(),
        }
    }
}

/// coffer-core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind as K;

    #[test]
    fn kinds_classify_every_variant() {
        let table = [
            (Error::Decrypt, K::Decrypt),
            (Error::Unwrap, K::WrongKek),
            (Error::Format("x"), K::Decrypt),
            (Error::Unsupported("x"), K::InvalidInput),
            (
                Error::TrailingBytes {
                    extra: 1,
                    message_len: 2,
                },
                K::Decrypt,
            ),
            (
                Error::NotFipsApproved {
                    algorithm: "AES-SIV",
                    instead: "use GCM",
                },
                K::InvalidInput,
            ),
            (Error::EncryptionLimit { limit: 1 }, K::Conflict),
            (Error::RowContextInDeterministic, K::InvalidInput),
            (Error::UnauthenticatedNull, K::Decrypt),
            (Error::invalid("suite", "unknown"), K::InvalidInput),
            (Error::Module("rng"), K::Internal),
        ];
        for (e, kind) in table {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }
}

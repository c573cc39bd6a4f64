//! The errors of coffer-assembly.

use coffer_core::ErrorKind;

/// Everything that can go wrong while assembling a keyring, a KEK or a file keyring.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A KEK source names a provider this build leaves out (its cargo feature is off).
    #[error(
        "{what}: '{scheme}:' keys need the {scheme} KEK provider, which this build does not \
         include; rebuild with the cargo feature `{feature}` (e.g. `--features {feature}`)"
    )]
    NotCompiledIn {
        /// Where the source was given, e.g. `[[kek]] main/v2` or `--kek`.
        what: String,
        /// The reference's scheme.
        scheme: String,
        /// The cargo feature that adds the provider.
        feature: &'static str,
    },

    /// A KEK source names a scheme no provider answers to.
    #[error(
        "{what}: unknown KEK source '{scheme}:'; use env:VAR, file:PATH, passphrase:env:VAR or \
         one of the providers of this build ({known})"
    )]
    UnknownScheme {
        /// Where the source was given.
        what: String,
        /// The reference's scheme.
        scheme: String,
        /// The schemes this build has, comma-separated (`none` when it has none).
        known: String,
    },

    /// A passphrase was given where a message's wrapping key is needed.
    #[error(
        "{what}: passphrase keys are not supported for files (a message has no place for KDF \
         parameters); use env:VAR or file:PATH holding a 256-bit key, or a provider's key"
    )]
    PassphraseForFile {
        /// Where the source was given.
        what: String,
    },

    /// An error of the key hierarchy, the key store or a KEK provider.
    #[error(transparent)]
    Keys(#[from] coffer_keys::Error),
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotCompiledIn { .. }
            | Error::UnknownScheme { .. }
            | Error::PassphraseForFile { .. } => ErrorKind::InvalidInput,
            Error::Keys(e) => e.kind(),
        }
    }

    /// The key-hierarchy error inside, when it is one (for callers that classify those).
    pub fn as_keys(&self) -> Option<&coffer_keys::Error> {
        match self {
            Error::Keys(e) => Some(e),
            _ => None,
        }
    }
}

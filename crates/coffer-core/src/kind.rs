//! One error taxonomy for every Coffer crate.
//!
//! Each library error answers `kind()` with an [`ErrorKind`]. Frontends (the CLI's exit codes,
//! the service's HTTP statuses, the Python exceptions) map kinds, never variants: a variant added
//! later is classified where it is defined, once, and cannot fall through a frontend's `match`.

use std::fmt;

/// What kind of failure an error is: the part of an error a frontend acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Authentication failed: wrong key, tampered or foreign ciphertext, wrong context.
    Decrypt,
    /// The named thing (scope, key version, KEK, token, file) does not exist.
    NotFound,
    /// It existed and was destroyed on purpose (crypto-shredding): it will not come back.
    Destroyed,
    /// The caller may not do this (wrong tenant, revoked or expired token, admin-only).
    Denied,
    /// The request contradicts the current state (already exists, concurrent change, limit reached).
    Conflict,
    /// Input or configuration that is malformed or out of range: fix it and retry.
    InvalidInput,
    /// A dependency (key store, KEK provider, cache, object store, database) did not answer.
    Unavailable,
    /// The configured key-encryption key is not the one the key store was made with.
    WrongKek,
    /// A bug or a failing crypto module: nothing a caller can change.
    Internal,
}

impl ErrorKind {
    /// Every kind, for tests that a frontend's mapping covers them all.
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Decrypt,
        ErrorKind::NotFound,
        ErrorKind::Destroyed,
        ErrorKind::Denied,
        ErrorKind::Conflict,
        ErrorKind::InvalidInput,
        ErrorKind::Unavailable,
        ErrorKind::WrongKek,
        ErrorKind::Internal,
    ];

    /// A stable lower-case name, for logs, metrics labels and JSON error codes.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Decrypt => "decrypt",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Destroyed => "destroyed",
            ErrorKind::Denied => "denied",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::WrongKek => "wrong_kek",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_kind_once_with_distinct_names() {
        // Adding a variant breaks this match until ALL (and this test) lists it.
        for k in ErrorKind::ALL {
            match k {
                ErrorKind::Decrypt
                | ErrorKind::NotFound
                | ErrorKind::Destroyed
                | ErrorKind::Denied
                | ErrorKind::Conflict
                | ErrorKind::InvalidInput
                | ErrorKind::Unavailable
                | ErrorKind::WrongKek
                | ErrorKind::Internal => {}
            }
        }
        let names: std::collections::HashSet<_> =
            ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
    }
}

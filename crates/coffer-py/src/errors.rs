//! The Python exceptions and the mapping from the Rust errors.
//!
//! `coffer.CofferError` is the base of everything the package raises. Messages are the Rust
//! errors' own: they name scopes, versions, tables and columns, never a key, a plaintext or a
//! ciphertext, and a failed authentication says only "decryption failed" (docs/FORMAT.md).

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use coffer_core::ErrorKind;

create_exception!(
    coffer,
    CofferError,
    PyException,
    "Base class of every error Coffer raises."
);
create_exception!(
    coffer,
    DecryptionError,
    CofferError,
    "A value did not authenticate: tampered, truncated, from another row, column, scope or \
     type, or not a Coffer ciphertext. Deliberately says nothing more."
);
create_exception!(
    coffer,
    KeyDestroyed,
    CofferError,
    "The scope (or the key version a value names) was crypto-shredded: the data is gone."
);
create_exception!(
    coffer,
    UnknownKey,
    CofferError,
    "The scope, or the key version a value names, does not exist in the key store."
);
create_exception!(
    coffer,
    ConfigError,
    CofferError,
    "coffer.toml, a KEK reference, a column schema or an argument is wrong."
);
create_exception!(
    coffer,
    KeyStoreError,
    CofferError,
    "The key store, the application database or a KEK provider failed or is unreachable."
);
create_exception!(
    coffer,
    KeyStateError,
    CofferError,
    "The key's state forbids the request (scope exists, encryption limit, wrong KEK…)."
);

/// Registers the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CofferError", py.get_type::<CofferError>())?;
    m.add("DecryptionError", py.get_type::<DecryptionError>())?;
    m.add("KeyDestroyed", py.get_type::<KeyDestroyed>())?;
    m.add("UnknownKey", py.get_type::<UnknownKey>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("KeyStoreError", py.get_type::<KeyStoreError>())?;
    m.add("KeyStateError", py.get_type::<KeyStateError>())?;
    Ok(())
}

/// The exception classes, as plain values (so the mapping is testable without an interpreter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Decryption,
    Destroyed,
    UnknownKey,
    Config,
    KeyStore,
    KeyState,
    Base,
}

/// The exception class of an error kind.
fn class_of(kind: ErrorKind) -> Class {
    match kind {
        ErrorKind::Decrypt => Class::Decryption,
        ErrorKind::Destroyed => Class::Destroyed,
        ErrorKind::NotFound => Class::UnknownKey,
        ErrorKind::InvalidInput => Class::Config,
        ErrorKind::Unavailable => Class::KeyStore,
        ErrorKind::Conflict | ErrorKind::WrongKek => Class::KeyState,
        ErrorKind::Denied | ErrorKind::Internal => Class::Base,
        // A kind added later: the base class until it is given its own.
        _ => Class::Base,
    }
}

/// An exception of the class of `kind`.
fn raise(kind: ErrorKind, msg: String) -> PyErr {
    match class_of(kind) {
        Class::Decryption => DecryptionError::new_err(msg),
        Class::Destroyed => KeyDestroyed::new_err(msg),
        Class::UnknownKey => UnknownKey::new_err(msg),
        Class::Config => ConfigError::new_err(msg),
        Class::KeyStore => KeyStoreError::new_err(msg),
        Class::KeyState => KeyStateError::new_err(msg),
        Class::Base => CofferError::new_err(msg),
    }
}

/// A coffer-core error as a Python exception.
pub fn core(e: coffer_core::Error) -> PyErr {
    raise(e.kind(), e.to_string())
}

/// A coffer-keys error as a Python exception.
pub fn keys(e: coffer_keys::Error) -> PyErr {
    raise(e.kind(), e.to_string())
}

/// A coffer-keys error from opening a value: a suite or version read from a tampered header
/// that does not fit the call (coffer-core's invalid input) is a failed decryption, not the
/// caller's mistake.
pub fn keys_open(e: coffer_keys::Error) -> PyErr {
    match e {
        coffer_keys::Error::Crypto(c) if c.kind() == ErrorKind::InvalidInput => {
            DecryptionError::new_err(coffer_core::Error::Decrypt.to_string())
        }
        other => keys(other),
    }
}

/// A coffer-postgres error as a Python exception.
pub fn columns(e: coffer_postgres::Error) -> PyErr {
    match e {
        coffer_postgres::Error::Keys(k) => keys_open(k),
        other => raise(other.kind(), other.to_string()),
    }
}

/// An argument that is wrong.
pub fn config(msg: impl Into<String>) -> PyErr {
    ConfigError::new_err(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_an_exception_class() {
        let classes: Vec<Class> = ErrorKind::ALL.iter().map(|&k| class_of(k)).collect();
        assert_eq!(classes.len(), ErrorKind::ALL.len());
        assert_eq!(class_of(ErrorKind::Decrypt), Class::Decryption);
        assert_eq!(class_of(ErrorKind::Destroyed), Class::Destroyed);
        assert_eq!(class_of(ErrorKind::NotFound), Class::UnknownKey);
        assert_eq!(class_of(ErrorKind::InvalidInput), Class::Config);
        assert_eq!(class_of(ErrorKind::Unavailable), Class::KeyStore);
        assert_eq!(class_of(ErrorKind::Conflict), Class::KeyState);
        assert_eq!(class_of(ErrorKind::WrongKek), Class::KeyState);
        assert_eq!(class_of(ErrorKind::Internal), Class::Base);
        // The keyring's errors keep the classes they had before kinds.
        let keys = |e: coffer_keys::Error| class_of(e.kind());
        assert_eq!(
            keys(coffer_keys::Error::UnknownScope("s".into())),
            Class::UnknownKey
        );
        assert_eq!(keys(coffer_keys::Error::store("down")), Class::KeyStore);
        assert_eq!(
            keys(coffer_keys::Error::WrongKek { kek: "k".into() }),
            Class::KeyState
        );
        assert_eq!(
            keys(coffer_keys::Error::Crypto(coffer_core::Error::Unwrap)),
            Class::KeyState
        );
    }
}

//! The Python exceptions and the mapping from the Rust errors.
//!
//! `coffer.CofferError` is the base of everything the package raises. Messages are the Rust
//! errors' own: they name scopes, versions, tables and columns, never a key, a plaintext or a
//! ciphertext, and a failed authentication says only "decryption failed" (docs/FORMAT.md).

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

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

/// A coffer-core error as a Python exception.
pub fn core(e: coffer_core::Error) -> PyErr {
    use coffer_core::Error as E;
    let msg = e.to_string();
    match e {
        E::Decrypt | E::Format(_) => DecryptionError::new_err(msg),
        E::Unwrap => KeyStateError::new_err(msg),
        E::EncryptionLimit { .. } => KeyStateError::new_err(msg),
        E::Invalid { .. } | E::RowContextInDeterministic | E::NotFipsApproved { .. } => {
            ConfigError::new_err(msg)
        }
        _ => CofferError::new_err(msg),
    }
}

/// A coffer-keys error as a Python exception.
pub fn keys(e: coffer_keys::Error) -> PyErr {
    use coffer_keys::Error as E;
    let msg = e.to_string();
    match e {
        E::Crypto(c) => core(c),
        E::Destroyed { .. } => KeyDestroyed::new_err(msg),
        E::UnknownScope(_) | E::UnknownVersion { .. } => UnknownKey::new_err(msg),
        E::Config(_) => ConfigError::new_err(msg),
        E::Store(_) | E::Provider { .. } => KeyStoreError::new_err(msg),
        E::NoMatchingKey { .. } => DecryptionError::new_err(msg),
        E::ScopeExists(_) | E::State(_) | E::UnknownKek { .. } | E::WrongKek { .. } => {
            KeyStateError::new_err(msg)
        }
        _ => CofferError::new_err(msg),
    }
}

/// A coffer-keys error from opening a value: a suite or version read from a tampered header
/// that does not fit the call is a failed decryption, not the caller's mistake.
pub fn keys_open(e: coffer_keys::Error) -> PyErr {
    match e {
        coffer_keys::Error::Crypto(
            coffer_core::Error::RowContextInDeterministic | coffer_core::Error::Invalid { .. },
        ) => DecryptionError::new_err(coffer_core::Error::Decrypt.to_string()),
        other => keys(other),
    }
}

/// A coffer-postgres error as a Python exception.
pub fn columns(e: coffer_postgres::Error) -> PyErr {
    use coffer_postgres::Error as E;
    match e {
        E::Keys(k) => keys_open(k),
        E::Db(db) => KeyStoreError::new_err(format!("database error: {db}")),
        E::Schema(_) | E::Value { .. } => ConfigError::new_err(e.to_string()),
        E::Row { .. } => DecryptionError::new_err(e.to_string()),
        _ => CofferError::new_err(e.to_string()),
    }
}

/// An argument that is wrong.
pub fn config(msg: impl Into<String>) -> PyErr {
    ConfigError::new_err(msg.into())
}

//! Coffer's formats and cryptography.
//!
//! `coffer-core` is the inner layer of Coffer: field ciphertexts (randomized AES-256-GCM with 96-
//! or 128-bit tags, deterministic AES-256-SIV), blind indexes, HKDF subkeys, key wrap, passphrase
//! KDFs and typed key material. It has no async, no I/O, no network and no database; everything
//! remote lives in outer crates. The bytes it writes are specified in docs/FORMAT.md.
//!
//! ```
//! use coffer_core::{ColumnId, Dek, FieldContext, FieldKey, Kek, KeyVersion, ScopeId, Suite, WrapAlgorithm};
//!
//! // A DEK for a scope, stored only wrapped under a KEK.
//! let kek = Kek::generate()?;
//! let dek = Dek::generate()?;
//! let wrapped = kek.wrap_dek(&dek, WrapAlgorithm::AesKwp)?;
//!
//! // Encrypt a column value bound to its row; decrypt it after unwrapping the DEK again.
//! let scope = ScopeId::new("tenant:acme")?;
//! let column = ColumnId::new("patients.diagnosis")?;
//! let key = FieldKey::new(&dek, KeyVersion(1), Suite::Gcm96, &scope, &column)?;
//! let row = FieldContext::row(&[b"patient-42"]);
//! let stored = key.encrypt_text(&row, b"E11.9")?;
//! assert!(stored.starts_with("cf1:"));
//!
//! let dek_again = kek.unwrap_dek(&wrapped, WrapAlgorithm::AesKwp)?;
//! let key_again = FieldKey::new(&dek_again, KeyVersion(1), Suite::Gcm96, &scope, &column)?;
//! assert_eq!(key_again.decrypt_text(&row, &stored)?.as_deref(), Some(&b"E11.9"[..]));
//! # Ok::<(), coffer_core::Error>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(all(feature = "fips", feature = "non-fips"))]
compile_error!(
    "coffer-core: `fips` and `non-fips` link different AWS-LC builds; \
     build the FIPS profile with `--no-default-features --features fips`"
);
#[cfg(not(any(feature = "fips", feature = "non-fips")))]
compile_error!("coffer-core: enable either the `non-fips` (default) or the `fips` feature");

pub mod audit;
pub mod blind_index;
pub mod cache_entry;
pub mod counter;
pub mod datakey;
pub mod digest;
pub mod encoding;
mod error;
pub mod field;
pub mod fips;
pub mod hazmat;
mod ids;
pub mod kdf;
mod kind;
pub mod passphrase;
pub mod planner;
mod secret;
pub mod stream;
pub mod token;
mod value;
pub mod wrap;

pub use blind_index::{BlindIndexKey, Normalizer};
pub use counter::{DEFAULT_ENCRYPTION_LIMIT, EncryptionCounter};
pub use error::{Error, Result};
pub use field::{FieldContext, FieldKey, Header, Nulls, Packed, Suite};
pub use ids::{ColumnId, KeyVersion, ScopeId};
pub use kind::ErrorKind;
pub use passphrase::{KdfParams, PassphraseKdf};
pub use secret::{Dek, KEY_LEN, Kek, SubKey};
pub use value::ValueType;
pub use wrap::{KeyMetadata, WrapAlgorithm};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

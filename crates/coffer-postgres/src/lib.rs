//! Coffer for applications on sqlx and PostgreSQL: encrypted columns declared once, typed
//! values that seal on bind and open on read with the row's context, blind-index search
//! (equality, compound, prefix) that keeps working through key rotation, and the
//! re-encryption job that moves millions of rows to a new key version while the application
//! keeps reading and writing. docs/COLUMNS.md is the guide; `examples/patients.rs` the
//! complete program.
//!
//! - [`Schema`] / [`Table`]: which columns of which table are encrypted, how, under which
//!   scope, with which blind indexes (`coffer-columns.toml`).
//! - [`Columns`]: one table bound to a [`coffer_keys::Keyring`]: [`Columns::row`] seals a row
//!   (values, indexes, version), [`Columns::open`] reads an [`Encrypted<T>`],
//!   [`Columns::search_eq`] / [`Columns::search_prefix`] give search terms for every live key
//!   version.
//! - [`Reencryptor`]: the batched, resumable, multi-worker re-encryption and migration job
//!   behind `coffer reencrypt`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod columns;
mod error;
pub mod reencrypt;
mod rowkey;
pub mod schema;
pub mod scope;
mod sealed;
mod search;
pub mod value;

pub use columns::{Columns, Plain, PlainRow, RowId, RowSealer, SealedRow, Search};
pub use error::{Error, Result};
pub use reencrypt::{Census, ReencryptOptions, Reencryptor, RunReport, ScopeStanding, Standing};
pub use rowkey::ROW_KEY_VERSION;
pub use schema::{Schema, Storage, Table, TableSpec};
pub use scope::ScopeTemplate;
pub use sealed::{Encrypted, IndexValue, NotCiphertext, Sealed};
pub use value::{FromPlain, ToPlain};

//! Coffer's key stores: a SQLite file (the embedded default, created on first use) and
//! PostgreSQL, with one schema (`migrations/`), one implementation of
//! [`coffer_keys::KeyStore`] and the same guarantees on both.
//!
//! ```no_run
//! # async fn demo() -> coffer_keys::Result<()> {
//! use coffer_keys::KeyStore as _;
//! let store = coffer_store::SqlStore::connect("sqlite:keys.db").await?;
//! println!("store {:02x?}", store.info().await?.store_id);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod notify;
mod rows;
mod store;

pub use notify::CHANNEL as INVALIDATION_CHANNEL;
pub use store::{Backend, SCHEMA_VERSION, SqlStore};

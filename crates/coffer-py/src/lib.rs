//! Coffer for Python: the `coffer._native` extension module behind the `coffer` package
//! (python/coffer). docs/PYTHON.md is the guide.
//!
//! - `keyring::Keyring`: the coffer-keys keyring opened from coffer.toml (same key stores,
//!   KEK references and two-tier cache as the CLI), created lazily and again after `fork()`
//!   (module `runtime`); field encryption, decryption and blind indexes, single and batch (the
//!   batch releases the GIL and runs on all cores).
//! - `table::Table`: one table's encrypted columns (coffer-postgres), which the Django and
//!   SQLAlchemy integrations build on, and the re-encryption job.
//! - `rawkey::FieldKey`: a column key from a raw key reference, as `coffer field` uses.
//! - `stream`: file encryption and decryption in the ESDK-compatible stream format.
//! - `errors`: the exception hierarchy (`coffer.CofferError` and its subclasses).

mod args;
mod errors;
mod keyring;
mod open;
mod rawkey;
mod runtime;
mod stream;
mod table;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<keyring::Keyring>()?;
    m.add_class::<keyring::Column>()?;
    m.add_class::<table::Table>()?;
    m.add_class::<table::Ciphertext>()?;
    m.add_class::<table::Search>()?;
    m.add_class::<rawkey::FieldKey>()?;
    stream::register(m)?;
    m.add_function(wrap_pyfunction!(table::canonical_json, m)?)?;
    m.add_function(wrap_pyfunction!(table::canonical_json_of, m)?)?;
    m.add_function(wrap_pyfunction!(table::to_text, m)?)?;
    m.add_function(wrap_pyfunction!(table::from_text, m)?)?;
    Ok(())
}

//! File encryption and decryption (placeholder until the stream classes land).

use pyo3::prelude::*;

/// Registers the stream classes.
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}

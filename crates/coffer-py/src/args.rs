//! Arguments as Python passes them: byte strings or text, context components, value types and
//! modes, each checked once here with a message that names the argument.

use coffer_core::{ColumnId, FieldContext, Normalizer, ScopeId, Suite, ValueType};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyByteArray, PyBytes, PyString};

use crate::errors;

/// A value: `bytes` (or `bytearray`, copied) or `str` (its UTF-8), kept alive without a copy
/// while the GIL is released. Extracted by type checks, without building an exception for the
/// variant that does not match (this is on every call's path).
pub enum Data {
    /// bytes-like.
    Bytes(PyBackedBytes),
    /// str.
    Text(PyBackedStr),
}

impl Data {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Data::Bytes(b) => b,
            Data::Text(s) => s.as_bytes(),
        }
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Data {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Data::Bytes(PyBackedBytes::from(b.to_owned())));
        }
        if let Ok(s) = obj.cast::<PyString>() {
            return Ok(Data::Text(PyBackedStr::try_from(s.to_owned())?));
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            return Ok(Data::Bytes(PyBackedBytes::from(b.to_owned())));
        }
        Err(PyTypeError::new_err(format!(
            "expected bytes or str, got {}",
            obj.get_type().name()?
        )))
    }
}

/// Context components: one `str`/`bytes`, or a sequence of them (order matters).
pub enum Components {
    /// One component.
    One(Data),
    /// Several.
    Many(Vec<Data>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Components {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(s) = obj.cast::<PyString>() {
            return Ok(Components::One(Data::Text(PyBackedStr::try_from(
                s.to_owned(),
            )?)));
        }
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Components::One(Data::Bytes(PyBackedBytes::from(
                b.to_owned(),
            ))));
        }
        if obj.is_instance_of::<PyByteArray>() {
            return Ok(Components::One(Data::extract(obj)?));
        }
        Ok(Components::Many(obj.extract()?))
    }
}

/// The components of an optional context as byte slices (none for `None`).
pub fn parts(c: &Option<Components>) -> Vec<&[u8]> {
    match c {
        None => Vec::new(),
        Some(Components::One(d)) => vec![d.as_bytes()],
        Some(Components::Many(v)) => v.iter().map(Data::as_bytes).collect(),
    }
}

/// A scope id.
pub fn scope(s: &str) -> PyResult<ScopeId> {
    ScopeId::new(s).map_err(|e| errors::config(format!("scope {s:?}: {e}")))
}

/// A column id.
pub fn column(s: &str) -> PyResult<ColumnId> {
    ColumnId::new(s).map_err(|e| errors::config(format!("column {s:?}: {e}")))
}

/// A value type by name (`bytes`, `text`, `int`, `bool`, `date`, `timestamp`, `json`, `uuid`).
pub fn value_type(s: &str) -> PyResult<ValueType> {
    coffer_postgres::value::parse_type(s).ok_or_else(|| {
        errors::config(format!(
            "type {s:?}: expected bytes, text, int, bool, date, timestamp, json or uuid"
        ))
    })
}

/// A mode by name.
pub fn suite(s: &str) -> PyResult<Suite> {
    match s {
        "randomized" => Ok(Suite::Gcm96),
        "randomized-tag128" => Ok(Suite::Gcm128),
        "deterministic" => Ok(Suite::Siv),
        _ => Err(errors::config(format!(
            "mode {s:?}: expected randomized, randomized-tag128 or deterministic"
        ))),
    }
}

/// Normalizer names (`trim`, `casefold`, `nfc`, `digits`, `last:N`).
pub fn normalizers(names: &[String]) -> PyResult<Vec<Normalizer>> {
    names
        .iter()
        .map(|n| {
            n.parse::<Normalizer>()
                .map_err(|e| errors::config(format!("normalizer {n:?}: {e}")))
        })
        .collect()
}

/// The field context of a row and domain, typed.
pub fn context<'a>(
    row: &'a [&'a [u8]],
    domain: &'a [&'a [u8]],
    value_type: ValueType,
) -> FieldContext<'a> {
    FieldContext::row(row)
        .with_domain(domain)
        .with_type(value_type)
}

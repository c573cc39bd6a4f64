//! Arguments as Python passes them: byte strings or text, context components, value types and
//! modes, each checked once here with a message that names the argument.

use coffer_core::{ColumnId, FieldContext, Normalizer, ScopeId, Suite, ValueType};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyByteArray, PyBytes, PyList, PyString};
use zeroize::Zeroizing;

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

/// A batch argument as a list: a list as it is, any other sequence or iterable copied into
/// one (`str` and `bytes` are refused: they are one value, not a sequence of them).
pub fn as_list<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyList>> {
    if let Ok(list) = obj.cast::<PyList>() {
        return Ok(list.clone());
    }
    if obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyString>()
        || obj.is_instance_of::<PyByteArray>()
    {
        return Err(PyTypeError::new_err(format!(
            "{what}: expected a sequence of values, got one {}",
            obj.get_type().name()?
        )));
    }
    let it = obj
        .try_iter()
        .map_err(|_| PyTypeError::new_err(format!("{what}: expected a sequence")))?;
    let items = it.collect::<PyResult<Vec<_>>>()?;
    PyList::new(obj.py(), items)
}

/// The `contexts` argument of a batch of `n` values: `None`, or a sequence with one entry
/// per value.
pub fn contexts_list<'py>(
    obj: Option<&Bound<'py, PyAny>>,
    n: usize,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    let list = as_list(obj, "contexts")?;
    if list.len() != n {
        return Err(errors::config(format!(
            "contexts has {} entries for {n} values; give one per value",
            list.len()
        )));
    }
    Ok(Some(list))
}

/// Part of a batch's values (or contexts), copied end to end into one buffer under the GIL:
/// the work that follows with the GIL released touches no Python object, and no reference is
/// kept per value. The buffer is wiped on drop (it may hold plaintexts).
pub struct Gathered {
    bytes: Zeroizing<Vec<u8>>,
    /// Where each part ends in `bytes`.
    ends: Vec<usize>,
    /// For contexts: where each value's parts end in `ends` (empty for plain values).
    groups: Vec<usize>,
}

impl Gathered {
    /// The values at `range` of `list`, each `bytes`/`str`/`bytearray` (`what` names the
    /// argument in errors).
    pub fn values(
        list: &Bound<'_, PyList>,
        range: std::ops::Range<usize>,
        what: &str,
    ) -> PyResult<Gathered> {
        let mut g = Gathered {
            bytes: Zeroizing::new(Vec::with_capacity(range.len() * 64)),
            ends: Vec::with_capacity(range.len()),
            groups: Vec::new(),
        };
        for i in range {
            let item = list.get_item(i)?;
            if !g.push(&item)? {
                return Err(PyTypeError::new_err(format!(
                    "{what}[{i}]: expected bytes or str, got {}",
                    item.get_type().name()?
                )));
            }
        }
        Ok(g)
    }

    /// The contexts at `range` (none if `list` is `None`): each `None`, a `str`/`bytes`, or a
    /// sequence of them (the row's components, in order).
    pub fn rows(
        list: Option<&Bound<'_, PyList>>,
        range: std::ops::Range<usize>,
    ) -> PyResult<Gathered> {
        let mut g = Gathered {
            bytes: Zeroizing::new(Vec::new()),
            ends: Vec::new(),
            groups: Vec::with_capacity(range.len()),
        };
        let Some(list) = list else {
            g.groups.resize(range.len(), 0);
            return Ok(g);
        };
        for i in range {
            let item = list.get_item(i)?;
            if !item.is_none() && !g.push(&item)? {
                let parts = as_list(&item, "contexts")?;
                for (j, part) in parts.iter().enumerate() {
                    if !g.push(&part)? {
                        return Err(PyTypeError::new_err(format!(
                            "contexts[{i}][{j}]: expected bytes or str, got {}",
                            part.get_type().name()?
                        )));
                    }
                }
            }
            g.groups.push(g.ends.len());
        }
        Ok(g)
    }

    /// Appends a `bytes`/`str`/`bytearray`; `false` if it is none of these.
    fn push(&mut self, item: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Ok(b) = item.cast::<PyBytes>() {
            self.bytes.extend_from_slice(b.as_bytes());
        } else if let Ok(s) = item.cast::<PyString>() {
            self.bytes.extend_from_slice(s.to_str()?.as_bytes());
        } else if let Ok(b) = item.cast::<PyByteArray>() {
            self.bytes.extend_from_slice(&b.to_vec());
        } else {
            return Ok(false);
        }
        self.ends.push(self.bytes.len());
        Ok(true)
    }

    fn part(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// The parts, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.ends.len()).map(|i| self.part(i))
    }

    /// Each value with its field context: `self` holds the contexts, `values` the values.
    pub fn items<'a>(
        &'a self,
        values: &'a Gathered,
        domain: &'a [&'a [u8]],
        value_type: ValueType,
    ) -> Items<'a> {
        Items {
            parts: self.iter().collect(),
            groups: &self.groups,
            values,
            domain,
            value_type,
        }
    }
}

/// The (context, value) pairs of a batch unit, borrowed from two [`Gathered`].
pub struct Items<'a> {
    parts: Vec<&'a [u8]>,
    groups: &'a [usize],
    values: &'a Gathered,
    domain: &'a [&'a [u8]],
    value_type: ValueType,
}

impl Items<'_> {
    /// The pairs, in order.
    pub fn pairs(&self) -> Vec<(FieldContext<'_>, &[u8])> {
        (0..self.values.ends.len())
            .map(|i| {
                let start = if i == 0 { 0 } else { self.groups[i - 1] };
                let row = &self.parts[start..self.groups[i]];
                (
                    context(row, self.domain, self.value_type),
                    self.values.part(i),
                )
            })
            .collect()
    }
}

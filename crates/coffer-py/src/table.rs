//! `coffer.Table`: one table's encrypted columns (coffer-postgres `Columns`) for the Django
//! and SQLAlchemy integrations. The same AADs, blind indexes, prefix tokens and version column
//! as the Rust library and `coffer reencrypt`, so each side reads what the other wrote.
//!
//! Values cross this boundary in canonical form (docs/FORMAT.md table 3; the Python side's
//! `coffer.values` converts): text as UTF-8, integers as i64 big-endian, and so on.

use std::time::Duration;

use coffer_core::ValueType;
use coffer_core::field::text;
use coffer_postgres::{
    Columns, IndexValue, Plain, ReencryptOptions, Reencryptor, SealedRow, Storage, TableSpec,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use sqlx::postgres::PgPoolOptions;

use crate::args::Data;
use crate::errors;
use crate::keyring::Keyring;

/// One row's values: (column, canonical bytes or None for NULL).
type RowValues = Vec<(String, Option<Data>)>;

/// One table's encrypted columns bound to a keyring.
#[pyclass(name = "Table", module = "coffer._native", frozen)]
pub struct Table {
    keyring: Py<Keyring>,
    table: coffer_postgres::Table,
}

/// A ciphertext made for one write: the only value an encrypted Django field binds (a
/// plaintext given to `QuerySet.update()` is refused for not being one). Unlike a `bytes`
/// subclass it is not tracked by the cyclic GC, which a bulk insert of many rows would
/// otherwise wake again and again.
#[pyclass(name = "Ciphertext", module = "coffer._native", frozen)]
pub struct Ciphertext {
    data: Py<PyBytes>,
}

#[pymethods]
impl Ciphertext {
    #[new]
    fn new(data: Py<PyBytes>) -> Self {
        Ciphertext { data }
    }

    /// The ciphertext's bytes.
    #[getter]
    fn data(&self, py: Python<'_>) -> Py<PyBytes> {
        self.data.clone_ref(py)
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.data.bind(py).as_bytes().len()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<coffer ciphertext, {} bytes>",
            self.data.bind(py).as_bytes().len()
        )
    }
}

/// Blind-index search terms and the check that confirms a decrypted candidate.
#[pyclass(name = "Search", module = "coffer._native", frozen)]
pub struct Search {
    inner: coffer_postgres::Search,
}

impl Table {
    fn columns(&self, py: Python<'_>) -> PyResult<(crate::runtime::Shared, Columns)> {
        let p = self.keyring.get().process(py)?;
        let cols = Columns::new(p.keyring().clone(), self.table.clone());
        Ok((p, cols))
    }

    /// The table's columns in the scope of `scope` (one dict of placeholder values); for a
    /// templated table without one, an error that says what to pass.
    fn columns_in(
        &self,
        py: Python<'_>,
        scope: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(crate::runtime::Shared, Columns)> {
        let mut all = self.scope_list(scope)?;
        if all.len() > 1 {
            return Err(errors::config(format!(
                "table '{}': a write or a read names one scope (a dict), not {}",
                self.table.name(),
                all.len()
            )));
        }
        let (p, cols) = self.columns(py)?;
        match all.pop() {
            Some(values) => {
                let refs: Vec<(&str, &str)> = values
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let scoped = cols.for_scope(&refs).map_err(errors::columns)?;
                Ok((p, scoped))
            }
            None => Ok((p, cols)),
        }
    }

    /// `scope` as a list of placeholder-value sets: None → none (a fixed scope), a dict → one,
    /// a list or tuple of dicts → each. A templated table needs at least one.
    fn scope_list(&self, scope: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Vec<(String, String)>>> {
        let out = match scope {
            None => Vec::new(),
            Some(s) if s.is_none() => Vec::new(),
            Some(s) => {
                if let Ok(d) = s.cast::<PyDict>() {
                    vec![scope_values(d)?]
                } else if s.is_instance_of::<PyList>() || s.is_instance_of::<PyTuple>() {
                    let mut v = Vec::new();
                    for item in s.try_iter()? {
                        let item = item?;
                        let d = item.cast::<PyDict>().map_err(|_| {
                            PyTypeError::new_err("scope: a list of dicts {column: value}")
                        })?;
                        v.push(scope_values(d)?);
                    }
                    if v.is_empty() {
                        return Err(errors::config(format!(
                            "table '{}': an empty list of scopes matches no row; name at least one",
                            self.table.name()
                        )));
                    }
                    v
                } else {
                    return Err(PyTypeError::new_err(
                        "scope: a dict {column: value}, or a list of them",
                    ));
                }
            }
        };
        let template = self.table.scope_template();
        if out.is_empty() && template.is_template() {
            return Err(errors::config(format!(
                "table '{}' keys rows by the scope template '{}': pass scope={{{}}} with the \
                 row's values (and filter the SQL on the same column(s))",
                self.table.name(),
                template.as_str(),
                template
                    .placeholders()
                    .iter()
                    .map(|p| format!("'{p}': …"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(out)
    }

    /// A row key argument, checked against the table's kind.
    fn row_key_arg<'a>(&self, row_key: &'a Option<Data>) -> PyResult<Option<&'a [u8]>> {
        match row_key {
            Some(_) if self.table.row_key_column().is_none() => Err(errors::config(format!(
                "table '{}' has no per-row keys (keys = \"row\"): pass no row_key",
                self.table.name()
            ))),
            Some(k) => Ok(Some(k.as_bytes())),
            None => Ok(None),
        }
    }

    fn plain(&self, column: &str, bytes: &[u8]) -> PyResult<Plain> {
        let c = self.table.column(column).map_err(errors::columns)?;
        Ok(Plain::from_canonical(c.value_type, bytes.to_vec()))
    }
}

/// One scope's placeholder values from a dict {column: str}.
fn scope_values(d: &Bound<'_, PyDict>) -> PyResult<Vec<(String, String)>> {
    let mut out = Vec::with_capacity(d.len());
    for (k, v) in d.iter() {
        let k: String = k
            .extract()
            .map_err(|_| PyTypeError::new_err("scope: the keys are column names (str)"))?;
        let v: String = v.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "scope: the value of {k:?} must be a str (convert ids with str())"
            ))
        })?;
        out.push((k, v));
    }
    Ok(out)
}

fn sealed_out<'py>(py: Python<'py>, row: &SealedRow) -> PyResult<Bound<'py, PyTuple>> {
    let values = PyDict::new(py);
    for (name, s) in row.values() {
        match s.ciphertext() {
            None => values.set_item(name, py.None())?,
            Some(e) if e.storage() == Storage::Text => values.set_item(name, e.to_text())?,
            Some(e) => values.set_item(name, PyBytes::new(py, e.as_bytes()))?,
        }
    }
    let indexes = PyDict::new(py);
    for (name, ix) in row.indexes() {
        match ix {
            IndexValue::Single(Some(b)) => indexes.set_item(name, PyBytes::new(py, b))?,
            IndexValue::Tokens(Some(t)) => indexes.set_item(
                name,
                PyList::new(py, t.iter().map(|b| PyBytes::new(py, b)))?,
            )?,
            _ => indexes.set_item(name, py.None())?,
        }
    }
    PyTuple::new(
        py,
        [
            values.into_any(),
            indexes.into_any(),
            row.version().into_pyobject(py)?.into_any(),
            match row.row_key() {
                Some(k) => PyBytes::new(py, k).into_any(),
                None => py.None().into_bound(py),
            },
        ],
    )
}

/// A stored value: BYTEA bytes, or the TEXT form `cf1:…`.
fn stored(d: &Data) -> PyResult<std::borrow::Cow<'_, [u8]>> {
    match d {
        Data::Bytes(b) => Ok(std::borrow::Cow::Borrowed(&**b)),
        Data::Text(s) => text::decode(s)
            .map(std::borrow::Cow::Owned)
            .map_err(errors::core),
    }
}

#[pymethods]
impl Table {
    /// Table(keyring, spec_json)
    ///
    /// A table definition in the form of coffer-columns.toml's `[[table]]` (docs/COLUMNS.md),
    /// as JSON text: name, scope, row_id, version_column, column (list), index (list).
    #[new]
    fn new(keyring: Py<Keyring>, spec_json: &str) -> PyResult<Self> {
        let spec: TableSpec = serde_json::from_str(spec_json)
            .map_err(|e| errors::config(format!("table definition: {e}")))?;
        let table = coffer_postgres::Table::new(&spec).map_err(errors::columns)?;
        Ok(Table { keyring, table })
    }

    fn __repr__(&self) -> String {
        format!(
            "Table({:?}, scope={:?}, {} encrypted columns, {} indexes)",
            self.table.name(),
            self.table.scope_template().as_str(),
            self.table.columns().len(),
            self.table.indexes().len()
        )
    }

    /// The SQL table name.
    #[getter]
    fn name(&self) -> &str {
        self.table.name()
    }

    /// The key-store scope, or the scope template (`tenant:{tenant_id}/patients`).
    #[getter]
    fn scope(&self) -> &str {
        self.table.scope_template().as_str()
    }

    /// The scope template's placeholders (column names, in order); empty for a fixed scope.
    #[getter]
    fn placeholders(&self) -> Vec<String> {
        self.table
            .scope_template()
            .placeholders()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// The column holding each row's wrapped key with `keys = "row"`, else None.
    #[getter]
    fn row_key_column(&self) -> Option<&str> {
        self.table.row_key_column()
    }

    /// seal_row(row, values, *, scope=None, row_key=None) -> (ciphertexts, indexes, version, row_key)
    ///
    /// Seals one row: `row` is the row id's text form (as PostgreSQL prints `id::text`),
    /// `values` maps column names to canonical bytes (None: NULL). `scope` gives the row's
    /// placeholder values for a table with a scope template (`{"tenant_id": "acme"}`);
    /// `row_key` is the row's stored key with `keys = "row"` (None: a fresh key, for an
    /// insert). Returns the ciphertexts by column (bytes, or str for TEXT storage; None for SQL
    /// NULL), the blind indexes by name (bytes, a list of bytes for prefix indexes), the key
    /// version to store, and the row key to store (None without `keys = "row"`).
    #[pyo3(signature = (row, values, *, scope=None, row_key=None))]
    fn seal_row<'py>(
        &self,
        py: Python<'py>,
        row: &str,
        values: RowValues,
        scope: Option<&Bound<'py, PyAny>>,
        row_key: Option<Data>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let plains = self.plains(&values)?;
        let rk = self.row_key_arg(&row_key)?.map(<[u8]>::to_vec);
        let (p, cols) = self.columns_in(py, scope)?;
        let sealed = p
            .run(py, seal_one(&cols, row, plains, rk))
            .map_err(errors::columns)?;
        sealed_out(py, &sealed)
    }

    /// seal_rows(rows, *, scope=None, row_keys=None) -> list of (ciphertexts, indexes, version, row_key)
    ///
    /// `seal_row` for many rows of one scope (a list of (row, values)), with the GIL released.
    /// `row_keys[i]` is row i's stored key with `keys = "row"` (None: a fresh key).
    #[pyo3(signature = (rows, *, scope=None, row_keys=None))]
    fn seal_rows<'py>(
        &self,
        py: Python<'py>,
        rows: Vec<(String, RowValues)>,
        scope: Option<&Bound<'py, PyAny>>,
        row_keys: Option<Vec<Option<Data>>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut prepared = Vec::with_capacity(rows.len());
        for (row, values) in &rows {
            prepared.push((row.as_str(), self.plains(values)?));
        }
        let keys = self.row_keys_arg(row_keys.as_deref(), rows.len())?;
        let (p, cols) = self.columns_in(py, scope)?;
        let prepared: Vec<coffer_postgres::PlainRow> = prepared
            .into_iter()
            .map(|(r, v)| (r.to_owned(), v))
            .collect();
        let sealed = py.detach(|| p.install(|| p.block_on(cols.seal_rows_keyed(&prepared, &keys))));
        let sealed = sealed.map_err(errors::columns)?;
        let list = PyList::empty(py);
        for s in &sealed {
            list.append(sealed_out(py, s)?)?;
        }
        Ok(list)
    }

    /// seal_many(flat, wrap, *, scope=None, row_keys=None) -> list
    ///
    /// `seal_rows` for integrations that keep columns by position, with no container per row
    /// either way (a bulk insert of many rows otherwise wakes Python's cyclic GC again and
    /// again): `flat` holds, for each row, its row id (str) and then one canonical value
    /// (bytes, or None) per encrypted column in the order of `column_names`. The result holds,
    /// for each row in turn, the ciphertexts in that order (each passed through `wrap`, None
    /// for SQL NULL), then the indexes in the order of `index_names` (bytes, a list of bytes
    /// for prefix indexes, or None), then the version, then, with `keys = "row"` only, the
    /// row key to store. All rows are of one scope (`scope`, as for `seal_row`); `row_keys`
    /// as for `seal_rows`.
    #[pyo3(signature = (flat, wrap, *, scope=None, row_keys=None))]
    fn seal_many<'py>(
        &self,
        py: Python<'py>,
        flat: &Bound<'py, PyList>,
        wrap: &Bound<'py, PyAny>,
        scope: Option<&Bound<'py, PyAny>>,
        row_keys: Option<Vec<Option<Data>>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let cols_spec = self.table.columns();
        let width = 1 + cols_spec.len();
        if flat.len() % width != 0 {
            return Err(errors::config(format!(
                "seal_many: {} items is not a whole number of rows of {width} (row id and {} values)",
                flat.len(),
                cols_spec.len()
            )));
        }
        let mut prepared: Vec<coffer_postgres::PlainRow> = Vec::with_capacity(flat.len() / width);
        for r in 0..flat.len() / width {
            let row: String = flat.get_item(r * width)?.extract()?;
            let mut vals = Vec::with_capacity(cols_spec.len());
            for (j, c) in cols_spec.iter().enumerate() {
                let v = flat.get_item(r * width + 1 + j)?;
                let plain = if v.is_none() {
                    None
                } else {
                    let b = v.cast::<PyBytes>().map_err(|_| {
                        errors::config(format!("seal_many: the value of {} is not bytes", c.name))
                    })?;
                    Some(Plain::from_canonical(c.value_type, b.as_bytes().to_vec()))
                };
                vals.push((c.name.clone(), plain));
            }
            prepared.push((row, vals));
        }
        let keys = self.row_keys_arg(row_keys.as_deref(), prepared.len())?;
        let (p, cols) = self.columns_in(py, scope)?;
        let sealed = py.detach(|| p.install(|| p.block_on(cols.seal_rows_keyed(&prepared, &keys))));
        let sealed = sealed.map_err(errors::columns)?;
        let keyed = self.table.row_key_column().is_some();
        // One list for the batch, no container per row (see the method's docs).
        let out = PyList::empty(py);
        for row in &sealed {
            for c in cols_spec {
                let s = row.value(&c.name).map_err(errors::columns)?;
                out.append(match s.ciphertext() {
                    None => py.None().into_bound(py),
                    Some(e) if e.storage() == Storage::Text => wrap.call1((e.to_text(),))?,
                    Some(e) => wrap.call1((PyBytes::new(py, e.as_bytes()),))?,
                })?;
            }
            for ix in self.table.indexes() {
                out.append(match row.index(&ix.name).map_err(errors::columns)? {
                    IndexValue::Single(Some(b)) => PyBytes::new(py, b).into_any(),
                    IndexValue::Tokens(Some(t)) => {
                        PyList::new(py, t.iter().map(|b| PyBytes::new(py, b)))?.into_any()
                    }
                    _ => py.None().into_bound(py),
                })?;
            }
            out.append(row.version())?;
            if keyed {
                out.append(match row.row_key() {
                    Some(k) => PyBytes::new(py, k).into_any(),
                    None => py.None().into_bound(py),
                })?;
            }
        }
        Ok(out)
    }

    /// The encrypted columns' SQL names, in definition order (the order of `seal_many`).
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.table
            .columns()
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    /// The indexes' names, in definition order (the order of `seal_many`).
    #[getter]
    fn index_names(&self) -> Vec<String> {
        self.table
            .indexes()
            .iter()
            .map(|i| i.name.clone())
            .collect()
    }

    /// open(column, row, stored, *, scope=None, row_key=None) -> bytes | None
    ///
    /// Opens a stored value (BYTEA bytes or the TEXT form) of `column` read from row `row`:
    /// canonical bytes, or None for an authenticated NULL. `scope` and `row_key` as for
    /// `seal_row` (with `keys = "row"`, None means the row's key was erased: KeyDestroyed).
    /// Raises DecryptionError if it does not authenticate (tampered, copied from another row,
    /// column, table or scope), KeyDestroyed if the scope was destroyed.
    #[pyo3(signature = (column, row, value, *, scope=None, row_key=None))]
    fn open<'py>(
        &self,
        py: Python<'py>,
        column: &str,
        row: &str,
        value: Data,
        scope: Option<&Bound<'py, PyAny>>,
        row_key: Option<Data>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let ct = stored(&value)?;
        let rk = self.row_key_arg(&row_key)?;
        let (p, cols) = self.columns_in(py, scope)?;
        let out = p
            .run(py, cols.open_plain(column, row, rk, &ct))
            .map_err(errors::columns)?;
        Ok(out.map(|plain| PyBytes::new(py, plain.as_bytes())))
    }

    /// search_eq(index, values, *, scope=None) -> Search
    ///
    /// Search terms for an equality index (values in canonical form, one per indexed
    /// column): bind `Search.terms` to `index_column = ANY(...)`, then confirm candidates.
    /// For a table with a scope template, `scope` is one dict of placeholder values, or a
    /// list of them for a search across the scopes named (one term per scope and version).
    #[pyo3(signature = (index, values, *, scope=None))]
    fn search_eq(
        &self,
        py: Python<'_>,
        index: &str,
        values: Vec<Data>,
        scope: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Search> {
        let ix = self.table.index(index).map_err(errors::columns)?;
        let names: Vec<String> = ix
            .column_names(&self.table)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if names.len() != values.len() {
            return Err(errors::config(format!(
                "index {index:?} covers {} column(s); {} value(s) given",
                names.len(),
                values.len()
            )));
        }
        let plains = names
            .iter()
            .zip(&values)
            .map(|(c, v)| self.plain(c, v.as_bytes()))
            .collect::<PyResult<Vec<_>>>()?;
        let parts = self.scoped(py, scope)?;
        let mut found = Vec::with_capacity(parts.len());
        for (p, cols) in &parts {
            found.push(
                p.run(py, cols.search_eq_plain(index, &plains))
                    .map_err(errors::columns)?,
            );
        }
        let inner = coffer_postgres::Search::merge(found).map_err(errors::columns)?;
        Ok(Search { inner })
    }

    /// search_deterministic(column, value, *, scope=None) -> Search
    ///
    /// Search terms for equality on a deterministic column (value in canonical form): the
    /// value sealed under every live key version of each scope named, to bind to
    /// `column = ANY(...)`. `scope` as for `search_eq`.
    #[pyo3(signature = (column, value, *, scope=None))]
    fn search_deterministic(
        &self,
        py: Python<'_>,
        column: &str,
        value: Data,
        scope: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Search> {
        let t = self
            .table
            .column(column)
            .map_err(errors::columns)?
            .value_type;
        let parts = self.scoped(py, scope)?;
        let mut found = Vec::with_capacity(parts.len());
        for (p, cols) in &parts {
            found.push(
                p.run(
                    py,
                    deterministic(cols, column, t, value.as_bytes().to_vec()),
                )
                .map_err(errors::columns)?,
            );
        }
        let inner = coffer_postgres::Search::merge(found).map_err(errors::columns)?;
        Ok(Search { inner })
    }

    /// search_prefix(index, prefix, *, scope=None) -> Search
    ///
    /// Search terms for `LIKE 'prefix%'` on a prefix index: bind `Search.terms` to
    /// `index_column && ARRAY[...]` (array overlap), then confirm candidates. `scope` as for
    /// `search_eq`.
    #[pyo3(signature = (index, prefix, *, scope=None))]
    fn search_prefix(
        &self,
        py: Python<'_>,
        index: &str,
        prefix: &str,
        scope: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Search> {
        let parts = self.scoped(py, scope)?;
        let mut found = Vec::with_capacity(parts.len());
        for (p, cols) in &parts {
            found.push(
                p.run(py, cols.search_prefix(index, prefix))
                    .map_err(errors::columns)?,
            );
        }
        let inner = coffer_postgres::Search::merge(found).map_err(errors::columns)?;
        Ok(Search { inner })
    }

    /// reencrypt(database_url, *, batch_size=1000, workers=1, max_rows=None) -> dict
    ///
    /// Runs the re-encryption job of `coffer reencrypt` on this table (GIL released): rows
    /// pending (version column NULL or below the active version) are sealed again under the
    /// active version with their blind indexes, in batches locked with FOR UPDATE SKIP
    /// LOCKED, while the application keeps reading and writing.
    #[pyo3(signature = (database_url, *, batch_size=1000, workers=1, max_rows=None))]
    fn reencrypt<'py>(
        &self,
        py: Python<'py>,
        database_url: &str,
        batch_size: u32,
        workers: u16,
        max_rows: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        if batch_size == 0 || workers == 0 {
            return Err(errors::config("batch_size and workers must be at least 1"));
        }
        let (p, cols) = self.columns(py)?;
        let report = py.detach(|| {
            p.block_on(async {
                let pool = PgPoolOptions::new()
                    .max_connections(u32::from(workers) + 2)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(database_url)
                    .await
                    .map_err(coffer_postgres::Error::Db)?;
                let opts = ReencryptOptions {
                    batch_size,
                    max_rows,
                    ..ReencryptOptions::default()
                };
                let job = Reencryptor::new(cols, pool.clone(), opts);
                let r = if workers > 1 {
                    job.run_workers(usize::from(workers), |_| {}).await
                } else {
                    job.run(|_| {}).await
                };
                pool.close().await;
                r
            })
        });
        let r = report.map_err(errors::columns)?;
        // Counted at the end against the active version in the key store: 0 unless max_rows
        // stopped the run.
        let pending = r.remaining;
        let d = PyDict::new(py);
        d.set_item("rows", r.rows)?;
        d.set_item("batches", r.batches)?;
        d.set_item("active_version", r.active.map(|v| v.0))?;
        d.set_item("seconds", r.elapsed.as_secs_f64())?;
        d.set_item("pending", pending)?;
        Ok(d)
    }
}

impl Table {
    /// One handle per scope named (one for a fixed scope).
    fn scoped(
        &self,
        py: Python<'_>,
        scope: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<(crate::runtime::Shared, Columns)>> {
        let list = self.scope_list(scope)?;
        let (p, cols) = self.columns(py)?;
        if list.is_empty() {
            return Ok(vec![(p, cols)]);
        }
        list.iter()
            .map(|values| {
                let refs: Vec<(&str, &str)> = values
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let c = cols.for_scope(&refs).map_err(errors::columns)?;
                Ok((p.clone(), c))
            })
            .collect()
    }

    /// The stored row keys of a batch, checked against the table's kind and the row count.
    fn row_keys_arg<'a>(
        &self,
        row_keys: Option<&'a [Option<Data>]>,
        rows: usize,
    ) -> PyResult<Vec<Option<&'a [u8]>>> {
        let Some(keys) = row_keys else {
            return Ok(Vec::new());
        };
        if self.table.row_key_column().is_none() && keys.iter().any(Option::is_some) {
            return Err(errors::config(format!(
                "table '{}' has no per-row keys (keys = \"row\"): pass no row_keys",
                self.table.name()
            )));
        }
        if keys.len() != rows {
            return Err(errors::config(format!(
                "row_keys: {} keys for {rows} rows (give one per row, None for a new row)",
                keys.len()
            )));
        }
        Ok(keys
            .iter()
            .map(|k| k.as_ref().map(Data::as_bytes))
            .collect())
    }

    fn plains(&self, values: &[(String, Option<Data>)]) -> PyResult<Vec<(String, Option<Plain>)>> {
        values
            .iter()
            .map(|(c, v)| {
                Ok((
                    c.clone(),
                    match v {
                        Some(d) => Some(self.plain(c, d.as_bytes())?),
                        None => None,
                    },
                ))
            })
            .collect()
    }
}

/// Canonical bytes of one value type, for the typed `Columns::search_deterministic`.
macro_rules! canonical {
    ($($name:ident => $t:ident),* $(,)?) => {$(
        struct $name(Vec<u8>);
        impl coffer_postgres::ToPlain for $name {
            const TYPE: ValueType = ValueType::$t;
            fn to_plain(&self) -> Result<Vec<u8>, coffer_postgres::value::ValueError> {
                Ok(self.0.clone())
            }
        }
    )*};
}
canonical!(
    CanonBytes => Bytes, CanonText => Text, CanonInt => Int64, CanonDate => Date,
    CanonTimestamp => Timestamp, CanonJson => Json, CanonBool => Bool, CanonUuid => Uuid,
);

async fn deterministic(
    cols: &Columns,
    column: &str,
    t: ValueType,
    v: Vec<u8>,
) -> coffer_postgres::Result<coffer_postgres::Search> {
    match t {
        ValueType::Bytes => cols.search_deterministic(column, &CanonBytes(v)).await,
        ValueType::Text => cols.search_deterministic(column, &CanonText(v)).await,
        ValueType::Int64 => cols.search_deterministic(column, &CanonInt(v)).await,
        ValueType::Date => cols.search_deterministic(column, &CanonDate(v)).await,
        ValueType::Timestamp => cols.search_deterministic(column, &CanonTimestamp(v)).await,
        ValueType::Json => cols.search_deterministic(column, &CanonJson(v)).await,
        ValueType::Bool => cols.search_deterministic(column, &CanonBool(v)).await,
        ValueType::Uuid => cols.search_deterministic(column, &CanonUuid(v)).await,
        other => Err(coffer_postgres::Error::Schema(format!(
            "column '{column}': deterministic search of {other:?} values is not supported by this build"
        ))),
    }
}

async fn seal_one(
    cols: &Columns,
    row: &str,
    plains: Vec<(String, Option<Plain>)>,
    row_key: Option<Vec<u8>>,
) -> coffer_postgres::Result<SealedRow> {
    let mut sealer = cols.row(row);
    if let Some(k) = &row_key {
        sealer = sealer.with_row_key(k);
    }
    for (c, v) in plains {
        sealer = match v {
            Some(p) => sealer.set_plain(&c, p),
            None => sealer.set_null(&c)?,
        };
    }
    sealer.seal().await
}

#[pymethods]
impl Search {
    /// The terms to bind, one per key version that may still have rows indexed.
    #[getter]
    fn terms<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.inner.terms().iter().map(|t| PyBytes::new(py, t)))
    }

    /// The index searched.
    #[getter]
    fn index(&self) -> &str {
        self.inner.index()
    }

    /// matches(values) -> bool: whether a decrypted candidate really matches (its values in
    /// canonical form, in the index's column order). An index only narrows the rows.
    fn matches(&self, values: Vec<Data>) -> bool {
        let refs: Vec<&[u8]> = values.iter().map(Data::as_bytes).collect();
        self.inner.matches_bytes(&refs)
    }

    fn __repr__(&self) -> String {
        format!(
            "Search(index={:?}, {} terms)",
            self.inner.index(),
            self.inner.terms().len()
        )
    }
}

/// canonical_json(text) -> bytes: the RFC 8785 (JCS) form of a JSON text, as sealed for
/// "json" columns.
#[pyfunction]
pub fn canonical_json<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyBytes>> {
    let b = coffer_postgres::value::canonical_json(text)
        .map_err(|e| errors::config(format!("json value: {}", e.0)))?;
    Ok(PyBytes::new(py, &b))
}

/// canonical_json_of(value) -> bytes | None: the RFC 8785 (JCS) form of a Python value built
/// of dict (str keys), list, tuple, str, int (64-bit), finite float, bool and None — the bytes
/// `canonical_json(json.dumps(value))` gives, without the JSON text in between. None for
/// anything else (the caller then takes the json.dumps path, which also reports errors).
#[pyfunction]
pub fn canonical_json_of<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    use coffer_postgres::value::ToPlain;
    let Some(v) = json_value(value, 0) else {
        return Ok(None);
    };
    let b = v
        .to_plain()
        .map_err(|e| errors::config(format!("json value: {}", e.0)))?;
    Ok(Some(PyBytes::new(py, &b)))
}

/// A Python value as JSON, or None where json.dumps would do something this does not
/// (non-str keys, big ints, NaN, other types, very deep nesting).
fn json_value(v: &Bound<'_, PyAny>, depth: usize) -> Option<serde_json::Value> {
    use pyo3::types::{PyBool, PyFloat, PyInt, PyString};
    use serde_json::Value;
    if depth > 64 {
        return None;
    }
    if v.is_none() {
        return Some(Value::Null);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Some(Value::Bool(b.is_true()));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return s.to_str().ok().map(|s| Value::String(s.to_owned()));
    }
    if v.is_instance_of::<PyInt>() {
        if let Ok(i) = v.extract::<i64>() {
            return Some(Value::from(i));
        }
        return v.extract::<u64>().ok().map(Value::from);
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return serde_json::Number::from_f64(f.value()).map(Value::Number);
    }
    if let Ok(d) = v.cast::<PyDict>() {
        let mut m = serde_json::Map::new();
        for (k, x) in d.iter() {
            let k = k.cast::<PyString>().ok()?.to_str().ok()?.to_owned();
            m.insert(k, json_value(&x, depth + 1)?);
        }
        return Some(Value::Object(m));
    }
    if let Ok(l) = v.cast::<PyList>() {
        return l
            .iter()
            .map(|x| json_value(&x, depth + 1))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array);
    }
    if let Ok(t) = v.cast::<PyTuple>() {
        return t
            .iter()
            .map(|x| json_value(&x, depth + 1))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array);
    }
    None
}

/// The text form of a binary ciphertext (`cf1:` + base64url), as the CLI prints it.
#[pyfunction]
pub fn to_text(ciphertext: &[u8]) -> String {
    text::encode(ciphertext)
}

/// The binary ciphertext of a text form (`cf1:…`).
#[pyfunction]
pub fn from_text<'py>(py: Python<'py>, value: &str) -> PyResult<Bound<'py, PyBytes>> {
    let b = text::decode(value).map_err(errors::core)?;
    Ok(PyBytes::new(py, &b))
}

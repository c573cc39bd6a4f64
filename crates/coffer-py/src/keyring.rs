//! `coffer.Keyring`: the Rust keyring (coffer-keys) for Python. Field encryption, decryption
//! and blind indexes under scoped, versioned keys, single and batch; scope administration.

use std::sync::{Arc, Mutex, PoisonError};

use coffer_core::{FieldContext, KeyVersion, ValueType};
use coffer_keys::BlindIndexSpec;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::args::{self, Components, Data};
use crate::errors;
use crate::open::{self, Source};
use crate::runtime::{Process, Shared};

/// A keyring opened from coffer.toml, the same file, key store, KEKs and two-tier cache as
/// the `coffer` CLI. Opened lazily on first use, and again in a forked child.
#[pyclass(name = "Keyring", module = "coffer._native", frozen)]
pub struct Keyring {
    source: Source,
    process: Mutex<Option<Shared>>,
}

impl Keyring {
    /// The keyring of this process, opened now if needed (GIL released meanwhile).
    pub fn process(&self, py: Python<'_>) -> PyResult<Shared> {
        {
            let g = self.process.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(p) = g.as_ref()
                && p.is_current()
            {
                return Ok(Arc::clone(p));
            }
        }
        let source = self.source.clone();
        py.detach(|| {
            let mut g = self.process.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(p) = g.as_ref()
                && p.is_current()
            {
                return Ok(Arc::clone(p));
            }
            // In a forked child the parent's process state is leaked by its Drop.
            drop(g.take());
            let config = source.load()?;
            let p = Arc::new(Process::start(|| open::keyring(config))?);
            *g = Some(Arc::clone(&p));
            Ok(p)
        })
    }
}

fn bytes<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, b)
}

fn plain_out<'py>(
    py: Python<'py>,
    value_type: ValueType,
    p: Option<Vec<u8>>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match p {
        None => py.None().into_bound(py),
        Some(v) if value_type == ValueType::Text => {
            let s = std::str::from_utf8(&v)
                .map_err(|_| errors::config("a text value that is not UTF-8"))?;
            PyString::new(py, s).into_any()
        }
        Some(v) => bytes(py, &v).into_any(),
    })
}

#[pymethods]
impl Keyring {
    /// Keyring(config=None)
    ///
    /// A keyring configured by `config` (a coffer.toml path; default: the `COFFER_CONFIG`
    /// environment variable, else `coffer.toml` in the working directory). Nothing is read or
    /// connected until the first call that needs keys.
    #[new]
    #[pyo3(signature = (config=None))]
    fn new(config: Option<std::path::PathBuf>) -> Self {
        Keyring {
            source: Source::Path(config),
            process: Mutex::new(None),
        }
    }

    /// A keyring configured by coffer.toml text (KEK sources are references, never keys).
    #[staticmethod]
    fn from_toml(text: String) -> Self {
        Keyring {
            source: Source::Text(text),
            process: Mutex::new(None),
        }
    }

    fn __repr__(&self) -> String {
        let opened = self
            .process
            .lock()
            .map(|g| g.as_ref().is_some_and(|p| p.is_current()))
            .unwrap_or(false);
        format!(
            "Keyring(config={:?}, {})",
            self.source.describe(),
            if opened { "open" } else { "not opened yet" }
        )
    }

    /// Opens the keyring now (connects to the key store, checks the configuration) instead of
    /// on first use. Call it after a fork, in each worker, if you want errors early.
    fn open(&self, py: Python<'_>) -> PyResult<()> {
        self.process(py).map(|_| ())
    }

    /// encrypt(scope, column, plaintext, *, context=None, domain=None, type="bytes", mode="randomized") -> bytes
    ///
    /// Seals `plaintext` (bytes or str; `None` seals an authenticated NULL) for `column`
    /// under the scope's active key version. `context` (a str/bytes or a sequence of them,
    /// e.g. the row's primary key) binds the value to its row; `domain` names a search domain
    /// (deterministic mode). `type` is bound into the ciphertext: a value sealed as "text"
    /// opens only as "text".
    #[pyo3(signature = (scope, column, plaintext, *, context=None, domain=None, r#type="bytes", mode="randomized"))]
    #[allow(clippy::too_many_arguments)]
    fn encrypt<'py>(
        &self,
        py: Python<'py>,
        scope: &str,
        column: &str,
        plaintext: Option<Data>,
        context: Option<Components>,
        domain: Option<Components>,
        r#type: &str,
        mode: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let scope = args::scope(scope)?;
        let column = args::column(column)?;
        let vt = args::value_type(r#type)?;
        let suite = args::suite(mode)?;
        let row = args::parts(&context);
        let dom = args::parts(&domain);
        let ctx = args::context(&row, &dom, vt);
        let p = self.process(py)?;
        let kr = p.keyring();
        let out = match &plaintext {
            Some(v) => p.run(py, kr.encrypt(&scope, &column, suite, &ctx, v.as_bytes())),
            None => p.run(py, kr.encrypt_null(&scope, &column, suite, &ctx)),
        }
        .map_err(errors::keys)?;
        Ok(bytes(py, &out))
    }

    /// decrypt(scope, column, ciphertext, *, context=None, domain=None, type="bytes") -> bytes | str | None
    ///
    /// Opens a value sealed by `encrypt` (any key version the scope still has). Returns str
    /// for type "text", bytes otherwise, None for an authenticated NULL. Raises
    /// DecryptionError if it does not authenticate (tampered, other row/column/scope/type).
    #[pyo3(signature = (scope, column, ciphertext, *, context=None, domain=None, r#type="bytes"))]
    #[allow(clippy::too_many_arguments)]
    fn decrypt<'py>(
        &self,
        py: Python<'py>,
        scope: &str,
        column: &str,
        ciphertext: Data,
        context: Option<Components>,
        domain: Option<Components>,
        r#type: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let scope = args::scope(scope)?;
        let column = args::column(column)?;
        let vt = args::value_type(r#type)?;
        let row = args::parts(&context);
        let dom = args::parts(&domain);
        let ctx = args::context(&row, &dom, vt);
        let p = self.process(py)?;
        let out = p
            .run(
                py,
                p.keyring()
                    .decrypt(&scope, &column, &ctx, ciphertext.as_bytes()),
            )
            .map_err(errors::keys_open)?;
        plain_out(py, vt, out)
    }

    /// encrypt_batch(scope, column, plaintexts, *, contexts=None, domain=None, type="bytes", mode="randomized") -> list[bytes]
    ///
    /// Seals many values of one column, in order, on all cores with the GIL released: one
    /// key lookup and one lease for the batch. `contexts`, if given, has one context per
    /// value (each a str/bytes or a sequence of them).
    #[pyo3(signature = (scope, column, plaintexts, *, contexts=None, domain=None, r#type="bytes", mode="randomized"))]
    #[allow(clippy::too_many_arguments)]
    fn encrypt_batch<'py>(
        &self,
        py: Python<'py>,
        scope: &str,
        column: &str,
        plaintexts: Vec<Data>,
        contexts: Option<Vec<Option<Components>>>,
        domain: Option<Components>,
        r#type: &str,
        mode: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let scope = args::scope(scope)?;
        let column = args::column(column)?;
        let vt = args::value_type(r#type)?;
        let suite = args::suite(mode)?;
        let rows = batch_rows(contexts.as_deref(), plaintexts.len())?;
        let dom = args::parts(&domain);
        let p = self.process(py)?;
        let out = py.detach(|| {
            let items: Vec<(FieldContext<'_>, &[u8])> = plaintexts
                .iter()
                .enumerate()
                .map(|(i, v)| (args::context(row_of(&rows, i), &dom, vt), v.as_bytes()))
                .collect();
            p.install(|| {
                p.block_on(
                    p.keyring()
                        .encrypt_batch_parallel(&scope, &column, suite, &items),
                )
            })
        });
        let (_, sealed) = out.map_err(errors::keys)?;
        PyList::new(py, sealed.iter().map(|c| bytes(py, c)))
    }

    /// decrypt_batch(scope, column, ciphertexts, *, contexts=None, domain=None, type="bytes") -> list
    ///
    /// Opens many values of one column, in order, on all cores with the GIL released. Raises
    /// DecryptionError naming the position of the first value that does not authenticate.
    #[pyo3(signature = (scope, column, ciphertexts, *, contexts=None, domain=None, r#type="bytes"))]
    #[allow(clippy::too_many_arguments)]
    fn decrypt_batch<'py>(
        &self,
        py: Python<'py>,
        scope: &str,
        column: &str,
        ciphertexts: Vec<Data>,
        contexts: Option<Vec<Option<Components>>>,
        domain: Option<Components>,
        r#type: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let scope = args::scope(scope)?;
        let column = args::column(column)?;
        let vt = args::value_type(r#type)?;
        let rows = batch_rows(contexts.as_deref(), ciphertexts.len())?;
        let dom = args::parts(&domain);
        let p = self.process(py)?;
        let out = py.detach(|| {
            let items: Vec<(FieldContext<'_>, &[u8])> = ciphertexts
                .iter()
                .enumerate()
                .map(|(i, v)| (args::context(row_of(&rows, i), &dom, vt), v.as_bytes()))
                .collect();
            p.install(|| p.block_on(p.keyring().decrypt_batch_parallel(&scope, &column, &items)))
        });
        let results = out.map_err(errors::keys_open)?;
        let list = PyList::empty(py);
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(v) => list.append(plain_out(py, vt, v)?)?,
                Err(e) => {
                    let err = errors::keys_open(e);
                    let msg = format!("value {i}: {}", err.value(py));
                    return Err(if err.is_instance_of::<errors::DecryptionError>(py) {
                        errors::DecryptionError::new_err(msg)
                    } else {
                        err
                    });
                }
            }
        }
        Ok(list)
    }

    /// blind_index(scope, column, name, values, *, bits=32, normalize=()) -> bytes
    ///
    /// The blind index `name` of `values` (one value, or several for a compound index) under
    /// the scope's active version: store it beside the ciphertext.
    #[pyo3(signature = (scope, column, name, values, *, bits=32, normalize=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn blind_index<'py>(
        &self,
        py: Python<'py>,
        scope: &str,
        column: &str,
        name: String,
        values: Components,
        bits: u16,
        normalize: Vec<String>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let scope = args::scope(scope)?;
        let spec = index_spec(column, name, bits, &normalize)?;
        let values = Some(values);
        let parts = args::parts(&values);
        let p = self.process(py)?;
        let (_, ix) = p
            .run(py, p.keyring().blind_index(&scope, &spec, &parts))
            .map_err(errors::keys)?;
        Ok(bytes(py, &ix))
    }

    /// blind_index_terms(scope, column, name, values, *, bits=32, normalize=()) -> list[bytes]
    ///
    /// The blind index of `values` under every key version that may still have rows indexed
    /// (active first): search with `index_column = ANY(terms)` while a re-encryption runs.
    #[pyo3(signature = (scope, column, name, values, *, bits=32, normalize=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn blind_index_terms<'py>(
        &self,
        py: Python<'py>,
        scope: &str,
        column: &str,
        name: String,
        values: Components,
        bits: u16,
        normalize: Vec<String>,
    ) -> PyResult<Bound<'py, PyList>> {
        let scope = args::scope(scope)?;
        let spec = index_spec(column, name, bits, &normalize)?;
        let values = Some(values);
        let parts = args::parts(&values);
        let p = self.process(py)?;
        let terms = p
            .run(py, p.keyring().blind_index_terms(&scope, &spec, &parts))
            .map_err(errors::keys)?;
        PyList::new(py, terms.iter().map(|(_, t)| bytes(py, t)))
    }

    /// create_scope(scope) -> int: creates a scope with its first key version (1).
    fn create_scope(&self, py: Python<'_>, scope: &str) -> PyResult<u32> {
        let scope = args::scope(scope)?;
        let p = self.process(py)?;
        let rec = p
            .run(py, p.keyring().create_scope(&scope))
            .map_err(errors::keys)?;
        Ok(rec.version.0)
    }

    /// ensure_scope(scope) -> int: the active version, creating the scope if it is new.
    fn ensure_scope(&self, py: Python<'_>, scope: &str) -> PyResult<u32> {
        let scope = args::scope(scope)?;
        let p = self.process(py)?;
        let v: KeyVersion = p
            .run(py, p.keyring().ensure_scope(&scope))
            .map_err(errors::keys)?;
        Ok(v.0)
    }

    /// rotate(scope) -> int: a new active key version; the old one becomes decrypt-only.
    fn rotate(&self, py: Python<'_>, scope: &str) -> PyResult<u32> {
        let scope = args::scope(scope)?;
        let p = self.process(py)?;
        let rec = p
            .run(py, p.keyring().rotate(&scope))
            .map_err(errors::keys)?;
        Ok(rec.version.0)
    }

    /// destroy(scope) -> int: crypto-shreds every key version of the scope (final, audited).
    /// Returns the number of versions destroyed.
    fn destroy(&self, py: Python<'_>, scope: &str) -> PyResult<u32> {
        let scope = args::scope(scope)?;
        let p = self.process(py)?;
        p.run(py, p.keyring().destroy(&scope)).map_err(errors::keys)
    }

    /// active_version(scope) -> int: the version new values are sealed under.
    fn active_version(&self, py: Python<'_>, scope: &str) -> PyResult<u32> {
        let scope = args::scope(scope)?;
        let p = self.process(py)?;
        let v = p
            .run(py, p.keyring().active_version(&scope))
            .map_err(errors::keys)?;
        Ok(v.0)
    }

    /// clear_cache(): drops this process's cached keys (L1); other processes keep theirs.
    fn clear_cache(&self, py: Python<'_>) -> PyResult<()> {
        self.process(py)?.keyring().clear_l1();
        Ok(())
    }

    /// stats() -> dict: cache hits and misses, KEK unwraps (the counts of docs/KEYS.md §3).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.process(py)?.keyring().stats();
        let d = PyDict::new(py);
        d.set_item("l1_hits", s.l1_hits)?;
        d.set_item("l1_misses", s.l1_misses)?;
        d.set_item("l2_hits", s.l2_hits)?;
        d.set_item("l2_misses", s.l2_misses)?;
        d.set_item("kek_unwraps", s.kek_unwraps)?;
        Ok(d)
    }
}

fn index_spec(
    column: &str,
    name: String,
    bits: u16,
    normalize: &[String],
) -> PyResult<BlindIndexSpec> {
    Ok(BlindIndexSpec {
        column: args::column(column)?,
        name,
        bits,
        normalizers: args::normalizers(normalize)?,
    })
}

fn batch_rows(contexts: Option<&[Option<Components>]>, n: usize) -> PyResult<Vec<Vec<&[u8]>>> {
    match contexts {
        None => Ok(Vec::new()),
        Some(c) if c.len() == n => Ok(c.iter().map(args::parts).collect()),
        Some(c) => Err(errors::config(format!(
            "contexts has {} entries for {n} values; give one per value",
            c.len()
        ))),
    }
}

fn row_of<'a>(rows: &'a [Vec<&'a [u8]>], i: usize) -> &'a [&'a [u8]] {
    rows.get(i).map(Vec::as_slice).unwrap_or(&[])
}

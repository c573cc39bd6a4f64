//! `coffer.Keyring`: the Rust keyring (coffer-keys) for Python. Field encryption, decryption
//! and blind indexes under scoped, versioned keys, single and batch; scope administration.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use coffer_core::{
    ColumnId, FieldContext, FieldKey, Header, KeyVersion, Packed, ScopeId, Suite, ValueType,
};
use coffer_keys::{BlindIndexSpec, LeasedFieldKey};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::args::{self, Components, Data, Gathered};
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
    match p {
        None => Ok(py.None().into_bound(py)),
        Some(v) => plain_slice(py, value_type, &v),
    }
}

/// A plaintext as Python gets it: `str` for text, else `bytes` (typed values are decoded by
/// `coffer.values`).
fn plain_slice<'py>(
    py: Python<'py>,
    value_type: ValueType,
    v: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    if value_type == ValueType::Text {
        let s =
            std::str::from_utf8(v).map_err(|_| errors::config("a text value that is not UTF-8"))?;
        Ok(PyString::new(py, s).into_any())
    } else {
        Ok(bytes(py, v).into_any())
    }
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
        let (vt, suite) = (args::value_type(r#type)?, args::suite(mode)?);
        let p = self.process(py)?;
        encrypt_one(
            py, &p, &scope, &column, vt, suite, plaintext, context, domain,
        )
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
        let p = self.process(py)?;
        decrypt_one(py, &p, &scope, &column, vt, ciphertext, context, domain)
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
        plaintexts: &Bound<'py, PyAny>,
        contexts: Option<&Bound<'py, PyAny>>,
        domain: Option<Components>,
        r#type: &str,
        mode: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let scope = args::scope(scope)?;
        let column = args::column(column)?;
        let (vt, suite) = (args::value_type(r#type)?, args::suite(mode)?);
        let p = self.process(py)?;
        encrypt_many(
            py, &p, &scope, &column, vt, suite, plaintexts, contexts, domain,
        )
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
        ciphertexts: &Bound<'py, PyAny>,
        contexts: Option<&Bound<'py, PyAny>>,
        domain: Option<Components>,
        r#type: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let scope = args::scope(scope)?;
        let column = args::column(column)?;
        let vt = args::value_type(r#type)?;
        let p = self.process(py)?;
        decrypt_many(py, &p, &scope, &column, vt, ciphertexts, contexts, domain)
    }

    /// column(scope, column, *, type="bytes", mode="randomized") -> Column
    ///
    /// A handle on one column of one scope, its arguments checked once: the fastest way to
    /// encrypt and decrypt many single values (as an AESGCM object holds its key).
    #[pyo3(signature = (scope, column, *, r#type="bytes", mode="randomized"))]
    fn column(
        slf: Py<Self>,
        scope: &str,
        column: &str,
        r#type: &str,
        mode: &str,
    ) -> PyResult<Column> {
        Ok(Column {
            keyring: slf,
            scope: args::scope(scope)?,
            column: args::column(column)?,
            value_type: args::value_type(r#type)?,
            suite: args::suite(mode)?,
            write: Mutex::new(None),
            read: Mutex::new(Vec::new()),
        })
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

/// Encryptions a `Column` leases at once for its single-value path.
const COLUMN_LEASE: u64 = 1024;

/// One column of one scope, bound to a keyring (`Keyring.column`).
///
/// Its single-value calls keep the column key of the active version (with a lease of
/// [`COLUMN_LEASE`] encryptions) and the keys of versions it opened, each until the keyring's
/// generation changes (rotation, destroy, invalidation from another process…) or the cache
/// lifetimes of coffer.toml pass: the rules of the keyring's own write path, without a cache
/// lookup per value.
#[pyclass(name = "Column", module = "coffer._native", frozen)]
pub struct Column {
    keyring: Py<Keyring>,
    scope: ScopeId,
    column: ColumnId,
    value_type: ValueType,
    suite: Suite,
    write: Mutex<Option<(Shared, Arc<LeasedFieldKey>)>>,
    read: Mutex<Vec<(KeyVersion, Suite, Held)>>,
}

/// A column key kept by a `Column`, with the process state it came from.
struct Held {
    process: Shared,
    generation: u64,
    until: Instant,
    key: Arc<FieldKey>,
}

impl Held {
    fn valid(&self) -> bool {
        self.process.is_current()
            && self.generation == self.process.keyring().generation()
            && Instant::now() < self.until
    }
}

impl Column {
    /// The column key of the active version with encryptions leased for it: the one held while
    /// it is current (same process, same keyring generation, `active_ttl` not passed, lease not
    /// used up), else a new lease of [`COLUMN_LEASE`]. The key itself refuses to seal past it.
    fn write_key(&self, py: Python<'_>) -> PyResult<Arc<LeasedFieldKey>> {
        {
            let g = self.write.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((process, key)) = g.as_ref()
                && process.is_current()
                && key.is_current(process.keyring())
            {
                return Ok(Arc::clone(key));
            }
        }
        let p = self.keyring.get().process(py)?;
        let kr = p.keyring();
        let key = Arc::new(
            p.run(
                py,
                kr.leased_field_key(&self.scope, &self.column, self.suite, COLUMN_LEASE),
            )
            .map_err(errors::keys)?,
        );
        *self.write.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Arc::clone(&p), Arc::clone(&key)));
        Ok(key)
    }

    fn read_key(&self, py: Python<'_>, ct: &[u8]) -> PyResult<Arc<FieldKey>> {
        let (h, _) = Header::parse(ct).map_err(|_| errors::core(coffer_core::Error::Decrypt))?;
        {
            let g = self.read.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, _, held)) = g
                .iter()
                .find(|(v, s, held)| *v == h.version && *s == h.suite && held.valid())
            {
                return Ok(Arc::clone(&held.key));
            }
        }
        let p = self.keyring.get().process(py)?;
        let kr = p.keyring();
        let generation = kr.generation();
        let key = p
            .run(
                py,
                kr.field_key_at(&self.scope, &self.column, h.version, h.suite),
            )
            .map_err(errors::keys_open)?;
        let mut g = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        g.retain(|(_, _, held)| held.valid());
        g.push((
            h.version,
            h.suite,
            Held {
                until: Instant::now() + kr.config().l1_ttl,
                process: Arc::clone(&p),
                generation,
                key: Arc::clone(&key),
            },
        ));
        Ok(key)
    }
}

#[pymethods]
impl Column {
    /// encrypt(plaintext, *, context=None, domain=None) -> bytes: as `Keyring.encrypt`.
    #[pyo3(signature = (plaintext, *, context=None, domain=None))]
    fn encrypt<'py>(
        &self,
        py: Python<'py>,
        plaintext: Option<Data>,
        context: Option<Components>,
        domain: Option<Components>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let key = self.write_key(py)?;
        let row = args::parts(&context);
        let dom = args::parts(&domain);
        let ctx = args::context(&row, &dom, self.value_type);
        let out = match &plaintext {
            Some(v) => key.encrypt(&ctx, v.as_bytes()),
            None => key.encrypt_null(&ctx),
        }
        .map_err(errors::keys)?;
        Ok(bytes(py, &out))
    }

    /// decrypt(ciphertext, *, context=None, domain=None): as `Keyring.decrypt`.
    #[pyo3(signature = (ciphertext, *, context=None, domain=None))]
    fn decrypt<'py>(
        &self,
        py: Python<'py>,
        ciphertext: Data,
        context: Option<Components>,
        domain: Option<Components>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = self.read_key(py, ciphertext.as_bytes())?;
        let row = args::parts(&context);
        let dom = args::parts(&domain);
        let ctx = args::context(&row, &dom, self.value_type);
        let out = key
            .decrypt(&ctx, ciphertext.as_bytes())
            .map_err(|e| errors::keys_open(e.into()))?;
        plain_out(py, self.value_type, out)
    }

    /// encrypt_batch(plaintexts, *, contexts=None, domain=None) -> list[bytes]
    #[pyo3(signature = (plaintexts, *, contexts=None, domain=None))]
    fn encrypt_batch<'py>(
        &self,
        py: Python<'py>,
        plaintexts: &Bound<'py, PyAny>,
        contexts: Option<&Bound<'py, PyAny>>,
        domain: Option<Components>,
    ) -> PyResult<Bound<'py, PyList>> {
        let p = self.keyring.get().process(py)?;
        encrypt_many(
            py,
            &p,
            &self.scope,
            &self.column,
            self.value_type,
            self.suite,
            plaintexts,
            contexts,
            domain,
        )
    }

    /// decrypt_batch(ciphertexts, *, contexts=None, domain=None) -> list
    #[pyo3(signature = (ciphertexts, *, contexts=None, domain=None))]
    fn decrypt_batch<'py>(
        &self,
        py: Python<'py>,
        ciphertexts: &Bound<'py, PyAny>,
        contexts: Option<&Bound<'py, PyAny>>,
        domain: Option<Components>,
    ) -> PyResult<Bound<'py, PyList>> {
        let p = self.keyring.get().process(py)?;
        decrypt_many(
            py,
            &p,
            &self.scope,
            &self.column,
            self.value_type,
            ciphertexts,
            contexts,
            domain,
        )
    }

    fn __repr__(&self) -> String {
        format!(
            "Column(scope={:?}, column={:?}, suite={})",
            self.scope.as_str(),
            self.column.as_str(),
            self.suite.name()
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn encrypt_one<'py>(
    py: Python<'py>,
    p: &Process,
    scope: &ScopeId,
    column: &ColumnId,
    vt: ValueType,
    suite: Suite,
    plaintext: Option<Data>,
    context: Option<Components>,
    domain: Option<Components>,
) -> PyResult<Bound<'py, PyBytes>> {
    let row = args::parts(&context);
    let dom = args::parts(&domain);
    let ctx = args::context(&row, &dom, vt);
    let kr = p.keyring();
    let out = match &plaintext {
        Some(v) => p.run(py, kr.encrypt(scope, column, suite, &ctx, v.as_bytes())),
        None => p.run(py, kr.encrypt_null(scope, column, suite, &ctx)),
    }
    .map_err(errors::keys)?;
    Ok(bytes(py, &out))
}

#[allow(clippy::too_many_arguments)]
fn decrypt_one<'py>(
    py: Python<'py>,
    p: &Process,
    scope: &ScopeId,
    column: &ColumnId,
    vt: ValueType,
    ciphertext: Data,
    context: Option<Components>,
    domain: Option<Components>,
) -> PyResult<Bound<'py, PyAny>> {
    let row = args::parts(&context);
    let dom = args::parts(&domain);
    let ctx = args::context(&row, &dom, vt);
    let out = p
        .run(
            py,
            p.keyring()
                .decrypt(scope, column, &ctx, ciphertext.as_bytes()),
        )
        .map_err(errors::keys_open)?;
    plain_out(py, vt, out)
}

/// Values per work unit of a batch. The calling thread gathers the inputs of one unit (under
/// the GIL) and hands it to the pool, then the next; it then turns the finished units into
/// Python objects in order, releasing the GIL whenever it waits. Gathering, sealing and
/// building the results so overlap, instead of running one after the other.
const UNIT: usize = 1024;

#[allow(clippy::too_many_arguments)]
fn encrypt_many<'py>(
    py: Python<'py>,
    p: &Process,
    scope: &ScopeId,
    column: &ColumnId,
    vt: ValueType,
    suite: Suite,
    plaintexts: &Bound<'py, PyAny>,
    contexts: Option<&Bound<'py, PyAny>>,
    domain: Option<Components>,
) -> PyResult<Bound<'py, PyList>> {
    let values = args::as_list(plaintexts, "plaintexts")?;
    let rows = args::contexts_list(contexts, values.len())?;
    let dom = args::parts(&domain);
    let n = values.len();
    let kr = p.keyring();
    let key = Arc::new(
        p.run(py, kr.leased_field_key(scope, column, suite, n as u64))
            .map_err(errors::keys)?,
    );
    let out = PyList::empty(py);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, coffer_keys::Result<Packed>)>();
    let dom = &dom;
    p.in_place_scope(|s| -> PyResult<()> {
        let units = n.div_ceil(UNIT);
        let mut failed = None;
        for u in 0..units {
            let (v, r) = match unit_inputs(&values, rows.as_ref(), u, n, "plaintexts") {
                Ok(x) => x,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            let (tx, key) = (tx.clone(), Arc::clone(&key));
            s.spawn(move |_| {
                let pairs = r.items(&v, dom, vt);
                let _ = tx.send((u, key.encrypt_packed(&pairs.pairs())));
            });
        }
        drop(tx);
        if let Some(e) = failed {
            return Err(e);
        }
        in_order(py, rx, units, |packed: coffer_keys::Result<Packed>| {
            for c in packed.map_err(errors::keys)?.iter() {
                out.append(bytes(py, c))?;
            }
            Ok(())
        })
    })?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn decrypt_many<'py>(
    py: Python<'py>,
    p: &Process,
    scope: &ScopeId,
    column: &ColumnId,
    vt: ValueType,
    ciphertexts: &Bound<'py, PyAny>,
    contexts: Option<&Bound<'py, PyAny>>,
    domain: Option<Components>,
) -> PyResult<Bound<'py, PyList>> {
    let values = args::as_list(ciphertexts, "ciphertexts")?;
    let rows = args::contexts_list(contexts, values.len())?;
    let dom = args::parts(&domain);
    let n = values.len();
    let kr = p.keyring();
    let out = PyList::empty(py);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Opened)>();
    let dom = &dom;
    // The key of every version the headers name, resolved as they are first seen: an unknown
    // or destroyed version fails the whole call with that error.
    let mut keys: Keys = Vec::new();
    p.in_place_scope(|s| -> PyResult<()> {
        let units = n.div_ceil(UNIT);
        let mut failed = None;
        for u in 0..units {
            let (v, r) = match unit_inputs(&values, rows.as_ref(), u, n, "ciphertexts") {
                Ok(x) => x,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            for ct in v.iter() {
                if let Ok((h, _)) = Header::parse(ct)
                    && !keys.iter().any(|(k, _)| *k == (h.version, h.suite))
                {
                    match p.run(py, kr.field_key_at(scope, column, h.version, h.suite)) {
                        Ok(key) => keys.push(((h.version, h.suite), key)),
                        Err(e) => {
                            failed = Some(errors::keys_open(e));
                            break;
                        }
                    }
                }
            }
            if failed.is_some() {
                break;
            }
            let (tx, keys) = (tx.clone(), keys.clone());
            s.spawn(move |_| {
                let pairs = r.items(&v, dom, vt);
                let _ = tx.send((u, open_packed(&keys, &pairs.pairs())));
            });
        }
        drop(tx);
        if let Some(e) = failed {
            return Err(e);
        }
        let mut i = 0usize;
        in_order(py, rx, units, |unit: Opened| {
            let mut start = 0usize;
            for o in &unit.items {
                match *o {
                    Outcome::Value(end) => {
                        out.append(plain_slice(py, vt, &unit.bytes[start..end])?)?;
                        start = end;
                    }
                    Outcome::Null => out.append(py.None())?,
                    Outcome::Failed => {
                        return Err(errors::DecryptionError::new_err(format!(
                            "value {i}: {}",
                            coffer_core::Error::Decrypt
                        )));
                    }
                }
                i += 1;
            }
            Ok(())
        })
    })?;
    Ok(out)
}

/// The values and contexts of work unit `u` of a batch of `n`, copied out under the GIL.
fn unit_inputs(
    values: &Bound<'_, PyList>,
    rows: Option<&Bound<'_, PyList>>,
    u: usize,
    n: usize,
    what: &str,
) -> PyResult<(Gathered, Gathered)> {
    let range = u * UNIT..n.min((u + 1) * UNIT);
    Ok((
        Gathered::values(values, range.clone(), what)?,
        Gathered::rows(rows, range)?,
    ))
}

/// The column keys of a batch decryption, by (version, suite).
type Keys = Vec<((KeyVersion, Suite), Arc<FieldKey>)>;

/// Receives the `units` results of a batch's jobs (sent as `(unit, result)` in any order) and
/// hands them to `each` in unit order. The GIL is released while it waits.
fn in_order<T: Send>(
    py: Python<'_>,
    mut rx: std::sync::mpsc::Receiver<(usize, T)>,
    units: usize,
    mut each: impl FnMut(T) -> PyResult<()>,
) -> PyResult<()> {
    let mut ready: Vec<Option<T>> = (0..units).map(|_| None).collect();
    for next in 0..units {
        while ready[next].is_none() {
            // The receiver moves into the GIL-free wait and back (it is Send, not Sync).
            let (got, r) = py.detach(move || (rx.recv(), rx));
            rx = r;
            let (u, v) =
                got.map_err(|_| errors::CofferError::new_err("a batch worker stopped early"))?;
            ready[u] = Some(v);
        }
        if let Some(v) = ready[next].take() {
            each(v)?;
        }
    }
    Ok(())
}

/// One work unit of a batch decryption: the plaintexts end to end (wiped on drop) and each
/// value's outcome in order.
struct Opened {
    bytes: zeroize::Zeroizing<Vec<u8>>,
    items: Vec<Outcome>,
}

enum Outcome {
    /// A value ending at this offset of the unit's bytes.
    Value(usize),
    /// An authenticated NULL.
    Null,
    /// Did not authenticate (or names a key not in the set).
    Failed,
}

/// Opens one unit of a batch into one buffer.
fn open_packed(keys: &Keys, items: &[(FieldContext<'_>, &[u8])]) -> Opened {
    let size = items.iter().map(|(_, ct)| ct.len()).sum::<usize>();
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(size));
    let mut outcomes = Vec::with_capacity(items.len());
    for (ctx, ct) in items {
        let key = Header::parse(ct).ok().and_then(|(h, _)| {
            keys.iter()
                .find(|(k, _)| *k == (h.version, h.suite))
                .map(|(_, key)| key)
        });
        outcomes.push(match key.map(|k| k.decrypt_append(ctx, ct, &mut bytes)) {
            Some(Ok(true)) => Outcome::Value(bytes.len()),
            Some(Ok(false)) => Outcome::Null,
            Some(Err(_)) | None => Outcome::Failed,
        });
    }
    Opened {
        bytes,
        items: outcomes,
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

//! File encryption and decryption as Python file-like objects, in the message format of
//! `coffer file` (the AWS Encryption SDK's, docs/FORMAT.md §10; coffer-core's `stream`).
//!
//! `EncryptingWriter(target, ...)` is a writable stream: bytes written to it are sealed frame
//! by frame into `target` (any object with `write`), and `close()` writes the final frame.
//! `DecryptingReader(source, ...)` is a readable stream over `source` (any object with
//! `read`); a frame is released only once it has authenticated, and a truncated or altered
//! message raises `DecryptionError`. Keys: a key-store scope (`keyring` + `scope`, as
//! `coffer file --scope`) or a KEK reference (`kek="env:VAR"`, `"file:PATH"` or any provider's
//! reference this build has, as `--kek`).

use std::io::{self, Read, Write};
use std::sync::{Mutex, MutexGuard, TryLockError};

use coffer_core::Dek;
use coffer_core::stream::{Decryptor, EncryptionContext, Encryptor, Limits, MessageHeader};
use coffer_keys::files::{self, FileKeyring};
use pyo3::exceptions::{PyIOError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors;
use crate::keyring::Keyring;

/// The authenticated context entry `coffer file encrypt --compress` sets.
const COMPRESSION: &str = "coffer:compression";

/// A Python object with `write(bytes)`, as a Rust writer (the GIL is held: calls come from
/// Python).
struct PyWriter(Py<PyAny>);

impl Write for PyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Python::attach(|py| {
            let n = self
                .0
                .call_method1(py, "write", (PyBytes::new(py, buf),))
                .map_err(io::Error::other)?;
            // Raw streams may write less; `None` means "all" for buffered ones.
            Ok(n.extract::<Option<usize>>(py)
                .ok()
                .flatten()
                .unwrap_or(buf.len()))
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Python::attach(|py| {
            if self.0.bind(py).hasattr("flush").unwrap_or(false) {
                self.0.call_method0(py, "flush").map_err(io::Error::other)?;
            }
            Ok(())
        })
    }
}

/// A Python object with `read(n)`, as a Rust reader.
struct PyReader(Py<PyAny>);

impl Read for PyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Python::attach(|py| {
            let got = self
                .0
                .call_method1(py, "read", (buf.len(),))
                .map_err(io::Error::other)?;
            let b = got
                .bind(py)
                .cast::<PyBytes>()
                .map_err(|_| io::Error::other("read() of the source must return bytes"))?
                .as_bytes();
            let n = b.len().min(buf.len());
            buf[..n].copy_from_slice(&b[..n]);
            Ok(n)
        })
    }
}

/// A stream error as a Python exception: authentication failures are `DecryptionError`.
fn stream_err(e: io::Error) -> PyErr {
    if let Some(core) = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<coffer_core::Error>())
    {
        return errors::core(core.clone());
    }
    if let Some(py) = e.get_ref().and_then(|i| i.downcast_ref::<PyErr>()) {
        return Python::attach(|p| py.clone_ref(p));
    }
    match e.kind() {
        io::ErrorKind::InvalidData
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::PermissionDenied => {
            errors::DecryptionError::new_err(format!("decryption failed: {e}"))
        }
        _ => PyIOError::new_err(e.to_string()),
    }
}

/// Seals a fresh data key for `ctx` with the KEK a reference names (any source this build has).
fn seal_with_kek(
    reference: &str,
    key_name: &str,
    ctx: &EncryptionContext,
) -> PyResult<(Dek, Vec<coffer_core::stream::EncryptedDataKey>)> {
    tiny_runtime()?.block_on(async {
        let fk = coffer_assembly::Registry::global()
            .file_keyring(reference, Some(key_name))
            .await
            .map_err(crate::open::assembly_err)?;
        let rings: [&dyn FileKeyring; 1] = [fk.as_ref()];
        files::seal(&rings, ctx).await.map_err(errors::keys)
    })
}

/// Opens a message's data key with the KEK a reference names (any key name in the header).
fn open_with_kek(reference: &str, header: &MessageHeader) -> PyResult<Dek> {
    tiny_runtime()?.block_on(async {
        let fk = coffer_assembly::Registry::global()
            .file_keyring(reference, None)
            .await
            .map_err(crate::open::assembly_err)?;
        let rings: [&dyn FileKeyring; 1] = [fk.as_ref()];
        files::open(header, &rings).await.map_err(open_err)
    })
}

fn tiny_runtime() -> PyResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| errors::config(format!("cannot start a runtime: {e}")))
}

/// Which key a stream uses.
fn key_choice<'a>(
    keyring: &'a Option<Py<Keyring>>,
    scope: &'a Option<String>,
    kek: &'a Option<String>,
) -> PyResult<()> {
    match (keyring.is_some() && scope.is_some(), kek.is_some()) {
        (true, false) | (false, true) => Ok(()),
        _ => Err(errors::config(
            "give either keyring= and scope= (a key-store scope) or kek= (a key reference)",
        )),
    }
}

/// One stream is used by one thread at a time: a second thread that calls it while the first
/// is inside (its file object may release the GIL) gets an error instead of a deadlock.
fn lock<T>(m: &Mutex<T>) -> PyResult<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err(PyValueError::new_err(
            "this stream is in use by another thread; streams are not thread-safe",
        )),
    }
}

/// A writable stream that encrypts into `target`.
#[pyclass(name = "EncryptingWriter", module = "coffer._native", frozen)]
pub struct EncryptingWriter {
    enc: Mutex<Option<Encryptor<PyWriter>>>,
}

#[pymethods]
impl EncryptingWriter {
    /// EncryptingWriter(target, *, keyring=None, scope=None, kek=None, key_name="default/v1", context=None, frame_size=65536)
    ///
    /// `context` is authenticated metadata stored in clear (str to str; no secrets or
    /// personal data). Use it as a context manager, or call `close()`: the message is
    /// complete only then.
    #[new]
    #[pyo3(signature = (target, *, keyring=None, scope=None, kek=None, key_name="default/v1", context=None, frame_size=65536))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        target: Py<PyAny>,
        keyring: Option<Py<Keyring>>,
        scope: Option<String>,
        kek: Option<String>,
        key_name: &str,
        context: Option<Vec<(String, String)>>,
        frame_size: u32,
    ) -> PyResult<Self> {
        key_choice(&keyring, &scope, &kek)?;
        let ctx =
            EncryptionContext::user_context(context.unwrap_or_default()).map_err(errors::core)?;
        let (data_key, edks) = match (&keyring, &scope, &kek) {
            (Some(k), Some(s), _) => {
                let p = k.get().process(py)?;
                let scope = crate::args::scope(s)?;
                p.run(py, async {
                    let fk = p.keyring().scope_file_keyring(&scope).await?;
                    let rings: [&dyn FileKeyring; 1] = [&fk];
                    files::seal(&rings, &ctx).await
                })
                .map_err(errors::keys)?
            }
            (_, _, Some(r)) => seal_with_kek(r, key_name, &ctx)?,
            _ => return Err(errors::config("no key given")),
        };
        let enc = Encryptor::with_data_key(PyWriter(target), &data_key, edks, &ctx, frame_size)
            .map_err(stream_err)?;
        drop(data_key);
        Ok(EncryptingWriter {
            enc: Mutex::new(Some(enc)),
        })
    }

    /// write(data) -> int: seals `data` (whole frames go out as they fill).
    fn write(&self, data: &[u8]) -> PyResult<usize> {
        let mut g = lock(&self.enc)?;
        let enc = g
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("write to a closed EncryptingWriter"))?;
        enc.write_all(data).map_err(stream_err)?;
        Ok(data.len())
    }

    /// close(): writes the final frame. Without it the message is incomplete (and refused).
    fn close(&self) -> PyResult<()> {
        let taken = lock(&self.enc)?.take();
        if let Some(enc) = taken {
            let mut w = enc.finish().map_err(stream_err)?;
            w.flush().map_err(stream_err)?;
        }
        Ok(())
    }

    /// Whether `close()` has run.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.enc).map(|g| g.is_none()).unwrap_or(false)
    }

    fn writable(&self) -> bool {
        true
    }

    fn readable(&self) -> bool {
        false
    }

    fn flush(&self) -> PyResult<()> {
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes on a normal exit; on an exception the message is left incomplete on purpose.
    fn __exit__(
        &self,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if exc_type.is_none() {
            self.close()?;
        } else {
            lock(&self.enc)?.take();
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "EncryptingWriter({})",
            if self.closed() { "closed" } else { "open" }
        )
    }
}

/// A readable stream that decrypts `source`.
#[pyclass(name = "DecryptingReader", module = "coffer._native", frozen)]
pub struct DecryptingReader {
    dec: Mutex<Option<Decryptor<PyReader>>>,
}

#[pymethods]
impl DecryptingReader {
    /// DecryptingReader(source, *, keyring=None, scope=None, kek=None)
    ///
    /// Reads the message header from `source` and opens its data key: with the scope's keys
    /// (`keyring` + `scope`) or with `kek` (any key name in the header).
    #[new]
    #[pyo3(signature = (source, *, keyring=None, scope=None, kek=None))]
    fn new(
        py: Python<'_>,
        source: Py<PyAny>,
        keyring: Option<Py<Keyring>>,
        scope: Option<String>,
        kek: Option<String>,
    ) -> PyResult<Self> {
        key_choice(&keyring, &scope, &kek)?;
        let mut src = PyReader(source);
        let header = MessageHeader::read_from(&mut src, &Limits::default()).map_err(stream_err)?;
        if let Some(c) = header.context.get(COMPRESSION) {
            return Err(errors::config(format!(
                "this message was compressed with {c:?} before encryption; decrypt it with \
                 `coffer file decrypt`"
            )));
        }
        let data_key: Dek = match (&keyring, &scope, &kek) {
            (Some(k), Some(s), _) => {
                let p = k.get().process(py)?;
                let scope = crate::args::scope(s)?;
                p.run(py, p.keyring().open_scope_file(&scope, &header))
                    .map_err(open_err)?
            }
            (_, _, Some(r)) => open_with_kek(r, &header)?,
            _ => return Err(errors::config("no key given")),
        };
        let dec = Decryptor::with_data_key(src, header, &data_key).map_err(stream_err)?;
        drop(data_key);
        Ok(DecryptingReader {
            dec: Mutex::new(Some(dec)),
        })
    }

    /// read(size=-1) -> bytes: up to `size` authenticated bytes (all that is left for -1);
    /// b"" at the end of a complete message.
    #[pyo3(signature = (size=-1))]
    fn read<'py>(&self, py: Python<'py>, size: isize) -> PyResult<Bound<'py, PyBytes>> {
        let mut g = lock(&self.dec)?;
        let dec = g
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("read from a closed DecryptingReader"))?;
        let mut out = Vec::new();
        if size < 0 {
            dec.read_to_end(&mut out).map_err(stream_err)?;
        } else {
            out.resize(size.unsigned_abs(), 0);
            let mut filled = 0;
            while filled < out.len() {
                let n = dec.read(&mut out[filled..]).map_err(stream_err)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            out.truncate(filled);
        }
        Ok(PyBytes::new(py, &out))
    }

    /// The authenticated context of the message (str to str).
    fn context(&self) -> PyResult<Vec<(String, String)>> {
        Ok(lock(&self.dec)?
            .as_ref()
            .map(|d| {
                d.context()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn close(&self) -> PyResult<()> {
        lock(&self.dec)?.take();
        Ok(())
    }

    #[getter]
    fn closed(&self) -> bool {
        lock(&self.dec).map(|g| g.is_none()).unwrap_or(false)
    }

    fn readable(&self) -> bool {
        true
    }

    fn writable(&self) -> bool {
        false
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "DecryptingReader({})",
            if self.closed() { "closed" } else { "open" }
        )
    }
}

fn open_err(e: coffer_keys::Error) -> PyErr {
    match e {
        coffer_keys::Error::WrongKek { .. } => errors::DecryptionError::new_err(e.to_string()),
        other => errors::keys(other),
    }
}

/// Registers the stream classes.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<EncryptingWriter>()?;
    m.add_class::<DecryptingReader>()?;
    Ok(())
}

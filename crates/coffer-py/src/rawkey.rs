//! `coffer.FieldKey`: a column key from a raw key reference, as `coffer field encrypt --key`
//! uses (no key store): for values exchanged with the CLI and for tests.

use coffer_core::{Dek, KeyVersion};
use coffer_keys::SecretRef;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::args::{self, Components, Data};
use crate::errors;

/// A column key derived from a key reference (`env:VAR`, `file:PATH`), the scope, the column
/// and the version written into headers: byte-compatible with `coffer field encrypt/decrypt`
/// given the same options.
#[pyclass(name = "FieldKey", module = "coffer._native", frozen)]
pub struct FieldKey {
    key: coffer_core::FieldKey,
    reference: String,
}

#[pymethods]
impl FieldKey {
    /// FieldKey(key, *, scope="default", column="default", version=1, mode="randomized")
    ///
    /// `key` is a reference (`env:VAR` or `file:PATH` holding a base64 256-bit key, as
    /// `coffer keygen` prints), never the key itself.
    #[new]
    #[pyo3(signature = (key, *, scope="default", column="default", version=1, mode="randomized"))]
    fn new(key: &str, scope: &str, column: &str, version: u32, mode: &str) -> PyResult<Self> {
        let suite = args::suite(mode)?;
        let scope = args::scope(scope)?;
        let column = args::column(column)?;
        let secret = SecretRef::parse(key)
            .and_then(|r| r.load_key())
            .map_err(errors::keys)?;
        let dek = Dek::from_bytes(*secret);
        let key_ = coffer_core::FieldKey::new(&dek, KeyVersion(version), suite, &scope, &column)
            .map_err(errors::core)?;
        Ok(FieldKey {
            key: key_,
            reference: key.to_owned(),
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "FieldKey(key={:?}, scope={:?}, column={:?}, version={}, suite={})",
            self.reference,
            self.key.scope().as_str(),
            self.key.column().as_str(),
            self.key.version().0,
            self.key.suite().name()
        )
    }

    /// encrypt(plaintext, *, context=None, domain=None, type="bytes") -> bytes
    #[pyo3(signature = (plaintext, *, context=None, domain=None, r#type="bytes"))]
    fn encrypt<'py>(
        &self,
        py: Python<'py>,
        plaintext: Option<Data>,
        context: Option<Components>,
        domain: Option<Components>,
        r#type: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let vt = args::value_type(r#type)?;
        let row = args::parts(&context);
        let dom = args::parts(&domain);
        let ctx = args::context(&row, &dom, vt);
        let out = match &plaintext {
            Some(v) => self.key.encrypt(&ctx, v.as_bytes()),
            None => self.key.encrypt_null(&ctx),
        }
        .map_err(errors::core)?;
        Ok(PyBytes::new(py, &out))
    }

    /// decrypt(ciphertext, *, context=None, domain=None, type="bytes") -> bytes | str | None
    #[pyo3(signature = (ciphertext, *, context=None, domain=None, r#type="bytes"))]
    fn decrypt<'py>(
        &self,
        py: Python<'py>,
        ciphertext: Data,
        context: Option<Components>,
        domain: Option<Components>,
        r#type: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let vt = args::value_type(r#type)?;
        let row = args::parts(&context);
        let dom = args::parts(&domain);
        let ctx = args::context(&row, &dom, vt);
        let out = self
            .key
            .decrypt(&ctx, ciphertext.as_bytes())
            .map_err(|e| errors::keys_open(e.into()))?;
        Ok(match out {
            None => py.None().into_bound(py),
            Some(v) if vt == coffer_core::ValueType::Text => PyString::new(
                py,
                std::str::from_utf8(&v).map_err(|_| errors::config("text value is not UTF-8"))?,
            )
            .into_any(),
            Some(v) => PyBytes::new(py, &v).into_any(),
        })
    }
}

//! Field encryption: the compact ciphertext format for database columns (docs/FORMAT.md §2).
//!
//! ```
//! use coffer_core::{Dek, FieldKey, FieldContext, KeyVersion, Suite, ScopeId, ColumnId};
//!
//! let dek = Dek::generate()?;
//! let scope = ScopeId::new("tenant:acme")?;
//! let ssn = ColumnId::new("patients.ssn")?;
//! let key = FieldKey::new(&dek, KeyVersion(1), Suite::Gcm96, &scope, &ssn)?;
//!
//! let row = FieldContext::row(&[b"patient-42"]);
//! let sealed = key.encrypt(&row, b"123-45-6789")?;
//! assert_eq!(sealed.len(), 11 + 25);
//! assert_eq!(key.decrypt(&row, &sealed)?.as_deref(), Some(&b"123-45-6789"[..]));
//!
//! // Moved to another row, it no longer decrypts.
//! assert!(key.decrypt(&FieldContext::row(&[b"patient-43"]), &sealed).is_err());
//! # Ok::<(), coffer_core::Error>(())
//! ```

mod context;
mod header;
pub mod text;

pub use context::FieldContext;
pub use header::{Header, HeaderError, Suite};

use std::fmt;
use std::sync::Arc;

use coffer_aead::{GcmKey, TagLength};
use rayon::prelude::*;

use crate::counter::EncryptionCounter;
use crate::encoding::{self, tag};
use crate::error::{Error, Result};
use crate::ids::{ColumnId, KeyVersion, ScopeId};
use crate::kdf::{self, Purpose};
use crate::secret::{Dek, SubKey};

/// The format identifier that opens every field AAD.
pub const FORMAT_ID: &[u8] = b"coffer/field/v1";

/// How a column treats SQL NULL (DESIGN §9, "Errors").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Nulls {
    /// SQL NULL is stored as SQL NULL, unencrypted. Someone with write access to the table can
    /// set a value to NULL undetected.
    #[default]
    Passthrough,
    /// NULL is sealed like a value (N = 1), and an SQL NULL read back is an error.
    Authenticated,
}

enum Cipher {
    Gcm(GcmKey),
    #[cfg(feature = "non-fips")]
    Siv(SubKey<64>),
}

/// A key for one column of one scope at one DEK version: seals and opens field values.
///
/// Derived from the DEK with HKDF (the DEK itself never keys a cipher). Cheap to share across
/// threads; its encryption counter is shared by clones made with [`FieldKey::clone_shared`].
pub struct FieldKey {
    cipher: Arc<Cipher>,
    suite: Suite,
    version: KeyVersion,
    scope: ScopeId,
    column: ColumnId,
    counter: Arc<EncryptionCounter>,
}

impl fmt::Debug for FieldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldKey")
            .field("suite", &self.suite)
            .field("version", &self.version)
            .field("scope", &self.scope)
            .field("column", &self.column)
            .field("encryptions", &self.counter.count())
            .finish_non_exhaustive()
    }
}

impl FieldKey {
    /// Derives the column key for `suite` from `dek`, with a fresh encryption counter.
    ///
    /// In the `fips` build, [`Suite::Siv`] is refused here with [`Error::NotFipsApproved`].
    pub fn new(
        dek: &Dek,
        version: KeyVersion,
        suite: Suite,
        scope: &ScopeId,
        column: &ColumnId,
    ) -> Result<Self> {
        Self::with_counter(dek, version, suite, scope, column, Arc::default())
    }

    /// As [`FieldKey::new`], counting encryptions in `counter` (e.g. one restored from a key store).
    pub fn with_counter(
        dek: &Dek,
        version: KeyVersion,
        suite: Suite,
        scope: &ScopeId,
        column: &ColumnId,
        counter: Arc<EncryptionCounter>,
    ) -> Result<Self> {
        let col = [(tag::COLUMN, column.as_str().as_bytes())];
        let cipher = match suite {
            Suite::Gcm96 | Suite::Gcm128 => {
                let sub: SubKey<32> = kdf::derive(dek, Purpose::Aead, &col)?;
                let tag_len = if suite == Suite::Gcm96 {
                    TagLength::Bits96
                } else {
                    TagLength::Bits128
                };
                let key = GcmKey::new(sub.expose_secret(), tag_len)
                    .map_err(|_| Error::Module("AES-GCM key setup"))?;
                Cipher::Gcm(key)
            }
            Suite::Siv => siv_cipher(dek, &col)?,
        };
        Ok(FieldKey {
            cipher: Arc::new(cipher),
            suite,
            version,
            scope: scope.clone(),
            column: column.clone(),
            counter,
        })
    }

    /// Another handle on the same key and counter.
    pub fn clone_shared(&self) -> Self {
        FieldKey {
            cipher: Arc::clone(&self.cipher),
            suite: self.suite,
            version: self.version,
            scope: self.scope.clone(),
            column: self.column.clone(),
            counter: Arc::clone(&self.counter),
        }
    }

    /// The suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The DEK version written into every header.
    pub fn version(&self) -> KeyVersion {
        self.version
    }

    /// The scope.
    pub fn scope(&self) -> &ScopeId {
        &self.scope
    }

    /// The column.
    pub fn column(&self) -> &ColumnId {
        &self.column
    }

    /// The encryption counter (count and limit).
    pub fn counter(&self) -> &EncryptionCounter {
        &self.counter
    }

    /// Bytes added to a plaintext by this key: header plus IV and tag (or SIV).
    pub fn overhead(&self) -> usize {
        self.header(false).len() + self.suite.body_overhead()
    }

    fn header(&self, null: bool) -> Header {
        Header {
            null,
            suite: self.suite,
            version: self.version,
        }
    }

    /// Seals a value.
    pub fn encrypt(&self, ctx: &FieldContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.counter.reserve(1)?;
        self.seal(ctx, false, plaintext, None)
    }

    /// Seals an authenticated NULL: distinct from every value, including the empty one.
    pub fn encrypt_null(&self, ctx: &FieldContext<'_>) -> Result<Vec<u8>> {
        self.counter.reserve(1)?;
        self.seal(ctx, true, &[], None)
    }

    /// Seals a nullable value as a column with the given NULL policy stores it.
    pub fn encrypt_nullable(
        &self,
        ctx: &FieldContext<'_>,
        value: Option<&[u8]>,
        nulls: Nulls,
    ) -> Result<Option<Vec<u8>>> {
        match (value, nulls) {
            (Some(v), _) => self.encrypt(ctx, v).map(Some),
            (None, Nulls::Passthrough) => Ok(None),
            (None, Nulls::Authenticated) => self.encrypt_null(ctx).map(Some),
        }
    }

    /// Seals a value and returns its text encoding (`cf1:…`), for TEXT columns.
    pub fn encrypt_text(&self, ctx: &FieldContext<'_>, plaintext: &[u8]) -> Result<String> {
        self.encrypt(ctx, plaintext).map(|b| text::encode(&b))
    }

    /// Opens a value: `Some(plaintext)`, or `None` for an authenticated NULL.
    ///
    /// Any failure (wrong key or version, tampering, truncation, another context) is the one
    /// opaque [`Error::Decrypt`].
    pub fn decrypt(&self, ctx: &FieldContext<'_>, ciphertext: &[u8]) -> Result<Option<Vec<u8>>> {
        let (header, hlen) = Header::parse(ciphertext).map_err(|_| Error::Decrypt)?;
        if header.suite != self.suite || header.version != self.version {
            return Err(Error::Decrypt);
        }
        let body = &ciphertext[hlen..];
        let mut out = Vec::with_capacity(body.len().saturating_sub(self.suite.body_overhead()));
        match &*self.cipher {
            Cipher::Gcm(key) => {
                let aad = self.aad(ctx, &ciphertext[..hlen])?;
                key.open_append(&aad, body, &mut out)
                    .map_err(|_| Error::Decrypt)?;
            }
            #[cfg(feature = "non-fips")]
            Cipher::Siv(key) => {
                check_deterministic_context(ctx)?;
                out = siv_open(key, &self.s2v_headers(ctx, &ciphertext[..hlen])?, body)?;
            }
        }
        if header.null {
            // Only Coffer writes N = 1, always with an empty plaintext.
            return if out.is_empty() {
                Ok(None)
            } else {
                Err(Error::Decrypt)
            };
        }
        Ok(Some(out))
    }

    /// Opens a value stored under a NULL policy; `stored` is `None` for an SQL NULL.
    pub fn decrypt_nullable(
        &self,
        ctx: &FieldContext<'_>,
        stored: Option<&[u8]>,
        nulls: Nulls,
    ) -> Result<Option<Vec<u8>>> {
        match (stored, nulls) {
            (Some(ct), _) => self.decrypt(ctx, ct),
            (None, Nulls::Passthrough) => Ok(None),
            (None, Nulls::Authenticated) => Err(Error::UnauthenticatedNull),
        }
    }

    /// Opens a text-encoded value (`cf1:…`).
    pub fn decrypt_text(
        &self,
        ctx: &FieldContext<'_>,
        text_value: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.decrypt(ctx, &text::decode(text_value)?)
    }

    /// Seals many values on this thread. In the default build the IVs of the whole batch come
    /// from one CSPRNG call, which makes short values about three times cheaper to seal.
    pub fn encrypt_batch(&self, items: &[(FieldContext<'_>, &[u8])]) -> Result<Vec<Vec<u8>>> {
        self.counter.reserve(items.len() as u64)?;
        self.seal_chunk(items)
    }

    /// Seals many values on all cores (rayon), in order.
    pub fn encrypt_batch_parallel(
        &self,
        items: &[(FieldContext<'_>, &[u8])],
    ) -> Result<Vec<Vec<u8>>> {
        self.counter.reserve(items.len() as u64)?;
        let chunks: Vec<Result<Vec<Vec<u8>>>> = items
            .par_chunks(PARALLEL_CHUNK)
            .map(|chunk| self.seal_chunk(chunk))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for c in chunks {
            out.extend(c?);
        }
        Ok(out)
    }

    /// Opens many values on this thread; each result stands alone.
    pub fn decrypt_batch(
        &self,
        items: &[(FieldContext<'_>, &[u8])],
    ) -> Vec<Result<Option<Vec<u8>>>> {
        items
            .iter()
            .map(|(ctx, ct)| self.decrypt(ctx, ct))
            .collect()
    }

    /// Opens many values on all cores, in order; each result stands alone.
    pub fn decrypt_batch_parallel(
        &self,
        items: &[(FieldContext<'_>, &[u8])],
    ) -> Vec<Result<Option<Vec<u8>>>> {
        items
            .par_iter()
            .with_min_len(PARALLEL_CHUNK)
            .map(|(ctx, ct)| self.decrypt(ctx, ct))
            .collect()
    }

    fn seal_chunk(&self, items: &[(FieldContext<'_>, &[u8])]) -> Result<Vec<Vec<u8>>> {
        #[cfg(not(feature = "fips"))]
        if let Cipher::Gcm(key) = &*self.cipher {
            let mut ivs = key
                .iv_batch(items.len())
                .map_err(|_| Error::Module("random generator"))?;
            return items
                .iter()
                .map(|(ctx, pt)| {
                    let iv = ivs.next().ok_or(Error::Module("IV batch"))?;
                    self.seal(ctx, false, pt, Some(iv))
                })
                .collect();
        }
        items
            .iter()
            .map(|(ctx, pt)| self.seal(ctx, false, pt, None))
            .collect()
    }

    fn seal(
        &self,
        ctx: &FieldContext<'_>,
        null: bool,
        plaintext: &[u8],
        #[cfg(not(feature = "fips"))] iv: Option<coffer_aead::BatchIv>,
        #[cfg(feature = "fips")] _iv: Option<std::convert::Infallible>,
    ) -> Result<Vec<u8>> {
        let header = self.header(null);
        let mut out =
            Vec::with_capacity(header.len() + plaintext.len() + self.suite.body_overhead());
        header.write(&mut out);
        match &*self.cipher {
            Cipher::Gcm(key) => {
                let aad = self.aad(ctx, &out)?;
                #[cfg(not(feature = "fips"))]
                let sealed = match iv {
                    Some(iv) => key.seal_append_with_iv(iv, &aad, plaintext, &mut out),
                    None => key.seal_append(&aad, plaintext, &mut out),
                };
                #[cfg(feature = "fips")]
                let sealed = key.seal_append(&aad, plaintext, &mut out);
                sealed.map_err(|_| Error::Module("AES-GCM seal"))?;
            }
            #[cfg(feature = "non-fips")]
            Cipher::Siv(key) => {
                check_deterministic_context(ctx)?;
                let headers = self.s2v_headers(ctx, &out)?;
                let body = siv_seal(key, &headers, plaintext)?;
                out.extend_from_slice(&body);
            }
        }
        Ok(out)
    }

    /// The components every field AAD starts with: FORMAT, HEADER, SCOPE, COLUMN, VALUE_TYPE.
    fn fixed_components<'b>(&'b self, header: &'b [u8], vt: &'b [u8; 1]) -> [(u8, &'b [u8]); 5] {
        [
            (tag::FORMAT, FORMAT_ID),
            (tag::HEADER, header),
            (tag::SCOPE, self.scope.as_str().as_bytes()),
            (tag::COLUMN, self.column.as_str().as_bytes()),
            (tag::VALUE_TYPE, vt),
        ]
    }

    /// The GCM AAD: FORMAT ‖ HEADER ‖ SCOPE ‖ COLUMN ‖ VALUE_TYPE ‖ DOMAIN* ‖ ROW*, each encoded
    /// as a component.
    fn aad(&self, ctx: &FieldContext<'_>, header: &[u8]) -> Result<Vec<u8>> {
        let vt = [ctx.value_type.tag()];
        let fixed = self.fixed_components(header, &vt);
        let len = fixed.iter().map(|(_, b)| b.len()).sum::<usize>()
            + ctx
                .domain
                .iter()
                .chain(ctx.row)
                .map(|c| c.len())
                .sum::<usize>()
            + 5 * (fixed.len() + ctx.domain.len() + ctx.row.len());
        let mut aad = Vec::with_capacity(len);
        for (t, b) in fixed {
            encoding::push(&mut aad, t, b)?;
        }
        for d in ctx.domain {
            encoding::push(&mut aad, tag::DOMAIN, d)?;
        }
        for r in ctx.row {
            encoding::push(&mut aad, tag::ROW, r)?;
        }
        Ok(aad)
    }

    /// The S2V associated-data vector for AES-SIV: the same components as the GCM AAD (never a
    /// row), each encoded component one vector element.
    #[cfg(feature = "non-fips")]
    fn s2v_headers(&self, ctx: &FieldContext<'_>, header: &[u8]) -> Result<Vec<Vec<u8>>> {
        let vt = [ctx.value_type.tag()];
        let mut v = Vec::with_capacity(5 + ctx.domain.len());
        for (t, b) in self.fixed_components(header, &vt) {
            v.push(encoding::encode(&[(t, b)])?);
        }
        for d in ctx.domain {
            v.push(encoding::encode(&[(tag::DOMAIN, d)])?);
        }
        Ok(v)
    }
}

/// Values per parallel work unit (one IV draw each).
const PARALLEL_CHUNK: usize = 1024;

#[cfg(feature = "non-fips")]
fn siv_cipher(dek: &Dek, col: &[(u8, &[u8])]) -> Result<Cipher> {
    let sub: SubKey<64> = kdf::derive(dek, Purpose::Siv, col)?;
    Ok(Cipher::Siv(sub))
}

#[cfg(not(feature = "non-fips"))]
fn siv_cipher(_dek: &Dek, _col: &[(u8, &[u8])]) -> Result<Cipher> {
    Err(crate::fips::refuse(crate::fips::Algorithm::AesSiv))
}

#[cfg(feature = "non-fips")]
fn check_deterministic_context(ctx: &FieldContext<'_>) -> Result<()> {
    if ctx.row.is_empty() {
        Ok(())
    } else {
        Err(Error::RowContextInDeterministic)
    }
}

#[cfg(feature = "non-fips")]
fn siv_seal(key: &SubKey<64>, headers: &[Vec<u8>], plaintext: &[u8]) -> Result<Vec<u8>> {
    use aes_siv::KeyInit as _;
    let mut siv = aes_siv::siv::Aes256Siv::new_from_slice(key.expose_secret())
        .map_err(|_| Error::Module("AES-SIV key setup"))?;
    siv.encrypt(headers, plaintext)
        .map_err(|_| Error::invalid("search domain", "too many components for AES-SIV"))
}

#[cfg(feature = "non-fips")]
fn siv_open(key: &SubKey<64>, headers: &[Vec<u8>], body: &[u8]) -> Result<Vec<u8>> {
    use aes_siv::KeyInit as _;
    let mut siv = aes_siv::siv::Aes256Siv::new_from_slice(key.expose_secret())
        .map_err(|_| Error::Module("AES-SIV key setup"))?;
    siv.decrypt(headers, body).map_err(|_| Error::Decrypt)
}

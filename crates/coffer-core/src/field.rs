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

/// How a column treats SQL NULL (docs/DESIGN.md §E2).
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

    /// The length of the sealed form of a `len`-byte value.
    pub fn sealed_len(&self, len: usize) -> usize {
        self.header(false).len() + len + self.suite.body_overhead()
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
        let mut out = Vec::with_capacity(
            ciphertext
                .len()
                .saturating_sub(1 + self.suite.body_overhead()),
        );
        Ok(self
            .decrypt_append(ctx, ciphertext, &mut out)?
            .then_some(out))
    }

    /// Opens a value and appends its plaintext to `out`: `true` for a value, `false` for an
    /// authenticated NULL (nothing appended). On any failure `out` is left as it was, and the
    /// error is the one opaque [`Error::Decrypt`] (as [`decrypt`](Self::decrypt)).
    ///
    /// Batch callers open many values into one buffer this way, without an allocation each.
    pub fn decrypt_append(
        &self,
        ctx: &FieldContext<'_>,
        ciphertext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        let (header, hlen) = Header::parse(ciphertext).map_err(|_| Error::Decrypt)?;
        if header.suite != self.suite || header.version != self.version {
            return Err(Error::Decrypt);
        }
        let body = &ciphertext[hlen..];
        let start = out.len();
        match &*self.cipher {
            Cipher::Gcm(key) => {
                self.with_aad(ctx, &ciphertext[..hlen], |aad| {
                    key.open_append(aad, body, out).map_err(|_| Error::Decrypt)
                })??;
            }
            #[cfg(feature = "non-fips")]
            Cipher::Siv(key) => {
                check_deterministic_context(ctx)?;
                // The library's buffer is wiped once copied out: only `out` holds the plaintext.
                let plain = zeroize::Zeroizing::new(siv_open(
                    key,
                    &self.s2v_headers(ctx, &ciphertext[..hlen])?,
                    body,
                )?);
                out.extend_from_slice(&plain);
            }
        }
        if header.null {
            // Only Coffer writes N = 1, always with an empty plaintext.
            return if out.len() == start {
                Ok(false)
            } else {
                out.truncate(start);
                Err(Error::Decrypt)
            };
        }
        Ok(true)
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

    /// Seals many values on this thread into one packed buffer, without an allocation per
    /// value (one IV draw for all, as [`encrypt_batch`](Self::encrypt_batch), and the same
    /// bytes). Callers that pipeline a large batch seal it as several of these.
    pub fn encrypt_packed(&self, items: &[(FieldContext<'_>, &[u8])]) -> Result<Packed> {
        self.counter.reserve(items.len() as u64)?;
        let size = items
            .iter()
            .map(|(_, pt)| self.sealed_len(pt.len()))
            .sum::<usize>();
        let mut packed = Packed {
            bytes: Vec::with_capacity(size),
            ends: Vec::with_capacity(items.len()),
        };
        self.seal_chunk_with(items, |ctx, pt, iv| {
            self.seal_append(ctx, false, pt, iv, &mut packed.bytes)?;
            packed.ends.push(packed.bytes.len());
            Ok(())
        })?;
        Ok(packed)
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
        let mut out = Vec::with_capacity(items.len());
        self.seal_chunk_with(items, |ctx, pt, iv| {
            out.push(self.seal(ctx, false, pt, iv)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `seal` for each item with its IV: in the default build the IVs of the whole chunk
    /// come from one CSPRNG call (GCM); otherwise each seal draws its own (`None`).
    fn seal_chunk_with(
        &self,
        items: &[(FieldContext<'_>, &[u8])],
        mut seal: impl FnMut(&FieldContext<'_>, &[u8], Option<Iv>) -> Result<()>,
    ) -> Result<()> {
        #[cfg(not(feature = "fips"))]
        if let Cipher::Gcm(key) = &*self.cipher {
            let mut ivs = key
                .iv_batch(items.len())
                .map_err(|_| Error::Module("random generator"))?;
            for (ctx, pt) in items {
                let iv = ivs.next().ok_or(Error::Module("IV batch"))?;
                seal(ctx, pt, Some(iv))?;
            }
            return Ok(());
        }
        for (ctx, pt) in items {
            seal(ctx, pt, None)?;
        }
        Ok(())
    }

    fn seal(
        &self,
        ctx: &FieldContext<'_>,
        null: bool,
        plaintext: &[u8],
        iv: Option<Iv>,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.sealed_len(plaintext.len()));
        self.seal_append(ctx, null, plaintext, iv, &mut out)?;
        Ok(out)
    }

    /// Appends header and body to `out`; on failure `out` is left as it was.
    fn seal_append(
        &self,
        ctx: &FieldContext<'_>,
        null: bool,
        plaintext: &[u8],
        #[cfg(not(feature = "fips"))] iv: Option<Iv>,
        #[cfg(feature = "fips")] _iv: Option<Iv>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let start = out.len();
        let header = self.header(null);
        header.write(out);
        let sealed = match &*self.cipher {
            Cipher::Gcm(key) => {
                // The header is at most 6 bytes; a copy frees `out` for the seal.
                let mut hdr = [0u8; 6];
                let hlen = out.len() - start;
                hdr[..hlen].copy_from_slice(&out[start..]);
                self.with_aad(ctx, &hdr[..hlen], |aad| {
                    #[cfg(not(feature = "fips"))]
                    let sealed = match iv {
                        Some(iv) => key.seal_append_with_iv(iv, aad, plaintext, out),
                        None => key.seal_append(aad, plaintext, out),
                    };
                    #[cfg(feature = "fips")]
                    let sealed = key.seal_append(aad, plaintext, out);
                    sealed.map_err(|_| Error::Module("AES-GCM seal"))
                })
                .and_then(|r| r)
            }
            #[cfg(feature = "non-fips")]
            Cipher::Siv(key) => check_deterministic_context(ctx)
                .and_then(|()| self.s2v_headers(ctx, &out[start..]))
                .and_then(|headers| siv_seal(key, &headers, plaintext))
                .map(|body| out.extend_from_slice(&body)),
        };
        if sealed.is_err() {
            out.truncate(start);
        }
        sealed
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

    /// Calls `f` with the GCM AAD: FORMAT ‖ HEADER ‖ SCOPE ‖ COLUMN ‖ VALUE_TYPE ‖ DOMAIN* ‖
    /// ROW*, each encoded as a component. Built on the stack when it fits in
    /// [`AAD_ON_STACK`] bytes (the usual case), else in a heap buffer.
    fn with_aad<R>(
        &self,
        ctx: &FieldContext<'_>,
        header: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
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
        let write = |buf: &mut [u8]| -> Result<usize> {
            let mut at = 0;
            for (t, b) in fixed {
                at = encoding::put(buf, at, t, b)?;
            }
            for d in ctx.domain {
                at = encoding::put(buf, at, tag::DOMAIN, d)?;
            }
            for r in ctx.row {
                at = encoding::put(buf, at, tag::ROW, r)?;
            }
            Ok(at)
        };
        if len <= AAD_ON_STACK {
            let mut buf = [0u8; AAD_ON_STACK];
            let n = write(&mut buf[..len])?;
            Ok(f(&buf[..n]))
        } else {
            let mut buf = vec![0u8; len];
            let n = write(&mut buf)?;
            Ok(f(&buf[..n]))
        }
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

/// AADs up to this length are built on the stack.
const AAD_ON_STACK: usize = 256;

/// The IV a batch hands to one seal (the `fips` build has none: each seal draws its own).
#[cfg(not(feature = "fips"))]
type Iv = coffer_aead::BatchIv;
#[cfg(feature = "fips")]
type Iv = std::convert::Infallible;

/// Values packed end to end in one buffer (a batch's work unit): value `i` is
/// `bytes[ends[i - 1]..ends[i]]`, the first starting at 0.
#[derive(Debug, Default)]
pub struct Packed {
    /// The values, end to end.
    pub bytes: Vec<u8>,
    /// Where each value ends.
    pub ends: Vec<usize>,
}

impl Packed {
    /// The number of values.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The values in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(s, e)| &self.bytes[s..e])
    }
}

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

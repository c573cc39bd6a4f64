//! Ciphertexts as sqlx values: [`Encrypted<T>`] reads and binds one typed column value,
//! [`Sealed`] binds a value of a column whose type is only known at run time (possibly NULL).

use std::fmt;
use std::marker::PhantomData;

use coffer_core::field::text;
use coffer_core::{Header, KeyVersion};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef, Postgres};
use sqlx::{Decode, Encode, Type, ValueRef as _};

use crate::schema::Storage;

/// An encrypted column value of plaintext type `T`, as stored: BYTEA (binary ciphertext) or
/// TEXT (`cf1:` + base64url). Decoding refuses anything that is not a Coffer ciphertext, so a
/// plaintext written into an encrypted column is an error when read, never passed through.
/// Open it with [`Columns::open`](crate::Columns::open).
pub struct Encrypted<T: ?Sized> {
    bytes: Vec<u8>,
    storage: Storage,
    header: Header,
    _t: PhantomData<fn() -> Box<T>>,
}

impl<T: ?Sized> Clone for Encrypted<T> {
    fn clone(&self) -> Self {
        Encrypted {
            bytes: self.bytes.clone(),
            storage: self.storage,
            header: self.header,
            _t: PhantomData,
        }
    }
}

impl<T: ?Sized> fmt::Debug for Encrypted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Encrypted({} bytes, {}, {}{})",
            self.bytes.len(),
            self.header.suite.name(),
            self.header.version,
            if self.header.null { ", null" } else { "" }
        )
    }
}

impl<T: ?Sized> PartialEq for Encrypted<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T: ?Sized> Encrypted<T> {
    /// Wraps a binary ciphertext read or made elsewhere; refuses bytes without a valid header.
    pub fn from_bytes(bytes: Vec<u8>, storage: Storage) -> Result<Self, NotCiphertext> {
        let (header, _) = Header::parse(&bytes).map_err(|_| NotCiphertext::Binary)?;
        Ok(Encrypted {
            bytes,
            storage,
            header,
            _t: PhantomData,
        })
    }

    /// Parses the text form (`cf1:…`).
    pub fn from_text(value: &str) -> Result<Self, NotCiphertext> {
        let bytes = text::decode(value).map_err(|_| NotCiphertext::Text)?;
        Self::from_bytes(bytes, Storage::Text).map_err(|_| NotCiphertext::Text)
    }

    /// The binary ciphertext.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The DEK version that sealed it (from its header).
    pub fn version(&self) -> KeyVersion {
        self.header.version
    }

    /// The parsed header.
    pub fn header(&self) -> Header {
        self.header
    }

    /// How it is stored.
    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// The text form, as a TEXT column holds it.
    pub fn to_text(&self) -> String {
        text::encode(&self.bytes)
    }

    /// Forgets the plaintext type (for code that handles columns generically).
    pub fn untyped(self) -> Encrypted<()> {
        Encrypted {
            bytes: self.bytes,
            storage: self.storage,
            header: self.header,
            _t: PhantomData,
        }
    }
}

/// A column value that is not a Coffer ciphertext: a plaintext in an encrypted column, or
/// a corrupted value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotCiphertext {
    /// A BYTEA value without a valid Coffer field header.
    #[error(
        "this BYTEA value is not a Coffer ciphertext (a plaintext written into an encrypted column?)"
    )]
    Binary,
    /// A TEXT value without the `cf1:` prefix and valid base64url.
    #[error(
        "this TEXT value is not a Coffer ciphertext (no valid \"cf1:\" form; a plaintext written into an encrypted column?)"
    )]
    Text,
}

fn is_text(ty: &PgTypeInfo) -> bool {
    <str as Type<Postgres>>::compatible(ty)
}

impl<T: ?Sized> Type<Postgres> for Encrypted<T> {
    fn type_info() -> PgTypeInfo {
        <[u8] as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <[u8] as Type<Postgres>>::compatible(ty) || is_text(ty)
    }
}

impl<T: ?Sized> Encode<'_, Postgres> for Encrypted<T> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self.storage {
            Storage::Bytea => <&[u8] as Encode<Postgres>>::encode(self.bytes.as_slice(), buf),
            Storage::Text => <String as Encode<Postgres>>::encode(self.to_text(), buf),
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(storage_type(self.storage))
    }
}

impl<'r, T: ?Sized> Decode<'r, Postgres> for Encrypted<T> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let text_column = is_text(&value.type_info());
        if text_column {
            let s = <&str as Decode<Postgres>>::decode(value)?;
            Ok(Encrypted::from_text(s)?)
        } else {
            let b = <&[u8] as Decode<Postgres>>::decode(value)?;
            Ok(Encrypted::from_bytes(b.to_vec(), Storage::Bytea)?)
        }
    }
}

fn storage_type(storage: Storage) -> PgTypeInfo {
    match storage {
        Storage::Bytea => <[u8] as Type<Postgres>>::type_info(),
        Storage::Text => <str as Type<Postgres>>::type_info(),
    }
}

/// A value to bind into an encrypted column whose storage is known only at run time: a
/// ciphertext, or SQL NULL (passthrough NULLs) typed as the column is, so `$n` binds into
/// BYTEA and TEXT columns alike.
#[derive(Clone, Debug, PartialEq)]
pub struct Sealed {
    pub(crate) value: Option<Encrypted<()>>,
    pub(crate) storage: Storage,
}

impl Sealed {
    /// The ciphertext, or `None` for SQL NULL.
    pub fn ciphertext(&self) -> Option<&Encrypted<()>> {
        self.value.as_ref()
    }

    /// The DEK version, `None` for SQL NULL.
    pub fn version(&self) -> Option<KeyVersion> {
        self.value.as_ref().map(Encrypted::version)
    }
}

impl Type<Postgres> for Sealed {
    fn type_info() -> PgTypeInfo {
        <[u8] as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Encrypted<()> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Sealed {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match &self.value {
            Some(v) => v.encode_by_ref(buf),
            None => Ok(IsNull::Yes),
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(storage_type(self.storage))
    }
}

/// A blind index value to bind: an index (BYTEA), prefix tokens (BYTEA[]), or NULL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexValue {
    /// An equality or compound index; `None` when an indexed value is NULL.
    Single(Option<Vec<u8>>),
    /// Prefix tokens, shortest prefix first; `None` when the value is NULL.
    Tokens(Option<Vec<Vec<u8>>>),
}

impl Type<Postgres> for IndexValue {
    fn type_info() -> PgTypeInfo {
        <[u8] as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <[u8] as Type<Postgres>>::compatible(ty) || <Vec<Vec<u8>> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for IndexValue {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            IndexValue::Single(Some(v)) => <&[u8] as Encode<Postgres>>::encode(v.as_slice(), buf),
            IndexValue::Tokens(Some(t)) => {
                <&[Vec<u8>] as Encode<Postgres>>::encode(t.as_slice(), buf)
            }
            IndexValue::Single(None) | IndexValue::Tokens(None) => Ok(IsNull::Yes),
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(match self {
            IndexValue::Single(_) => <[u8] as Type<Postgres>>::type_info(),
            IndexValue::Tokens(_) => <Vec<u8> as PgHasArrayType>::array_type_info(),
        })
    }
}

//! The value types shared by the data endpoints: sensitive strings, encodings, row-context and
//! domain components, modes and value types.

use coffer_core::{Suite, ValueType};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A plaintext, key or searched value in a request or response: serialized as the string
/// itself, shown as `[redacted]` by `Debug`, zeroized when dropped.
#[derive(Clone, Default, Deserialize, Serialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(transparent)]
pub struct Sensitive(String);

impl Sensitive {
    /// Wraps a value.
    pub fn new(s: String) -> Self {
        Sensitive(s)
    }

    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How plaintexts are written in requests and responses.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Standard base64 (the default): any bytes.
    #[default]
    Base64,
    /// The JSON string itself, as UTF-8.
    Utf8,
}

/// One string or a list of strings (row context and search domain components).
#[derive(Clone, Deserialize, ToSchema)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum Components {
    /// One component.
    One(String),
    /// Several components, each encoded separately (`["1","23"]` differs from `["12","3"]`).
    Many(Vec<String>),
}

impl std::fmt::Debug for Components {
    // Row and domain components can be personal data (a patient id): show only their count.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = match self {
            Components::One(_) => 1,
            Components::Many(v) => v.len(),
        };
        write!(f, "Components({n})")
    }
}

impl Components {
    pub(crate) fn parts(c: &Option<Components>) -> Vec<&[u8]> {
        match c {
            None => Vec::new(),
            Some(Components::One(s)) => vec![s.as_bytes()],
            Some(Components::Many(v)) => v.iter().map(|s| s.as_bytes()).collect(),
        }
    }
}

/// Encryption mode.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// AES-256-GCM, random IV, 96-bit tag (25 bytes of overhead). The default.
    #[default]
    Randomized,
    /// AES-256-GCM with a 128-bit tag (29 bytes).
    RandomizedTag128,
    /// AES-256-SIV: equal values give equal ciphertexts (searchable; no row context). Refused
    /// by FIPS builds.
    Deterministic,
}

impl Mode {
    pub(crate) fn suite(self) -> Suite {
        match self {
            Mode::Randomized => Suite::Gcm96,
            Mode::RandomizedTag128 => Suite::Gcm128,
            Mode::Deterministic => Suite::Siv,
        }
    }
}

/// The value type bound into the ciphertext (docs/FORMAT.md table 3). The plaintext is its
/// canonical encoding; the type only makes a value unreadable as another type.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TypeName {
    /// Raw bytes (default).
    #[default]
    Bytes,
    /// UTF-8 text.
    Text,
    /// i64 big-endian.
    Int,
    /// Days since 1970-01-01, i32 big-endian.
    Date,
    /// Microseconds since the epoch, i64 big-endian.
    Timestamp,
    /// RFC 8785 JSON.
    Json,
    /// One byte 0 or 1.
    Bool,
    /// 16 bytes.
    Uuid,
}

impl TypeName {
    pub(crate) fn value_type(self) -> ValueType {
        match self {
            TypeName::Bytes => ValueType::Bytes,
            TypeName::Text => ValueType::Text,
            TypeName::Int => ValueType::Int64,
            TypeName::Date => ValueType::Date,
            TypeName::Timestamp => ValueType::Timestamp,
            TypeName::Json => ValueType::Json,
            TypeName::Bool => ValueType::Bool,
            TypeName::Uuid => ValueType::Uuid,
        }
    }
}

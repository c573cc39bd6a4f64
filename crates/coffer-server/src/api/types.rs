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
    /// The components as the field context takes them.
    pub(crate) fn parts(c: &Option<Components>) -> Parts<'_> {
        match c {
            None => Parts::Many(Vec::new()),
            Some(Components::One(s)) => Parts::One([s.as_bytes()]),
            Some(Components::Many(v)) => Parts::Many(v.iter().map(|s| s.as_bytes()).collect()),
        }
    }
}

/// A row context's or search domain's components, borrowed from the request; one component
/// (the usual row context) is held inline, without an allocation.
pub(crate) enum Parts<'a> {
    One([&'a [u8]; 1]),
    Many(Vec<&'a [u8]>),
}

impl<'a> Parts<'a> {
    pub(crate) fn as_slice(&self) -> &[&'a [u8]] {
        match self {
            Parts::One(one) => one,
            Parts::Many(v) => v,
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

/// A plaintext as an encrypt request gives it: a JSON string (in the request's `encoding`) for
/// `bytes` and `text`, and the type's own JSON value for the other types (an integer for `int`,
/// `date` and `timestamp`, a boolean for `bool`, a UUID string for `uuid`, any JSON value for
/// `json`). Shown as `[redacted]` by `Debug`; its strings are zeroized when dropped.
#[derive(Clone, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Plain(serde_json::Value);

impl Plain {
    /// A plaintext from a JSON value.
    pub fn new(v: serde_json::Value) -> Self {
        Plain(v)
    }
}

impl std::fmt::Debug for Plain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

fn wipe(v: &mut serde_json::Value) {
    use zeroize::Zeroize as _;
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe),
        serde_json::Value::Object(m) => m.values_mut().for_each(wipe),
        _ => {}
    }
}

impl Drop for Plain {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// The JSON type a plaintext of `t` must have, for error messages.
fn expected(t: TypeName) -> &'static str {
    match t {
        TypeName::Bytes => "a string (in the request's encoding)",
        TypeName::Text => "a string (in the request's encoding), holding UTF-8 text",
        TypeName::Int => "a JSON integer from -9223372036854775808 to 9223372036854775807",
        TypeName::Date => "a JSON integer: days since 1970-01-01, within the i32 range",
        TypeName::Timestamp => "a JSON integer: microseconds since 1970-01-01T00:00:00Z (i64)",
        TypeName::Json => "a JSON value",
        TypeName::Bool => "true or false",
        TypeName::Uuid => "a UUID string, e.g. 0f8fad5b-d9cb-469f-a165-70867728950e",
    }
}

fn mismatch(t: TypeName) -> crate::error::ApiError {
    crate::error::ApiError::bad_request(
        "type_mismatch",
        format!(
            "field `plaintext` does not fit its `type` {}: expected {}",
            t.name(),
            expected(t)
        ),
    )
}

impl TypeName {
    /// The name as requests write it.
    pub fn name(self) -> &'static str {
        match self {
            TypeName::Bytes => "bytes",
            TypeName::Text => "text",
            TypeName::Int => "int",
            TypeName::Date => "date",
            TypeName::Timestamp => "timestamp",
            TypeName::Json => "json",
            TypeName::Bool => "bool",
            TypeName::Uuid => "uuid",
        }
    }

    /// The canonical plaintext bytes of `p` as a value of this type (docs/FORMAT.md table 3),
    /// or a 400 `type_mismatch` naming the field and the JSON type expected (never the value).
    pub fn encode(
        self,
        enc: Encoding,
        p: &Plain,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, crate::error::ApiError> {
        use serde_json::Value;
        use zeroize::Zeroizing;
        let bytes = match (self, &p.0) {
            (TypeName::Bytes, Value::String(s)) => super::decode_value(enc, s)?,
            (TypeName::Text, Value::String(s)) => {
                let b = super::decode_value(enc, s)?;
                if std::str::from_utf8(&b).is_err() {
                    return Err(mismatch(self));
                }
                b
            }
            (TypeName::Int | TypeName::Timestamp, Value::Number(n)) => {
                let v = n.as_i64().ok_or_else(|| mismatch(self))?;
                Zeroizing::new(v.to_be_bytes().to_vec())
            }
            (TypeName::Date, Value::Number(n)) => {
                let v = n
                    .as_i64()
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| mismatch(self))?;
                Zeroizing::new(v.to_be_bytes().to_vec())
            }
            (TypeName::Bool, Value::Bool(b)) => Zeroizing::new(vec![u8::from(*b)]),
            (TypeName::Uuid, Value::String(s)) => {
                Zeroizing::new(parse_uuid(s).ok_or_else(|| mismatch(self))?.to_vec())
            }
            (TypeName::Json, v) => {
                Zeroizing::new(serde_json_canonicalizer::to_vec(v).map_err(|_| mismatch(self))?)
            }
            _ => return Err(mismatch(self)),
        };
        Ok(bytes)
    }

    /// A decrypted plaintext as the response gives it: the inverse of [`TypeName::encode`]. A
    /// value whose bytes do not have the type's form (sealed before the service checked types)
    /// comes back as a string in `enc`, as for `bytes`.
    pub fn decode(
        self,
        enc: Encoding,
        b: &[u8],
    ) -> Result<serde_json::Value, crate::error::ApiError> {
        use serde_json::Value;
        let typed = match self {
            TypeName::Int | TypeName::Timestamp => <[u8; 8]>::try_from(b)
                .ok()
                .map(|a| Value::from(i64::from_be_bytes(a))),
            TypeName::Date => <[u8; 4]>::try_from(b)
                .ok()
                .map(|a| Value::from(i32::from_be_bytes(a))),
            TypeName::Bool => match b {
                [0] => Some(Value::Bool(false)),
                [1] => Some(Value::Bool(true)),
                _ => None,
            },
            TypeName::Uuid => <[u8; 16]>::try_from(b)
                .ok()
                .map(|a| Value::String(uuid_text(&a))),
            TypeName::Json => serde_json::from_slice(b).ok(),
            TypeName::Bytes | TypeName::Text => None,
        };
        match typed {
            Some(v) => Ok(v),
            None => super::encode_value(enc, b).map(Value::String),
        }
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits, either case) to its 16 bytes.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    hex::decode_to_slice(&hex, &mut out).ok()?;
    Some(out)
}

fn uuid_text(a: &[u8; 16]) -> String {
    let h = hex::encode(a);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

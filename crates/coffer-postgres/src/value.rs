//! Typed plaintexts and their canonical encodings (docs/FORMAT.md §2, table 3).
//!
//! Every encrypted column holds one [`ValueType`]; its tag is in the AAD, so a value sealed as
//! text cannot be opened as an integer. The byte encodings are the ones every Coffer language
//! binding produces, so Rust and Python read each other's columns.

use coffer_core::ValueType;

/// Why a value could not be encoded or decoded (no value bytes in the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub String);

/// A Rust value that can be sealed into a column: its type tag and canonical bytes.
pub trait ToPlain {
    /// The value type (its tag enters the AAD).
    const TYPE: ValueType;
    /// The canonical plaintext bytes.
    fn to_plain(&self) -> Result<Vec<u8>, ValueError>;
}

/// A Rust value that can be read back from a column's canonical bytes.
pub trait FromPlain: ToPlain + Sized {
    /// Decodes canonical plaintext bytes.
    fn from_plain(bytes: Vec<u8>) -> Result<Self, ValueError>;
}

/// The lower-case name of a value type, as the schema file spells it.
pub fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Bytes => "bytes",
        ValueType::Text => "text",
        ValueType::Int64 => "int",
        ValueType::Date => "date",
        ValueType::Timestamp => "timestamp",
        ValueType::Json => "json",
        ValueType::Bool => "bool",
        ValueType::Uuid => "uuid",
        _ => "unknown",
    }
}

/// Parses a schema type name.
pub fn parse_type(name: &str) -> Option<ValueType> {
    Some(match name {
        "bytes" | "bytea" => ValueType::Bytes,
        "text" => ValueType::Text,
        "int" | "integer" | "bigint" | "int64" => ValueType::Int64,
        "date" => ValueType::Date,
        "timestamp" | "timestamptz" => ValueType::Timestamp,
        "json" | "jsonb" => ValueType::Json,
        "bool" | "boolean" => ValueType::Bool,
        "uuid" => ValueType::Uuid,
        _ => return None,
    })
}

fn fixed<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], ValueError> {
    bytes
        .try_into()
        .map_err(|_| ValueError(format!("{what}: expected {N} bytes, found {}", bytes.len())))
}

impl ToPlain for str {
    const TYPE: ValueType = ValueType::Text;
    fn to_plain(&self) -> Result<Vec<u8>, ValueError> {
        Ok(self.as_bytes().to_vec())
    }
}

impl ToPlain for String {
    const TYPE: ValueType = ValueType::Text;
    fn to_plain(&self) -> Result<Vec<u8>, ValueError> {
        Ok(self.as_bytes().to_vec())
    }
}

impl FromPlain for String {
    fn from_plain(bytes: Vec<u8>) -> Result<Self, ValueError> {
        String::from_utf8(bytes).map_err(|_| ValueError("text value is not UTF-8".into()))
    }
}

impl ToPlain for [u8] {
    const TYPE: ValueType = ValueType::Bytes;
    fn to_plain(&self) -> Result<Vec<u8>, ValueError> {
        Ok(self.to_vec())
    }
}

impl ToPlain for Vec<u8> {
    const TYPE: ValueType = ValueType::Bytes;
    fn to_plain(&self) -> Result<Vec<u8>, ValueError> {
        Ok(self.clone())
    }
}

impl FromPlain for Vec<u8> {
    fn from_plain(bytes: Vec<u8>) -> Result<Self, ValueError> {
        Ok(bytes)
    }
}

impl ToPlain for i64 {
    const TYPE: ValueType = ValueType::Int64;
    fn to_plain(&self) -> Result<Vec<u8>, ValueError> {
        Ok(self.to_be_bytes().to_vec())
    }
}

impl FromPlain for i64 {
    fn from_plain(bytes: Vec<u8>) -> Result<Self, ValueError> {
        Ok(i64::from_be_bytes(fixed(&bytes, "integer")?))
    }
}

impl ToPlain for i32 {
    const TYPE: ValueType = ValueType::Int64;
    fn to_plain(&self) -> Result<Vec<u8>, ValueError> {
        i64::from(*self).to_plain()
    }
}

impl FromPlain for i32 {
    fn from_plain(bytes: Vec<u8>) -> Result<Self, ValueError> {
        i32::try_from(i64::from_plain(bytes)?)
            .map_err(|_| ValueError("integer does not fit in i32".into()))
    }
}

impl ToPlain for bool {
    const TYPE: ValueType = ValueType::Bool;
    fn to_plain(&self) -> Result<Vec<u8>, ValueError> {
        Ok(vec![u8::from(*self)])
    }
}

impl FromPlain for bool {
    fn from_plain(bytes: Vec<u8>) -> Result<Self, ValueError> {
        match bytes.as_slice() {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(ValueError("boolean: expected one byte 0x00 or 0x01".into())),
        }
    }
}

impl ToPlain for uuid::Uuid {
    const TYPE: ValueType = ValueType::Uuid;
    fn to_plain(&self) -> Result<Vec<u8>, ValueError> {
        Ok(self.as_bytes().to_vec())
    }
}

impl FromPlain for uuid::Uuid {
    fn from_plain(bytes: Vec<u8>) -> Result<Self, ValueError> {
        Ok(uuid::Uuid::from_bytes(fixed(&bytes, "uuid")?))
    }
}

/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i32 = 2_440_588;

impl ToPlain for time::Date {
    const TYPE: ValueType = ValueType::Date;
    fn to_plain(&self) -> Result<Vec<u8>, ValueError> {
        Ok((self.to_julian_day() - UNIX_EPOCH_JULIAN_DAY)
            .to_be_bytes()
            .to_vec())
    }
}

impl FromPlain for time::Date {
    fn from_plain(bytes: Vec<u8>) -> Result<Self, ValueError> {
        let days = i32::from_be_bytes(fixed(&bytes, "date")?);
        days.checked_add(UNIX_EPOCH_JULIAN_DAY)
            .and_then(|jd| time::Date::from_julian_day(jd).ok())
            .ok_or_else(|| ValueError("date out of range".into()))
    }
}

/// Instants are stored to the microsecond (PostgreSQL's precision); nanoseconds are floored.
impl ToPlain for time::OffsetDateTime {
    const TYPE: ValueType = ValueType::Timestamp;
    fn to_plain(&self) -> Result<Vec<u8>, ValueError> {
        let us = self.unix_timestamp_nanos().div_euclid(1000);
        let us = i64::try_from(us).map_err(|_| ValueError("timestamp out of range".into()))?;
        Ok(us.to_be_bytes().to_vec())
    }
}

impl FromPlain for time::OffsetDateTime {
    fn from_plain(bytes: Vec<u8>) -> Result<Self, ValueError> {
        let us = i64::from_be_bytes(fixed(&bytes, "timestamp")?);
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
            .map_err(|_| ValueError("timestamp out of range".into()))
    }
}

/// JSON is sealed in its RFC 8785 (JCS) canonical form, so equal documents give equal bytes.
impl ToPlain for serde_json::Value {
    const TYPE: ValueType = ValueType::Json;
    fn to_plain(&self) -> Result<Vec<u8>, ValueError> {
        serde_json_canonicalizer::to_vec(self)
            .map_err(|e| ValueError(format!("JSON cannot be canonicalized: {e}")))
    }
}

impl FromPlain for serde_json::Value {
    fn from_plain(bytes: Vec<u8>) -> Result<Self, ValueError> {
        serde_json::from_slice(&bytes).map_err(|_| ValueError("JSON value does not parse".into()))
    }
}

impl<T: ToPlain + ?Sized> ToPlain for &T {
    const TYPE: ValueType = T::TYPE;
    fn to_plain(&self) -> Result<Vec<u8>, ValueError> {
        (**self).to_plain()
    }
}

/// Canonicalizes a JSON text (RFC 8785), for plaintext read from a `json`/`jsonb` column.
pub fn canonical_json(text: &str) -> Result<Vec<u8>, ValueError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|_| ValueError("JSON value does not parse".into()))?;
    v.to_plain()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<T: FromPlain + PartialEq + std::fmt::Debug>(v: T) {
        let bytes = v.to_plain().unwrap_or_default();
        assert_eq!(T::from_plain(bytes).ok(), Some(v));
    }

    #[test]
    fn encodings_match_the_format_table() {
        assert_eq!(42i64.to_plain().ok(), Some(vec![0, 0, 0, 0, 0, 0, 0, 42]));
        assert_eq!((-1i32).to_plain().ok(), Some(vec![0xff; 8]));
        assert_eq!(true.to_plain().ok(), Some(vec![1]));
        let d = time::Date::from_calendar_date(1970, time::Month::January, 2).ok();
        assert_eq!(d.map(|d| d.to_plain().ok()), Some(Some(vec![0, 0, 0, 1])));
        let t = time::OffsetDateTime::from_unix_timestamp(1).ok();
        assert_eq!(
            t.map(|t| t.to_plain().ok()),
            Some(Some(1_000_000i64.to_be_bytes().to_vec()))
        );
        let j: serde_json::Value = serde_json::json!({"b": 1, "a": [true, null, 1.5e0]});
        assert_eq!(
            j.to_plain().ok().map(String::from_utf8),
            Some(Ok(r#"{"a":[true,null,1.5],"b":1}"#.to_owned()))
        );
    }

    #[test]
    fn values_round_trip() {
        round("añ".to_owned());
        round(vec![0u8, 255]);
        round(i64::MIN);
        round(i32::MAX);
        round(false);
        round(uuid::Uuid::from_u128(7));
        round(time::Date::MIN);
        round(time::Date::MAX);
        round(serde_json::json!({"x": [1, "y"]}));
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(-1_500).ok();
        assert_eq!(
            t.and_then(|t| t.to_plain().ok())
                .and_then(|b| time::OffsetDateTime::from_plain(b).ok())
                .map(|t| t.unix_timestamp_nanos()),
            Some(-2_000)
        );
    }

    #[test]
    fn wrong_widths_are_refused() {
        assert!(i64::from_plain(vec![1, 2]).is_err());
        assert!(i32::from_plain(i64::MAX.to_be_bytes().to_vec()).is_err());
        assert!(bool::from_plain(vec![2]).is_err());
        assert!(String::from_plain(vec![0xff]).is_err());
    }
}

//! Value types: the type tag that enters every field AAD (docs/FORMAT.md §3).
//!
//! A value sealed as one type cannot be opened as another. The canonical byte encodings of the
//! typed values themselves are given in docs/FORMAT.md §3 so that every language produces the same
//! bytes; column integrations (Rust and Python) implement them.

/// The type of a field's plaintext. The tag byte is part of the AAD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueType {
    /// Raw bytes (BYTEA).
    #[default]
    Bytes,
    /// UTF-8 text.
    Text,
    /// A signed 64-bit integer, 8 bytes big-endian.
    Int64,
    /// A calendar date: days since 1970-01-01 as i32 big-endian.
    Date,
    /// An instant: microseconds since 1970-01-01T00:00:00Z as i64 big-endian.
    Timestamp,
    /// JSON, canonicalized with RFC 8785 (JCS).
    Json,
    /// A boolean, one byte 0x00 or 0x01.
    Bool,
    /// A UUID, 16 bytes.
    Uuid,
}

impl ValueType {
    /// The tag byte (docs/FORMAT.md §3, table 3).
    pub const fn tag(self) -> u8 {
        match self {
            ValueType::Bytes => 0x00,
            ValueType::Text => 0x01,
            ValueType::Int64 => 0x02,
            ValueType::Date => 0x03,
            ValueType::Timestamp => 0x04,
            ValueType::Json => 0x05,
            ValueType::Bool => 0x06,
            ValueType::Uuid => 0x07,
        }
    }
}

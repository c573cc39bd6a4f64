//! The canonical component encoding (docs/FORMAT.md §1).
//!
//! Every AAD, HKDF info and blind-index input is a sequence of components, each
//! `tag (u8) ‖ length (u32 BE) ‖ bytes`. Nothing is ever plainly concatenated, so ("1", "23") and
//! ("12", "3") can never encode alike.

use crate::error::{Error, Result};

/// Component tags (docs/FORMAT.md §1, table 1). Never renumbered once released.
pub mod tag {
    /// Format identifier, e.g. `coffer/field/v1`.
    pub const FORMAT: u8 = 0x01;
    /// The field header bytes.
    pub const HEADER: u8 = 0x02;
    /// Scope id.
    pub const SCOPE: u8 = 0x03;
    /// Column id (a stable logical id, not the SQL name).
    pub const COLUMN: u8 = 0x04;
    /// Value type tag (one byte).
    pub const VALUE_TYPE: u8 = 0x05;
    /// One component of a search domain (e.g. the tenant).
    pub const DOMAIN: u8 = 0x06;
    /// One component of a row context (e.g. the primary key).
    pub const ROW: u8 = 0x07;
    /// KDF purpose label.
    pub const PURPOSE: u8 = 0x10;
    /// Blind-index name.
    pub const INDEX: u8 = 0x11;
    /// Extra KDF input (e.g. a prefix length).
    pub const EXTRA: u8 = 0x12;
    /// A blind-index input value, after normalization.
    pub const VALUE: u8 = 0x20;
    /// Key metadata: store id.
    pub const STORE: u8 = 0x30;
    /// Key metadata: key version.
    pub const VERSION: u8 = 0x31;
    /// Key metadata: key id.
    pub const KEY_ID: u8 = 0x32;
    /// Key metadata: algorithm name.
    pub const ALGORITHM: u8 = 0x33;
}

/// Appends one component to `out`.
pub fn push(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) -> Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| Error::invalid("context component", "longer than 4 GiB"))?;
    out.reserve(5 + bytes.len());
    out.push(tag);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Writes one component into `out` at `at`; returns the position after it. `out` must have
/// room for `5 + bytes.len()` bytes from `at` (the caller sized it).
pub fn put(out: &mut [u8], at: usize, tag: u8, bytes: &[u8]) -> Result<usize> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| Error::invalid("context component", "longer than 4 GiB"))?;
    let end = at + 5 + bytes.len();
    let dst = out
        .get_mut(at..end)
        .ok_or_else(|| Error::invalid("context component", "buffer too short"))?;
    dst[0] = tag;
    dst[1..5].copy_from_slice(&len.to_be_bytes());
    dst[5..].copy_from_slice(bytes);
    Ok(end)
}

/// Encodes a list of components into a fresh buffer.
pub fn encode(components: &[(u8, &[u8])]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(components.iter().map(|(_, b)| 5 + b.len()).sum());
    for (t, b) in components {
        push(&mut out, *t, b)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_tag_length_bytes() {
        let e = encode(&[(tag::SCOPE, b"ab"), (tag::ROW, b"")]).unwrap();
        assert_eq!(e, [0x03, 0, 0, 0, 2, b'a', b'b', 0x07, 0, 0, 0, 0]);
    }

    #[test]
    fn splits_never_collide() {
        let a = encode(&[(tag::ROW, b"1"), (tag::ROW, b"23")]).unwrap();
        let b = encode(&[(tag::ROW, b"12"), (tag::ROW, b"3")]).unwrap();
        assert_ne!(a, b);
    }
}

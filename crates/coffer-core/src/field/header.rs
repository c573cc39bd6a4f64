//! The field header (docs/FORMAT.md §2.1): one byte, plus a varint for key versions above 30.
//!
//! ```text
//! bit   7      6 5      4 3 2 1 0
//!       N      S        V
//! N = 1: authenticated NULL      S = suite      V = key version 0..=30, 31 = escape
//! ```
//! With V = 31 an unsigned LEB128 version follows: minimal, at least 31, at most u32::MAX.

use crate::ids::KeyVersion;

/// Field encryption suites (the S bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Suite {
    /// AES-256-GCM, random 96-bit IV from the module, 96-bit tag. The default. 25 bytes of overhead.
    Gcm96,
    /// AES-256-GCM, random 96-bit IV from the module, 128-bit tag. 29 bytes of overhead.
    Gcm128,
    /// AES-256-SIV (RFC 5297), deterministic: equal inputs give equal ciphertexts. 17 bytes.
    /// Not FIPS-approved.
    Siv,
}

impl Suite {
    pub(crate) const fn bits(self) -> u8 {
        match self {
            Suite::Gcm96 => 0,
            Suite::Gcm128 => 1,
            Suite::Siv => 2,
        }
    }

    const fn from_bits(b: u8) -> Option<Suite> {
        match b {
            0 => Some(Suite::Gcm96),
            1 => Some(Suite::Gcm128),
            2 => Some(Suite::Siv),
            _ => None, // 3 = extension, reserved
        }
    }

    /// Bytes the suite adds after the header: IV + tag, or the SIV.
    pub const fn body_overhead(self) -> usize {
        match self {
            Suite::Gcm96 => 12 + 12,
            Suite::Gcm128 => 12 + 16,
            Suite::Siv => 16,
        }
    }

    /// Whether equal plaintexts give equal ciphertexts.
    pub const fn is_deterministic(self) -> bool {
        matches!(self, Suite::Siv)
    }

    /// The suite's name as the CLI and docs spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Suite::Gcm96 => "aes-256-gcm-t96",
            Suite::Gcm128 => "aes-256-gcm-t128",
            Suite::Siv => "aes-256-siv",
        }
    }
}

/// Why a header did not parse. Decryption maps every one of these to the opaque error; a key
/// ring uses them to pick a key before decrypting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// No bytes at all.
    #[error("empty value")]
    Empty,
    /// Suite 3 (extension) or another unknown suite.
    #[error("unknown suite")]
    UnknownSuite,
    /// The version varint is truncated, non-minimal, below 31 or above u32::MAX.
    #[error("malformed key version")]
    BadVersion,
}

/// A parsed field header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Authenticated NULL (the plaintext is empty and means SQL NULL).
    pub null: bool,
    /// The suite.
    pub suite: Suite,
    /// The DEK version that sealed the value.
    pub version: KeyVersion,
}

const ESCAPE: u8 = 31;

impl Header {
    /// Parses the header at the start of `bytes`; returns it and its length.
    pub fn parse(bytes: &[u8]) -> Result<(Header, usize), HeaderError> {
        let (&b0, rest) = bytes.split_first().ok_or(HeaderError::Empty)?;
        let null = b0 & 0x80 != 0;
        let suite = Suite::from_bits((b0 >> 5) & 0b11).ok_or(HeaderError::UnknownSuite)?;
        let v = b0 & 0x1f;
        if v != ESCAPE {
            let version = KeyVersion(u32::from(v));
            return Ok((
                Header {
                    null,
                    suite,
                    version,
                },
                1,
            ));
        }
        let (value, used) = read_leb128_u32(rest).ok_or(HeaderError::BadVersion)?;
        if value < u32::from(ESCAPE) {
            return Err(HeaderError::BadVersion);
        }
        let version = KeyVersion(value);
        Ok((
            Header {
                null,
                suite,
                version,
            },
            1 + used,
        ))
    }

    /// Appends the header's bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let v = self.version.0;
        let small = if v < u32::from(ESCAPE) {
            v as u8
        } else {
            ESCAPE
        };
        out.push(u8::from(self.null) << 7 | self.suite.bits() << 5 | small);
        if small == ESCAPE {
            let mut rest = v;
            loop {
                let byte = (rest & 0x7f) as u8;
                rest >>= 7;
                if rest == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
    }

    /// The header's length in bytes (1 for versions 0–30, 2–6 above).
    pub fn len(&self) -> usize {
        let v = self.version.0;
        if v < u32::from(ESCAPE) {
            1
        } else {
            1 + (32 - v.leading_zeros() as usize).div_ceil(7)
        }
    }

    /// Never true: a header has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Minimal unsigned LEB128, at most 5 bytes, value ≤ u32::MAX.
fn read_leb128_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            // Minimal: a multi-byte encoding may not end in a zero group.
            if i > 0 && b == 0 {
                return None;
            }
            return u32::try_from(value).ok().map(|v| (v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(h: Header) -> Vec<u8> {
        let mut out = Vec::new();
        h.write(&mut out);
        assert_eq!(out.len(), h.len());
        let (back, used) = Header::parse(&out).unwrap();
        assert_eq!(back, h);
        assert_eq!(used, out.len());
        out
    }

    #[test]
    fn small_versions_fit_in_one_byte() {
        for v in 0..31 {
            let h = Header {
                null: false,
                suite: Suite::Gcm96,
                version: KeyVersion(v),
            };
            assert_eq!(round_trip(h), [v as u8]);
        }
        let h = Header {
            null: true,
            suite: Suite::Siv,
            version: KeyVersion(5),
        };
        assert_eq!(round_trip(h), [0x80 | 0x40 | 5]);
    }

    #[test]
    fn large_versions_use_the_escape() {
        for (v, len) in [
            (31, 2),
            (127, 2),
            (128, 3),
            (16_383, 3),
            (16_384, 4),
            (u32::MAX, 6),
        ] {
            let h = Header {
                null: false,
                suite: Suite::Gcm128,
                version: KeyVersion(v),
            };
            assert_eq!(round_trip(h).len(), len, "version {v}");
        }
    }

    #[test]
    fn non_canonical_versions_are_rejected() {
        // 30 through the escape.
        assert_eq!(Header::parse(&[0x1f, 30]), Err(HeaderError::BadVersion));
        // 31 with a trailing zero group.
        assert_eq!(
            Header::parse(&[0x1f, 0x9f, 0x00]),
            Err(HeaderError::BadVersion)
        );
        // Above u32::MAX.
        assert_eq!(
            Header::parse(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x1f]),
            Err(HeaderError::BadVersion)
        );
        // Truncated.
        assert_eq!(Header::parse(&[0x1f, 0x80]), Err(HeaderError::BadVersion));
        assert_eq!(Header::parse(&[0x1f]), Err(HeaderError::BadVersion));
        assert_eq!(Header::parse(&[]), Err(HeaderError::Empty));
        assert_eq!(Header::parse(&[0x60]), Err(HeaderError::UnknownSuite));
    }
}

//! Blind indexes: HMAC-SHA-256 over normalized values, truncated (docs/FORMAT.md §5).
//!
//! ```
//! use coffer_core::{Dek, ColumnId, BlindIndexKey, Normalizer};
//!
//! let dek = Dek::generate()?;
//! let email = ColumnId::new("patients.email")?;
//! let idx = BlindIndexKey::new(&dek, &email, "email", 32)?
//!     .with_normalizers(vec![Normalizer::Trim, Normalizer::CaseFold]);
//! assert_eq!(idx.compute(&[b" Ann@Example.org"])?, idx.compute(&[b"ann@example.org"])?);
//! # Ok::<(), coffer_core::Error>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use aws_lc_rs::hmac;
use unicode_normalization::UnicodeNormalization as _;

use crate::encoding::{self, tag};
use crate::error::{Error, Result};
use crate::ids::ColumnId;
use crate::kdf::{self, Purpose};
use crate::secret::{Dek, SubKey};

/// Smallest and largest index widths, in bits.
pub const MIN_BITS: u16 = 8;
/// See [`MIN_BITS`].
pub const MAX_BITS: u16 = 256;

/// A normalization step applied to each value before it is indexed, in the order given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Normalizer {
    /// Strip leading and trailing white space.
    Trim,
    /// Unicode lower-casing (full, `char::to_lowercase`).
    CaseFold,
    /// Unicode NFC.
    Nfc,
    /// Keep only ASCII digits (`"123-45-6789"` → `"123456789"`).
    DigitsOnly,
    /// Keep the last N characters (e.g. the last four of an SSN).
    LastN(u16),
}

impl Normalizer {
    /// Applies the step. Non-UTF-8 input passes through the text steps unchanged, except
    /// `DigitsOnly` and `LastN`, which work on bytes then.
    pub fn apply<'a>(&self, value: Cow<'a, [u8]>) -> Cow<'a, [u8]> {
        let text = match std::str::from_utf8(&value) {
            Ok(t) => t,
            Err(_) => {
                return match self {
                    Normalizer::DigitsOnly => {
                        Cow::Owned(value.iter().copied().filter(u8::is_ascii_digit).collect())
                    }
                    Normalizer::LastN(n) => {
                        let n = usize::from(*n);
                        let start = value.len().saturating_sub(n);
                        Cow::Owned(value[start..].to_vec())
                    }
                    _ => value,
                };
            }
        };
        let out: String = match self {
            Normalizer::Trim => text.trim().to_owned(),
            Normalizer::CaseFold => text.to_lowercase(),
            Normalizer::Nfc => text.nfc().collect(),
            Normalizer::DigitsOnly => text.chars().filter(char::is_ascii_digit).collect(),
            Normalizer::LastN(n) => {
                let count = text.chars().count();
                text.chars()
                    .skip(count.saturating_sub(usize::from(*n)))
                    .collect()
            }
        };
        Cow::Owned(out.into_bytes())
    }
}

impl FromStr for Normalizer {
    type Err = Error;
    /// `trim`, `casefold` (or `lowercase`), `nfc`, `digits`, `last:N`.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "trim" => Normalizer::Trim,
            "casefold" | "lowercase" => Normalizer::CaseFold,
            "nfc" => Normalizer::Nfc,
            "digits" => Normalizer::DigitsOnly,
            _ => {
                let n = s
                    .strip_prefix("last:")
                    .and_then(|n| n.parse::<u16>().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        Error::invalid(
                            "normalizer",
                            format!("'{s}': expected trim, casefold, nfc, digits or last:N"),
                        )
                    })?;
                Normalizer::LastN(n)
            }
        })
    }
}

impl fmt::Display for Normalizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Normalizer::Trim => f.write_str("trim"),
            Normalizer::CaseFold => f.write_str("casefold"),
            Normalizer::Nfc => f.write_str("nfc"),
            Normalizer::DigitsOnly => f.write_str("digits"),
            Normalizer::LastN(n) => write!(f, "last:{n}"),
        }
    }
}

/// A blind-index key for one named index of one column.
pub struct BlindIndexKey {
    key: hmac::Key,
    bits: u16,
    normalizers: Vec<Normalizer>,
}

impl fmt::Debug for BlindIndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlindIndexKey")
            .field("bits", &self.bits)
            .field("normalizers", &self.normalizers)
            .finish_non_exhaustive()
    }
}

impl BlindIndexKey {
    /// Derives the key of index `name` on `column` from `dek`, truncating to `bits` (8–256).
    ///
    /// Each index (and each prefix length of a prefix index) gets its own name and so its own
    /// key: two indexes never produce comparable values.
    pub fn new(dek: &Dek, column: &ColumnId, name: &str, bits: u16) -> Result<Self> {
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(Error::invalid(
                "blind-index width",
                format!("{bits} bits; choose {MIN_BITS}–{MAX_BITS} (see `coffer index plan`)"),
            ));
        }
        if name.is_empty() {
            return Err(Error::invalid("blind-index name", "must not be empty"));
        }
        let sub: SubKey<32> = kdf::derive(
            dek,
            Purpose::BlindIndex,
            &[
                (tag::COLUMN, column.as_str().as_bytes()),
                (tag::INDEX, name.as_bytes()),
            ],
        )?;
        Ok(BlindIndexKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, sub.expose_secret()),
            bits,
            normalizers: Vec::new(),
        })
    }

    /// Sets the normalization steps, applied to every value in order.
    pub fn with_normalizers(mut self, normalizers: Vec<Normalizer>) -> Self {
        self.normalizers = normalizers;
        self
    }

    /// Width in bits.
    pub fn bits(&self) -> u16 {
        self.bits
    }

    /// Output length in bytes (`ceil(bits / 8)`).
    pub fn output_len(&self) -> usize {
        usize::from(self.bits).div_ceil(8)
    }

    /// The index of one value, or of several for a compound index (order matters).
    pub fn compute(&self, values: &[&[u8]]) -> Result<Vec<u8>> {
        self.compute_in_domain(&[], values)
    }

    /// As [`compute`](Self::compute), within a search domain (e.g. a tenant): the same value in
    /// two domains gets unrelated indexes.
    pub fn compute_in_domain(&self, domain: &[&[u8]], values: &[&[u8]]) -> Result<Vec<u8>> {
        if values.is_empty() {
            return Err(Error::invalid("blind-index input", "no values given"));
        }
        let mut input = Vec::new();
        for d in domain {
            encoding::push(&mut input, tag::DOMAIN, d)?;
        }
        for v in values {
            let normalized = self
                .normalizers
                .iter()
                .fold(Cow::Borrowed(*v), |acc, n| n.apply(acc));
            encoding::push(&mut input, tag::VALUE, &normalized)?;
        }
        let mac = hmac::sign(&self.key, &input);
        Ok(truncate(mac.as_ref(), self.bits))
    }
}

/// The first `bits` bits of `mac`, low bits of a partial last byte cleared.
fn truncate(mac: &[u8], bits: u16) -> Vec<u8> {
    let len = usize::from(bits).div_ceil(8);
    let mut out = mac[..len].to_vec();
    let spare = (len * 8) as u16 - bits;
    if let Some(last) = out.last_mut() {
        *last &= 0xffu8 << spare;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(bits: u16) -> BlindIndexKey {
        let dek = Dek::from_bytes([3; 32]);
        BlindIndexKey::new(&dek, &ColumnId::new("ssn").unwrap(), "full", bits).unwrap()
    }

    #[test]
    fn normalizers() {
        let apply = |n: Normalizer, s: &str| {
            String::from_utf8(n.apply(Cow::Borrowed(s.as_bytes())).into_owned()).unwrap()
        };
        assert_eq!(apply(Normalizer::Trim, "  a b \t"), "a b");
        assert_eq!(apply(Normalizer::CaseFold, "ÄbC"), "äbc");
        assert_eq!(apply(Normalizer::DigitsOnly, "123-45-6789"), "123456789");
        assert_eq!(apply(Normalizer::LastN(4), "123-45-6789"), "6789");
        assert_eq!(apply(Normalizer::LastN(4), "12"), "12");
        assert_eq!(apply(Normalizer::Nfc, "e\u{301}"), "\u{e9}");
        assert_eq!(
            "last:4".parse::<Normalizer>().unwrap(),
            Normalizer::LastN(4)
        );
        assert!("last:0".parse::<Normalizer>().is_err());
        assert!("upper".parse::<Normalizer>().is_err());
    }

    #[test]
    fn widths_and_truncation() {
        for bits in [8u16, 13, 32, 100, 255, 256] {
            let out = key(bits).compute(&[b"x"]).unwrap();
            assert_eq!(out.len(), usize::from(bits).div_ceil(8));
            let spare = out.len() * 8 - usize::from(bits);
            assert_eq!(out.last().unwrap() & ((1u8 << spare) - 1), 0);
        }
        let dek = Dek::from_bytes([3; 32]);
        let col = ColumnId::new("c").unwrap();
        assert!(BlindIndexKey::new(&dek, &col, "i", 7).is_err());
        assert!(BlindIndexKey::new(&dek, &col, "i", 257).is_err());
    }

    #[test]
    fn compound_values_do_not_run_together() {
        let k = key(256);
        assert_ne!(
            k.compute(&[b"ab", b"c"]).unwrap(),
            k.compute(&[b"a", b"bc"]).unwrap()
        );
        assert_ne!(
            k.compute(&[b"abc"]).unwrap(),
            k.compute(&[b"a", b"bc"]).unwrap()
        );
    }

    #[test]
    fn names_columns_and_domains_separate_indexes() {
        let dek = Dek::from_bytes([3; 32]);
        let col = ColumnId::new("ssn").unwrap();
        let a = BlindIndexKey::new(&dek, &col, "full", 64).unwrap();
        let b = BlindIndexKey::new(&dek, &col, "last4", 64).unwrap();
        let c = BlindIndexKey::new(&dek, &ColumnId::new("mrn").unwrap(), "full", 64).unwrap();
        let v: &[&[u8]] = &[b"6789"];
        assert_ne!(a.compute(v).unwrap(), b.compute(v).unwrap());
        assert_ne!(a.compute(v).unwrap(), c.compute(v).unwrap());
        assert_ne!(
            a.compute(v).unwrap(),
            a.compute_in_domain(&[b"tenant-1"], v).unwrap()
        );
    }
}

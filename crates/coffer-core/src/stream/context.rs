//! The encryption context: authenticated, unencrypted metadata (file name hashes, content type,
//! backup ids), serialized as the format requires: a count, then key/value pairs sorted by key
//! bytes, each length-prefixed (u16 BE).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Key prefix the AWS SDKs reserve for their own entries.
const RESERVED_PREFIX: &str = "aws-crypto-";

/// Authenticated metadata carried in the header, in plaintext.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// Key prefix Coffer reserves for its own entries (`coffer:compression`,
    /// `coffer:backup-id`…): [`user_context`](Self::user_context) refuses it in pairs a user gives.
    pub const COFFER_PREFIX: &'static str = "coffer:";

    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pair. Keys may not be empty, repeat, or use the SDKs' reserved `aws-crypto-` prefix.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Result<()> {
        let key = key.into();
        if key.is_empty() || key.starts_with(RESERVED_PREFIX) {
            return Err(Error::invalid(
                "encryption context key",
                "empty, or uses the reserved aws-crypto- prefix",
            ));
        }
        if key.len() > usize::from(u16::MAX) {
            return Err(Error::invalid(
                "encryption context key",
                "longer than 65 535 bytes",
            ));
        }
        let value = value.into();
        if value.len() > usize::from(u16::MAX) {
            return Err(Error::invalid(
                "encryption context value",
                "longer than 65 535 bytes",
            ));
        }
        if self.0.contains_key(&key) {
            return Err(Error::invalid("encryption context key", "given twice"));
        }
        self.0.insert(key, value);
        Ok(())
    }

    /// A context of pairs a user gave (`--context KEY=VALUE`, a Python `context=` argument):
    /// as [`insert`](Self::insert) checks them, and refusing keys that start with `coffer:`,
    /// which are Coffer's own (compression, backup parts), so a user's pair can never pass for one.
    pub fn user_context<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut context = Self::new();
        for (k, v) in pairs {
            let k = k.into();
            if k.starts_with(Self::COFFER_PREFIX) {
                return Err(Error::invalid(
                    "encryption context key",
                    format!(
                        "'{k}': keys starting with {} are reserved for Coffer's own \
                         entries; choose another name",
                        Self::COFFER_PREFIX
                    ),
                ));
            }
            context.insert(k, v)?;
        }
        Ok(context)
    }

    /// A value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether it has no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The serialized pairs (count and pairs; empty for an empty context), as the header's AAD
    /// field holds them and as raw-AES EDKs bind them.
    pub fn serialize(&self) -> Result<Vec<u8>> {
        if self.0.is_empty() {
            return Ok(Vec::new());
        }
        let count = u16::try_from(self.0.len())
            .map_err(|_| Error::invalid("encryption context", "more than 65 535 pairs"))?;
        let mut out = count.to_be_bytes().to_vec();
        // BTreeMap<String, _> iterates in byte order of the UTF-8 keys, as the format requires.
        for (k, v) in &self.0 {
            for s in [k, v] {
                let len = u16::try_from(s.len())
                    .map_err(|_| Error::invalid("encryption context", "entry too long"))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        if out.len() > usize::from(u16::MAX) {
            return Err(Error::invalid(
                "encryption context",
                "longer than 65 535 bytes serialized",
            ));
        }
        Ok(out)
    }

    /// Parses serialized pairs (strictly: sorted, no duplicates, UTF-8, nothing left over).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &'static str| Error::Format(why);
        if bytes.is_empty() {
            return Ok(Self::new());
        }
        let mut r = bytes;
        let count = take_u16(&mut r).ok_or(bad("truncated encryption context"))?;
        if count == 0 {
            return Err(bad("encryption context with zero pairs"));
        }
        let mut map = BTreeMap::new();
        let mut last: Option<Vec<u8>> = None;
        for _ in 0..count {
            let k = take_str(&mut r).ok_or(bad("malformed encryption context"))?;
            let v = take_str(&mut r).ok_or(bad("malformed encryption context"))?;
            if last.as_deref().is_some_and(|l| l >= k.as_bytes()) {
                return Err(bad("encryption context not sorted, or a key repeats"));
            }
            last = Some(k.as_bytes().to_vec());
            map.insert(k, v);
        }
        if !r.is_empty() {
            return Err(bad("bytes after the encryption context"));
        }
        Ok(EncryptionContext(map))
    }
}

fn take_u16(r: &mut &[u8]) -> Option<u16> {
    let (h, t) = r.split_first_chunk::<2>()?;
    *r = t;
    Some(u16::from_be_bytes(*h))
}

fn take_str(r: &mut &[u8]) -> Option<String> {
    let n = usize::from(take_u16(r)?);
    if r.len() < n {
        return None;
    }
    let (s, t) = r.split_at(n);
    *r = t;
    String::from_utf8(s.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_sorted_and_parses_back() {
        let mut c = EncryptionContext::new();
        c.insert("b", "2").unwrap();
        c.insert("a", "1").unwrap();
        let s = c.serialize().unwrap();
        assert_eq!(s, b"\x00\x02\x00\x01a\x00\x011\x00\x01b\x00\x012");
        assert_eq!(EncryptionContext::parse(&s).unwrap(), c);
        assert!(EncryptionContext::new().serialize().unwrap().is_empty());
        assert!(c.insert("a", "x").is_err());
        assert!(c.insert("aws-crypto-public-key", "x").is_err());
        // Unsorted, repeated, truncated, trailing: refused.
        for bad in [
            &b"\x00\x02\x00\x01b\x00\x012\x00\x01a\x00\x011"[..],
            b"\x00\x02\x00\x01a\x00\x011\x00\x01a\x00\x011",
            b"\x00\x01\x00\x05a",
            b"\x00\x01\x00\x01a\x00\x011\x00",
            b"\x00\x00",
        ] {
            assert!(EncryptionContext::parse(bad).is_err());
        }
    }

    #[test]
    fn user_contexts_refuse_coffer_keys() {
        let c =
            EncryptionContext::user_context([("tenant", "acme"), ("purpose", "export")]).unwrap();
        assert_eq!(c.get("tenant"), Some("acme"));
        assert_eq!(c.iter().count(), 2);
        assert!(
            EncryptionContext::user_context(Vec::<(String, String)>::new())
                .unwrap()
                .is_empty()
        );
        let err = EncryptionContext::user_context([("a", "1"), ("coffer:compression", "zstd")])
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("reserved"), "{err}");
        // The rules of insert still apply.
        assert!(EncryptionContext::user_context([("a", "1"), ("a", "2")]).is_err());
        assert!(EncryptionContext::user_context([("aws-crypto-public-key", "x")]).is_err());
        assert!(EncryptionContext::user_context([("", "x")]).is_err());
        // Only the prefix is reserved: a key merely containing it is the user's.
        assert!(EncryptionContext::user_context([("my-coffer:x", "1")]).is_ok());
    }
}

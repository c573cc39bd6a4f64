//! Blind-index and prefix-token values, and [`Search`]: the terms a query binds and the check
//! that confirms a candidate row once decrypted.

use std::borrow::Cow;
use std::sync::Arc;

use coffer_core::{BlindIndexKey, KeyVersion};

use crate::error::{Error, Result};
use crate::schema::Index;
use crate::sealed::IndexValue;
use crate::value::ToPlain;

/// Applies an index's normalizers to canonical bytes.
pub(crate) fn normalize<'a>(ix: &Index, bytes: &'a [u8]) -> Cow<'a, [u8]> {
    let mut v = Cow::Borrowed(bytes);
    for n in &ix.normalizers {
        v = n.apply(v);
    }
    v
}

/// The index value of one row for `ix`, from the (canonical) values of its columns; `None`
/// values (NULL) give an SQL NULL index.
pub(crate) fn index_value(
    ix: &Index,
    keys: &[Arc<BlindIndexKey>],
    values: &[Option<&[u8]>],
) -> Result<IndexValue> {
    if values.iter().any(Option::is_none) {
        return Ok(match ix.prefix {
            Some(_) => IndexValue::Tokens(None),
            None => IndexValue::Single(None),
        });
    }
    let normalized: Vec<Cow<'_, [u8]>> = values
        .iter()
        .map(|v| normalize(ix, v.unwrap_or_default()))
        .collect();
    match ix.prefix {
        None => {
            let refs: Vec<&[u8]> = normalized.iter().map(|c| c.as_ref()).collect();
            Ok(IndexValue::Single(Some(keys[0].compute(&refs)?)))
        }
        Some((min, max)) => {
            let text = String::from_utf8_lossy(&normalized[0]);
            let mut tokens = Vec::new();
            let mut prefix = String::new();
            for (n, ch) in text.chars().enumerate().take(usize::from(max)) {
                prefix.push(ch);
                if n + 1 >= usize::from(min) {
                    tokens.push(prefix_token(
                        n + 1,
                        &keys[n + 1 - usize::from(min)],
                        &prefix,
                    )?);
                }
            }
            Ok(IndexValue::Tokens(Some(tokens)))
        }
    }
}

/// One prefix token: the prefix length (one byte) then the blind index of the prefix under
/// that length's key. The length byte keeps tokens of different lengths apart, so a query
/// for a 4-character prefix can only collide with other rows' 4-character tokens.
pub(crate) fn prefix_token(len: usize, key: &BlindIndexKey, prefix: &str) -> Result<Vec<u8>> {
    let len = u8::try_from(len).map_err(|_| Error::Schema("prefix longer than 255".into()))?;
    let mut token = vec![len];
    token.extend(key.compute(&[prefix.as_bytes()])?);
    Ok(token)
}

#[derive(Clone)]
pub(crate) enum Check {
    Exact(Vec<u8>),
    Equal(Vec<Vec<u8>>),
    Prefix(String),
}

/// Blind-index search terms (one per live key version) and the check that confirms a
/// candidate row once decrypted: an index only narrows the rows, collisions included.
/// Its `Debug` shows the index and the number of terms, never the searched value.
#[derive(Clone)]
pub struct Search {
    pub(crate) index: String,
    pub(crate) terms: Vec<(KeyVersion, Vec<u8>)>,
    pub(crate) check: Check,
    pub(crate) normalizers: Option<Index>,
}

impl std::fmt::Debug for Search {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Search")
            .field("index", &self.index)
            .field("terms", &self.terms.len())
            .finish_non_exhaustive()
    }
}

impl Search {
    /// One search over several scopes of a templated table (a query across tenants the caller
    /// names): the terms of every part, computed each under its own scope, with the check of
    /// the first. The parts must search the same index for the same value.
    pub fn merge(parts: impl IntoIterator<Item = Search>) -> Result<Search> {
        let mut parts = parts.into_iter();
        let mut out = parts
            .next()
            .ok_or_else(|| Error::Schema("a merged search needs at least one scope".into()))?;
        for p in parts {
            if p.index != out.index {
                return Err(Error::Schema(format!(
                    "cannot merge searches of '{}' and '{}'",
                    out.index, p.index
                )));
            }
            out.terms.extend(p.terms);
        }
        Ok(out)
    }

    /// The index values to bind (`= ANY($n)` for equality, `&& $n` for prefix tokens), or
    /// the ciphertexts of a deterministic search.
    pub fn terms(&self) -> Vec<Vec<u8>> {
        self.terms.iter().map(|(_, t)| t.clone()).collect()
    }

    /// The terms in the text form (`cf1:…`), for a deterministic column stored as TEXT.
    pub fn text_terms(&self) -> Vec<String> {
        self.terms
            .iter()
            .map(|(_, t)| coffer_core::field::text::encode(t))
            .collect()
    }

    /// The terms with the key version each was computed under.
    pub fn versioned_terms(&self) -> &[(KeyVersion, Vec<u8>)] {
        &self.terms
    }

    /// The index searched.
    pub fn index(&self) -> &str {
        &self.index
    }

    /// Whether a decrypted candidate really matches (for a compound index, its values in the
    /// index's column order).
    pub fn matches<T: ToPlain + ?Sized>(&self, values: &[&T]) -> bool {
        let plains: Option<Vec<Vec<u8>>> = values.iter().map(|v| v.to_plain().ok()).collect();
        plains.is_some_and(|p| {
            let refs: Vec<&[u8]> = p.iter().map(Vec::as_slice).collect();
            self.matches_bytes(&refs)
        })
    }

    /// As [`matches`](Self::matches) on canonical bytes.
    pub fn matches_bytes(&self, values: &[&[u8]]) -> bool {
        let norm = |v: &[u8]| -> Vec<u8> {
            match &self.normalizers {
                Some(ix) => normalize(ix, v).into_owned(),
                None => v.to_vec(),
            }
        };
        match &self.check {
            Check::Exact(want) => values.len() == 1 && values[0] == want.as_slice(),
            Check::Equal(want) => {
                want.len() == values.len() && want.iter().zip(values).all(|(w, v)| norm(v) == *w)
            }
            Check::Prefix(p) => {
                values.len() == 1
                    && String::from_utf8_lossy(&norm(values[0])).starts_with(p.as_str())
            }
        }
    }
}

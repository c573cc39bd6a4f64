//! Ballot keys and what they seal.
//!
//! Each ballot has its own key-store scope, `ballot:<id>`, whose DEK the KEK wraps (two-tier
//! cached by the keyring), and its own data key, sealed under that scope into the ballot's row
//! (`ballots.encrypted_dek`, [`Keyring::generate_data_key`]). The data key derives, with HKDF,
//! one AES-256-GCM key per column (`measure`, `option`) and two HMAC-SHA-256 keys: one that
//! finds equal write-ins and one that tags voters in the has-voted table. Destroying the scope
//! makes the row's data key, and so every text of the ballot, unrecoverable (also from old
//! database backups, which hold the sealed data key but never the scope's DEK).
//!
//! Texts are padded to length buckets before encryption (docs/DESIGN.md §A1), so a ciphertext's length
//! tells only the bucket.

use std::sync::Arc;

use coffer_core::{
    BlindIndexKey, ColumnId, ErrorKind, FieldContext, FieldKey, KeyVersion, ScopeId, Suite,
    ValueType,
};
use coffer_keys::Keyring;
use unicode_normalization::UnicodeNormalization as _;

use crate::error::AppError;

/// Longest measure, in bytes of UTF-8.
pub const MAX_MEASURE: usize = 1000;
/// Longest option or write-in, in bytes of UTF-8.
pub const MAX_OPTION: usize = 200;
/// Padded lengths: a text of n bytes is sealed as the smallest bucket of at least n + 1 bytes.
const BUCKETS: [usize; 7] = [32, 64, 128, 256, 512, 1024, 2048];
/// Width of the write-in equality index and of voter tags: wide enough that two different
/// values never collide in practice (these are look-ups, not searches over a column).
const TAG_BITS: u16 = 128;

/// The key-store scope of a ballot.
pub fn scope_of(ballot: &str) -> Result<ScopeId, AppError> {
    ScopeId::new(format!("ballot:{ballot}")).map_err(AppError::internal)
}

/// The form of a choice that decides whether two write-ins are the same option: Unicode NFKC,
/// lower case, runs of white space as one space, trimmed.
pub fn normalize_choice(text: &str) -> String {
    let folded: String = text.nfkc().flat_map(char::to_lowercase).collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Pads `text` to its bucket (ISO/IEC 7816-4: a 0x80 byte, then zeros).
fn pad(text: &str) -> Vec<u8> {
    let n = text.len() + 1;
    let len = BUCKETS.iter().copied().find(|b| *b >= n).unwrap_or(n);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(text.as_bytes());
    out.push(0x80);
    out.resize(len, 0);
    out
}

fn unpad(mut padded: Vec<u8>) -> Result<String, AppError> {
    while padded.last() == Some(&0) {
        padded.pop();
    }
    if padded.pop() != Some(0x80) {
        return Err(AppError::internal("a ballot text has bad padding"));
    }
    String::from_utf8(padded).map_err(|_| AppError::internal("a ballot text is not UTF-8"))
}

/// The keys of one ballot, derived from its data key.
pub struct BallotKeys {
    measure: FieldKey,
    option: FieldKey,
    choice_index: BlindIndexKey,
    voter: BlindIndexKey,
}

impl BallotKeys {
    /// Derives the keys of the ballot whose scope is `scope` from its data key.
    pub fn derive(data_key: &coffer_core::Dek, scope: &ScopeId) -> Result<BallotKeys, AppError> {
        let col = |c: &str| ColumnId::new(c).map_err(AppError::internal);
        let field = |c: &str| {
            FieldKey::new(data_key, KeyVersion(1), Suite::Gcm96, scope, &col(c)?)
                .map_err(AppError::internal)
        };
        let index = |c: &str| {
            BlindIndexKey::new(data_key, &col(c)?, "eq", TAG_BITS).map_err(AppError::internal)
        };
        Ok(BallotKeys {
            measure: field("measure")?,
            option: field("option")?,
            choice_index: index("option")?,
            voter: index("voter")?,
        })
    }
}

/// What seals a ballot's texts: its keys, or nothing at all in the plaintext benchmark mode.
#[derive(Clone)]
pub enum Cipher {
    /// The ballot's keys.
    Sealed(Arc<BallotKeys>),
    /// `encryption = false` (development only): texts stored as they are.
    Plain,
}

impl Cipher {
    /// Seals a ballot's measure, bound to the ballot.
    pub fn seal_measure(&self, ballot: &str, text: &str) -> Result<Vec<u8>, AppError> {
        match self {
            Cipher::Sealed(k) => k
                .measure
                .encrypt(&ctx(&[ballot.as_bytes()]), &pad(text))
                .map_err(AppError::internal),
            Cipher::Plain => Ok(text.as_bytes().to_vec()),
        }
    }

    /// Opens a ballot's measure.
    pub fn open_measure(&self, ballot: &str, sealed: &[u8]) -> Result<String, AppError> {
        match self {
            Cipher::Sealed(k) => open(&k.measure, &[ballot.as_bytes()], sealed),
            Cipher::Plain => plain(sealed),
        }
    }

    /// Seals an option's text, bound to the ballot and to the option's equality index (so a
    /// text moved to another option's row does not open).
    pub fn seal_option(&self, ballot: &str, index: &[u8], text: &str) -> Result<Vec<u8>, AppError> {
        match self {
            Cipher::Sealed(k) => k
                .option
                .encrypt(&ctx(&[ballot.as_bytes(), index]), &pad(text))
                .map_err(AppError::internal),
            Cipher::Plain => Ok(text.as_bytes().to_vec()),
        }
    }

    /// Opens an option's text.
    pub fn open_option(
        &self,
        ballot: &str,
        index: &[u8],
        sealed: &[u8],
    ) -> Result<String, AppError> {
        match self {
            Cipher::Sealed(k) => open(&k.option, &[ballot.as_bytes(), index], sealed),
            Cipher::Plain => plain(sealed),
        }
    }

    /// The equality index of a choice's text (of its normalized form).
    pub fn choice_index(&self, text: &str) -> Result<Vec<u8>, AppError> {
        let normalized = normalize_choice(text);
        match self {
            Cipher::Sealed(k) => k
                .choice_index
                .compute(&[normalized.as_bytes()])
                .map_err(AppError::internal),
            Cipher::Plain => Ok(normalized.into_bytes()),
        }
    }

    /// The has-voted tag of a voter in this ballot: unlinkable across ballots, and not
    /// recomputable once the ballot's key is destroyed.
    pub fn voter_tag(&self, voter: &str) -> Result<Vec<u8>, AppError> {
        match self {
            Cipher::Sealed(k) => k
                .voter
                .compute(&[voter.as_bytes()])
                .map_err(AppError::internal),
            Cipher::Plain => Ok(voter.as_bytes().to_vec()),
        }
    }
}

fn ctx<'a>(row: &'a [&'a [u8]]) -> FieldContext<'a> {
    FieldContext::row(row).with_type(ValueType::Text)
}

fn open(key: &FieldKey, row: &[&[u8]], sealed: &[u8]) -> Result<String, AppError> {
    let padded = key
        .decrypt(&ctx(row), sealed)
        .map_err(|_| AppError::internal("a ballot text does not open under its ballot's key"))?
        .ok_or_else(|| AppError::internal("a ballot text is an encrypted NULL"))?;
    unpad(padded)
}

fn plain(bytes: &[u8]) -> Result<String, AppError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| AppError::internal("a ballot text is not UTF-8"))
}

/// Ballot keys through the keyring (or none in the plaintext benchmark mode).
#[derive(Clone)]
pub struct Keys {
    keyring: Option<Arc<Keyring>>,
}

impl Keys {
    /// Keys from `keyring`; `None` for the plaintext benchmark mode.
    pub fn new(keyring: Option<Arc<Keyring>>) -> Keys {
        Keys { keyring }
    }

    /// The keyring, when texts are encrypted.
    pub fn keyring(&self) -> Option<&Arc<Keyring>> {
        self.keyring.as_ref()
    }

    /// Creates a new ballot's scope and data key: the sealed data key for the row, and the
    /// cipher.
    pub async fn create(&self, ballot: &str) -> Result<(Option<Vec<u8>>, Cipher), AppError> {
        let Some(keyring) = &self.keyring else {
            return Ok((None, Cipher::Plain));
        };
        let scope = scope_of(ballot)?;
        keyring
            .create_scope(&scope)
            .await
            .map_err(AppError::internal)?;
        let (data_key, blob) = keyring
            .generate_data_key(&scope)
            .await
            .map_err(AppError::internal)?;
        let keys = BallotKeys::derive(&data_key, &scope)?;
        Ok((Some(blob), Cipher::Sealed(Arc::new(keys))))
    }

    /// Opens a ballot's data key (from its row) and derives its keys.
    pub async fn open(&self, ballot: &str, blob: Option<&[u8]>) -> Result<Cipher, AppError> {
        let Some(keyring) = &self.keyring else {
            return Ok(Cipher::Plain);
        };
        let Some(blob) = blob else {
            return Err(AppError::Shredded);
        };
        let scope = scope_of(ballot)?;
        let data_key = keyring
            .open_data_key(&scope, blob)
            .await
            .map_err(|e| AppError::of_kind(e.kind(), &e))?;
        Ok(Cipher::Sealed(Arc::new(BallotKeys::derive(
            &data_key, &scope,
        )?)))
    }

    /// Destroys a ballot's scope: its texts become unrecoverable. Already destroyed (a shred
    /// interrupted after this step) or never created (plaintext mode) is not an error.
    pub async fn shred(&self, ballot: &str) -> Result<(), AppError> {
        let Some(keyring) = &self.keyring else {
            return Ok(());
        };
        match keyring.destroy(&scope_of(ballot)?).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::Destroyed | ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(AppError::internal(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_hides_length_within_a_bucket() {
        assert_eq!(pad("Yes").len(), 32);
        assert_eq!(pad(&"x".repeat(31)).len(), 32);
        assert_eq!(pad(&"x".repeat(32)).len(), 64);
        assert_eq!(pad(&"é".repeat(100)).len(), 256);
        for t in ["", "Yes", "ends with zero\0", &"z".repeat(200)] {
            assert_eq!(unpad(pad(t)).ok().as_deref(), Some(t));
        }
        assert!(unpad(vec![b'a', 0, 0]).is_err());
    }

    #[test]
    fn choices_normalize() {
        assert_eq!(normalize_choice("  Ada   LOVELACE \t"), "ada lovelace");
        assert_eq!(normalize_choice("ﬁsh"), normalize_choice("FISH"));
        assert_ne!(normalize_choice("Ada"), normalize_choice("Adam"));
    }

    #[test]
    fn texts_are_bound_to_ballot_and_option() {
        let dek = coffer_core::Dek::from_bytes([7; 32]);
        let scope = ScopeId::new("ballot:b1").unwrap();
        let keys = BallotKeys::derive(&dek, &scope).map_err(|e| e.to_string());
        let c = Cipher::Sealed(Arc::new(keys.unwrap()));
        let idx = c.choice_index("Yes").unwrap();
        assert_eq!(c.choice_index(" yes ").ok(), Some(idx.clone()));
        let sealed = c.seal_option("b1", &idx, "Yes").unwrap();
        assert_eq!(
            c.open_option("b1", &idx, &sealed).ok().as_deref(),
            Some("Yes")
        );
        assert!(c.open_option("b2", &idx, &sealed).is_err());
        let other = c.choice_index("No").unwrap();
        assert!(c.open_option("b1", &other, &sealed).is_err());
        assert!(c.open_measure("b1", &sealed).is_err());
        // Padded: "Yes" and a 30-byte text seal to the same length.
        let long = c.seal_option("b1", &idx, &"y".repeat(30)).unwrap();
        assert_eq!(sealed.len(), long.len());
        assert_ne!(c.voter_tag("alice").ok(), c.voter_tag("bob").ok());
    }
}

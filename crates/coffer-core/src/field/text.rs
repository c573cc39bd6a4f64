//! The text encoding for TEXT columns (docs/FORMAT.md §2.5): `cf1:` ‖ base64url (no padding).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};

/// The prefix that marks a text value as a Coffer field ciphertext.
pub const PREFIX: &str = "cf1:";

/// Encodes a binary field ciphertext as text.
pub fn encode(ciphertext: &[u8]) -> String {
    let mut s = String::with_capacity(PREFIX.len() + ciphertext.len().div_ceil(3) * 4);
    s.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(ciphertext, &mut s);
    s
}

/// Decodes a text field ciphertext to its binary form.
pub fn decode(text: &str) -> Result<Vec<u8>> {
    let body = text
        .strip_prefix(PREFIX)
        .ok_or(Error::Format("text values start with \"cf1:\""))?;
    URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| Error::Format("the text after \"cf1:\" is not unpadded base64url"))
}

/// Whether `text` looks like a Coffer text ciphertext (prefix check only; proves nothing).
pub fn is_encrypted(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// Length of the text encoding of an `n`-byte binary ciphertext.
pub const fn encoded_len(n: usize) -> usize {
    PREFIX.len() + (n * 4).div_ceil(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_length() {
        for n in 0..40 {
            let bytes: Vec<u8> = (0..n as u8).collect();
            let t = encode(&bytes);
            assert_eq!(t.len(), encoded_len(n));
            assert!(is_encrypted(&t));
            assert_eq!(decode(&t).unwrap(), bytes);
        }
    }

    #[test]
    fn rejects_plaintext_and_padding() {
        assert!(matches!(decode("hello"), Err(Error::Format(_))));
        assert!(decode("cf1:AA==").is_err());
        assert!(decode("cf1:A+").is_err());
    }
}

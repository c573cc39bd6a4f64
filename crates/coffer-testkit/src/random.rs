//! Random test values: keys in the base64 form `coffer keygen` prints, and unique names.
//!
//! Random bytes come from `coffer_core::digest` (the testkit calls no primitive itself).

use base64::Engine as _;

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    coffer_core::digest::random_array::<N>().expect("the system random source failed")
}

/// A random 256-bit key in standard base64 (the form of `coffer keygen` and `env:` KEKs).
pub fn key_base64() -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes::<32>())
}

/// `prefix_` and 12 random hex digits: a name no other test run uses (a database, a label).
pub fn name(prefix: &str) -> String {
    name_with(prefix, '_')
}

/// `prefix` `sep` and 12 random hex digits.
pub fn name_with(prefix: &str, sep: char) -> String {
    format!("{prefix}{sep}{}", crate::hex::encode(&bytes::<6>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_32_bytes_and_differ() {
        let a = key_base64();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert_ne!(a, key_base64());
    }

    #[test]
    fn names_have_the_prefix_and_differ() {
        let n = name("coffer_test");
        assert!(n.starts_with("coffer_test_"), "{n}");
        assert_eq!(n.len(), "coffer_test_".len() + 12);
        assert_ne!(n, name("coffer_test"));
        assert!(name_with("label", '-').starts_with("label-"));
    }
}

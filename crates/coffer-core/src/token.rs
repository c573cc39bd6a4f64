//! Bearer tokens: random token secrets, and the SHA-256 hash a service stores instead of the token.
//!
//! A fast hash is enough because a token is 256 random bits, not a password. The hash is
//! `SHA-256(domain ‖ token)`: the domain separates one service's tokens from another's (the Coffer
//! service uses [`SERVICE_DOMAIN`]; an application whose stored hashes predate domains passes an
//! empty one). Comparison is in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use crate::digest::{Sha256, constant_time_eq, random_fill};
use crate::error::Result;

/// The hash domain of the Coffer service's API tokens.
pub const SERVICE_DOMAIN: &[u8] = b"coffer/token/v1";

/// `SHA-256(domain ‖ token)`, the value to store for a token.
pub fn hash_token(domain: &[u8], token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(token.as_bytes());
    h.finish()
}

/// Whether `token` hashes to `stored` under `domain` (constant time).
pub fn verify_token(domain: &[u8], token: &str, stored: &[u8]) -> bool {
    constant_time_eq(&hash_token(domain, token), stored)
}

/// `n` random bytes as unpadded base64url: a token secret (zeroized on drop) or a random id.
pub fn random_token(n: usize) -> Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new(vec![0u8; n]);
    random_fill(&mut bytes)?;
    Ok(Zeroizing::new(URL_SAFE_NO_PAD.encode(&bytes[..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_domain_separated_sha256() {
        // With no domain the hash is plain SHA-256 (FIPS 180-4 "abc" example).
        let plain = hash_token(b"", "abc");
        assert_eq!(plain[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_eq!(plain, crate::digest::sha256(b"abc"));
        let service = hash_token(SERVICE_DOMAIN, "abc");
        assert_eq!(service, crate::digest::sha256(b"coffer/token/v1abc"));
        assert!(verify_token(SERVICE_DOMAIN, "abc", &service));
        assert!(!verify_token(SERVICE_DOMAIN, "abd", &service));
        assert!(!verify_token(b"", "abc", &service));
        assert!(!verify_token(SERVICE_DOMAIN, "abc", &service[..31]));
    }

    #[test]
    fn random_tokens_are_base64url_of_n_bytes() {
        let a = random_token(32).unwrap();
        let b = random_token(32).unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(*a, *b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(random_token(12).unwrap().len(), 16);
    }
}

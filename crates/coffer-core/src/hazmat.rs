//! Raw primitives over byte slices: **hazardous**.
//!
//! These take keys as plain bytes and do no domain separation. Coffer's own types
//! ([`FieldKey`](crate::FieldKey), [`Kek`](crate::Kek), [`BlindIndexKey`](crate::BlindIndexKey))
//! are built on them; they are public so that known-answer tests (Wycheproof, NIST CAVP) can reach
//! the exact calls Coffer makes. Application code should not need them.

use aws_lc_rs::{hmac, pbkdf2};
use coffer_aead::keywrap::{self, WrapMode};
use std::num::NonZeroU32;

use crate::error::{Error, Result};

fn check_kek(key: &[u8]) -> Result<()> {
    match key.len() {
        16 | 24 | 32 => Ok(()),
        n => Err(Error::invalid(
            "key-wrap key",
            format!("{n} bytes; expected 16, 24 or 32"),
        )),
    }
}

/// AES-KWP (RFC 5649) wrap with a 128-, 192- or 256-bit key.
pub fn aes_kwp_wrap(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    check_kek(key)?;
    keywrap::wrap(key, WrapMode::Kwp, plaintext)
        .map_err(|_| Error::invalid("key-wrap input", "AES-KWP needs at least 1 byte"))
}

/// AES-KWP (RFC 5649) unwrap into `out`; returns the unwrapped length.
pub fn aes_kwp_unwrap_into(key: &[u8], wrapped: &[u8], out: &mut [u8]) -> Result<usize> {
    check_kek(key)?;
    keywrap::unwrap_into(key, WrapMode::Kwp, wrapped, out).map_err(|_| Error::Unwrap)
}

/// AES-KW (RFC 3394) wrap with a 128-, 192- or 256-bit key; the input is a multiple of 8 bytes, ≥ 16.
pub fn aes_kw_wrap(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    check_kek(key)?;
    keywrap::wrap(key, WrapMode::Kw, plaintext).map_err(|_| {
        Error::invalid(
            "key-wrap input",
            "AES-KW needs a multiple of 8 bytes, at least 16",
        )
    })
}

/// AES-KW (RFC 3394) unwrap into `out`; returns the unwrapped length.
pub fn aes_kw_unwrap_into(key: &[u8], wrapped: &[u8], out: &mut [u8]) -> Result<usize> {
    check_kek(key)?;
    keywrap::unwrap_into(key, WrapMode::Kw, wrapped, out).map_err(|_| Error::Unwrap)
}

/// HKDF-SHA-256 (RFC 5869), `len` ≤ 8160.
pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], len: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    crate::kdf::hkdf_sha256(salt, ikm, info, &mut out)?;
    Ok(out)
}

/// HMAC-SHA-256.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(&k, message).as_ref());
    out
}

/// PBKDF2-HMAC-SHA-256 into `out`.
pub fn pbkdf2_hmac_sha256(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    out: &mut [u8],
) -> Result<()> {
    let iterations = NonZeroU32::new(iterations)
        .ok_or_else(|| Error::invalid("PBKDF2 iterations", "must be at least 1"))?;
    if out.is_empty() {
        return Err(Error::invalid(
            "PBKDF2 output length",
            "must be at least 1 byte",
        ));
    }
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, password, out);
    Ok(())
}

/// AES-SIV (RFC 5297) encryption with a 256- or 512-bit key (AES-128-SIV or AES-256-SIV) and an S2V header vector.
/// Returns `SIV ‖ ciphertext`. Not in the `fips` build.
#[cfg(feature = "non-fips")]
pub fn aes_siv_encrypt(key: &[u8], headers: &[&[u8]], plaintext: &[u8]) -> Result<Vec<u8>> {
    use aes_siv::KeyInit as _;
    let bad = |_| Error::invalid("AES-SIV key", "expected 32 or 64 bytes");
    match key.len() {
        32 => aes_siv::siv::Aes128Siv::new_from_slice(key)
            .map_err(bad)?
            .encrypt(headers, plaintext),
        64 => aes_siv::siv::Aes256Siv::new_from_slice(key)
            .map_err(bad)?
            .encrypt(headers, plaintext),
        _ => return Err(Error::invalid("AES-SIV key", "expected 32 or 64 bytes")),
    }
    .map_err(|_| Error::invalid("AES-SIV headers", "too many"))
}

/// AES-SIV (RFC 5297) decryption of `SIV ‖ ciphertext`. Not in the `fips` build.
#[cfg(feature = "non-fips")]
pub fn aes_siv_decrypt(key: &[u8], headers: &[&[u8]], sealed: &[u8]) -> Result<Vec<u8>> {
    use aes_siv::KeyInit as _;
    let bad = |_| Error::invalid("AES-SIV key", "expected 32 or 64 bytes");
    match key.len() {
        32 => aes_siv::siv::Aes128Siv::new_from_slice(key)
            .map_err(bad)?
            .decrypt(headers, sealed),
        64 => aes_siv::siv::Aes256Siv::new_from_slice(key)
            .map_err(bad)?
            .decrypt(headers, sealed),
        _ => return Err(Error::invalid("AES-SIV key", "expected 32 or 64 bytes")),
    }
    .map_err(|_| Error::Decrypt)
}

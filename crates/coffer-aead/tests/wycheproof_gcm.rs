//! Wycheproof AES-GCM vectors through `GcmKey::open_append`, and a differential property test
//! against RustCrypto's `aes-gcm` in both directions.
//!
//! A sealed value is `ct ‖ tag ‖ iv`, and `open_append` takes the IV from that layout, so every
//! Wycheproof vector with a 256-bit key and a 96-bit IV can be opened as `ct ‖ tag ‖ iv`.
//! (Sealing takes its IV from the module, so known-answer tests are open-direction only; the
//! property test covers sealing.) Runs in the default and the `fips` build.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use coffer_aead::{GcmKey, IV_LEN, TagLength};
use proptest::prelude::*;
use serde_json::Value;

const AES_GCM_TEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/wycheproof/aes_gcm_test.json"
);

/// One Wycheproof AES-GCM vector with a 256-bit key and a 96-bit IV.
struct Vector {
    id: u64,
    valid: bool,
    key: [u8; 32],
    iv: [u8; IV_LEN],
    aad: Vec<u8>,
    msg: Vec<u8>,
    ct: Vec<u8>,
    tag: [u8; 16],
}

impl Vector {
    /// `ct ‖ tag[..tag_len] ‖ iv`, the layout `open_append` takes.
    fn sealed(&self, tag: TagLength) -> Vec<u8> {
        [&self.ct[..], &self.tag[..tag.bytes()], &self.iv[..]].concat()
    }
}

fn hex_field(t: &Value, field: &str) -> Vec<u8> {
    let s = t[field]
        .as_str()
        .unwrap_or_else(|| panic!("no field {field}"));
    hex::decode(s).unwrap_or_else(|e| panic!("field {field}: {e}"))
}

/// Loads `aes_gcm_test.json`, checks `numberOfTests` against the tests present, and returns the
/// vectors with a 256-bit key and a 96-bit IV (all Wycheproof GCM tags are 128-bit).
fn load() -> Vec<Vector> {
    let text = std::fs::read_to_string(AES_GCM_TEST).expect("aes_gcm_test.json");
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(doc["algorithm"].as_str(), Some("AES-GCM"));
    let groups = doc["testGroups"].as_array().expect("testGroups");
    let mut total = 0u64;
    let mut out = Vec::new();
    for g in groups {
        let tests = g["tests"].as_array().expect("tests");
        total += tests.len() as u64;
        assert_eq!(
            g["tagSize"].as_u64(),
            Some(128),
            "all Wycheproof GCM tags are 128-bit"
        );
        if g["keySize"].as_u64() != Some(256) || g["ivSize"].as_u64() != Some(96) {
            continue;
        }
        for t in tests {
            let id = t["tcId"].as_u64().expect("tcId");
            let valid = match t["result"].as_str() {
                Some("valid") => true,
                Some("invalid") => false,
                other => panic!("tcId {id}: unexpected result {other:?}"),
            };
            out.push(Vector {
                id,
                valid,
                key: hex_field(t, "key").try_into().expect("256-bit key"),
                iv: hex_field(t, "iv").try_into().expect("96-bit IV"),
                aad: hex_field(t, "aad"),
                msg: hex_field(t, "msg"),
                ct: hex_field(t, "ct"),
                tag: hex_field(t, "tag").try_into().expect("128-bit tag"),
            });
        }
    }
    assert_eq!(Some(total), doc["numberOfTests"].as_u64(), "numberOfTests");
    assert_eq!(total, 316, "aes_gcm_test.json: total vectors");
    out
}

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v[bit / 8] ^= 0x80 >> (bit % 8);
    v
}

/// 128-bit tags: valid vectors open to msg, invalid ones (all `ModifiedTag`) are refused.
#[test]
fn wycheproof_aes256_gcm_128_bit_tags() {
    let vectors = load();
    let (mut valid, mut invalid) = (0usize, 0usize);
    for v in &vectors {
        let key = GcmKey::new(&v.key, TagLength::Bits128).unwrap();
        let mut out = b"prefix".to_vec();
        let r = key.open_append(&v.aad, &v.sealed(TagLength::Bits128), &mut out);
        if v.valid {
            r.unwrap_or_else(|e| panic!("tcId {}: {e}", v.id));
            assert_eq!(hex::encode(&out[6..]), hex::encode(&v.msg), "tcId {}", v.id);
            valid += 1;
        } else {
            assert!(r.is_err(), "tcId {}: invalid vector opened", v.id);
            assert_eq!(
                out, b"prefix",
                "tcId {}: failed open touched the output",
                v.id
            );
            invalid += 1;
        }
    }
    println!(
        "aes_gcm (t128): {} vectors with 256-bit key and 96-bit IV, {valid} valid opened, \
         {invalid} invalid refused",
        vectors.len()
    );
    assert_eq!((vectors.len(), valid, invalid), (66, 39, 27));
}

/// 96-bit tags, from the valid vectors only: `ct ‖ MSB_96(tag) ‖ iv` must open; flipping any one
/// of the 96 tag bits, any ciphertext bit or any IV bit must make it fail.
///
/// Invalid vectors are not used as such: several only modify tag bytes 12–15, which truncation
/// drops. They are checked against RustCrypto's tag instead: a truncated invalid vector must open
/// exactly when its first 12 tag bytes are the correct ones.
#[test]
fn wycheproof_aes256_gcm_96_bit_tags() {
    use aes_gcm::aead::{AeadInOut, KeyInit};

    let vectors = load();
    let (mut opened, mut tag_flips, mut ct_flips, mut iv_flips) = (0usize, 0, 0, 0);
    let (mut invalid_opened, mut invalid_refused) = (0usize, 0usize);
    let mut out = Vec::new();
    for v in &vectors {
        let key = GcmKey::new(&v.key, TagLength::Bits96).unwrap();
        let sealed = v.sealed(TagLength::Bits96);
        let ct_bits = v.ct.len() * 8;
        let tag_bits = TagLength::Bits96.bytes() * 8;
        if !v.valid {
            let reference = aes_gcm::Aes256Gcm::new_from_slice(&v.key)
                .unwrap()
                .encrypt_inout_detached(&v.iv.into(), &v.aad, v.msg.clone().as_mut_slice().into())
                .unwrap();
            let prefix_intact = reference[..12] == v.tag[..12];
            out.clear();
            let r = key.open_append(&v.aad, &sealed, &mut out);
            assert_eq!(
                r.is_ok(),
                prefix_intact,
                "tcId {}: truncated invalid vector",
                v.id
            );
            if prefix_intact {
                assert_eq!(out, v.msg, "tcId {}", v.id);
                invalid_opened += 1;
            } else {
                invalid_refused += 1;
            }
            continue;
        }
        out.clear();
        key.open_append(&v.aad, &sealed, &mut out)
            .unwrap_or_else(|e| panic!("tcId {}: {e}", v.id));
        assert_eq!(hex::encode(&out), hex::encode(&v.msg), "tcId {}", v.id);
        opened += 1;
        for bit in 0..tag_bits {
            out.clear();
            let bad = flip(&sealed, ct_bits + bit);
            assert!(
                key.open_append(&v.aad, &bad, &mut out).is_err() && out.is_empty(),
                "tcId {}: tag bit {bit} flipped, still opened",
                v.id
            );
            tag_flips += 1;
        }
        for bit in 0..ct_bits {
            out.clear();
            let bad = flip(&sealed, bit);
            assert!(
                key.open_append(&v.aad, &bad, &mut out).is_err() && out.is_empty(),
                "tcId {}: ciphertext bit {bit} flipped, still opened",
                v.id
            );
            ct_flips += 1;
        }
        for bit in 0..IV_LEN * 8 {
            out.clear();
            let bad = flip(&sealed, ct_bits + tag_bits + bit);
            assert!(
                key.open_append(&v.aad, &bad, &mut out).is_err() && out.is_empty(),
                "tcId {}: IV bit {bit} flipped, still opened",
                v.id
            );
            iv_flips += 1;
        }
    }
    println!(
        "aes_gcm (t96): {opened} valid vectors opened; refused {tag_flips} tag-bit, {ct_flips} \
         ciphertext-bit and {iv_flips} IV-bit flips; invalid vectors truncated: {invalid_opened} \
         open (only tag bytes 12-15 modified), {invalid_refused} refused"
    );
    assert_eq!(opened, 39);
    assert_eq!(tag_flips, 39 * 96);
    assert_eq!(ct_flips, 26_584);
    assert_eq!(iv_flips, 39 * 96);
    assert_eq!((invalid_opened, invalid_refused), (7, 20));
}

// ---------------------------------------------------------------------------------------------
// Differential tests against RustCrypto aes-gcm
// ---------------------------------------------------------------------------------------------

mod differential {
    use super::*;
    use aes_gcm::aead::consts::U12;
    use aes_gcm::aead::{AeadInOut, KeyInit};

    /// AES-256-GCM with a 96-bit nonce and a 96-bit tag.
    type Aes256Gcm96 = aes_gcm::AesGcm<aes_gcm::aes::Aes256, U12, U12>;

    /// Decrypts with RustCrypto; `A` is one of the two AES-256-GCM types (96- or 128-bit tag).
    fn rc_open<A: AeadInOut + KeyInit>(
        key: &[u8; 32],
        iv: &[u8],
        aad: &[u8],
        ct: &[u8],
        tag: &[u8],
    ) -> Result<Vec<u8>, aes_gcm::Error> {
        let cipher = A::new_from_slice(key).unwrap();
        let nonce = aes_gcm::aead::Nonce::<A>::try_from(iv).unwrap();
        let tag = aes_gcm::aead::Tag::<A>::try_from(tag).unwrap();
        let mut buf = ct.to_vec();
        cipher.decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag)?;
        Ok(buf)
    }

    /// Encrypts with RustCrypto; returns `ct ‖ tag ‖ iv`.
    fn rc_seal<A: AeadInOut + KeyInit>(
        key: &[u8; 32],
        iv: &[u8; IV_LEN],
        aad: &[u8],
        pt: &[u8],
    ) -> Vec<u8> {
        let cipher = A::new_from_slice(key).unwrap();
        let nonce = aes_gcm::aead::Nonce::<A>::try_from(&iv[..]).unwrap();
        let mut buf = pt.to_vec();
        let tag = cipher
            .encrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into())
            .unwrap();
        buf.extend_from_slice(&tag);
        buf.extend_from_slice(iv);
        buf
    }

    fn coffer_seal_rc_open(
        tag: TagLength,
        key: &[u8; 32],
        aad: &[u8],
        pt: &[u8],
    ) -> Result<(), TestCaseError> {
        let k = GcmKey::new(key, tag).unwrap();
        let mut sealed = Vec::new();
        k.seal_append(aad, pt, &mut sealed).unwrap();
        prop_assert_eq!(sealed.len(), pt.len() + tag.bytes() + IV_LEN);
        let (ct, rest) = sealed.split_at(pt.len());
        let (t, iv) = rest.split_at(tag.bytes());
        let back = match tag {
            TagLength::Bits96 => rc_open::<Aes256Gcm96>(key, iv, aad, ct, t),
            TagLength::Bits128 => rc_open::<aes_gcm::Aes256Gcm>(key, iv, aad, ct, t),
        };
        prop_assert_eq!(back.ok(), Some(pt.to_vec()));
        Ok(())
    }

    fn rc_seal_coffer_open(
        tag: TagLength,
        key: &[u8; 32],
        iv: &[u8; IV_LEN],
        aad: &[u8],
        pt: &[u8],
    ) -> Result<(), TestCaseError> {
        let sealed = match tag {
            TagLength::Bits96 => rc_seal::<Aes256Gcm96>(key, iv, aad, pt),
            TagLength::Bits128 => rc_seal::<aes_gcm::Aes256Gcm>(key, iv, aad, pt),
        };
        prop_assert_eq!(sealed.len(), pt.len() + tag.bytes() + IV_LEN);
        let k = GcmKey::new(key, tag).unwrap();
        let mut back = Vec::new();
        prop_assert!(k.open_append(aad, &sealed, &mut back).is_ok());
        prop_assert_eq!(&back[..], pt);
        Ok(())
    }

    proptest! {
        #[test]
        fn coffer_seal_opens_with_rustcrypto(
            key in any::<[u8; 32]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            pt in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            coffer_seal_rc_open(TagLength::Bits96, &key, &aad, &pt)?;
            coffer_seal_rc_open(TagLength::Bits128, &key, &aad, &pt)?;
        }

        #[test]
        fn rustcrypto_seal_opens_with_coffer(
            key in any::<[u8; 32]>(),
            iv in any::<[u8; IV_LEN]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            pt in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            rc_seal_coffer_open(TagLength::Bits96, &key, &iv, &aad, &pt)?;
            rc_seal_coffer_open(TagLength::Bits128, &key, &iv, &aad, &pt)?;
        }
    }
}

//! Golden streaming messages (tests/data/golden/stream-v1.json): messages written once by Coffer
//! (and one by the Python AWS Encryption SDK) that every later version must still decrypt to the
//! same bytes. tests/golden/verify_format.py decrypts them independently from docs/FORMAT.md §10.
//!
//! Regenerate only for a new format version: `COFFER_WRITE_GOLDEN=1 cargo test -p coffer-core
//! --test stream_golden -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{Read as _, Write as _};

use coffer_core::Kek;
use coffer_core::stream::{Decryptor, EncryptionContext, Encryptor, Limits, RawAesKeyring};
use serde_json::{Value, json};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/golden/stream-v1.json"
);
const PRIMARY: [u8; 32] = [0x11; 32];
const RECOVERY: [u8; 32] = [0x22; 32];

fn keyrings() -> (RawAesKeyring, RawAesKeyring) {
    (
        RawAesKeyring::new("coffer", "3f9a0c1d/main/v1", Kek::from_bytes(PRIMARY)).unwrap(),
        RawAesKeyring::new("coffer", "recovery/v1", Kek::from_bytes(RECOVERY)).unwrap(),
    )
}

/// The plaintext of a case: `n` bytes, byte i = i * 13 + 7 (mod 256).
fn plaintext(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 13 + 7) as u8).collect()
}

#[test]
#[ignore = "writes the golden file; run only for a new format version"]
fn write_golden() {
    if std::env::var("COFFER_WRITE_GOLDEN").as_deref() != Ok("1") {
        return;
    }
    let (primary, recovery) = keyrings();
    let mut cases = Vec::new();
    for (n, frame, two_keys) in [
        (0usize, 64u32, false),
        (1, 64, false),
        (63, 64, false),
        (64, 64, false),
        (65, 64, true),
        (300, 64, true),
        (5000, 4096, false),
    ] {
        let mut ctx = EncryptionContext::new();
        ctx.insert("content-type", "application/octet-stream")
            .unwrap();
        ctx.insert("coffer:patient", "hmac:4b1d9c2e").unwrap();
        let keys: Vec<&RawAesKeyring> = if two_keys {
            vec![&primary, &recovery]
        } else {
            vec![&primary]
        };
        let mut e = Encryptor::new(Vec::new(), &keys, &ctx, frame).unwrap();
        e.write_all(&plaintext(n)).unwrap();
        let msg = e.finish().unwrap();
        cases.push(json!({
            "plaintext_len": n,
            "frame_len": frame,
            "edks": keys.len(),
            "message": hex::encode(msg),
        }));
    }
    let doc = json!({
        "comment": "Streaming golden messages, v1 (AWS Encryption SDK message format v2, suite 0x0478). Never change once released. Plaintext byte i = (13 i + 7) mod 256. Namespace 'coffer'; key '3f9a0c1d/main/v1' = 11 x 32, key 'recovery/v1' = 22 x 32. Context: content-type, coffer:patient.",
        "primary_key": hex::encode(PRIMARY),
        "recovery_key": hex::encode(RECOVERY),
        "cases": cases,
    });
    std::fs::write(PATH, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
}

#[test]
fn golden_messages_still_decrypt() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(PATH)
            .unwrap_or_else(|e| panic!("{PATH}: {e} (golden files are part of the repository)")),
    )
    .unwrap();
    let (primary, recovery) = keyrings();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8, "cases in {PATH}");
    let mut by_recovery = 0;
    for (i, case) in cases.iter().enumerate() {
        let msg = hex::decode(case["message"].as_str().unwrap()).unwrap();
        let n = case["plaintext_len"].as_u64().unwrap() as usize;
        for threads in [1usize, 4] {
            let mut d = Decryptor::new(&msg[..], &[&primary], Limits::default())
                .unwrap()
                .with_threads(threads);
            assert_eq!(
                u64::from(d.header().frame_len),
                case["frame_len"].as_u64().unwrap()
            );
            assert_eq!(d.header().edks.len() as u64, case["edks"].as_u64().unwrap());
            assert_eq!(d.context().get("coffer:patient"), Some("hmac:4b1d9c2e"));
            let mut out = Vec::new();
            d.read_to_end(&mut out).unwrap();
            assert!(out == plaintext(n), "case {i}");
        }
        if case["edks"] == 2 {
            let mut d = Decryptor::new(&msg[..], &[&recovery], Limits::default()).unwrap();
            let mut out = Vec::new();
            d.read_to_end(&mut out).unwrap();
            assert!(out == plaintext(n), "case {i} with the recovery key");
            by_recovery += 1;
        }
        // Any changed byte is refused.
        let mut bad = msg.clone();
        let at = (i * 97) % bad.len();
        bad[at] ^= 0x04;
        let mut d = match Decryptor::new(&bad[..], &[&primary], Limits::default()) {
            Ok(d) => d,
            Err(_) => continue,
        };
        assert!(
            d.read_to_end(&mut Vec::new()).is_err(),
            "case {i} byte {at}"
        );
    }
    assert_eq!(by_recovery, 2);
}

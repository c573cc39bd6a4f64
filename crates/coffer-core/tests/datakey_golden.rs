//! Golden vectors for the data-key blob (tests/data/golden/coffer-keys-v1.json, docs/FORMAT.md §9):
//! never changed once released. Written once with `COFFER_WRITE_GOLDEN=1` while absent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use coffer_core::datakey::{self, ALGORITHM};
use coffer_core::wrap::KeyMetadata;
use coffer_core::{Dek, KeyVersion, ScopeId};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/golden/coffer-keys-v1.json"
);

fn cases() -> Vec<(u32, &'static str, [u8; 16], [u8; 32])> {
    vec![
        (
            1,
            "table:ballots",
            [0x11; 16],
            core::array::from_fn(|i| 0x40 + i as u8),
        ),
        (
            7,
            "row:3f2a9c",
            core::array::from_fn(|i| i as u8),
            [0xee; 32],
        ),
        (
            300,
            "tenant:acme",
            [0xff; 16],
            core::array::from_fn(|i| 0x80 + i as u8),
        ),
    ]
}

fn parent() -> Dek {
    Dek::from_bytes(core::array::from_fn(|i| i as u8))
}

const STORE: [u8; 16] = [0x5a; 16];

fn meta<'a>(scope: &'a ScopeId, version: u32, key_id: &'a [u8; 16]) -> KeyMetadata<'a> {
    KeyMetadata {
        store_id: &STORE,
        scope,
        version: KeyVersion(version),
        key_id,
        algorithm: ALGORITHM,
    }
}

fn generate() -> String {
    let mut out = String::from("{\n  \"parent_dek\": \"");
    out.push_str(&hex::encode(parent().expose_secret()));
    out.push_str("\",\n  \"store_id\": \"");
    out.push_str(&hex::encode(STORE));
    out.push_str("\",\n  \"data_keys\": [\n");
    let cases = cases();
    for (i, (version, scope, key_id, key)) in cases.iter().enumerate() {
        let s = ScopeId::new(*scope).unwrap();
        let blob = datakey::seal(
            &parent(),
            &meta(&s, *version, key_id),
            &Dek::from_bytes(*key),
        )
        .unwrap();
        out.push_str(&format!(
            "    {{\"scope\": \"{scope}\", \"parent_version\": {version}, \"key_id\": \"{}\", \"data_key\": \"{}\", \"blob\": \"{}\"}}{}\n",
            hex::encode(key_id),
            hex::encode(key),
            hex::encode(&blob),
            if i + 1 < cases.len() { "," } else { "" }
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

#[test]
fn golden_data_key_blobs() {
    let text = match std::fs::read_to_string(PATH) {
        Ok(t) => t,
        Err(_) if std::env::var_os("COFFER_WRITE_GOLDEN").is_some() => {
            std::fs::write(PATH, generate()).unwrap();
            panic!("wrote {PATH}; review and commit it, then run again");
        }
        Err(e) => panic!("{PATH}: {e} (golden vectors are part of the repository)"),
    };
    // The file is exactly what the code produces: same layout, same bytes.
    assert_eq!(text, generate(), "the data-key blob format changed");
    for (version, scope, key_id, key) in cases() {
        let s = ScopeId::new(scope).unwrap();
        let blob = datakey::seal(
            &parent(),
            &meta(&s, version, &key_id),
            &Dek::from_bytes(key),
        )
        .unwrap();
        assert_eq!(
            datakey::parse(&blob).unwrap(),
            (KeyVersion(version), key_id)
        );
        let opened = datakey::open(&parent(), &meta(&s, version, &key_id), &blob).unwrap();
        assert_eq!(opened.expose_secret(), &key);
        let other = ScopeId::new("elsewhere").unwrap();
        assert!(datakey::open(&parent(), &meta(&other, version, &key_id), &blob).is_err());
    }
}

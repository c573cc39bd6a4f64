//! Golden vectors for Coffer's own formats (tests/data/golden/coffer-v1.json).
//!
//! Once released these vectors never change: a failure here means the format changed. The file was
//! written once by running this test with `COFFER_WRITE_GOLDEN=1` while it did not exist; the test
//! refuses to overwrite it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use coffer_core::encoding::tag;
use coffer_core::kdf::{self, Purpose};
use coffer_core::wrap::{self, KeyMetadata};
use coffer_core::{
    BlindIndexKey, ColumnId, Dek, FieldContext, FieldKey, Kek, KeyVersion, Normalizer, ScopeId,
    Suite, ValueType, WrapAlgorithm,
};
use serde_json::{Value, json};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/golden/coffer-v1.json"
);

fn dek() -> Dek {
    Dek::from_bytes(core::array::from_fn(|i| i as u8))
}

fn kek() -> Kek {
    Kek::from_bytes(core::array::from_fn(|i| 0xa0 + i as u8))
}

fn suite_of(name: &str) -> Suite {
    match name {
        "aes-256-gcm-t96" => Suite::Gcm96,
        "aes-256-gcm-t128" => Suite::Gcm128,
        "aes-256-siv" => Suite::Siv,
        other => panic!("unknown suite {other}"),
    }
}

fn type_of(name: &str) -> ValueType {
    match name {
        "bytes" => ValueType::Bytes,
        "text" => ValueType::Text,
        "int64" => ValueType::Int64,
        other => panic!("unknown type {other}"),
    }
}

/// Field cases: (suite, version, scope, column, type, domain, row, null, plaintext).
#[allow(clippy::type_complexity)]
fn field_cases() -> Vec<(
    &'static str,
    u32,
    &'static str,
    &'static str,
    &'static str,
    Vec<&'static str>,
    Vec<&'static str>,
    bool,
    &'static str,
)> {
    vec![
        (
            "aes-256-gcm-t96",
            1,
            "tenant:acme",
            "patients.ssn",
            "text",
            vec![],
            vec!["patient-42"],
            false,
            "123-45-6789",
        ),
        (
            "aes-256-gcm-t96",
            1,
            "tenant:acme",
            "patients.notes",
            "text",
            vec![],
            vec!["tenant-1", "42"],
            false,
            "",
        ),
        (
            "aes-256-gcm-t96",
            1,
            "tenant:acme",
            "patients.notes",
            "text",
            vec![],
            vec!["tenant-1", "42"],
            true,
            "",
        ),
        (
            "aes-256-gcm-t96",
            30,
            "s",
            "c",
            "bytes",
            vec![],
            vec![],
            false,
            "a 50-byte value, padded out to exactly fifty bytes",
        ),
        (
            "aes-256-gcm-t96",
            31,
            "s",
            "c",
            "bytes",
            vec![],
            vec![],
            false,
            "version 31 takes the escape byte",
        ),
        (
            "aes-256-gcm-t96",
            300,
            "s",
            "c",
            "int64",
            vec![],
            vec!["r"],
            false,
            "\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{2a}",
        ),
        (
            "aes-256-gcm-t128",
            2,
            "tenant:acme",
            "patients.email",
            "text",
            vec!["tenant-1"],
            vec!["patient-42"],
            false,
            "ann@example.org",
        ),
        (
            "aes-256-siv",
            1,
            "tenant:acme",
            "patients.ssn",
            "text",
            vec![],
            vec![],
            false,
            "123-45-6789",
        ),
        (
            "aes-256-siv",
            1,
            "tenant:acme",
            "patients.ssn",
            "text",
            vec!["tenant-1"],
            vec![],
            false,
            "123-45-6789",
        ),
        (
            "aes-256-siv",
            7,
            "tenant:acme",
            "patients.mrn",
            "bytes",
            vec![],
            vec![],
            true,
            "",
        ),
    ]
}

fn make_field_key(suite: &str, version: u32, scope: &str, column: &str) -> Option<FieldKey> {
    let suite = suite_of(suite);
    if suite == Suite::Siv && !cfg!(feature = "non-fips") {
        return None;
    }
    Some(
        FieldKey::new(
            &dek(),
            KeyVersion(version),
            suite,
            &ScopeId::new(scope).unwrap(),
            &ColumnId::new(column).unwrap(),
        )
        .unwrap(),
    )
}

fn generate() -> Value {
    let d = dek();
    let subkeys: Vec<Value> = [
        (Purpose::Aead, vec![(tag::COLUMN, "patients.ssn")]),
        (Purpose::Siv, vec![(tag::COLUMN, "patients.ssn")]),
        (
            Purpose::BlindIndex,
            vec![(tag::COLUMN, "patients.ssn"), (tag::INDEX, "full")],
        ),
        (Purpose::Meta, vec![]),
        (Purpose::FileWrap, vec![]),
        (Purpose::Cache, vec![]),
    ]
    .into_iter()
    .map(|(p, comps)| {
        let c: Vec<(u8, &[u8])> = comps.iter().map(|(t, s)| (*t, s.as_bytes())).collect();
        let info = kdf::info(p, &c).unwrap();
        let key = if p.key_len() == 64 {
            hex::encode(kdf::derive::<64>(&d, p, &c).unwrap().expose_secret())
        } else {
            hex::encode(kdf::derive::<32>(&d, p, &c).unwrap().expose_secret())
        };
        json!({
            "purpose": p.label(),
            "components": comps.iter().map(|(t, s)| json!([t, s])).collect::<Vec<_>>(),
            "info": hex::encode(info),
            "length": p.key_len(),
            "subkey": key,
        })
    })
    .collect();

    let fields: Vec<Value> = field_cases()
        .into_iter()
        .map(|(suite, version, scope, column, ty, domain, row, is_null, pt)| {
            let k = make_field_key(suite, version, scope, column).expect("generate in the default build");
            let dom: Vec<&[u8]> = domain.iter().map(|s| s.as_bytes()).collect();
            let rw: Vec<&[u8]> = row.iter().map(|s| s.as_bytes()).collect();
            let ctx = FieldContext::row(&rw).with_domain(&dom).with_type(type_of(ty));
            let ct = if is_null { k.encrypt_null(&ctx).unwrap() } else { k.encrypt(&ctx, pt.as_bytes()).unwrap() };
            json!({
                "suite": suite, "version": version, "scope": scope, "column": column, "type": ty,
                "domain": domain, "row": row, "null": is_null, "plaintext": hex::encode(pt),
                "ciphertext": hex::encode(&ct), "text": coffer_core::field::text::encode(&ct),
            })
        })
        .collect();

    let blind: Vec<Value> = [
        (
            "patients.ssn",
            "full",
            32u16,
            vec!["digits"],
            vec![],
            vec!["123-45-6789"],
        ),
        (
            "patients.ssn",
            "last4",
            16,
            vec!["digits", "last:4"],
            vec![],
            vec!["123-45-6789"],
        ),
        (
            "patients.email",
            "email",
            64,
            vec!["trim", "casefold"],
            vec!["tenant-1"],
            vec![" Ann@Example.org "],
        ),
        (
            "patients.name",
            "name_dob",
            13,
            vec!["casefold"],
            vec![],
            vec!["Ann", "1980-02-29"],
        ),
        (
            "patients.ssn",
            "full",
            256,
            vec![],
            vec![],
            vec!["123456789"],
        ),
    ]
    .into_iter()
    .map(|(column, name, bits, norms, domain, values)| {
        let k = BlindIndexKey::new(&d, &ColumnId::new(column).unwrap(), name, bits)
            .unwrap()
            .with_normalizers(
                norms
                    .iter()
                    .map(|n| n.parse::<Normalizer>().unwrap())
                    .collect(),
            );
        let dom: Vec<&[u8]> = domain.iter().map(|s: &&str| s.as_bytes()).collect();
        let vals: Vec<&[u8]> = values.iter().map(|s| s.as_bytes()).collect();
        json!({
            "column": column, "name": name, "bits": bits, "normalizers": norms,
            "domain": domain, "values": values,
            "index": hex::encode(k.compute_in_domain(&dom, &vals).unwrap()),
        })
    })
    .collect();

    let scope = ScopeId::new("tenant:acme").unwrap();
    let key_id = [0x11u8; 16];
    let meta = KeyMetadata {
        store_id: b"store-0001",
        scope: &scope,
        version: KeyVersion(3),
        key_id: &key_id,
        algorithm: "aes256-gcm",
    };
    json!({
        "comment": "Coffer format golden vectors, v1. Never change once released. DEK = 00..1f, KEK = a0..bf.",
        "dek": hex::encode(d.expose_secret()),
        "kek": hex::encode(kek().expose_secret()),
        "subkeys": subkeys,
        "fields": fields,
        "blind_indexes": blind,
        "wrap": {
            "aes256-kwp": hex::encode(kek().wrap_dek(&d, WrapAlgorithm::AesKwp).unwrap()),
            "aes256-kw": hex::encode(kek().wrap_dek(&d, WrapAlgorithm::AesKw).unwrap()),
        },
        "metadata_tag": {
            "store_id": "store-0001", "scope": "tenant:acme", "version": 3,
            "key_id": hex::encode(key_id), "algorithm": "aes256-gcm",
            "tag": hex::encode(wrap::metadata_tag(&d, &meta).unwrap()),
        },
    })
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| s(x).to_string())
        .collect()
}

#[test]
fn golden_vectors_hold() {
    let text = match std::fs::read_to_string(PATH) {
        Ok(t) => t,
        Err(_) if std::env::var_os("COFFER_WRITE_GOLDEN").is_some() => {
            let v = generate();
            std::fs::create_dir_all(std::path::Path::new(PATH).parent().unwrap()).unwrap();
            std::fs::write(PATH, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
            panic!("wrote {PATH}; review and commit it, then run again");
        }
        Err(e) => panic!("{PATH}: {e} (golden vectors are part of the repository)"),
    };
    let g: Value = serde_json::from_str(&text).unwrap();
    let d = dek();
    assert_eq!(s(&g["dek"]), hex::encode(d.expose_secret()));

    let mut checked = 0;
    for sk in g["subkeys"].as_array().unwrap() {
        let p = match s(&sk["purpose"]) {
            "aead" => Purpose::Aead,
            "siv" => Purpose::Siv,
            "bidx" => Purpose::BlindIndex,
            "meta" => Purpose::Meta,
            "file-wrap" => Purpose::FileWrap,
            "cache" => Purpose::Cache,
            other => panic!("purpose {other}"),
        };
        let comps: Vec<(u8, String)> = sk["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c[0].as_u64().unwrap() as u8, s(&c[1]).to_string()))
            .collect();
        let c: Vec<(u8, &[u8])> = comps.iter().map(|(t, v)| (*t, v.as_bytes())).collect();
        assert_eq!(hex::encode(kdf::info(p, &c).unwrap()), s(&sk["info"]));
        let got = if p.key_len() == 64 {
            hex::encode(kdf::derive::<64>(&d, p, &c).unwrap().expose_secret())
        } else {
            hex::encode(kdf::derive::<32>(&d, p, &c).unwrap().expose_secret())
        };
        assert_eq!(got, s(&sk["subkey"]), "subkey {}", p.label());
        checked += 1;
    }

    for f in g["fields"].as_array().unwrap() {
        let Some(k) = make_field_key(
            s(&f["suite"]),
            f["version"].as_u64().unwrap() as u32,
            s(&f["scope"]),
            s(&f["column"]),
        ) else {
            continue; // AES-SIV in the FIPS build
        };
        let (domain, row) = (strs(&f["domain"]), strs(&f["row"]));
        let dom: Vec<&[u8]> = domain.iter().map(|x| x.as_bytes()).collect();
        let rw: Vec<&[u8]> = row.iter().map(|x| x.as_bytes()).collect();
        let ctx = FieldContext::row(&rw)
            .with_domain(&dom)
            .with_type(type_of(s(&f["type"])));
        let ct = hex::decode(s(&f["ciphertext"])).unwrap();
        assert_eq!(coffer_core::field::text::encode(&ct), s(&f["text"]));
        let want = if f["null"].as_bool().unwrap() {
            None
        } else {
            Some(hex::decode(s(&f["plaintext"])).unwrap())
        };
        assert_eq!(k.decrypt(&ctx, &ct).unwrap(), want, "{f}");
        if k.suite().is_deterministic() {
            let again = match &want {
                None => k.encrypt_null(&ctx),
                Some(p) => k.encrypt(&ctx, p),
            }
            .unwrap();
            assert_eq!(again, ct, "deterministic re-encryption {f}");
        }
        checked += 1;
    }

    for b in g["blind_indexes"].as_array().unwrap() {
        let k = BlindIndexKey::new(
            &d,
            &ColumnId::new(s(&b["column"])).unwrap(),
            s(&b["name"]),
            b["bits"].as_u64().unwrap() as u16,
        )
        .unwrap()
        .with_normalizers(
            strs(&b["normalizers"])
                .iter()
                .map(|n| n.parse().unwrap())
                .collect(),
        );
        let (domain, values) = (strs(&b["domain"]), strs(&b["values"]));
        let dom: Vec<&[u8]> = domain.iter().map(|x| x.as_bytes()).collect();
        let vals: Vec<&[u8]> = values.iter().map(|x| x.as_bytes()).collect();
        assert_eq!(
            hex::encode(k.compute_in_domain(&dom, &vals).unwrap()),
            s(&b["index"]),
            "{b}"
        );
        checked += 1;
    }

    for (alg, name) in [
        (WrapAlgorithm::AesKwp, "aes256-kwp"),
        (WrapAlgorithm::AesKw, "aes256-kw"),
    ] {
        let w = hex::decode(s(&g["wrap"][name])).unwrap();
        assert_eq!(kek().wrap_dek(&d, alg).unwrap(), w);
        assert_eq!(
            kek().unwrap_dek(&w, alg).unwrap().expose_secret(),
            d.expose_secret()
        );
        checked += 1;
    }

    let m = &g["metadata_tag"];
    let scope = ScopeId::new(s(&m["scope"])).unwrap();
    let key_id: [u8; 16] = hex::decode(s(&m["key_id"])).unwrap().try_into().unwrap();
    let meta = KeyMetadata {
        store_id: s(&m["store_id"]).as_bytes(),
        scope: &scope,
        version: KeyVersion(m["version"].as_u64().unwrap() as u32),
        key_id: &key_id,
        algorithm: s(&m["algorithm"]),
    };
    wrap::verify_metadata_tag(&d, &meta, &hex::decode(s(&m["tag"])).unwrap()).unwrap();
    checked += 1;

    let expected = if cfg!(feature = "non-fips") {
        6 + 10 + 5 + 2 + 1
    } else {
        6 + 7 + 5 + 2 + 1
    };
    assert_eq!(checked, expected, "golden vector count");
}

//! The `coffer` binary: blind indexes, `fips-status`, and the repository's golden vectors read
//! back through the command line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::{Key, run};
use serde_json::Value;

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/golden/coffer-v1.json"
);

/// `field blind-index --column ssn args…`; the hex output without its newline.
#[track_caller]
fn index(key: &Key, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut all = vec!["field", "blind-index", "--column", "ssn"];
    all.extend_from_slice(args);
    let out = key.run(&all, stdin);
    out.success();
    out.stdout_str().strip_suffix('\n').unwrap().to_owned()
}

#[test]
fn normalized_values_share_an_index() {
    let key = Key::env();
    let norm = ["--normalize", "trim,digits"];
    let a = index(
        &key,
        &[&norm[..], &["--value", " 123-45-6789"]].concat(),
        None,
    );
    let b = index(&key, &[&norm[..], &["--value", "123456789"]].concat(), None);
    let c = index(&key, &norm, Some(b"123 45 6789\n"));
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a.len(), 8, "32 bits by default");
    let other = index(&key, &[&norm[..], &["--value", "123456780"]].concat(), None);
    assert_ne!(a, other);

    // Repeated --normalize options chain like a comma-separated list.
    let repeated = [
        "--normalize",
        "trim",
        "--normalize",
        "digits",
        "--value",
        "1-2",
    ];
    let listed = ["--normalize", "trim,digits", "--value", "1-2"];
    assert_eq!(index(&key, &repeated, None), index(&key, &listed, None));
}

#[test]
fn names_domains_and_compound_order_separate_indexes() {
    let key = Key::env();
    let ab = index(&key, &["--value", "Ann", "--value", "1980"], None);
    let ba = index(&key, &["--value", "1980", "--value", "Ann"], None);
    let joined = index(&key, &["--value", "Ann1980"], None);
    assert_ne!(ab, ba);
    assert_ne!(ab, joined);
    let v = ["--value", "6789"];
    let plain = index(&key, &v, None);
    assert_ne!(
        plain,
        index(&key, &[&v[..], &["--name", "last4"]].concat(), None)
    );
    assert_ne!(
        plain,
        index(&key, &[&v[..], &["--domain", "t1"]].concat(), None)
    );
    assert_ne!(index(&key, &v, None), index(&Key::env(), &v, None));
}

#[test]
fn stdin_values_lose_one_newline_unless_raw() {
    let key = Key::env();
    let given = index(&key, &["--value", "x"], None);
    assert_eq!(index(&key, &[], Some(b"x\n")), given);
    assert_ne!(index(&key, &["--raw-stdin"], Some(b"x\n")), given);
}

#[test]
fn widths_set_the_output_length() {
    let key = Key::env();
    for bits in [8u16, 13, 16, 32, 64, 100, 255, 256] {
        let b = bits.to_string();
        let out = index(&key, &["--bits", &b, "--value", "x"], None);
        assert_eq!(out.len(), 2 * usize::from(bits).div_ceil(8), "{bits} bits");
        assert!(
            out.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
    for bad in ["7", "257", "0", "-1"] {
        let arg = format!("--bits={bad}");
        key.run(
            &[
                "field",
                "blind-index",
                "--column",
                "c",
                &arg,
                "--value",
                "x",
            ],
            None,
        )
        .fails(2, "--bits");
    }
    key.run(
        &[
            "field",
            "blind-index",
            "--column",
            "c",
            "--normalize",
            "upper",
            "--value",
            "x",
        ],
        None,
    )
    .fails(2, "normalizer");
    key.run(&["field", "blind-index", "--value", "x"], None)
        .fails(2, "--column");
}

#[test]
fn fips_status_reports_the_build() {
    let text = run(&["fips-status"], &[], None);
    text.success();
    assert!(text.stdout_str().contains("fips mode:"));

    let json = run(&["fips-status", "--json"], &[], None);
    json.success();
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    let fips = cfg!(feature = "fips");
    assert_eq!(v["fips_build"], fips);
    assert_eq!(v["fips_mode"], fips);
    assert_eq!(v["refused"].as_array().unwrap().is_empty(), !fips);
    for field in ["provider", "module_crate", "module_version"] {
        assert!(v[field].as_str().is_some_and(|s| !s.is_empty()), "{field}");
    }
}

fn golden() -> (Value, Key) {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(GOLDEN).unwrap()).unwrap();
    let dek = hex::decode(v["dek"].as_str().unwrap()).unwrap();
    let key = Key::from_base64(&base64::engine::general_purpose::STANDARD.encode(dek));
    (v, key)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[test]
fn golden_blind_indexes() {
    let (v, key) = golden();
    let vectors = v["blind_indexes"].as_array().unwrap();
    assert!(!vectors.is_empty());
    for t in vectors {
        let bits = t["bits"].to_string();
        let normalizers = strings(&t["normalizers"]).join(",");
        let mut args = vec![
            "field",
            "blind-index",
            "--column",
            t["column"].as_str().unwrap(),
            "--name",
            t["name"].as_str().unwrap(),
            "--bits",
            &bits,
        ];
        if !normalizers.is_empty() {
            args.extend(["--normalize", &normalizers]);
        }
        for d in strings(&t["domain"]) {
            args.extend(["--domain", d]);
        }
        for value in strings(&t["values"]) {
            args.extend(["--value", value]);
        }
        let out = key.run(&args, None);
        out.success();
        assert_eq!(
            out.stdout_str().trim_end(),
            t["index"].as_str().unwrap(),
            "{t}"
        );
    }
}

/// The golden field vectors of value type `bytes` and `text` decrypt through `--type`, and the
/// deterministic ones re-encrypt to the same bytes.
#[test]
fn golden_byte_and_text_fields() {
    let (v, key) = golden();
    let mut checked = 0;
    for t in v["fields"].as_array().unwrap() {
        let value_type = t["type"].as_str().unwrap();
        if value_type != "bytes" && value_type != "text" {
            continue; // int64 needs its canonical encoding, which the CLI does not take
        }
        let suite = t["suite"].as_str().unwrap();
        if suite == "aes-256-siv" && cfg!(feature = "fips") {
            continue;
        }
        let version = t["version"].to_string();
        let mut args = vec![
            "--scope",
            t["scope"].as_str().unwrap(),
            "--column",
            t["column"].as_str().unwrap(),
            "--key-version",
            &version,
            "--type",
            value_type,
        ];
        args.extend(match suite {
            "aes-256-gcm-t96" => &["--tag-bits", "96"][..],
            "aes-256-gcm-t128" => &["--tag-bits", "128"],
            "aes-256-siv" => &["--mode", "deterministic"],
            other => panic!("unknown suite {other}"),
        });
        for r in strings(&t["row"]) {
            args.extend(["--context", r]);
        }
        for d in strings(&t["domain"]) {
            args.extend(["--domain", d]);
        }
        let text = t["text"].as_str().unwrap();
        let null = t["null"].as_bool().unwrap();
        let plaintext = key.decrypt(&[&args[..], &["--null-ok"]].concat(), text);
        assert_eq!(
            hex::encode(plaintext),
            t["plaintext"].as_str().unwrap(),
            "{t}"
        );
        if null {
            let mut all = vec!["field", "decrypt", "--value", text];
            all.extend_from_slice(&args);
            key.run(&all, None).fails(2, "authenticated NULL");
        }
        if suite == "aes-256-siv" {
            let mut all = vec!["field", "encrypt", "--hex"];
            all.extend_from_slice(&args);
            let plaintext = hex::decode(t["plaintext"].as_str().unwrap()).unwrap();
            let out = if null {
                all.push("--null");
                key.run(&all, None)
            } else {
                all.push("--raw-stdin");
                key.run(&all, Some(&plaintext))
            };
            out.success();
            let expected = t["ciphertext"].as_str().unwrap();
            assert_eq!(out.stdout_str().trim_end(), expected, "{t}");
        }
        checked += 1;
    }
    let expected = if cfg!(feature = "fips") { 6 } else { 9 };
    assert_eq!(checked, expected, "golden byte and text vectors checked");
}

/// `--type` is bound into the ciphertext, and text refuses non-UTF-8 input.
#[test]
fn value_type_is_bound() {
    let (_, key) = golden();
    let sealed = key.run(
        &["field", "encrypt", "--type", "text", "--value", "héllo"],
        None,
    );
    sealed.success();
    let text = sealed.stdout_str().trim_end().to_string();
    assert_eq!(key.decrypt(&["--type", "text"], &text), "héllo".as_bytes());
    key.run(&["field", "decrypt", "--value", &text], None)
        .fails(1, "decryption failed");
    key.run(
        &["field", "encrypt", "--type", "text", "--raw-stdin"],
        Some(&[0xff, 0xfe]),
    )
    .fails(2, "UTF-8");
}

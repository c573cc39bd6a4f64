//! The `coffer` binary end to end: arguments, stdin, stdout, stderr and exit status.
//!
//! Helpers live in `common/mod.rs`; blind indexes, FIPS status and the golden vectors are in
//! `cli_index.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt as _;

use base64::Engine as _;
use common::{Key, coffer, run};

#[test]
fn keygen_prints_a_base64_key() {
    let out = run(&["keygen"], &[], None);
    out.success();
    let text = out.stdout_str();
    assert_eq!(text.len(), 45, "44 base64 characters and a newline");
    assert!(text.ends_with('\n'));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim_end())
        .unwrap();
    assert_eq!(bytes.len(), 32);
    assert_ne!(run(&["keygen"], &[], None).stdout, out.stdout);
}

#[test]
fn keygen_out_creates_a_private_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let p = path.to_str().unwrap();
    let out = run(&["keygen", "--out", p], &[], None);
    out.success();
    assert!(out.stdout.is_empty());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read(&path).unwrap();
    assert_eq!(first.len(), 45);

    let again = run(&["keygen", "--out", p], &[], None);
    again.fails(2, "already exists");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        first,
        "the key file is untouched"
    );
}

#[test]
fn round_trips_in_every_mode_with_env_and_file_keys() {
    let mut modes: Vec<&[&str]> = vec![&[], &["--tag-bits", "96"], &["--tag-bits", "128"]];
    if cfg!(not(feature = "fips")) {
        modes.push(&["--mode", "deterministic"]);
    }
    let env_key = Key::env();
    let file_key = Key::file();
    for key in [&env_key, &file_key] {
        for mode in &modes {
            // Deterministic mode takes no row context: bind a domain instead.
            let ctx: &[&str] = if mode.contains(&"deterministic") {
                &["--domain", "tenant-1"]
            } else {
                &["--context", "patient-42", "--context", "7"]
            };
            let mut args = vec!["--column", "ssn", "--scope", "tenant:acme"];
            args.extend_from_slice(mode);
            args.extend_from_slice(ctx);
            for plaintext in [&b"123-45-6789"[..], b"", b"line\nbreak\xff\x00"] {
                let ct = key.encrypt(&args, plaintext);
                assert!(ct.starts_with("cf1:"), "{ct}");
                assert_eq!(key.decrypt(&args, &ct), plaintext, "{mode:?}");
            }
        }
    }
}

#[test]
fn hex_form_round_trips() {
    let key = Key::env();
    let out = key.run(&["field", "encrypt", "--hex", "--value", "x"], None);
    out.success();
    let hex = out.stdout_str().trim_end().to_owned();
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(hex.len(), 2 * (1 + 1 + 24));
    let back = key.run(&["field", "decrypt", "--hex", "--value", &hex], None);
    back.success();
    assert_eq!(back.stdout, b"x");
}

#[cfg(not(feature = "fips"))]
#[test]
fn deterministic_repeats_and_randomized_does_not() {
    let key = Key::env();
    let det = ["--mode", "deterministic", "--column", "email"];
    assert_eq!(key.encrypt(&det, b"ann"), key.encrypt(&det, b"ann"));
    assert_ne!(key.encrypt(&det, b"ann"), key.encrypt(&det, b"bob"));
    let rnd = ["--column", "email"];
    assert_ne!(key.encrypt(&rnd, b"ann"), key.encrypt(&rnd, b"ann"));
}

#[cfg(not(feature = "fips"))]
#[test]
fn deterministic_mode_refuses_a_row_context() {
    let key = Key::env();
    let out = key.run(
        &[
            "field",
            "encrypt",
            "--mode",
            "deterministic",
            "--context",
            "r",
        ],
        Some(b"x"),
    );
    out.fails(2, "cannot bind a row");
    assert!(out.stderr.contains("--domain"), "{}", out.stderr);
    let tag = key.run(
        &[
            "field",
            "encrypt",
            "--mode",
            "deterministic",
            "--tag-bits",
            "128",
        ],
        Some(b"x"),
    );
    tag.fails(2, "--tag-bits");
}

#[cfg(feature = "fips")]
#[test]
fn deterministic_mode_is_refused_in_the_fips_build() {
    let key = Key::env();
    let out = key.run(
        &[
            "field",
            "encrypt",
            "--mode",
            "deterministic",
            "--value",
            "x",
        ],
        None,
    );
    out.fails(2, "FIPS");
}

#[test]
fn stdin_loses_exactly_one_trailing_newline_unless_raw() {
    let key = Key::env();
    let ct = key.encrypt(&[], b"x\n");
    assert_eq!(key.decrypt(&[], &ct), b"x");
    let ct = key.encrypt(&[], b"x\n\n");
    assert_eq!(key.decrypt(&[], &ct), b"x\n");
    let ct = key.encrypt(&["--raw-stdin"], b"x\n");
    assert_eq!(key.decrypt(&[], &ct), b"x\n");
    // --value is taken as given, and decrypt adds no newline when stdout is not a terminal.
    let out = key.run(&["field", "encrypt", "--value", "y\n"], None);
    assert_eq!(key.decrypt(&[], out.stdout_str().trim_end()), b"y\n");
}

#[test]
fn the_wrong_context_key_or_bytes_fail_with_status_1() {
    let key = Key::env();
    let args = ["--column", "ssn", "--context", "patient-42"];
    let ct = key.encrypt(&args, b"123-45-6789");
    let decrypt = |key: &Key, args: &[&str], ct: &str| {
        let mut all = vec!["field", "decrypt", "--value", ct];
        all.extend_from_slice(args);
        key.run(&all, None)
    };

    let other_row = decrypt(&key, &["--column", "ssn", "--context", "patient-43"], &ct);
    other_row.fails(1, "decryption failed");
    let other_column = decrypt(&key, &["--column", "mrn", "--context", "patient-42"], &ct);
    other_column.fails(1, "decryption failed");
    decrypt(&Key::env(), &args, &ct).fails(1, "decryption failed");

    // Flip one bit in each position of the body; header changes fail the same way.
    let mut tampered = ct.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    decrypt(&key, &args, &tampered).fails(1, "decryption failed");
    decrypt(&key, &args, &ct[..ct.len() - 4]).fails(1, "decryption failed");

    for out in [other_row, other_column] {
        assert!(!out.stderr.contains("123-45-6789"));
    }
}

#[test]
fn a_mode_or_version_mismatch_gets_a_hint() {
    let key = Key::env();
    let ct = key.encrypt(&["--key-version", "3"], b"x");
    let out = key.run(
        &["field", "decrypt", "--value", &ct, "--tag-bits", "128"],
        None,
    );
    out.fails(1, "decryption failed");
    assert!(
        out.stderr.contains("aes-256-gcm-t96 with key version 3"),
        "{}",
        out.stderr
    );
    key.run(
        &["field", "decrypt", "--value", &ct, "--key-version", "3"],
        None,
    )
    .success();
}

#[test]
fn plaintext_is_not_a_ciphertext() {
    let key = Key::env();
    for input in ["hello", "", "cf1:***"] {
        let out = key.run(&["field", "decrypt", "--value", input], None);
        out.fails(1, "not a Coffer ciphertext");
        assert!(!out.stderr.contains("hello"));
    }
    key.run(&["field", "decrypt", "--hex", "--value", "xyz"], None)
        .fails(1, "not a Coffer ciphertext");
    key.run(&["field", "decrypt"], Some(b"plain text\n"))
        .fails(1, "not a Coffer ciphertext");
}

#[test]
fn null_round_trips_and_differs_from_the_empty_value() {
    let key = Key::env();
    let null = key.run(&["field", "encrypt", "--null"], None);
    null.success();
    let null = null.stdout_str().trim_end().to_owned();
    let empty = key.encrypt(&["--value", ""], b"ignored");
    assert_ne!(null, empty);

    let accepted = key.run(&["field", "decrypt", "--null-ok", "--value", &null], None);
    accepted.success();
    assert!(accepted.stdout.is_empty());

    let refused = key.run(&["field", "decrypt", "--value", &null], None);
    refused.fails(2, "authenticated NULL");
    assert!(refused.stdout.is_empty());
    assert!(refused.stderr.contains("--null-ok"));

    // The empty value is a value: no --null-ok needed, nothing printed.
    let out = key.run(&["field", "decrypt", "--value", &empty], None);
    out.success();
    assert!(out.stdout.is_empty());

    // NULL is bound to its row like any value.
    let row = key.run(&["field", "encrypt", "--null", "--context", "r1"], None);
    let row = row.stdout_str().trim_end().to_owned();
    key.run(
        &[
            "field",
            "decrypt",
            "--null-ok",
            "--context",
            "r2",
            "--value",
            &row,
        ],
        None,
    )
    .fails(1, "decryption failed");
    key.run(&["field", "encrypt", "--null", "--value", "x"], None)
        .fails(2, "cannot be used with");
}

#[test]
fn key_files_must_be_private() {
    let key = Key::file();
    let path = key.path().unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = key.run(&["field", "encrypt", "--value", "x"], None);
    out.fails(2, "chmod 600");
    assert!(out.stderr.contains("group or others"), "{}", out.stderr);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640)).unwrap();
    key.run(&["field", "encrypt", "--value", "x"], None)
        .fails(2, "chmod 600");

    let missing = run(
        &[
            "field",
            "encrypt",
            "--key",
            "file:/nonexistent/k",
            "--value",
            "x",
        ],
        &[],
        None,
    );
    missing.fails(2, "cannot open secret file /nonexistent/k");
}

#[test]
fn key_references_are_checked_and_keys_never_echoed() {
    let out = run(
        &[
            "field",
            "encrypt",
            "--key",
            "env:COFFER_TEST_UNSET",
            "--value",
            "x",
        ],
        &[],
        None,
    );
    out.fails(2, "COFFER_TEST_UNSET is not set");

    let key = Key::env();
    let raw = run(
        &["field", "encrypt", "--key", &key.secret, "--value", "x"],
        &[],
        None,
    );
    raw.fails(2, "not a secret");
    assert!(!raw.stderr.contains(&key.secret));

    let short = run(
        &["field", "encrypt", "--key", "env:K", "--value", "x"],
        &[("K", "AAAA")],
        None,
    );
    short.fails(2, "expected 32 bytes");
    assert!(short.stderr.contains("environment variable K"));

    let missing = coffer().args(["field", "encrypt", "--value", "x"]).output();
    let missing = missing.unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--key"));
}

#[test]
fn coffer_key_ref_stands_in_for_key() {
    let key = Key::env();
    let ct = key.encrypt(&[], b"x");
    let (name, value) = key.env_pair();
    let out = run(
        &["field", "decrypt", "--value", &ct],
        &[(name, value), ("COFFER_KEY_REF", "env:COFFER_TEST_KEY")],
        None,
    );
    out.success();
    assert_eq!(out.stdout, b"x");
}

#[test]
fn bad_options_are_usage_errors() {
    let key = Key::env();
    key.run(
        &["field", "encrypt", "--tag-bits", "64", "--value", "x"],
        None,
    )
    .fails(2, "--tag-bits");
    key.run(
        &["field", "encrypt", "--mode", "fast", "--value", "x"],
        None,
    )
    .fails(2, "--mode");
    key.run(&["field", "encrypt", "--column", "", "--value", "x"], None)
        .fails(2, "column id");
    key.run(&["field", "encrypt", "--value", "x", "--raw-stdin"], None)
        .fails(2, "cannot be used with");
    run(&["nonsense"], &[], None).fails(2, "unrecognized subcommand");
}

#[test]
fn help_teaches_exit_statuses_and_examples() {
    for args in [
        &["--help"][..],
        &["field", "--help"],
        &["field", "encrypt", "--help"],
        &["field", "decrypt", "--help"],
        &["field", "blind-index", "--help"],
    ] {
        let out = run(args, &[], None);
        out.success();
        let help = out.stdout_str();
        assert!(help.contains("Exit status"), "{args:?}");
        assert!(help.contains("usage or input error"), "{args:?}");
    }
    let top = run(&["--help"], &[], None);
    assert!(
        top.stdout_str()
            .contains("export COFFER_KEY=$(coffer keygen)")
    );
}

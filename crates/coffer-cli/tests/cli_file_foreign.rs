//! `coffer file decrypt` on input it does not read: messages of the AWS Encryption SDK that
//! Coffer recognises but refuses (format v1, the signed suite, non-framed content), written by the
//! SDK itself, and a complete message followed by extra bytes. Each gets a message that says what
//! the input is, the exit status docs/STREAMING.md promises, and no output file. Decrypted files
//! are created owner-only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{file as run, kek_base64 as key};

fn hex_of(b64: &str) -> String {
    use base64::Engine as _;
    hex::encode(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
}

/// A message from the Python SDK with `suite` (see tests/interop/esdk.py) and `frame` length.
fn sdk_message(khex: &str, suite: &str, frame: &str) -> Vec<u8> {
    let env = [("COFFER_ESDK_SUITE", suite), ("COFFER_ESDK_LEGACY", "0")];
    let args = ["encrypt", khex, "coffer", "backups/v3", frame, "db=clinic"];
    common::python("esdk.py", &args, &env, b"a scan of someone's knee").0
}

#[test]
fn messages_coffer_does_not_read_say_what_they_are_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = key();
    let khex = hex_of(&k);
    let env = [("K", k.as_str())];
    let cases = [
        ("v1", "4096", "format v1"),
        ("signed", "4096", "signed suite 0x0578"),
        ("", "0", "non-framed content"),
    ];
    for (suite, frame, says) in cases {
        let msg = sdk_message(&khex, suite, frame);
        let from_file = format!("in-{suite}-{frame}.cfr");
        std::fs::write(d.join(&from_file), &msg).unwrap();
        // From stdin (the streaming reader) and from a file (the positional reader).
        let piped = run(d, &["decrypt", "--kek", "env:K"], &env, Some(&msg));
        piped.fails(2, says);
        assert!(piped.stdout.is_empty(), "{suite}: nothing decrypted");
        run(
            d,
            &["decrypt", &from_file, "-o", "out", "--kek", "env:K"],
            &env,
            None,
        )
        .fails(2, says);
        assert!(!d.join("out").exists(), "{suite}: no output file");
    }
    // Bytes that are no SDK message at all stay a decryption failure (exit 1).
    run(
        d,
        &["decrypt", "--kek", "env:K"],
        &env,
        Some(b"PK\x03\x04 a zip file"),
    )
    .fails(1, "does not start like an AWS Encryption SDK message");
}

#[test]
fn bytes_after_a_complete_message_are_named_not_called_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = key();
    let env = [("K", k.as_str())];
    let enc = run(
        d,
        &["encrypt", "--kek", "env:K", "--frame-size", "4096"],
        &env,
        Some(&vec![7u8; 10_000]),
    );
    assert_eq!(enc.code, Some(0), "{}", enc.stderr);
    for extra in [1usize, 3, 4096 + 40] {
        let mut longer = enc.stdout.clone();
        longer.extend(std::iter::repeat_n(0xAB, extra));
        std::fs::write(d.join("longer.cfr"), &longer).unwrap();
        let out = run(
            d,
            &["decrypt", "longer.cfr", "-o", "out", "--kek", "env:K"],
            &env,
            None,
        );
        out.fails(1, &format!("{extra} bytes after the end of the message"));
        assert!(!out.stderr.contains("truncated"), "{}", out.stderr);
        assert!(!d.join("out").exists(), "no output file");
        run(d, &["decrypt", "--kek", "env:K"], &env, Some(&longer))
            .fails(1, "after the final frame");
    }
    // A cut message is still reported as truncated.
    let cut = &enc.stdout[..enc.stdout.len() - 5];
    std::fs::write(d.join("cut.cfr"), cut).unwrap();
    run(
        d,
        &["decrypt", "cut.cfr", "-o", "out", "--kek", "env:K"],
        &env,
        None,
    )
    .fails(1, "truncated");
}

/// A decrypted file is plaintext: `-o` creates it owner-only (0600) whatever the umask, as
/// `coffer restore -o` does through the same output path.
#[test]
fn decrypted_output_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = key();
    let env = [("K", k.as_str())];
    let enc = run(
        d,
        &["encrypt", "--kek", "env:K"],
        &env,
        Some(b"diagnosis: J45"),
    );
    assert_eq!(enc.code, Some(0), "{}", enc.stderr);
    std::fs::write(d.join("in.cfr"), &enc.stdout).unwrap();
    let out = run(
        d,
        &["decrypt", "in.cfr", "-o", "plain.txt", "--kek", "env:K"],
        &env,
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mode = std::fs::metadata(d.join("plain.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert_eq!(
        std::fs::read(d.join("plain.txt")).unwrap(),
        b"diagnosis: J45"
    );
}

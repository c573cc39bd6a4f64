//! `coffer s3 put|get` end to end: the real binary against moto's S3 server, with a plain boto3
//! client (tests/interop/s3.py) and the official AWS Encryption SDK for Python
//! (tests/interop/esdk.py) on the other side. moto comes from `COFFER_TEST_MOTO_ENDPOINT` or is
//! started by `scripts/moto-up.sh`.

#![cfg(feature = "s3")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use common::{Key, Out, coffer, data, moto};

/// Runs a Python helper from tests/interop with `input` on stdin; its stdout.
fn python(script: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    common::python(script, args, &[], input).0
}

/// A plain S3 client (boto3).
fn s3(args: &[&str], input: &[u8]) -> Vec<u8> {
    let endpoint = moto();
    let mut all = vec![endpoint.as_str()];
    all.extend_from_slice(args);
    python("s3.py", &all, input)
}

fn new_bucket() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "cli-s3-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    s3(&["create-bucket", &name], b"");
    name
}

/// `coffer s3 args… --endpoint MOTO` in `dir`, with the key in `COFFER_TEST_KEY`, dummy AWS
/// credentials, and `stdin`.
fn run(dir: &Path, key: &Key, args: &[&str], stdin: Option<&[u8]>) -> Out {
    let endpoint = moto();
    let mut cmd = coffer();
    cmd.current_dir(dir)
        .arg("s3")
        .args(args)
        .args(["--endpoint", &endpoint])
        .env(key.env_pair().0, key.env_pair().1)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL");
    common::output(cmd, stdin)
}

#[test]
fn put_get_and_range_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = Key::env();
    let kek = "env:COFFER_TEST_KEY";
    let b = new_bucket();
    let pt = data(300_000);
    std::fs::write(d.join("scan.dcm"), &pt).unwrap();
    let target = format!("{b}/scans/ct 1.dcm");

    let args = [
        "put",
        &target,
        "scan.dcm",
        "--kek",
        kek,
        "--content-type",
        "application/dicom",
        "--meta",
        "study=ct-1",
        "--context",
        "site=north",
        "--frame-size",
        "4096",
    ];
    run(d, &k, &args, None).success();
    // A plain S3 client sees the attributes, and ciphertext.
    let head: serde_json::Value =
        serde_json::from_slice(&s3(&["head", &b, "scans/ct 1.dcm"], b"")).unwrap();
    assert_eq!(head["ContentType"], "application/dicom");
    assert_eq!(head["Metadata"]["study"], "ct-1");
    let raw = s3(&["get", &b, "scans/ct 1.dcm"], b"");
    assert_eq!(raw.len() as u64, head["ContentLength"].as_u64().unwrap());
    assert!(!raw.windows(64).any(|w| w == &pt[1000..1064]));

    // Whole object to a file and to stdout; a byte range.
    run(
        d,
        &k,
        &["get", &target, "-o", "back.dcm", "--kek", kek],
        None,
    )
    .success();
    assert_eq!(std::fs::read(d.join("back.dcm")).unwrap(), pt);
    let out = run(
        d,
        &k,
        &["get", &format!("s3://{target}"), "--kek", kek],
        None,
    );
    out.success();
    assert_eq!(out.stdout, pt);
    let out = run(
        d,
        &k,
        &["get", &target, "--kek", kek, "--range", "5000-70000"],
        None,
    );
    out.success();
    assert_eq!(out.stdout, &pt[5000..=70000]);
    run(
        d,
        &k,
        &["get", &target, "--kek", kek, "--range", "0-300000"],
        None,
    )
    .fails(2, "past the end of the plaintext (300000 bytes)");

    // From stdin.
    let small = b"from a pipe".to_vec();
    run(
        d,
        &k,
        &["put", &format!("{b}/piped"), "--kek", kek],
        Some(&small),
    )
    .success();
    let out = run(d, &k, &["get", &format!("{b}/piped"), "--kek", kek], None);
    out.success();
    assert_eq!(out.stdout, small);

    // Wrong key: exit 1, no output file. Missing object: exit 2, naming it.
    let other = Key::env();
    let out = run(
        d,
        &other,
        &["get", &target, "-o", "x.dcm", "--kek", kek],
        None,
    );
    out.fails(1, "decryption failed");
    assert!(out.stderr.contains("coffer/default/v1"), "{}", out.stderr);
    assert!(!d.join("x.dcm").exists());
    run(d, &k, &["get", &format!("{b}/nope"), "--kek", kek], None)
        .fails(2, &format!("s3://{b}/nope: no such object"));
    run(d, &k, &["get", "no-key-here", "--kek", kek], None).fails(2, "BUCKET/KEY");
}

#[test]
fn a_tampered_object_leaves_no_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = Key::env();
    let kek = "env:COFFER_TEST_KEY";
    let b = new_bucket();
    let target = format!("{b}/record.bin");
    run(
        d,
        &k,
        &["put", &target, "--kek", kek, "--frame-size", "4096"],
        Some(&data(200_000)),
    )
    .success();
    // One byte near the end changed by a plain client: the output file is already open while
    // the frames before it verify, and must be gone after the failure.
    let mut raw = s3(&["get", &b, "record.bin"], b"");
    let at = raw.len() - 3000;
    raw[at] ^= 0x20;
    s3(&["put", &b, "record.bin"], &raw);

    let out = run(
        d,
        &k,
        &["get", &target, "-o", "out.bin", "--kek", kek],
        None,
    );
    out.fails(1, "decryption failed");
    let left: Vec<_> = std::fs::read_dir(d).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_python_esdk_decrypts_an_object_coffer_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = Key::env();
    let kek = "env:COFFER_TEST_KEY";
    let b = new_bucket();
    let pt = data(3 * 65536 + 11);
    run(
        d,
        &k,
        &[
            "put",
            &format!("{b}/for-python"),
            "--kek",
            kek,
            "--content-type",
            "text/csv",
        ],
        Some(&pt),
    )
    .success();
    // Downloaded with boto3, decrypted by aws-encryption-sdk with a raw AES keyring holding the
    // same key (namespace "coffer", the default key name).
    let raw = s3(&["get", &b, "for-python"], b"");
    let key_hex = hex::encode(
        base64::engine::general_purpose::STANDARD
            .decode(&k.secret)
            .unwrap(),
    );
    let plain = python(
        "esdk.py",
        &["decrypt", &key_hex, "coffer", "default/v1"],
        &raw,
    );
    assert_eq!(plain, pt);
    // Listing shows the one object: nothing else (no temporary or partial objects).
    assert_eq!(s3(&["list", &b], b""), b"for-python\n");
}

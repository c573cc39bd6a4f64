//! `coffer keys` with an AWS KMS KEK, against moto (built with `--features aws-kms`; `make test`
//! runs it).

#![cfg(feature = "aws-kms")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Out, moto, ok};

/// Evaluates `expr` (with `c`, a boto3 KMS client on moto) in Python and returns what it prints.
fn boto3_kms(endpoint: &str, expr: &str) -> String {
    let code = format!(
        "import boto3; c = boto3.client('kms', endpoint_url='{endpoint}', region_name='us-east-1', \
         aws_access_key_id='test', aws_secret_access_key='test'); print({expr})"
    );
    coffer_testkit::process::stdout_of(Command::new("python3").args(["-c", &code]))
}

/// Creates a symmetric key in moto with boto3 (moto's own dependency) and returns its id.
fn create_key(endpoint: &str) -> String {
    boto3_kms(endpoint, "c.create_key()['KeyMetadata']['KeyId']")
}

/// `coffer keys` with the dummy AWS credentials moto accepts.
fn keys(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Out {
    let mut all = vec![
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    all.extend_from_slice(envs);
    common::keys(dir, args, &all)
}

#[test]
fn kms_kek_from_init_through_rotation() {
    let endpoint = moto();
    let key = create_key(&endpoint);
    let other = create_key(&endpoint);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reference = format!("aws-kms:{key};endpoint={endpoint}");
    let init = ok(&keys(
        d,
        &["init", "--store", "sqlite:keys.db", "--kek", &reference],
        &[],
    ));
    assert!(init.contains("(aws-kms)"), "{init}");
    ok(&keys(d, &["create-scope", "tenant:a", "tenant:b"], &[]));
    ok(&keys(d, &["rotate", "tenant:a"], &[]));
    assert!(ok(&keys(d, &["check"], &[])).contains("ok       main/v1"));

    // Rotate to a second KMS key: every DEK re-wrapped, the old key no longer needed.
    let second = format!("aws-kms:{other};endpoint={endpoint}");
    ok(&keys(
        d,
        &["add-kek", "--source", &second, "--primary"],
        &[],
    ));
    let out = ok(&keys(d, &["rotate-kek"], &[]));
    // Three DEKs of the scopes, and the audit chain key.
    assert!(out.contains("4 DEKs re-wrapped under main/v2"), "{out}");
    assert!(!ok(&keys(d, &["list"], &[])).contains("main/v1"));

    // The KMS unreachable: exit status 3 and a message saying so.
    let toml = std::fs::read_to_string(d.join("coffer.toml")).unwrap();
    std::fs::write(
        d.join("down.toml"),
        toml.replace(&endpoint, "http://127.0.0.1:9"),
    )
    .unwrap();
    let down = keys(d, &["check", "--config", "down.toml"], &[]);
    assert_eq!(down.code, Some(3), "{}", down.stderr);
    assert!(
        down.stderr.contains("KMS") || down.stdout_str().contains("KMS"),
        "{}",
        down.stderr
    );
}

/// The key's ARN, which the SDKs' KMS keyrings name their EDKs by.
fn key_arn(endpoint: &str, key: &str) -> String {
    boto3_kms(
        endpoint,
        &format!("c.describe_key(KeyId='{key}')['KeyMetadata']['Arn']"),
    )
}

fn file(dir: &Path, args: &[&str], envs: &[(&str, &str)], stdin: &[u8]) -> Out {
    let mut cmd = common::coffer();
    cmd.current_dir(dir)
        .arg("file")
        .args(args)
        .envs([
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ])
        .envs(envs.iter().copied());
    common::output(cmd, Some(stdin))
}

fn esdk_kms(args: &[&str], input: &[u8]) -> Vec<u8> {
    common::python("esdk_kms.py", args, &[], input).0
}

/// Files wrapped by KMS carry KMS keyring EDKs: the Python SDK's AWS KMS keyring opens what coffer
/// writes and coffer opens what it writes; a recovery key beside KMS opens the file offline.
#[test]
fn kms_wrapped_files_interoperate_with_the_sdk() {
    let endpoint = moto();
    let key = create_key(&endpoint);
    let arn = key_arn(&endpoint, &key);
    let other = create_key(&endpoint);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let recovery = coffer_core::Kek::generate()
        .unwrap()
        .to_base64()
        .to_string();
    let env = [("REC", recovery.as_str())];
    let reference = format!("aws-kms:{arn};endpoint={endpoint}");
    let pt: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let enc = file(
        d,
        &[
            "encrypt",
            "--kek",
            &reference,
            "--recovery-kek",
            "env:REC",
            "--context",
            "tenant=t-9",
        ],
        &env,
        &pt,
    );
    assert_eq!(enc.code, Some(0), "{}", enc.stderr);
    std::fs::write(d.join("m.cfr"), &enc.stdout).unwrap();
    let info = file(d, &["inspect", "--json", "m.cfr"], &[], b"");
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["encrypted_data_keys"][0]["provider_id"], "aws-kms");
    assert_eq!(v["encrypted_data_keys"][0]["key_name"], arn.as_str());
    assert_eq!(v["encrypted_data_keys"][1]["key_name"], "recovery/v1");

    assert!(esdk_kms(&["decrypt", &endpoint, &arn], &enc.stdout) == pt);
    for kek in [reference.as_str(), "env:REC"] {
        let out = file(d, &["decrypt", "--kek", kek], &env, &enc.stdout);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(out.stdout == pt);
    }
    let wrong = format!("aws-kms:{other};endpoint={endpoint}");
    let out = file(d, &["decrypt", "--kek", &wrong], &env, &enc.stdout);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains(&arn), "{}", out.stderr);

    let theirs = esdk_kms(&["encrypt", &endpoint, &arn, "tenant=t-9"], &pt);
    let out = file(d, &["decrypt", "--kek", &reference], &env, &theirs);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout == pt);
}

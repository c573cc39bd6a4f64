//! `coffer keys` with an AWS KMS KEK, against moto (built with `--features aws-kms`; `make test`
//! runs it).

#![cfg(feature = "aws-kms")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Out, ok};

fn moto() -> String {
    if let Ok(e) = std::env::var("COFFER_TEST_MOTO_ENDPOINT") {
        return e;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/moto-up.sh");
    let out = Command::new("bash").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim()
        .strip_prefix("export COFFER_TEST_MOTO_ENDPOINT=")
        .unwrap()
        .to_owned()
}

/// Creates a symmetric key in moto with boto3 (moto's own dependency) and returns its id.
fn create_key(endpoint: &str) -> String {
    let code = format!(
        "import boto3; c = boto3.client('kms', endpoint_url='{endpoint}', region_name='us-east-1', \
         aws_access_key_id='test', aws_secret_access_key='test'); \
         print(c.create_key()['KeyMetadata']['KeyId'])"
    );
    let out = Command::new("python3")
        .args(["-c", &code])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
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
    assert!(out.contains("3 DEKs re-wrapped under main/v2"), "{out}");
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

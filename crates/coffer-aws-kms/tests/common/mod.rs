//! Shared by the moto tests and the bench: finds (or starts) a moto server and builds clients
//! with dummy credentials set on the SDK configuration, never in the process environment.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use aws_sdk_kms::config::Credentials;
use coffer_aws_kms::{AwsKmsKek, AwsKmsReference};

/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// The moto endpoint: `COFFER_TEST_MOTO_ENDPOINT`, or else what `scripts/moto-up.sh` prints
/// (it starts moto_server on a free loopback port, or reuses the one it started before, and
/// installs moto[server] with pip if needed).
pub fn moto_endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            if let Ok(endpoint) = std::env::var("COFFER_TEST_MOTO_ENDPOINT") {
                if !endpoint.trim().is_empty() {
                    return endpoint.trim().to_owned();
                }
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/moto-up.sh");
            let out = Command::new("bash")
                .arg(&script)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{} failed ({}): {stdout}",
                script.display(),
                out.status
            );
            stdout
                .lines()
                .find_map(|l| l.strip_prefix("export COFFER_TEST_MOTO_ENDPOINT="))
                .unwrap_or_else(|| panic!("no endpoint in the output of moto-up.sh: {stdout}"))
                .trim()
                .to_owned()
        })
        .clone()
}

/// `aws-kms:KEY;region=us-east-1;endpoint=MOTO`.
pub fn reference(key: &str) -> String {
    format!("aws-kms:{key};region={REGION};endpoint={}", moto_endpoint())
}

fn credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "coffer-tests")
}

/// A provider for `key` on moto, with the dummy credentials.
pub async fn kek(key: &str) -> AwsKmsKek {
    let reference = AwsKmsReference::parse(&reference(key)).unwrap();
    let config = AwsKmsKek::config_loader(&reference)
        .credentials_provider(credentials())
        .load()
        .await;
    AwsKmsKek::from_sdk_config(reference, &config).unwrap()
}

/// A plain KMS client on moto, for setting keys up (the crate's own loader, dummy credentials).
pub async fn admin() -> aws_sdk_kms::Client {
    let reference = AwsKmsReference::parse(&reference("alias/coffer-test-admin")).unwrap();
    let config = AwsKmsKek::config_loader(&reference)
        .credentials_provider(credentials())
        .load()
        .await;
    aws_sdk_kms::Client::new(&config)
}

/// Creates a symmetric ENCRYPT_DECRYPT key in moto and returns its id and ARN.
pub async fn create_key(admin: &aws_sdk_kms::Client) -> (String, String) {
    let out = admin
        .create_key()
        .description("coffer-aws-kms test key")
        .send()
        .await
        .expect("CreateKey on moto");
    let meta = out.key_metadata().expect("CreateKey returns metadata");
    (
        meta.key_id().to_owned(),
        meta.arn().expect("CreateKey returns an ARN").to_owned(),
    )
}

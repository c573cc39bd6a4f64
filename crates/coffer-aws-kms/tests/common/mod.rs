//! Shared by the moto tests and the bench: builds clients for moto (coffer-testkit's `moto`)
//! with dummy credentials set on the SDK configuration, never in the process environment.

use aws_sdk_kms::config::Credentials;
use coffer_aws_kms::{AwsKmsKek, AwsKmsReference};

/// The region every test uses.
pub const REGION: &str = "us-east-1";

pub use coffer_testkit::moto::endpoint as moto_endpoint;

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

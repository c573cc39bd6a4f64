//! Coffer's AWS KMS key-encryption-key provider.
//!
//! [`AwsKmsKek`] wraps a DEK with KMS `Encrypt` under a customer managed symmetric key and unwraps
//! it with `Decrypt`, passing the same `KeyId` and an encryption context made of opaque ids only
//! ([`WrapContext::opaque_context`]: store id, DEK key id and version — never the scope string,
//! which would land in CloudTrail). KMS authenticates that context; the key store's metadata tag
//! (docs/FORMAT.md §6) still binds the scope and is checked after every unwrap.
//!
//! [`Scheme`] registers `aws-kms:` references with coffer-assembly (cargo feature `aws-kms` of
//! the frontends). A KEK is named by a reference, `aws-kms:KEY[;region=REGION][;endpoint=URL]` (see
//! [`AwsKmsReference`]). Credentials, and anything the reference leaves out, come from the usual
//! AWS configuration (environment, shared config and credentials files, web identity, ECS,
//! instance metadata); `AWS_ENDPOINT_URL_KMS` / `AWS_ENDPOINT_URL` are honoured when the
//! reference has no `endpoint=`, and `AWS_USE_FIPS_ENDPOINT=true` selects the FIPS endpoints.
//! SSO profiles are not built in (aws-config's `sso` feature would add `ring`); use a
//! `credential_process` such as `aws configure export-credentials --format process`.
//!
//! TLS is rustls on the workspace's pinned aws-lc-rs (cargo feature `non-fips`, the default), or
//! rustls's FIPS provider (feature `fips`).
//!
//! The DEK itself crosses the SDK as a request body that this crate cannot zeroize; the plaintext
//! KMS returns is zeroized as soon as it is copied into the [`Dek`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(not(any(feature = "non-fips", feature = "fips")))]
compile_error!(
    "coffer-aws-kms needs the `non-fips` (default) or the `fips` feature for its TLS provider"
);

mod reference;
mod scheme;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::primitives::Blob;
use aws_smithy_http_client::tls;
use coffer_core::Dek;
use coffer_core::stream::{EncryptedDataKey, EncryptionContext};
use coffer_keys::files::FileKeyring;
use coffer_keys::{Error, KekId, KekProvider, Result, WrapContext};
use zeroize::Zeroizing;

pub use reference::{AwsKmsReference, SCHEME};
pub use scheme::Scheme;

/// Time allowed to open a TCP + TLS connection to KMS.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed for one attempt (request sent to response read).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole call, retries and back-off included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts per call (the first one and up to three retries), in the SDK's standard retry mode
/// (exponential back-off with jitter; throttling and transient errors are retried).
pub const MAX_ATTEMPTS: u32 = 4;

/// The largest ciphertext KMS accepts in `Decrypt`.
const MAX_CIPHERTEXT: usize = 6144;

/// An AWS KMS symmetric key used as a KEK: [`KekProvider::kind`] `aws-kms`,
/// [`KekProvider::algorithm`] `aws-kms-symmetric`.
#[derive(Clone)]
pub struct AwsKmsKek {
    client: Client,
    reference: AwsKmsReference,
    /// How errors name this KEK: its [`KekId`] once known, else the reference.
    label: String,
}

impl AwsKmsKek {
    /// Parses `reference`, loads the AWS configuration (credentials, and the region and endpoint
    /// unless the reference gives them) with this crate's timeouts, retries and HTTPS client,
    /// and returns the provider. No call is made to KMS yet.
    pub async fn from_reference(reference: &str) -> Result<Self> {
        let reference = AwsKmsReference::parse(reference)?;
        let config = Self::config_loader(&reference).load().await;
        Self::from_sdk_config(reference, &config)
    }

    /// The `aws-config` loader [`AwsKmsKek::from_reference`] uses: this crate's HTTPS client
    /// (rustls on the pinned aws-lc-rs), timeouts ([`CONNECT_TIMEOUT`], [`ATTEMPT_TIMEOUT`],
    /// [`OPERATION_TIMEOUT`]), standard retries ([`MAX_ATTEMPTS`]), and the reference's region
    /// and endpoint when it has them. Callers may add to it (e.g. a credentials provider) before
    /// `load()` and pass the result to [`AwsKmsKek::from_sdk_config`].
    pub fn config_loader(reference: &AwsKmsReference) -> ConfigLoader {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https_client())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(5)),
            );
        if let Some(region) = reference.region() {
            loader = loader.region(Region::new(region.to_owned()));
        }
        if let Some(endpoint) = reference.endpoint() {
            loader = loader.endpoint_url(endpoint);
        }
        loader
    }

    /// A provider for `reference` on an already loaded AWS configuration. Fails if the
    /// configuration has no region.
    pub fn from_sdk_config(reference: AwsKmsReference, config: &SdkConfig) -> Result<Self> {
        if config.region().is_none() {
            return Err(Error::config(format!(
                "no AWS region for '{reference}': add ;region=REGION to the reference, use a key \
                 ARN, or set AWS_REGION"
            )));
        }
        let client = Client::new(config);
        Ok(AwsKmsKek {
            label: reference.to_string(),
            client,
            reference,
        })
    }

    /// Names this KEK by its [`KekId`] in errors (otherwise they show the reference).
    pub fn with_kek_id(mut self, id: &KekId) -> Self {
        self.label = id.to_string();
        self
    }

    /// The parsed reference.
    pub fn reference(&self) -> &AwsKmsReference {
        &self.reference
    }

    /// The KMS client, e.g. to check the key with `DescribeKey`.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A [`Error::Provider`] for this KEK.
    fn fail(&self, reason: impl fmt::Display) -> Error {
        Error::provider(&self.label, reason)
    }

    fn wrong_kek(&self) -> Error {
        Error::WrongKek {
            kek: self.label.clone(),
        }
    }
}

impl fmt::Debug for AwsKmsKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsKek")
            .field("reference", &self.reference.to_string())
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Explains a failed call: what KMS or the network said, and what to check. Never includes
/// request bodies (they carry the DEK).
fn explain<E>(reference: &AwsKmsReference, operation: &str, err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let key = reference.key();
    let detail = DisplayErrorContext(err);
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("unknown error");
            let message = e.message().unwrap_or("no message");
            let hint = match code {
                "ThrottlingException" | "LimitExceededException" => format!(
                    "KMS throttled the request and was still throttling after {MAX_ATTEMPTS} \
                     attempts; lower the request rate (the DEK cache should absorb most \
                     calls) or raise the KMS request quota"
                ),
                "AccessDeniedException" => format!(
                    "KMS refused access: the caller's IAM policy and the key policy of \
                     '{key}' must allow kms:{operation}, and the ciphertext must name a key \
                     the caller may use"
                ),
                "NotFoundException" => format!(
                    "KMS has no key '{key}' in this account and region (a key id, ARN or \
                     alias that does not exist, or the wrong region)"
                ),
                "DisabledException" => format!("KMS key '{key}' is disabled"),
                "KMSInvalidStateException" => format!(
                    "KMS key '{key}' cannot be used in its current state (pending deletion, \
                     pending import or unavailable)"
                ),
                "InvalidKeyUsageException" => {
                    format!("KMS key '{key}' is not a symmetric ENCRYPT_DECRYPT key")
                }
                "KeyUnavailableException"
                | "DependencyTimeoutException"
                | "KMSInternalException"
                | "ServiceUnavailableException"
                | "InternalFailure" => "KMS is temporarily unavailable; try again later".to_owned(),
                "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "IncompleteSignature"
                | "MissingAuthenticationToken" => {
                    "KMS rejected the AWS credentials (unknown, expired or for another \
                     partition); check AWS_PROFILE / AWS_ACCESS_KEY_ID and the session token"
                        .to_owned()
                }
                _ => "KMS refused the request".to_owned(),
            };
            format!("KMS {operation} on '{key}' failed: {hint} ({code}: {message})")
        }
        SdkError::TimeoutError(_) => format!(
            "KMS {operation} on '{key}' timed out ({}s for the call, {}s per attempt, \
             {MAX_ATTEMPTS} attempts): {detail}",
            OPERATION_TIMEOUT.as_secs(),
            ATTEMPT_TIMEOUT.as_secs()
        ),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => format!(
            "KMS {operation} on '{key}': connecting to KMS timed out ({}s per connection, \
             {MAX_ATTEMPTS} attempts); check the network and the endpoint: {detail}",
            CONNECT_TIMEOUT.as_secs()
        ),
        SdkError::DispatchFailure(failure) if failure.is_io() => format!(
            "KMS {operation} on '{key}': could not reach KMS after {MAX_ATTEMPTS} attempts \
             (network, DNS, TLS or endpoint): {detail}"
        ),
        SdkError::DispatchFailure(_) => format!(
            "KMS {operation} on '{key}': the request could not be sent (credentials, \
             endpoint or region configuration?): {detail}"
        ),
        SdkError::ConstructionFailure(_) => format!(
            "KMS {operation} on '{key}': the request could not be built (credentials, \
             endpoint or region configuration?): {detail}"
        ),
        SdkError::ResponseError(_) => format!(
            "KMS {operation} on '{key}': the response could not be read (is the endpoint \
             really KMS?): {detail}"
        ),
        _ => format!("KMS {operation} on '{key}' failed: {detail}"),
    }
}

/// Whether a failed `Decrypt` means "not this key, or not this context": InvalidCiphertext
/// (damaged, or another encryption context) or IncorrectKey (another key's ciphertext).
fn is_wrong_kek(err: &SdkError<DecryptError>) -> bool {
    err.as_service_error()
        .is_some_and(|s| s.is_invalid_ciphertext_exception() || s.is_incorrect_key_exception())
}

/// rustls on the pinned aws-lc-rs, or rustls's FIPS provider with the `fips` feature.
fn https_client() -> aws_sdk_kms::config::SharedHttpClient {
    #[cfg(feature = "fips")]
    let mode = tls::rustls_provider::CryptoMode::AwsLcFips;
    #[cfg(not(feature = "fips"))]
    let mode = tls::rustls_provider::CryptoMode::AwsLc;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(mode))
        .build_https()
}

impl AwsKmsKek {
    /// KMS `Encrypt` of a 32-byte key under this KEK with the given encryption context; returns
    /// the key ARN KMS reports and the ciphertext blob.
    pub async fn encrypt_key(
        &self,
        key: &Dek,
        context: &[(String, String)],
    ) -> Result<(String, Vec<u8>)> {
        let mut request = self
            .client
            .encrypt()
            .key_id(self.reference.key())
            .plaintext(Blob::new(key.expose_secret().to_vec()));
        for (name, value) in context {
            request = request.encryption_context(name, value);
        }
        let out = request
            .send()
            .await
            .map_err(|e| self.fail(explain(&self.reference, "Encrypt", &e)))?;
        let arn = out
            .key_id
            .unwrap_or_else(|| self.reference.key().to_owned());
        let wrapped = out
            .ciphertext_blob
            .map(Blob::into_inner)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| self.fail("KMS Encrypt returned no ciphertext"))?;
        tracing::debug!(kek = %self.label, len = wrapped.len(), "wrapped a key with KMS Encrypt");
        Ok((arn, wrapped))
    }

    /// KMS `Decrypt` of a blob from [`AwsKmsKek::encrypt_key`] (same key, same context); a blob
    /// from another key or under another context is [`Error::WrongKek`].
    pub async fn decrypt_key(&self, wrapped: &[u8], context: &[(String, String)]) -> Result<Dek> {
        if wrapped.is_empty() || wrapped.len() > MAX_CIPHERTEXT {
            // Not something KMS Encrypt produced; KMS would answer InvalidCiphertextException.
            return Err(self.wrong_kek());
        }
        let mut request = self
            .client
            .decrypt()
            .key_id(self.reference.key())
            .ciphertext_blob(Blob::new(wrapped));
        for (name, value) in context {
            request = request.encryption_context(name, value);
        }
        let out = match request.send().await {
            Ok(out) => out,
            Err(e) => {
                return Err(if is_wrong_kek(&e) {
                    // The ciphertext is not from this key, or the context differs: KMS does not
                    // say which, and neither do we.
                    self.wrong_kek()
                } else {
                    self.fail(explain(&self.reference, "Decrypt", &e))
                });
            }
        };
        let plaintext = Zeroizing::new(
            out.plaintext
                .map(Blob::into_inner)
                .ok_or_else(|| self.fail("KMS Decrypt returned no plaintext"))?,
        );
        Dek::try_from_slice(&plaintext).map_err(|_| {
            self.fail(format!(
                "KMS Decrypt returned {} bytes, not a 32-byte key",
                plaintext.len()
            ))
        })
    }
}

/// Whether a KMS EDK naming key ARN `info` was made by `key` (a key ARN, a key id or an alias).
/// An alias cannot be compared offline and is left for KMS to judge.
fn addressed_to(key: &str, info: &[u8]) -> bool {
    let Ok(arn) = std::str::from_utf8(info) else {
        return false;
    };
    if key.starts_with("alias/") || key.contains(":alias/") {
        true
    } else if key.starts_with("arn:") {
        arn == key
    } else {
        arn.strip_suffix(key)
            .is_some_and(|head| head.ends_with(":key/"))
    }
}

/// Message data keys wrapped by AWS KMS in the AWS Encryption SDKs' KMS keyring layout: provider
/// id `aws-kms`, provider info the key ARN, ciphertext the `Encrypt` blob, with the message's
/// encryption context as the KMS encryption context. The SDKs' KMS keyrings open these.
#[derive(Clone, Debug)]
pub struct AwsKmsFileKeyring {
    kek: AwsKmsKek,
}

/// The provider id of KMS EDKs.
pub const KMS_PROVIDER_ID: &str = "aws-kms";

impl AwsKmsFileKeyring {
    /// A keyring around a KMS key.
    pub fn new(kek: AwsKmsKek) -> Self {
        AwsKmsFileKeyring { kek }
    }
}

fn context_pairs(context: &EncryptionContext) -> Vec<(String, String)> {
    context
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[async_trait]
impl FileKeyring for AwsKmsFileKeyring {
    fn label(&self) -> String {
        format!("{KMS_PROVIDER_ID}/{}", self.kek.reference().key())
    }

    async fn wrap(&self, data_key: &Dek, context: &EncryptionContext) -> Result<EncryptedDataKey> {
        let (arn, blob) = self
            .kek
            .encrypt_key(data_key, &context_pairs(context))
            .await?;
        Ok(EncryptedDataKey {
            provider_id: KMS_PROVIDER_ID.to_owned(),
            provider_info: arn.into_bytes(),
            ciphertext: blob,
        })
    }

    async fn unwrap(
        &self,
        edk: &EncryptedDataKey,
        context: &EncryptionContext,
    ) -> Result<Option<Dek>> {
        if edk.provider_id != KMS_PROVIDER_ID {
            return Ok(None);
        }
        if !addressed_to(self.kek.reference().key(), &edk.provider_info) {
            return Ok(None);
        }
        match self
            .kek
            .decrypt_key(&edk.ciphertext, &context_pairs(context))
            .await
        {
            Ok(dk) => Ok(Some(dk)),
            Err(Error::WrongKek { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl KekProvider for AwsKmsKek {
    fn kind(&self) -> &'static str {
        "aws-kms"
    }

    fn algorithm(&self) -> &'static str {
        "aws-kms-symmetric"
    }

    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<Vec<u8>> {
        let context: Vec<(String, String)> = ctx
            .opaque_context()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        Ok(self.encrypt_key(dek, &context).await?.1)
    }

    async fn unwrap(&self, wrapped: &[u8], ctx: &WrapContext<'_>) -> Result<Dek> {
        let context: Vec<(String, String)> = ctx
            .opaque_context()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        self.decrypt_key(wrapped, &context).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edks_are_matched_to_keys_by_arn_or_id() {
        let arn = b"arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert!(addressed_to(std::str::from_utf8(arn).unwrap(), arn));
        assert!(addressed_to("1234abcd-12ab-34cd-56ef-1234567890ab", arn));
        assert!(!addressed_to("34abcd-12ab-34cd-56ef-1234567890ab", arn));
        assert!(!addressed_to(
            "arn:aws:kms:us-east-1:123456789012:key/other",
            arn
        ));
        assert!(addressed_to("alias/backups", arn));
        assert!(!addressed_to("1234", &[0xff, 0xfe]));
    }

    use aws_sdk_kms::config::http::HttpResponse;
    use aws_sdk_kms::error::ErrorMetadata;
    use aws_sdk_kms::operation::encrypt::EncryptError;
    use aws_sdk_kms::types::error::{
        DisabledException, IncorrectKeyException, InvalidCiphertextException,
    };
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    fn response() -> HttpResponse {
        HttpResponse::new(StatusCode::try_from(400).unwrap(), SdkBody::empty())
    }

    fn reference() -> AwsKmsReference {
        AwsKmsReference::parse("aws-kms:alias/coffer-main;region=eu-west-1").unwrap()
    }

    // moto cannot produce these (it ignores key state and never throttles), so the mapping is
    // checked on constructed SDK errors.
    #[test]
    fn service_errors_are_explained_with_their_code() {
        let disabled: SdkError<EncryptError> = SdkError::service_error(
            EncryptError::DisabledException(
                // As the SDK's deserializer builds it: code and message in the metadata.
                DisabledException::builder()
                    .message("key is disabled")
                    .meta(
                        ErrorMetadata::builder()
                            .code("DisabledException")
                            .message("key is disabled")
                            .build(),
                    )
                    .build(),
            ),
            response(),
        );
        let text = explain(&reference(), "Encrypt", &disabled);
        assert!(text.contains("'alias/coffer-main' is disabled"), "{text}");
        assert!(text.contains("DisabledException"), "{text}");

        let throttled: SdkError<EncryptError> = SdkError::service_error(
            EncryptError::generic(
                ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded")
                    .build(),
            ),
            response(),
        );
        let text = explain(&reference(), "Encrypt", &throttled);
        assert!(
            text.contains("throttled") && text.contains("4 attempts"),
            "{text}"
        );
        assert!(text.contains("Rate exceeded"), "{text}");

        let denied: SdkError<EncryptError> = SdkError::service_error(
            EncryptError::generic(
                ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("not authorized")
                    .build(),
            ),
            response(),
        );
        let text = explain(&reference(), "Encrypt", &denied);
        assert!(text.contains("kms:Encrypt"), "{text}");

        let timeout: SdkError<EncryptError> = SdkError::timeout_error("too slow");
        let text = explain(&reference(), "Encrypt", &timeout);
        assert!(text.contains("timed out"), "{text}");
    }

    #[test]
    fn only_ciphertext_and_key_mismatches_are_a_wrong_kek() {
        let invalid: SdkError<DecryptError> = SdkError::service_error(
            DecryptError::InvalidCiphertextException(InvalidCiphertextException::builder().build()),
            response(),
        );
        let incorrect: SdkError<DecryptError> = SdkError::service_error(
            DecryptError::IncorrectKeyException(IncorrectKeyException::builder().build()),
            response(),
        );
        let denied: SdkError<DecryptError> = SdkError::service_error(
            DecryptError::generic(
                ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .build(),
            ),
            response(),
        );
        assert!(is_wrong_kek(&invalid));
        assert!(is_wrong_kek(&incorrect));
        assert!(!is_wrong_kek(&denied));
        assert!(!is_wrong_kek(&SdkError::timeout_error("slow")));
    }
}

//! [`Bucket`]: an object store and the bucket name its errors cite.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore};

use crate::error::{Error, Result};
use crate::info::ObjectInfo;

/// Where to reach S3, beyond what the environment says.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// An S3-compatible endpoint (MinIO, moto, a VPC endpoint), e.g. `http://127.0.0.1:9000`.
    /// Overrides `AWS_ENDPOINT_URL`. Plain `http://` endpoints are allowed because they were
    /// asked for by name; the default endpoint is always HTTPS.
    pub endpoint: Option<String>,
    /// The region; overrides `AWS_REGION` / `AWS_DEFAULT_REGION` (default `us-east-1`).
    pub region: Option<String>,
}

/// One bucket of an object store: S3 through [`Bucket::connect`], or any [`ObjectStore`]
/// (already bound to its bucket) through [`Bucket::new`].
#[derive(Clone, Debug)]
pub struct Bucket {
    name: String,
    store: Arc<dyn ObjectStore>,
}

impl Bucket {
    /// Wraps a store already configured for the bucket `name` (the name is only used in errors).
    pub fn new(name: impl Into<String>, store: Arc<dyn ObjectStore>) -> Self {
        Bucket {
            name: name.into(),
            store,
        }
    }

    /// The S3 bucket `name`, with credentials and settings from the usual environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, …; see object_store's `AmazonS3Builder::from_env`), then `options`.
    /// Requests go path-style (`endpoint/bucket/key`), which every S3-compatible server takes.
    pub fn connect(name: &str, options: &ConnectOptions) -> Result<Self> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(name);
        if let Some(e) = &options.endpoint {
            builder = builder.with_endpoint(e);
        }
        if let Some(r) = &options.region {
            builder = builder.with_region(r);
        }
        let http = [AmazonS3ConfigKey::Endpoint, AmazonS3ConfigKey::S3Endpoint]
            .iter()
            .filter_map(|k| builder.get_config_value(k))
            .any(|e| e.starts_with("http://"));
        if http {
            builder = builder.with_allow_http(true);
        }
        let store = builder.build().map_err(|e| Error::Invalid {
            what: "S3 configuration",
            reason: e.to_string(),
        })?;
        Ok(Bucket::new(name, Arc::new(store)))
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object's size, Content-Type and user metadata (one HEAD request, no key needed).
    pub async fn head(&self, key: &Path) -> Result<ObjectInfo> {
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let r = self
            .store
            .get_opts(key, options)
            .await
            .map_err(|e| self.store_error(key, e))?;
        Ok(ObjectInfo::new(&r.meta, &r.attributes))
    }

    /// Names the object in a store error; a missing object or bucket, and an object replaced
    /// mid-read, get errors of their own.
    pub(crate) fn store_error(&self, key: &Path, error: object_store::Error) -> Error {
        let (bucket, key) = (self.name.clone(), key.to_string());
        match error {
            // object_store reports both S3 404s as NotFound; the response body tells them apart
            // (a HEAD has no body: a missing bucket then reads as a missing object).
            e @ object_store::Error::NotFound { .. } => {
                if e.to_string().contains("<Code>NoSuchBucket</Code>") {
                    Error::NoSuchBucket { bucket }
                } else {
                    Error::NotFound { bucket, key }
                }
            }
            object_store::Error::Precondition { .. } => Error::Changed { bucket, key },
            error => Error::Store { bucket, key, error },
        }
    }
}

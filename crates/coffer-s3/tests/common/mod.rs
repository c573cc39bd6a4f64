//! Shared by the moto tests and the bench: buckets on moto (coffer-testkit's `moto`), and the
//! S3 store wrapped in a counter of the GETs it serves.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use coffer_core::Kek;
use coffer_core::stream::RawAesKeyring;
use coffer_s3::Bucket;
use coffer_s3::object_store::aws::AmazonS3Builder;
use coffer_s3::object_store::path::Path;
use coffer_s3::object_store::{
    self, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use futures_util::stream::BoxStream;

pub use coffer_testkit::moto::endpoint as moto_endpoint;

/// One plain HTTP/1.1 request to moto (which does not check signatures); status and body.
pub fn http(method: &str, target: &str) -> (u16, String) {
    let host = coffer_testkit::moto::host();
    let mut s = TcpStream::connect(&host).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

/// A new bucket with a unique name.
pub fn create_bucket(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let (status, body) = http("PUT", &format!("/{name}"));
    assert_eq!(status, 200, "creating bucket {name}: {body}");
    name
}

/// Multipart uploads still open in `bucket` (S3 ListMultipartUploads).
pub fn open_uploads(bucket: &str) -> usize {
    let (status, body) = http("GET", &format!("/{bucket}?uploads"));
    assert_eq!(status, 200, "{body}");
    body.matches("<UploadId>").count()
}

/// The plain S3 store for `bucket` on moto (dummy credentials, set on the builder).
pub fn s3(bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(moto_endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap(),
    )
}

/// A bucket on moto whose GETs are counted.
pub fn bucket(prefix: &str) -> (Bucket, Arc<Counting>) {
    let name = create_bucket(prefix);
    let counting = Arc::new(Counting {
        inner: s3(&name),
        gets: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let store: Arc<dyn ObjectStore> = counting.clone();
    (Bucket::new(name, store), counting)
}

/// A raw AES keyring around a fresh key.
pub fn keyring(name: &str) -> RawAesKeyring {
    RawAesKeyring::new("coffer", name, Kek::generate().unwrap()).unwrap()
}

/// Deterministic test data.
pub fn data(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8)
        .collect()
}

/// An object store that counts the GET requests it serves and the body bytes they carry.
#[derive(Debug)]
pub struct Counting {
    inner: Arc<dyn ObjectStore>,
    pub gets: AtomicU64,
    pub bytes: AtomicU64,
}

impl Counting {
    /// (GETs, bytes) since the last call, and resets both.
    pub fn take(&self) -> (u64, u64) {
        (
            self.gets.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
        )
    }
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let head = options.head;
        let r = self.inner.get_opts(location, options).await?;
        if !head {
            let Range { start, end } = r.range;
            self.gets.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(end - start, Ordering::Relaxed);
        }
        Ok(r)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

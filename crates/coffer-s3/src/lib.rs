//! Client-side encryption for S3: objects are encrypted before they leave the process and
//! decrypted after they come back, so the store only ever holds ciphertext.
//!
//! An object is one AWS Encryption SDK message (format v2, suite 0x0478, framed; coffer-core's
//! `stream`, docs/FORMAT.md §10), so the official AWS Encryption SDKs decrypt a downloaded object
//! given the same wrapping key. Data keys are wrapped by coffer-keys [`FileKeyring`]s: a local
//! KEK, an HSM key or AWS KMS, plus an optional offline recovery key.
//!
//! - [`Bucket::put`] encrypts a `Read` while uploading it as an S3 multipart upload, in memory
//!   bounded by a few parts; any failure aborts the upload, so no object appears.
//! - [`Bucket::get`] / [`Bucket::open`] download and decrypt a whole object, streaming.
//! - [`Bucket::get_range`] decrypts a byte range with ranged GETs of the header, the final frame
//!   (proof of length) and the frames covering the range only.
//! - [`Bucket::head`] reads size, Content-Type and user metadata without a key.
//!
//! What the store sees: the object's size (plaintext size plus a small overhead: docs/S3.md),
//! its key, the Content-Type and user metadata (plaintext and **unauthenticated**: anyone who may
//! write to the bucket can change them), and the encryption context in the header (plaintext,
//! but authenticated). [`PutOptions::content_type`] is therefore written to both the S3
//! attribute and the context (`content-type`); [`GetReport::content_type`] reads the
//! authenticated one.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use coffer_core::Kek;
//! use coffer_core::stream::{EncryptionContext, RawAesKeyring};
//! use coffer_keys::FileKeyring;
//! use coffer_s3::{Bucket, ConnectOptions, PutOptions};
//!
//! let keyring = RawAesKeyring::new("coffer", "backups/v1", Kek::generate()?)?;
//! let keyrings: [&dyn FileKeyring; 1] = [&keyring];
//! let bucket = Bucket::connect("scans", &ConnectOptions::default())?;
//! let key = "patients/42/ct.dcm".into();
//!
//! let mut context = EncryptionContext::new();
//! context.insert("patient", "hmac:1f3a...")?;
//! let opts = PutOptions {
//!     content_type: Some("application/dicom".into()),
//!     ..PutOptions::default()
//! };
//! let file = std::fs::File::open("ct.dcm")?;
//! bucket.put(&key, file, &keyrings, &context, &opts).await?;
//!
//! let (report, plain) = bucket.get(&key, &keyrings, Vec::new()).await?;
//! assert_eq!(report.content_type(), Some("application/dicom"));
//! let first_kib = bucket.get_range(&key, &keyrings, 0..1024).await?;
//! assert_eq!(first_kib.plaintext, plain[..1024]);
//! # Ok(()) }
//! ```
//!
//! [`FileKeyring`]: coffer_keys::FileKeyring

#![forbid(unsafe_code)]

mod bucket;
mod error;
mod get;
mod header;
mod info;
mod put;
mod range;

pub use bucket::{Bucket, ConnectOptions};
pub use error::{Error, Result};
pub use get::{GetReport, ObjectReader};
pub use info::ObjectInfo;
pub use object_store;
pub use object_store::path::Path;
pub use put::{CONTEXT_CONTENT_TYPE, PutOptions, PutReport};
pub use range::{Fetched, HEADER_PROBE, MAX_WINDOW, RangeOutput};

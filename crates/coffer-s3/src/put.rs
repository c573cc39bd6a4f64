//! [`Bucket::put`]: encrypt while uploading, in constant memory.
//!
//! coffer-core's synchronous [`Encryptor`] runs on a blocking thread and writes the message into a
//! [`PartSink`], which hands each filled part (`part_size` bytes) over a one-slot channel to the
//! async side; that side uploads parts as S3 multipart parts, `concurrency` at a time. Memory is
//! therefore about `(concurrency + 3) × part_size` (the part being filled, the one in the channel,
//! the one waiting for an upload slot, those uploading) whatever the object's size. A message that
//! fits in one part is stored with a single PUT. On any failure (the source, the encryptor, a
//! part, the completion) the multipart upload is aborted, so no object appears.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use bytes::Bytes;
use coffer_core::stream::{DEFAULT_FRAME_LEN, EncryptionContext, Encryptor};
use coffer_keys::files::{self, FileKeyring};
use object_store::path::Path;
use object_store::{Attributes, PutMultipartOptions, PutPayload, PutResult, WriteMultipart};
use tokio::sync::mpsc;

use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::info;

/// The encryption-context key that carries the content type (authenticated, unlike the S3
/// Content-Type beside it).
pub const CONTEXT_CONTENT_TYPE: &str = "content-type";

/// S3's smallest part (all parts but the last).
const MIN_PART: usize = 5 * 1024 * 1024;
/// S3's largest part.
const MAX_PART: usize = 5 * 1024 * 1024 * 1024;

/// How [`Bucket::put`] encrypts and uploads.
#[derive(Clone, Debug)]
pub struct PutOptions {
    /// Plaintext bytes per frame (default 64 KiB): the unit of random access.
    pub frame_len: u32,
    /// The Content-Type: stored as the S3 attribute (for browsers and tools; unauthenticated)
    /// and in the encryption context under `content-type` (authenticated).
    pub content_type: Option<String>,
    /// S3 user metadata (`x-amz-meta-*`), stored in plaintext and unauthenticated: no secrets
    /// or personal data, and nothing a reader must trust (use the encryption context for that).
    pub metadata: BTreeMap<String, String>,
    /// Bytes per multipart part (default 8 MiB; 5 MiB to 5 GiB). S3 allows 10 000 parts, so
    /// the default carries objects up to about 78 GiB; raise it for larger ones.
    pub part_size: usize,
    /// Parts uploading at once (default 2).
    pub concurrency: usize,
    /// Threads sealing frames (0, the default: every core).
    pub threads: usize,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            frame_len: DEFAULT_FRAME_LEN,
            content_type: None,
            metadata: BTreeMap::new(),
            part_size: 8 * 1024 * 1024,
            concurrency: 2,
            threads: 0,
        }
    }
}

/// What [`Bucket::put`] stored.
#[derive(Clone, Debug)]
pub struct PutReport {
    /// Plaintext bytes read from the source.
    pub plaintext_len: u64,
    /// Bytes stored (the encrypted message).
    pub object_len: u64,
    /// Multipart parts uploaded (0: the object went up in a single PUT).
    pub parts: u64,
    /// The encryption context written in the header (the caller's plus `content-type`).
    pub context: EncryptionContext,
    /// The stored object's entity tag.
    pub e_tag: Option<String>,
    /// The stored object's version, on a versioned bucket.
    pub version: Option<String>,
}

impl Bucket {
    /// Encrypts everything `src` yields under a fresh data key wrapped by every keyring (the
    /// first is the primary; add an offline recovery key as a second), and stores it at `key`
    /// as an AWS Encryption SDK message. The upload streams: memory stays bounded by a few parts
    /// (see [`PutOptions::part_size`]) whatever the size of `src`. On any error nothing is
    /// stored: the multipart upload is aborted.
    ///
    /// `src` is read on a blocking thread (hence `Send + 'static`). Call this inside a Tokio
    /// runtime.
    pub async fn put<R: Read + Send + 'static>(
        &self,
        key: &Path,
        src: R,
        keyrings: &[&dyn FileKeyring],
        context: &EncryptionContext,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        check(opts)?;
        let attributes = info::attributes(opts.content_type.as_deref(), &opts.metadata)?;
        let context = with_content_type(context, opts.content_type.as_deref())?;
        let (data_key, edks) = files::seal(keyrings, &context).await?;

        let (tx, mut rx) = mpsc::channel::<Bytes>(1);
        let (part_size, frame_len, threads) = (opts.part_size, opts.frame_len, opts.threads);
        let header_context = context.clone();
        let encrypt = tokio::task::spawn_blocking(move || -> Result<(u64, u64)> {
            let mut src = Tracked {
                inner: src,
                failed: false,
            };
            let sink = PartSink {
                tx,
                buf: Vec::with_capacity(part_size),
                part_size,
                sent: 0,
            };
            let enc = Encryptor::with_data_key(sink, &data_key, edks, &header_context, frame_len)
                .map_err(|e| Error::from_stream(e, stopped))?;
            drop(data_key);
            let mut enc = if threads > 0 {
                enc.with_threads(threads)
            } else {
                enc
            };
            let plaintext_len = enc.write_from(&mut src).map_err(|e| {
                if src.failed {
                    Error::Source(e)
                } else {
                    Error::from_stream(e, stopped)
                }
            })?;
            let sink = enc.finish().map_err(|e| Error::from_stream(e, stopped))?;
            let object_len = sink.close().map_err(stopped)?;
            Ok((plaintext_len, object_len))
        });

        let mut upload = Upload::new(self, key, attributes, opts);
        let pumped = async {
            while let Some(part) = rx.recv().await {
                upload.push(part).await?;
            }
            Ok::<(), object_store::Error>(())
        }
        .await;
        // Closing the channel makes the encryptor's next send fail if the upload gave up early.
        drop(rx);
        let encrypted = encrypt
            .await
            .map_err(|e| Error::Internal(format!("the encryption task failed: {e}")));
        let (plaintext_len, object_len) = match (pumped, encrypted) {
            (Err(e), _) => {
                upload.abort().await;
                return Err(self.store_error(key, e));
            }
            (Ok(()), Err(e) | Ok(Err(e))) => {
                upload.abort().await;
                return Err(e);
            }
            (Ok(()), Ok(Ok(lens))) => lens,
        };
        let parts = upload.parts;
        let done = upload
            .finish()
            .await
            .map_err(|e| self.store_error(key, e))?;
        Ok(PutReport {
            plaintext_len,
            object_len,
            parts,
            context,
            e_tag: done.e_tag,
            version: done.version,
        })
    }
}

fn check(opts: &PutOptions) -> Result<()> {
    if !(MIN_PART..=MAX_PART).contains(&opts.part_size) {
        return Err(Error::invalid(
            "part size",
            format!("{} bytes; S3 parts are 5 MiB to 5 GiB", opts.part_size),
        ));
    }
    if opts.frame_len == 0 || opts.concurrency == 0 {
        return Err(Error::invalid(
            "put options",
            "the frame length and the upload concurrency must be above zero",
        ));
    }
    Ok(())
}

/// The caller's context plus the content type (which may already be there, with the same value).
fn with_content_type(
    context: &EncryptionContext,
    content_type: Option<&str>,
) -> Result<EncryptionContext> {
    let mut out = context.clone();
    if let Some(t) = content_type {
        match context.get(CONTEXT_CONTENT_TYPE) {
            Some(v) if v == t => {}
            Some(v) => {
                return Err(Error::invalid(
                    "content type",
                    format!(
                        "'{t}' differs from the encryption context's {CONTEXT_CONTENT_TYPE}='{v}'"
                    ),
                ));
            }
            None => out.insert(CONTEXT_CONTENT_TYPE, t)?,
        }
    }
    Ok(out)
}

/// The encryptor stopped because the upload side hung up; the upload's own error is reported.
fn stopped(e: io::Error) -> Error {
    Error::Internal(format!("the upload stopped: {e}"))
}

/// The source, remembering whether an error came from it (rather than from the sink).
struct Tracked<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        if let Err(e) = &r {
            self.failed |= e.kind() != io::ErrorKind::Interrupted;
        }
        r
    }
}

/// Collects the message into parts of `part_size` bytes and sends each one, blocking while the
/// channel is full (that is the back-pressure that keeps memory bounded).
struct PartSink {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    part_size: usize,
    sent: u64,
}

impl PartSink {
    fn send(&mut self) -> io::Result<()> {
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(self.part_size));
        self.sent += part.len() as u64;
        self.tx
            .blocking_send(Bytes::from(part))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends what is left (the last, short part) and returns the bytes sent in all.
    fn close(mut self) -> io::Result<u64> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(self.sent)
    }
}

impl Write for PartSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (self.part_size - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.part_size {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The upload side: the first part is held back until a second one shows the message needs a
/// multipart upload; a message of one part goes up in a single PUT. Dropped while a multipart
/// upload is open (the `put` future was cancelled), it aborts the upload in the background.
struct Upload<'a> {
    bucket: &'a Bucket,
    key: &'a Path,
    attributes: Attributes,
    part_size: usize,
    concurrency: usize,
    first: Option<Bytes>,
    multipart: Option<WriteMultipart>,
    parts: u64,
}

impl<'a> Upload<'a> {
    fn new(bucket: &'a Bucket, key: &'a Path, attributes: Attributes, opts: &PutOptions) -> Self {
        Upload {
            bucket,
            key,
            attributes,
            part_size: opts.part_size,
            concurrency: opts.concurrency,
            first: None,
            multipart: None,
            parts: 0,
        }
    }

    async fn push(&mut self, part: Bytes) -> object_store::Result<()> {
        if self.multipart.is_none() {
            let Some(first) = self.first.take() else {
                self.first = Some(part);
                return Ok(());
            };
            let options = PutMultipartOptions {
                attributes: self.attributes.clone(),
                ..PutMultipartOptions::default()
            };
            let upload = self
                .bucket
                .store()
                .put_multipart_opts(self.key, options)
                .await?;
            self.multipart = Some(WriteMultipart::new_with_chunk_size(upload, self.part_size));
            self.send(first).await?;
        }
        self.send(part).await
    }

    async fn send(&mut self, part: Bytes) -> object_store::Result<()> {
        if let Some(w) = self.multipart.as_mut() {
            w.wait_for_capacity(self.concurrency).await?;
            w.put(part);
            self.parts += 1;
        }
        Ok(())
    }

    async fn finish(mut self) -> object_store::Result<PutResult> {
        match self.multipart.take() {
            None => {
                let last = self.first.take().unwrap_or_default();
                let options = object_store::PutOptions {
                    attributes: std::mem::take(&mut self.attributes),
                    ..object_store::PutOptions::default()
                };
                self.bucket
                    .store()
                    .put_opts(self.key, PutPayload::from(last), options)
                    .await
            }
            Some(w) => {
                // Every part, the last included, went through `push`. On failure WriteMultipart::finish aborts the upload itself.
                w.finish().await
            }
        }
    }

    async fn abort(mut self) {
        if let Some(w) = self.multipart.take() {
            // Best effort: a failed abort leaves parts for the bucket's lifecycle rule.
            let _ = w.abort().await;
        }
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.multipart.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = w.abort().await;
                });
            }
        }
    }
}

//! [`Bucket::open`] and [`Bucket::get`]: download and decrypt a whole object, streaming.
//!
//! One GET. The async side reads the header off the front of the response, opens the data key
//! with the caller's keyrings, and then pumps the rest of the body through a bounded channel into
//! an [`ObjectReader`], a synchronous `Read` around coffer-core's [`Decryptor`]: it releases a
//! frame's plaintext only after the frame's tag verifies, and fails on truncation or trailing
//! bytes. Memory is bounded by the channel (a few network chunks) and the decryptor's frames.

use std::io::{self, Read, Write};

use bytes::Bytes;
use coffer_core::stream::{Decryptor, EncryptionContext};
use coffer_keys::files::{self, FileKeyring};
use futures_util::StreamExt as _;
use object_store::GetOptions;
use object_store::path::Path;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::header;
use crate::info::ObjectInfo;
use crate::put::CONTEXT_CONTENT_TYPE;

/// Network chunks buffered between the download and the decryptor.
const CHUNKS_IN_FLIGHT: usize = 16;

/// What [`Bucket::get`] fetched.
#[derive(Clone, Debug)]
pub struct GetReport {
    /// The object as the store describes it (size, unauthenticated Content-Type and metadata).
    pub info: ObjectInfo,
    /// The encryption context from the object's header (authenticated).
    pub context: EncryptionContext,
    /// Plaintext bytes written.
    pub plaintext_len: u64,
}

impl GetReport {
    /// The content type from the encryption context (authenticated), if the object has one.
    pub fn content_type(&self) -> Option<&str> {
        self.context.get(CONTEXT_CONTENT_TYPE)
    }
}

impl Bucket {
    /// Starts downloading `key`, reads its header and opens its data key with the first of
    /// `keyrings` that can; the returned reader yields the plaintext.
    ///
    /// The reader blocks: read it on a thread that is not one of the runtime's workers
    /// ([`tokio::task::spawn_blocking`], a plain thread, or a synchronous `main` that called
    /// this through `Runtime::block_on`), while the runtime keeps running.
    pub async fn open(&self, key: &Path, keyrings: &[&dyn FileKeyring]) -> Result<ObjectReader> {
        let got = self
            .store()
            .get_opts(key, GetOptions::default())
            .await
            .map_err(|e| self.store_error(key, e))?;
        let info = ObjectInfo::new(&got.meta, &got.attributes);
        let mut stream = got.into_stream();
        let mut head = Vec::new();
        let header = loop {
            if let Some(h) = header::parse(&head)? {
                break h;
            }
            match stream.next().await {
                Some(chunk) => {
                    head.extend_from_slice(&chunk.map_err(|e| self.store_error(key, e))?)
                }
                None => {
                    return Err(coffer_core::Error::Format("truncated message header").into());
                }
            }
        };
        let data_key = files::open(&header, keyrings).await?;
        let rest = Bytes::from(head).slice(header.len()..);

        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let (bucket, name) = (self.clone(), key.clone());
        let pump = tokio::spawn(async move {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| bucket.store_error(&name, e));
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        let body = Body {
            rx,
            current: rest,
            pump,
        };
        let decryptor = Decryptor::with_data_key(body, header, &data_key)
            .map_err(|e| Error::from_stream(e, |e| Error::Internal(e.to_string())))?;
        Ok(ObjectReader {
            decryptor,
            info,
            plaintext_len: 0,
        })
    }

    /// Downloads and decrypts `key` into `dst`, streaming; returns the report and `dst`.
    ///
    /// On an error, `dst` may already hold the plaintext of frames that verified before the
    /// failure (never of a frame that did not): discard it unless this returns `Ok`.
    pub async fn get<W: Write + Send + 'static>(
        &self,
        key: &Path,
        keyrings: &[&dyn FileKeyring],
        mut dst: W,
    ) -> Result<(GetReport, W)> {
        let mut reader = self.open(key, keyrings).await?;
        tokio::task::spawn_blocking(move || {
            reader.copy_to(&mut dst)?;
            dst.flush().map_err(Error::Output)?;
            Ok((reader.report(), dst))
        })
        .await
        .map_err(|e| Error::Internal(format!("the decryption task failed: {e}")))?
    }
}

/// The plaintext of an object, as a blocking `Read` (see [`Bucket::open`]). Errors it returns
/// carry this crate's [`Error`] or coffer-core's; [`ObjectReader::copy_to`] returns them typed.
pub struct ObjectReader {
    decryptor: Decryptor<Body>,
    info: ObjectInfo,
    plaintext_len: u64,
}

impl ObjectReader {
    /// The object as the store describes it.
    pub fn info(&self) -> &ObjectInfo {
        &self.info
    }

    /// The encryption context (authenticated by the header tag).
    pub fn context(&self) -> &EncryptionContext {
        self.decryptor.context()
    }

    /// Copies the rest of the plaintext into `dst` (not flushed); returns the bytes copied.
    pub fn copy_to<W: Write + ?Sized>(&mut self, dst: &mut W) -> Result<u64> {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = match self.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::from_stream(e, |e| Error::Internal(e.to_string()))),
            };
            dst.write_all(&buf[..n]).map_err(Error::Output)?;
            total += n as u64;
        }
    }

    /// The report so far (complete once a read has returned 0).
    pub fn report(&self) -> GetReport {
        GetReport {
            info: self.info.clone(),
            context: self.decryptor.context().clone(),
            plaintext_len: self.plaintext_len,
        }
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.decryptor.read(buf)?;
        self.plaintext_len += n as u64;
        Ok(n)
    }
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("info", &self.info)
            .field("plaintext_len", &self.plaintext_len)
            .finish_non_exhaustive()
    }
}

/// The response body after the header, as a blocking `Read` fed by the download task (which
/// stops when this is dropped).
struct Body {
    rx: mpsc::Receiver<Result<Bytes>>,
    current: Bytes,
    pump: JoinHandle<()>,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

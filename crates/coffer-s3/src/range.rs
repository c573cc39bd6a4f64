//! [`Bucket::get_range`]: decrypt a plaintext byte range, fetching only the frames it needs.
//!
//! Requests, in order: a ranged GET of the first [`HEADER_PROBE`] bytes (larger ones if the header
//! is longer), which also gives the object's size, ETag, Content-Type and metadata; then, from
//! coffer-core's [`SeekableDecryptor`], the final frame (it proves the length: a truncated or
//! extended object fails) and the frames covering the range. Every GET after the first carries
//! `If-Match` with the first one's ETag, so frames of a replaced object are never mixed in.
//!
//! The decryptor is synchronous; it runs on a blocking thread over [`Ranged`], a `Read + Seek`
//! whose reads outside its current window issue one ranged GET each: the whole ciphertext span of
//! the range (up to [`MAX_WINDOW`] bytes a request) when the read falls inside it, else one frame.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use coffer_core::stream::{EncryptionContext, FrameLayout, SeekableDecryptor};
use coffer_keys::files::{self, FileKeyring};
use object_store::GetOptions;
use object_store::path::Path;
use tokio::runtime::Handle;

use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::header;
use crate::info::ObjectInfo;

/// Bytes asked for by the first GET, which must hold the header (a header with one or two raw
/// AES data keys and a short context is 200–400 bytes).
pub const HEADER_PROBE: u64 = 4096;

/// Most bytes one GET asks for while covering a range's frames.
pub const MAX_WINDOW: u64 = 8 * 1024 * 1024;

/// Bytes of a final frame beyond its plaintext (marker, sequence number, IV, length, tag): a
/// window of `frame_len` plus this holds any one frame whole.
const FRAME_SLACK: u64 = 4 + 4 + 12 + 4 + 16;

/// What a read fetched from the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// GET requests made.
    pub requests: u64,
    /// Bytes received.
    pub bytes: u64,
}

/// What [`Bucket::get_range`] returns.
#[derive(Clone, Debug)]
pub struct RangeOutput {
    /// The plaintext bytes of the range.
    pub plaintext: Vec<u8>,
    /// The whole object's plaintext length (proven by its final frame).
    pub plaintext_len: u64,
    /// The encryption context (authenticated).
    pub context: EncryptionContext,
    /// The object as the store describes it.
    pub info: ObjectInfo,
    /// The requests made and bytes received.
    pub fetched: Fetched,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    fn add(&self, bytes: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Fetched {
        Fetched {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Bucket {
    /// Decrypts plaintext bytes `range` (end exclusive) of `key`, fetching the header, the final
    /// frame and the frames covering the range, and nothing else. Every frame used is verified
    /// before any of its bytes are returned. Call this inside a Tokio runtime.
    pub async fn get_range(
        &self,
        key: &Path,
        keyrings: &[&dyn FileKeyring],
        range: Range<u64>,
    ) -> Result<RangeOutput> {
        let counters = Arc::new(Counters::default());
        let (mut head, info) = self.fetch(key, 0..HEADER_PROBE, None, &counters).await?;
        let header = loop {
            if let Some(h) = header::parse(&head)? {
                break h;
            }
            let have = head.len() as u64;
            if have >= info.size {
                return Err(coffer_core::Error::Format("truncated message header").into());
            }
            let want = have.saturating_mul(4).min(info.size);
            head = self
                .fetch(key, 0..want, info.e_tag.clone(), &counters)
                .await?
                .0;
        };
        let frame_len = u64::from(header.frame_len);
        let layout = FrameLayout::from_total(header.len() as u64, frame_len, info.size).ok_or(
            coffer_core::Error::Format("object length matches no message: truncated or extended"),
        )?;
        let len = layout.plaintext_len();
        if range.start > range.end || range.end > len {
            return Err(Error::Range {
                start: range.start,
                end: range.end,
                len,
            });
        }
        let data_key = files::open(&header, keyrings).await?;
        let context = header.context.clone();
        let reader = Ranged {
            rt: Handle::current(),
            bucket: self.clone(),
            key: key.clone(),
            size: info.size,
            e_tag: info.e_tag.clone(),
            pos: 0,
            window_start: 0,
            window: head,
            planned: layout.ciphertext_range(range.clone()),
            frame_window: frame_len + FRAME_SLACK,
            counters: Arc::clone(&counters),
        };
        let plaintext = tokio::task::spawn_blocking(move || {
            let crypto = |e| Error::from_stream(e, |e| Error::Internal(e.to_string()));
            let mut d =
                SeekableDecryptor::with_data_key(reader, header, &data_key).map_err(crypto)?;
            d.read_range(range).map_err(crypto)
        })
        .await
        .map_err(|e| Error::Internal(format!("the decryption task failed: {e}")))??;
        Ok(RangeOutput {
            plaintext,
            plaintext_len: len,
            context,
            info,
            fetched: counters.snapshot(),
        })
    }

    /// One ranged GET (bytes past the end of the object are simply not returned), counted.
    async fn fetch(
        &self,
        key: &Path,
        range: Range<u64>,
        e_tag: Option<String>,
        counters: &Counters,
    ) -> Result<(Bytes, ObjectInfo)> {
        let options = GetOptions {
            range: Some(range.into()),
            if_match: e_tag,
            ..GetOptions::default()
        };
        let got = self
            .store()
            .get_opts(key, options)
            .await
            .map_err(|e| self.store_error(key, e))?;
        let info = ObjectInfo::new(&got.meta, &got.attributes);
        let bytes = got.bytes().await.map_err(|e| self.store_error(key, e))?;
        counters.add(bytes.len());
        Ok((bytes, info))
    }
}

/// `Read + Seek` over ranged GETs of one version of an object, holding one window of it.
struct Ranged {
    rt: Handle,
    bucket: Bucket,
    key: Path,
    size: u64,
    e_tag: Option<String>,
    pos: u64,
    window_start: u64,
    window: Bytes,
    /// The ciphertext span of the range asked for: fetched in windows of up to MAX_WINDOW.
    planned: Range<u64>,
    /// Bytes fetched for a read outside the planned span (the final frame): one frame.
    frame_window: u64,
    counters: Arc<Counters>,
}

impl Ranged {
    fn refill(&mut self) -> io::Result<()> {
        let pos = self.pos;
        let end = if self.planned.contains(&pos) {
            self.planned.end.min(pos.saturating_add(MAX_WINDOW))
        } else {
            pos.saturating_add(self.frame_window)
        }
        .min(self.size);
        let fetched = self.rt.block_on(self.bucket.fetch(
            &self.key,
            pos..end,
            self.e_tag.clone(),
            &self.counters,
        ));
        let (bytes, _) = fetched.map_err(io::Error::other)?;
        if bytes.len() as u64 != end - pos {
            return Err(io::Error::other(Error::Changed {
                bucket: self.bucket.name().to_owned(),
                key: self.key.to_string(),
            }));
        }
        self.window_start = pos;
        self.window = bytes;
        Ok(())
    }
}

impl Read for Ranged {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        let in_window = self.pos >= self.window_start
            && self.pos < self.window_start + self.window.len() as u64;
        if !in_window {
            self.refill()?;
        }
        let from = usize::try_from(self.pos - self.window_start)
            .map_err(|_| io::Error::other("window offset overflows usize"))?;
        let n = buf.len().min(self.window.len() - from);
        buf[..n].copy_from_slice(&self.window[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Ranged {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

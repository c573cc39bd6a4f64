//! [`Decryptor`]: a `Read` that authenticates a framed message as it goes, on several threads.

use std::io::{self, Read, Write};
use std::sync::{Arc, mpsc};

use super::Limits;
use super::context::EncryptionContext;
use super::frame::{FINAL_MARKER, IV_LEN, MessageKeys, TAG_LEN, iv};
use super::header::{MessageHeader, invalid};
use super::pool::{self, Batch, Op, Pool};
use super::raw_aes::RawAesKeyring;
use crate::error::Error;
use crate::secret::Dek;

/// Decrypts an AWS Encryption SDK v2 / 0x0478 framed message. Construction reads the header,
/// opens a data key with one of the keyrings, checks the key commitment and the header tag;
/// reading releases each frame only after its tag verifies, and fails on truncation, reordering,
/// frames from another message, or bytes after the final frame.
///
/// Frames are opened in batches of about 512 KiB on [`Decryptor::with_threads`] threads (default:
/// every core), reading a few batches per thread ahead, and released in order.
pub struct Decryptor<R: Read> {
    inner: R,
    header: MessageHeader,
    keys: Arc<MessageKeys>,
    frame_len: usize,
    /// Sequence number of the next frame to read from `inner`.
    seq: u32,
    /// The final frame has been read (and nothing follows it).
    input_done: bool,
    /// The final frame's plaintext has been released.
    output_done: bool,
    failed: bool,
    buf: Vec<u8>,
    pos: usize,
    threads: usize,
    pool: Option<Pool>,
    spare: Vec<Vec<u8>>,
}

impl MessageHeader {
    /// Opens the data key with the first of `keyrings` that unwraps one of the header's EDKs
    /// (the caller then authenticates the header with it, e.g. [`Decryptor::with_data_key`]).
    pub fn unwrap_data_key(&self, keyrings: &[&RawAesKeyring]) -> io::Result<Dek> {
        for edk in &self.edks {
            for k in keyrings {
                // An EDK addressed to a keyring that does not open it may be another key with
                // the same name; keep trying the others.
                if let Ok(Some(dk)) = k.unwrap(edk, &self.context) {
                    return Ok(dk);
                }
            }
        }
        Err(no_key(self))
    }
}

/// The error for a header none of the caller's keys opens; it lists the EDKs' names.
pub fn no_key(header: &MessageHeader) -> io::Error {
    let names: Vec<String> = header
        .edks
        .iter()
        .map(|e| format!("{}:{}", e.provider_id, e.key_name().unwrap_or("?")))
        .collect();
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "none of the given keys opens this message's data keys (it names {})",
            names.join(", ")
        ),
    )
}

/// Derives the message keys from `data_key` and checks the key commitment (constant time) and
/// then the header tag: nothing is used before both pass.
pub(crate) fn authenticate(header: &MessageHeader, data_key: &Dek) -> io::Result<MessageKeys> {
    let keys = MessageKeys::derive(data_key, &header.message_id).map_err(invalid)?;
    keys.check_commitment(&header.commitment).map_err(invalid)?;
    keys.check_header_tag(&header.body, &header.tag)
        .map_err(invalid)?;
    Ok(keys)
}

fn truncated() -> io::Error {
    invalid(Error::Format(
        "truncated message: a frame or the final frame is missing",
    ))
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            truncated()
        } else {
            e
        }
    })
}

/// Reads frames from `seq` on into one batch (stopping after the final frame), advancing `seq`.
fn read_batch<R: Read>(
    r: &mut R,
    seq: &mut u32,
    frame_len: usize,
    mut buf: Vec<u8>,
) -> io::Result<Batch> {
    let first = *seq;
    buf.clear();
    let mut last = false;
    for _ in 0..pool::frames_per_batch(frame_len) {
        last = read_frame(r, *seq, frame_len, &mut buf)?;
        *seq = seq.checked_add(1).ok_or_else(|| invalid(Error::Decrypt))?;
        if last {
            break;
        }
    }
    Ok(Batch {
        seq: first,
        last,
        buf,
        wire: Vec::new(),
    })
}

/// Reads frame `seq` (its sequence number and IV checked) and appends its ciphertext ‖ tag to
/// `buf`; returns whether it is the final frame, after checking that nothing follows that one.
fn read_frame<R: Read>(
    r: &mut R,
    seq: u32,
    frame_len: usize,
    buf: &mut Vec<u8>,
) -> io::Result<bool> {
    let mut word = [0u8; 4];
    read_full(r, &mut word)?;
    let last = u32::from_be_bytes(word) == FINAL_MARKER;
    if last {
        read_full(r, &mut word)?;
    }
    if u32::from_be_bytes(word) != seq {
        return Err(invalid(Error::Decrypt));
    }
    let mut frame_iv = [0u8; IV_LEN];
    read_full(r, &mut frame_iv)?;
    if frame_iv != iv(seq) {
        return Err(invalid(Error::Decrypt));
    }
    let len = if last {
        read_full(r, &mut word)?;
        let n = u32::from_be_bytes(word) as usize;
        if n > frame_len {
            return Err(invalid(Error::Format(
                "final frame longer than the frame length",
            )));
        }
        n
    } else {
        frame_len
    };
    let start = buf.len();
    buf.resize(start + len + TAG_LEN, 0);
    read_full(r, &mut buf[start..])?;
    if last {
        let mut extra = [0u8; 1];
        if r.read(&mut extra)? != 0 {
            return Err(invalid(Error::Format("bytes after the final frame")));
        }
    }
    Ok(last)
}

impl<R: Read> Decryptor<R> {
    /// Reads and authenticates the header.
    pub fn new(mut inner: R, keyrings: &[&RawAesKeyring], limits: Limits) -> io::Result<Self> {
        let header = MessageHeader::read_from(&mut inner, &limits)?;
        let data_key = header.unwrap_data_key(keyrings)?;
        Self::with_data_key(inner, header, &data_key)
    }

    /// Authenticates a header already read from `inner` ([`MessageHeader::read_from`]) with a
    /// data key the caller unwrapped (an HSM, a KMS); `inner` continues at the first frame.
    pub fn with_data_key(inner: R, header: MessageHeader, data_key: &Dek) -> io::Result<Self> {
        let keys = authenticate(&header, data_key)?;
        let frame_len = header.frame_len as usize;
        Ok(Decryptor {
            inner,
            header,
            keys: Arc::new(keys),
            frame_len,
            seq: 1,
            input_done: false,
            output_done: false,
            failed: false,
            buf: Vec::new(),
            pos: 0,
            threads: pool::default_threads(),
            pool: None,
            spare: Vec::new(),
        })
    }

    /// Opens frames on `threads` threads (1: on the caller's thread only).
    #[must_use]
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The authenticated header.
    pub fn header(&self) -> &MessageHeader {
        &self.header
    }

    /// The authenticated encryption context.
    pub fn context(&self) -> &EncryptionContext {
        &self.header.context
    }

    /// Reads the next batch of frames from the input (stopping after the final frame).
    fn read_batch(&mut self) -> io::Result<Batch> {
        let buf = self.spare.pop().unwrap_or_default();
        let batch = read_batch(&mut self.inner, &mut self.seq, self.frame_len, buf)?;
        self.input_done = batch.last;
        Ok(batch)
    }

    /// Decrypts the rest of the message into `out` with the reading on a thread of its own, so
    /// input, opening and output overlap (see [`super::Encryptor::write_from_threaded`]);
    /// returns the plaintext byte count. Plaintext is written only after its frame verifies; on
    /// an error, `out` holds the verified frames before the failing one.
    pub fn copy_to<W: Write>(mut self, out: &mut W) -> io::Result<u64>
    where
        R: Send,
    {
        let fresh = self.seq == 1 && self.pos == self.buf.len() && self.pool.is_none();
        if self.threads == 1 || !fresh {
            // Each verified batch straight from its buffer to `out` (no intermediate copy).
            let mut total = 0u64;
            loop {
                if self.pos == self.buf.len() {
                    if self.output_done {
                        return Ok(total);
                    }
                    if self.failed {
                        return Err(invalid(Error::Decrypt));
                    }
                    if let Err(e) = self.fill() {
                        self.failed = true;
                        self.pool = None;
                        return Err(e);
                    }
                    continue;
                }
                out.write_all(&self.buf[self.pos..])?;
                total += (self.buf.len() - self.pos) as u64;
                self.pos = self.buf.len();
            }
        }
        let frame_len = self.frame_len;
        let bound =
            pool::in_flight_bound(self.threads, pool::frames_per_batch(frame_len) * frame_len);
        let mut pool = Pool::new(
            Op::Open,
            Arc::clone(&self.keys),
            frame_len,
            self.threads,
            bound,
        )
        .map_err(invalid)?;
        let (batch_tx, batch_rx) = mpsc::sync_channel::<io::Result<Batch>>(2);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        let inner = &mut self.inner;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut seq = 1u32;
                loop {
                    let buf = empty_rx.try_recv().unwrap_or_default();
                    let batch = read_batch(inner, &mut seq, frame_len, buf);
                    let stop = batch.as_ref().map_or(true, |b| b.last);
                    if batch_tx.send(batch).is_err() || stop {
                        return;
                    }
                }
            });
            // Owned here, so an early return drops it and unblocks the reading thread.
            let batch_rx = batch_rx;
            let mut total = 0u64;
            let mut input_done = false;
            loop {
                while !input_done && pool.has_room() {
                    let batch = batch_rx.recv().map_err(|_| truncated())??;
                    input_done = batch.last;
                    pool.submit(batch).map_err(invalid)?;
                }
                let Some(batch) = pool.next(true).map_err(invalid)? else {
                    return Err(truncated());
                };
                out.write_all(&batch.buf)?;
                total += batch.buf.len() as u64;
                if batch.last {
                    return Ok(total);
                }
                let _ = empty_tx.send(batch.buf);
            }
        })
    }

    /// Puts the next batch's plaintext in `buf`.
    fn fill(&mut self) -> io::Result<()> {
        if self.pool.is_none() {
            let mut batch = self.read_batch()?;
            if self.threads == 1 || batch.last {
                pool::open_batch(&self.keys, self.frame_len, &mut batch).map_err(invalid)?;
                self.release(batch);
                return Ok(());
            }
            let bound = pool::in_flight_bound(
                self.threads,
                pool::frames_per_batch(self.frame_len) * self.frame_len,
            );
            let mut pool = Pool::new(
                Op::Open,
                Arc::clone(&self.keys),
                self.frame_len,
                self.threads,
                bound,
            )
            .map_err(invalid)?;
            pool.submit(batch).map_err(invalid)?;
            self.pool = Some(pool);
        }
        while !self.input_done && self.pool.as_ref().is_some_and(Pool::has_room) {
            let batch = self.read_batch()?;
            if let Some(pool) = self.pool.as_mut() {
                pool.submit(batch).map_err(invalid)?;
            }
        }
        let next = match self.pool.as_mut() {
            Some(pool) => pool.next(true).map_err(invalid)?,
            None => None,
        };
        let batch = next.ok_or_else(truncated)?;
        self.release(batch);
        Ok(())
    }

    fn release(&mut self, batch: Batch) {
        let old = std::mem::replace(&mut self.buf, batch.buf);
        self.spare.push(old);
        self.pos = 0;
        if batch.last {
            self.output_done = true;
            self.pool = None;
        }
    }
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.failed {
                return Err(invalid(Error::Decrypt));
            }
            if self.output_done || out.is_empty() {
                return Ok(0);
            }
            if let Err(e) = self.fill() {
                self.failed = true;
                self.pool = None;
                return Err(e);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

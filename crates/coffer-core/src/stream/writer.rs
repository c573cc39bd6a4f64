//! [`Encryptor`]: a `Write` that seals its input into a framed message, on several threads.

use std::io::{self, Read, Write};
use std::sync::{Arc, mpsc};

use super::context::EncryptionContext;
use super::frame::MessageKeys;
use super::header::{EncryptedDataKey, MessageHeader, invalid};
use super::pool::{self, Batch, Op, Pool};
use super::positional::{self, ReadAt};
use super::raw_aes::RawAesKeyring;
use crate::error::Error;
use crate::secret::Dek;

/// Encrypts a stream into an AWS Encryption SDK v2 message. Call [`Encryptor::finish`]: without
/// it the message has no final frame and every reader rejects it as truncated.
///
/// Frames are sealed in batches of about 512 KiB on [`Encryptor::with_threads`] threads (default:
/// every core) and written in order; at most a few batches per thread are held at once, whatever
/// the stream's length. A message of one batch never starts a thread.
pub struct Encryptor<W: Write> {
    out: W,
    keys: Arc<MessageKeys>,
    frame_len: usize,
    batch_len: usize,
    /// The batch being filled (`batch_len` bytes once allocated; `filled` of them are input);
    /// its first frame is `seq`.
    buf: Vec<u8>,
    filled: usize,
    seq: u32,
    threads: usize,
    pool: Option<Pool>,
    spare: Vec<Vec<u8>>,
    spare_wire: Vec<Vec<u8>>,
}

impl<W: Write> Encryptor<W> {
    /// Writes the header (a fresh data key wrapped by every keyring) and returns the encryptor.
    pub fn new(
        out: W,
        keyrings: &[&RawAesKeyring],
        context: &EncryptionContext,
        frame_len: u32,
    ) -> io::Result<Self> {
        if keyrings.is_empty() {
            return Err(invalid(Error::invalid(
                "message",
                "needs at least one keyring",
            )));
        }
        let data_key = Dek::generate().map_err(invalid)?;
        let edks = keyrings
            .iter()
            .map(|k| k.wrap(&data_key, context))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        Self::with_data_key(out, &data_key, edks, context, frame_len)
    }

    /// Writes the header for a data key the caller generated ([`Dek::generate`]) and wrapped
    /// itself (with keyrings that are not [`RawAesKeyring`]s: an HSM, a KMS). The data key must
    /// be fresh for every message.
    pub fn with_data_key(
        mut out: W,
        data_key: &Dek,
        edks: Vec<EncryptedDataKey>,
        context: &EncryptionContext,
        frame_len: u32,
    ) -> io::Result<Self> {
        if frame_len == 0 || edks.is_empty() {
            return Err(invalid(Error::invalid(
                "message",
                "needs a frame length above zero and at least one encrypted data key",
            )));
        }
        let mut message_id = [0u8; 32];
        aws_lc_rs::rand::fill(&mut message_id)
            .map_err(|_| invalid(Error::Module("random generator")))?;
        let keys = MessageKeys::derive(data_key, &message_id).map_err(invalid)?;
        let body = MessageHeader::body(&message_id, context, &edks, frame_len, &keys.commitment)
            .map_err(invalid)?;
        let tag = keys.header_tag(&body).map_err(invalid)?;
        out.write_all(&body)?;
        out.write_all(&tag)?;
        let frame_len = usize::try_from(frame_len)
            .map_err(|_| invalid(Error::invalid("frame length", "too large")))?;
        let batch_len = pool::frames_per_batch(frame_len) * frame_len;
        Ok(Encryptor {
            out,
            keys: Arc::new(keys),
            frame_len,
            batch_len,
            buf: Vec::new(),
            filled: 0,
            seq: 1,
            threads: pool::default_threads(),
            pool: None,
            spare: Vec::new(),
            spare_wire: Vec::new(),
        })
    }

    /// Seals frames on `threads` threads (1: on the caller's thread only).
    #[must_use]
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Writes a sealed batch (its frames already serialized by `seal_batch`).
    fn write_batch(&mut self, batch: &Batch) -> io::Result<()> {
        self.out.write_all(&batch.wire)
    }

    /// Writes the batches the workers have finished, in order; `all` waits for every one, and a
    /// full pipeline waits for the oldest.
    fn drain(&mut self, all: bool) -> io::Result<()> {
        loop {
            let Some(pool) = self.pool.as_mut() else {
                return Ok(());
            };
            let block = all || !pool.has_room();
            let Some(batch) = pool.next(block).map_err(invalid)? else {
                return Ok(());
            };
            self.write_batch(&batch)?;
            self.spare.push(batch.buf);
            self.spare_wire.push(batch.wire);
        }
    }

    /// Seals the batch in `buf` (all of it full frames unless `last`) and passes it on.
    fn emit(&mut self, last: bool) -> io::Result<()> {
        let frames = self.filled.div_ceil(self.frame_len).max(1);
        let seq = self.seq;
        // The last frame is `after - 1`, which must stay below the final-frame marker: true
        // whenever `seq + frames` fits in a u32.
        let after = u32::try_from(frames)
            .ok()
            .and_then(|f| seq.checked_add(f))
            .ok_or_else(|| invalid(Error::invalid("message", "more than 2^32 - 2 frames")))?;
        let next = self.spare.pop().unwrap_or_default();
        let mut buf = std::mem::replace(&mut self.buf, next);
        buf.truncate(self.filled);
        self.filled = 0;
        let batch = Batch {
            seq,
            last,
            buf,
            wire: self.spare_wire.pop().unwrap_or_default(),
        };
        self.seq = after;
        if self.pool.is_none() && self.threads > 1 && !last {
            let bound = pool::in_flight_bound(self.threads, self.batch_len);
            self.pool = Some(
                Pool::new(
                    Op::Seal,
                    Arc::clone(&self.keys),
                    self.frame_len,
                    self.threads,
                    bound,
                )
                .map_err(invalid)?,
            );
        }
        if self.pool.is_some() {
            self.drain(false)?;
            if let Some(pool) = self.pool.as_mut() {
                pool.submit(batch).map_err(invalid)?;
            }
            self.drain(last)
        } else {
            let mut batch = batch;
            pool::seal_batch(&self.keys, self.frame_len, &mut batch).map_err(invalid)?;
            self.write_batch(&batch)?;
            self.buf = batch.buf;
            self.spare_wire.push(batch.wire);
            Ok(())
        }
    }

    /// The unfilled part of the batch buffer, so input is copied (or read) straight into it.
    /// A new buffer starts at one frame and doubles up to the batch length, so short messages
    /// stay small; recycled buffers are already full-length.
    fn room(&mut self) -> &mut [u8] {
        if self.filled == self.buf.len() && self.buf.len() < self.batch_len {
            let grown = (self.buf.len() * 2).clamp(self.frame_len, self.batch_len);
            self.buf.resize(grown, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// Encrypts everything `src` yields, reading straight into frame buffers (one copy fewer
    /// than `io::copy`); returns the plaintext byte count. Call [`Encryptor::finish`] after.
    pub fn write_from<R: Read>(&mut self, src: &mut R) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            if self.filled == self.batch_len {
                // Only sealed once more input is known to exist: the final frame stays non-empty.
                let mut probe = [0u8; 1];
                if read_retrying(src, &mut probe)? == 0 {
                    return Ok(total);
                }
                self.emit(false)?;
                self.room()[0] = probe[0];
                self.filled = 1;
                total += 1;
                continue;
            }
            let n = read_retrying(src, self.room())?;
            if n == 0 {
                return Ok(total);
            }
            self.filled += n;
            total += n as u64;
        }
    }

    /// Encrypts everything `src` yields like [`Encryptor::write_from`], with the reading on a
    /// thread of its own: input, sealing and output then overlap, which is what makes more than
    /// one core pay off when the copies in and out cost as much as the cipher. Memory stays
    /// bounded (a few batches). Call [`Encryptor::finish`] after.
    pub fn write_from_threaded<R: Read + Send>(&mut self, src: R) -> io::Result<u64> {
        if self.threads == 1 {
            let mut src = src;
            return self.write_from(&mut src);
        }
        let batch_len = self.batch_len;
        let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(2);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        std::thread::scope(|scope| {
            scope.spawn(move || fill_batches(src, batch_len, &full_tx, &empty_rx));
            let mut total = 0u64;
            for filled in full_rx {
                let buf = filled?;
                if buf.is_empty() {
                    break;
                }
                total += buf.len() as u64;
                if self.filled == self.batch_len {
                    self.emit(false)?;
                }
                if self.filled == 0 {
                    // Take the buffer as the batch; return the one it replaces to the reader.
                    let n = buf.len();
                    let old = std::mem::replace(&mut self.buf, buf);
                    self.filled = n;
                    if old.capacity() >= batch_len {
                        let _ = empty_tx.send(old);
                    }
                } else {
                    self.write_all(&buf)?;
                    let _ = empty_tx.send(buf);
                }
                while let Some(b) = self.spare.pop() {
                    let _ = empty_tx.send(b);
                }
            }
            // Dropping the receiver (end of the loop) stops the reader at its next send.
            Ok(total)
        })
    }

    /// Encrypts the whole of `src` (`len` bytes from offset 0, e.g. a regular file) and finishes
    /// the message: every worker reads and seals its own batch of frames in place, so no single
    /// reading thread limits the throughput and nothing is copied but by the kernel. Nothing
    /// may have been written to the encryptor before. Returns the writer, flushed.
    pub fn write_at<R: ReadAt + ?Sized>(mut self, src: &R, len: u64) -> io::Result<W> {
        if self.seq != 1 || self.filled != 0 {
            return Err(invalid(Error::invalid(
                "write_at",
                "the encryptor has already taken input",
            )));
        }
        positional::seal_at(
            &self.keys,
            self.frame_len,
            src,
            len,
            &mut self.out,
            self.threads,
        )?;
        self.out.flush()?;
        let Encryptor { out, .. } = self;
        Ok(out)
    }

    /// Seals what is left as the final frame (full when the input was a multiple of the frame
    /// length, empty only for an empty input), flushes, and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.emit(true)?;
        self.drain(true)?;
        self.out.flush()?;
        self.pool = None;
        let Encryptor { out, .. } = self;
        Ok(out)
    }
}

fn read_retrying<R: Read>(src: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match src.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

impl<W: Write> Write for Encryptor<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            // A full batch is sealed as regular frames only once more input arrives, so the
            // final frame is never empty unless the whole input is.
            if self.filled == self.batch_len {
                self.emit(false)?;
            }
            let room = self.room();
            let k = room.len().min(data.len());
            room[..k].copy_from_slice(&data[..k]);
            self.filled += k;
            data = &data[k..];
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The reading side of [`Encryptor::write_from_threaded`]: fills batch buffers (full unless the
/// input ended) and sends them; an empty buffer marks the end.
fn fill_batches<R: Read>(
    mut src: R,
    batch_len: usize,
    full: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    empty: &mpsc::Receiver<Vec<u8>>,
) {
    loop {
        let mut buf = empty.try_recv().unwrap_or_default();
        buf.resize(batch_len, 0);
        let mut n = 0;
        let result = loop {
            if n == batch_len {
                break Ok(());
            }
            match read_retrying(&mut src, &mut buf[n..]) {
                Ok(0) => break Ok(()),
                Ok(k) => n += k,
                Err(e) => break Err(e),
            }
        };
        buf.truncate(n);
        let done = n < batch_len;
        let msg = match result {
            Ok(()) => Ok(buf),
            Err(e) => Err(e),
        };
        let failed = msg.is_err();
        if full.send(msg).is_err() || failed {
            return;
        }
        if done {
            if n > 0 {
                let _ = full.send(Ok(Vec::new()));
            }
            return;
        }
    }
}

//! [`Encryptor`]: a `Write` that seals its input into a framed message, on several threads.

use std::io::{self, Read, Write};
use std::sync::Arc;

use super::context::EncryptionContext;
use super::frame::{FINAL_MARKER, MessageKeys, TAG_LEN, iv};
use super::header::{EncryptedDataKey, MessageHeader, invalid};
use super::pool::{self, Frame, Op, Pool};
use super::raw_aes::RawAesKeyring;
use crate::error::Error;
use crate::secret::Dek;

/// Encrypts a stream into an AWS Encryption SDK v2 message. Call [`Encryptor::finish`]: without
/// it the message has no final frame and every reader rejects it as truncated.
///
/// Frames are sealed on [`Encryptor::with_threads`] threads (default: every core) and written in
/// order; at most a few frames per thread are held at once, whatever the stream's length. A
/// message of one frame never starts a thread.
pub struct Encryptor<W: Write> {
    out: W,
    keys: Arc<MessageKeys>,
    frame_len: usize,
    buf: Vec<u8>,
    seq: u32,
    threads: usize,
    pool: Option<Pool>,
    spare: Vec<Vec<u8>>,
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
        Ok(Encryptor {
            out,
            keys: Arc::new(keys),
            frame_len,
            buf: Vec::with_capacity(pool::frame_capacity(frame_len)),
            seq: 1,
            threads: pool::default_threads(),
            pool: None,
            spare: Vec::new(),
        })
    }

    /// Seals frames on `threads` threads (1: on the caller's thread only).
    #[must_use]
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Writes one sealed frame (`sealed` = ciphertext ‖ tag).
    fn write_frame(&mut self, seq: u32, last: bool, sealed: &[u8]) -> io::Result<()> {
        if last {
            self.out.write_all(&FINAL_MARKER.to_be_bytes())?;
        }
        self.out.write_all(&seq.to_be_bytes())?;
        self.out.write_all(&iv(seq))?;
        if last {
            let n = u32::try_from(sealed.len() - TAG_LEN)
                .map_err(|_| invalid(Error::invalid("frame", "too large")))?;
            self.out.write_all(&n.to_be_bytes())?;
        }
        self.out.write_all(sealed)
    }

    /// Writes the frames the workers have finished, in order; `all` waits for every one.
    fn drain(&mut self, all: bool) -> io::Result<()> {
        loop {
            let Some(pool) = self.pool.as_mut() else {
                return Ok(());
            };
            let block = all || !pool.has_room();
            let Some((seq, last, sealed)) = pool.next(block).map_err(invalid)? else {
                return Ok(());
            };
            self.write_frame(seq, last, &sealed)?;
            let mut sealed = sealed;
            sealed.clear();
            self.spare.push(sealed);
        }
    }

    fn emit(&mut self, last: bool) -> io::Result<()> {
        let seq = self.seq;
        if seq == FINAL_MARKER {
            return Err(invalid(Error::invalid(
                "message",
                "more than 2^32 - 2 frames",
            )));
        }
        if self.pool.is_none() && self.threads > 1 && !last {
            let bound = pool::in_flight_bound(self.threads, self.frame_len);
            self.pool = Some(
                Pool::new(Op::Seal, Arc::clone(&self.keys), self.threads, bound, seq)
                    .map_err(invalid)?,
            );
        }
        if self.pool.is_some() {
            let next = self
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(pool::frame_capacity(self.frame_len)));
            let buf = std::mem::replace(&mut self.buf, next);
            self.drain(false)?;
            if let Some(pool) = self.pool.as_mut() {
                pool.submit(Frame { seq, last, buf }).map_err(invalid)?;
            }
            self.seq = seq + 1;
            self.drain(last)?;
        } else {
            let tag = self
                .keys
                .seal_frame(last, seq, &mut self.buf)
                .map_err(invalid)?;
            self.buf.extend_from_slice(&tag);
            let sealed = std::mem::take(&mut self.buf);
            self.write_frame(seq, last, &sealed)?;
            self.buf = sealed;
            self.buf.clear();
            self.seq = seq + 1;
        }
        Ok(())
    }

    /// Encrypts everything `src` yields, reading straight into frame buffers (one copy fewer
    /// than `io::copy`); returns the plaintext byte count. Call [`Encryptor::finish`] after.
    pub fn write_from<R: Read>(&mut self, src: &mut R) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            if self.buf.len() == self.frame_len {
                // Only sealed once more input is known to exist: the final frame stays non-empty.
                let mut probe = [0u8; 1];
                let n = read_retrying(src, &mut probe)?;
                if n == 0 {
                    return Ok(total);
                }
                self.emit(false)?;
                self.buf.push(probe[0]);
                total += 1;
                continue;
            }
            let have = self.buf.len();
            self.buf.resize(self.frame_len, 0);
            let n = match read_retrying(src, &mut self.buf[have..]) {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(e);
                }
            };
            self.buf.truncate(have + n);
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
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
            // A full buffer is sealed as a regular frame only once more input arrives, so the
            // final frame is never empty unless the whole input is.
            if self.buf.len() == self.frame_len {
                self.emit(false)?;
            }
            let room = self.frame_len - self.buf.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.buf.extend_from_slice(now);
            data = rest;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

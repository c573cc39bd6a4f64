//! [`Decryptor`]: a `Read` that authenticates a framed message as it goes, on several threads.

use std::io::{self, Read};
use std::sync::Arc;

use super::Limits;
use super::context::EncryptionContext;
use super::frame::{FINAL_MARKER, IV_LEN, MessageKeys, TAG_LEN, iv};
use super::header::{MessageHeader, invalid};
use super::pool::{self, Frame, Op, Pool};
use super::raw_aes::RawAesKeyring;
use crate::error::Error;
use crate::secret::Dek;

/// Decrypts an AWS Encryption SDK v2 / 0x0478 framed message. Construction reads the header,
/// opens a data key with one of the keyrings, checks the key commitment and the header tag;
/// reading releases each frame only after its tag verifies, and fails on truncation, reordering,
/// frames from another message, or bytes after the final frame.
///
/// Frames are opened on [`Decryptor::with_threads`] threads (default: every core), reading a few
/// frames per thread ahead, and released in order.
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

/// Reads frame `seq` (its sequence number and IV checked) into `buf` as ciphertext ‖ tag;
/// returns whether it is the final frame, after checking that nothing follows that one.
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
    buf.resize(len + TAG_LEN, 0);
    read_full(r, buf)?;
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

    /// Reads the next frame from the input; returns `(seq, last, ciphertext ‖ tag)`.
    fn read_next(&mut self) -> io::Result<(u32, bool, Vec<u8>)> {
        let seq = self.seq;
        let mut buf = self.spare.pop().unwrap_or_default();
        let last = read_frame(&mut self.inner, seq, self.frame_len, &mut buf)?;
        self.seq = seq.checked_add(1).ok_or_else(|| invalid(Error::Decrypt))?;
        self.input_done = last;
        Ok((seq, last, buf))
    }

    /// Puts the next frame's plaintext in `buf`.
    fn fill(&mut self) -> io::Result<()> {
        if self.pool.is_none() {
            let (seq, last, mut frame) = self.read_next()?;
            if self.threads == 1 || last {
                let n = self
                    .keys
                    .open_frame(last, seq, &mut frame)
                    .map_err(invalid)?;
                frame.truncate(n);
                self.release(frame, last);
                return Ok(());
            }
            let bound = pool::in_flight_bound(self.threads, self.frame_len);
            let mut pool = Pool::new(Op::Open, Arc::clone(&self.keys), self.threads, bound, seq)
                .map_err(invalid)?;
            pool.submit(Frame {
                seq,
                last,
                buf: frame,
            })
            .map_err(invalid)?;
            self.pool = Some(pool);
        }
        while !self.input_done && self.pool.as_ref().is_some_and(Pool::has_room) {
            let (seq, last, buf) = self.read_next()?;
            if let Some(pool) = self.pool.as_mut() {
                pool.submit(Frame { seq, last, buf }).map_err(invalid)?;
            }
        }
        let next = match self.pool.as_mut() {
            Some(pool) => pool.next(true).map_err(invalid)?,
            None => None,
        };
        let (_, last, plain) = next.ok_or_else(truncated)?;
        self.release(plain, last);
        Ok(())
    }

    fn release(&mut self, plain: Vec<u8>, last: bool) {
        let old = std::mem::replace(&mut self.buf, plain);
        if self.pool.is_some() {
            self.spare.push(old);
        }
        self.pos = 0;
        if last {
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

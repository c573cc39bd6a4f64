//! [`Decryptor`]: a `Read` that authenticates a framed message as it goes.

use std::io::{self, Read};

use super::Limits;
use super::context::EncryptionContext;
use super::frame::{FINAL_MARKER, IV_LEN, MessageKeys, TAG_LEN, iv};
use super::header::{MessageHeader, invalid};
use super::raw_aes::RawAesKeyring;
use crate::error::Error;

/// Decrypts an AWS Encryption SDK v2 / 0x0478 framed message. Construction reads the header,
/// opens a data key with one of the keyrings, checks the key commitment and the header tag;
/// reading releases each frame only after its tag verifies, and fails on truncation, reordering,
/// frames from another message, or bytes after the final frame.
pub struct Decryptor<R: Read> {
    inner: R,
    header: MessageHeader,
    keys: MessageKeys,
    frame_len: usize,
    seq: u32,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

/// Reads a header, opens its data key with one of `keyrings`, and checks the key commitment
/// (constant time) and then the header tag: nothing is used before both pass.
pub(crate) fn open_header<R: Read>(
    inner: &mut R,
    keyrings: &[&RawAesKeyring],
    limits: Limits,
) -> io::Result<(MessageHeader, MessageKeys)> {
    let header = MessageHeader::read_from(inner, &limits)?;
    let mut data_key = None;
    'found: for edk in &header.edks {
        for k in keyrings {
            // An EDK addressed to a keyring that does not open it may be another key with the
            // same name; keep trying the others.
            if let Ok(Some(dk)) = k.unwrap(edk, &header.context) {
                data_key = Some(dk);
                break 'found;
            }
        }
    }
    let Some(data_key) = data_key else {
        let names: Vec<String> = header
            .edks
            .iter()
            .map(|e| format!("{}:{}", e.provider_id, e.key_name().unwrap_or("?")))
            .collect();
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "none of the given keys opens this message's data keys (it names {})",
                names.join(", ")
            ),
        ));
    };
    let keys = MessageKeys::derive(&data_key, &header.message_id).map_err(invalid)?;
    keys.check_commitment(&header.commitment).map_err(invalid)?;
    keys.check_header_tag(&header.body, &header.tag)
        .map_err(invalid)?;
    Ok((header, keys))
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

impl<R: Read> Decryptor<R> {
    /// Reads and authenticates the header.
    pub fn new(mut inner: R, keyrings: &[&RawAesKeyring], limits: Limits) -> io::Result<Self> {
        let (header, keys) = open_header(&mut inner, keyrings, limits)?;
        let frame_len = header.frame_len as usize;
        Ok(Decryptor {
            inner,
            header,
            keys,
            frame_len,
            seq: 1,
            buf: Vec::new(),
            pos: 0,
            done: false,
        })
    }

    /// The authenticated header.
    pub fn header(&self) -> &MessageHeader {
        &self.header
    }

    /// The authenticated encryption context.
    pub fn context(&self) -> &EncryptionContext {
        &self.header.context
    }

    fn next_frame(&mut self) -> io::Result<()> {
        let mut word = [0u8; 4];
        read_full(&mut self.inner, &mut word)?;
        let last = u32::from_be_bytes(word) == FINAL_MARKER;
        if last {
            read_full(&mut self.inner, &mut word)?;
        }
        if u32::from_be_bytes(word) != self.seq {
            return Err(invalid(Error::Decrypt));
        }
        let mut frame_iv = [0u8; IV_LEN];
        read_full(&mut self.inner, &mut frame_iv)?;
        if frame_iv != iv(self.seq) {
            return Err(invalid(Error::Decrypt));
        }
        let len = if last {
            read_full(&mut self.inner, &mut word)?;
            let n = u32::from_be_bytes(word) as usize;
            if n > self.frame_len {
                return Err(invalid(Error::Format(
                    "final frame longer than the frame length",
                )));
            }
            n
        } else {
            self.frame_len
        };
        self.buf.resize(len + TAG_LEN, 0);
        read_full(&mut self.inner, &mut self.buf)?;
        let n = self
            .keys
            .open_frame(last, self.seq, &mut self.buf)
            .map_err(invalid)?;
        self.buf.truncate(n);
        self.pos = 0;
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| invalid(Error::Decrypt))?;
        if last {
            let mut extra = [0u8; 1];
            if self.inner.read(&mut extra)? != 0 {
                return Err(invalid(Error::Format("bytes after the final frame")));
            }
            self.done = true;
        }
        Ok(())
    }
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done || out.is_empty() {
                return Ok(0);
            }
            self.next_frame()?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

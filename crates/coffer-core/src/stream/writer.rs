//! [`Encryptor`]: a `Write` that seals its input into a framed message.

use std::io::{self, Write};

use super::context::EncryptionContext;
use super::frame::{FINAL_MARKER, MessageKeys, iv};
use super::header::{MessageHeader, invalid};
use super::raw_aes::RawAesKeyring;
use crate::error::Error;
use crate::secret::Dek;

/// Encrypts a stream into an AWS Encryption SDK v2 message. Call [`Encryptor::finish`]: without
/// it the message has no final frame and every reader rejects it as truncated.
pub struct Encryptor<W: Write> {
    out: W,
    keys: MessageKeys,
    frame_len: usize,
    buf: Vec<u8>,
    seq: u32,
}

impl<W: Write> Encryptor<W> {
    /// Writes the header (a fresh data key wrapped by every keyring) and returns the encryptor.
    pub fn new(
        mut out: W,
        keyrings: &[&RawAesKeyring],
        context: &EncryptionContext,
        frame_len: u32,
    ) -> io::Result<Self> {
        if frame_len == 0 || keyrings.is_empty() {
            return Err(invalid(Error::invalid(
                "message",
                "needs a frame length above zero and at least one keyring",
            )));
        }
        let data_key = Dek::generate().map_err(invalid)?;
        let mut message_id = [0u8; 32];
        aws_lc_rs::rand::fill(&mut message_id)
            .map_err(|_| invalid(Error::Module("random generator")))?;
        let edks = keyrings
            .iter()
            .map(|k| k.wrap(&data_key, context))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let keys = MessageKeys::derive(&data_key, &message_id).map_err(invalid)?;
        let body = MessageHeader::body(&message_id, context, &edks, frame_len, &keys.commitment)
            .map_err(invalid)?;
        let tag = keys.header_tag(&body).map_err(invalid)?;
        out.write_all(&body)?;
        out.write_all(&tag)?;
        let frame_len = usize::try_from(frame_len)
            .map_err(|_| invalid(Error::invalid("frame length", "too large")))?;
        Ok(Encryptor {
            out,
            keys,
            frame_len,
            buf: Vec::with_capacity(frame_len),
            seq: 1,
        })
    }

    fn emit(&mut self, last: bool) -> io::Result<()> {
        let seq = self.seq;
        if seq == FINAL_MARKER {
            return Err(invalid(Error::invalid(
                "message",
                "more than 2^32 - 2 frames",
            )));
        }
        let tag = self
            .keys
            .seal_frame(last, seq, &mut self.buf)
            .map_err(invalid)?;
        if last {
            self.out.write_all(&FINAL_MARKER.to_be_bytes())?;
        }
        self.out.write_all(&seq.to_be_bytes())?;
        self.out.write_all(&iv(seq))?;
        if last {
            let n = u32::try_from(self.buf.len())
                .map_err(|_| invalid(Error::invalid("frame", "too large")))?;
            self.out.write_all(&n.to_be_bytes())?;
        }
        self.out.write_all(&self.buf)?;
        self.out.write_all(&tag)?;
        self.buf.clear();
        self.seq = seq + 1;
        Ok(())
    }

    /// Seals what is left as the final frame (full when the input was a multiple of the frame
    /// length, empty only for an empty input), flushes, and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.emit(true)?;
        self.out.flush()?;
        Ok(self.out)
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

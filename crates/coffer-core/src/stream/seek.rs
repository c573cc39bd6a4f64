//! Random access: decrypt any plaintext byte range of a message by reading its header, the
//! final frame (which proves the length) and only the frames the range touches.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;

use super::Limits;
use super::frame::{FINAL_MARKER, IV_LEN, MessageKeys, TAG_LEN, iv};
use super::header::{MessageHeader, invalid};
use super::raw_aes::RawAesKeyring;
use super::reader::authenticate;
use crate::error::Error;
use crate::secret::Dek;

/// Bytes a regular frame adds to its plaintext: sequence number, IV, tag.
const REGULAR_OVERHEAD: u64 = (4 + IV_LEN + TAG_LEN) as u64;
/// Bytes the final frame adds: marker, sequence number, IV, length, tag.
const FINAL_OVERHEAD: u64 = (4 + 4 + IV_LEN + 4 + TAG_LEN) as u64;

/// Where a message's frames are, from its header length, frame length and total length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLayout {
    /// Header bytes (body and tag).
    pub header_len: u64,
    /// Plaintext bytes per regular frame.
    pub frame_len: u64,
    /// Regular frames before the final one.
    pub regular_frames: u64,
    /// Plaintext bytes in the final frame.
    pub final_len: u64,
}

impl FrameLayout {
    /// Derives the layout from the total message length, or refuses a length no message has.
    pub fn from_total(header_len: u64, frame_len: u64, total: u64) -> Option<Self> {
        let body = total.checked_sub(header_len)?.checked_sub(FINAL_OVERHEAD)?;
        let stride = frame_len + REGULAR_OVERHEAD;
        let (regular_frames, final_len) = (body / stride, body % stride);
        (final_len <= frame_len).then_some(FrameLayout {
            header_len,
            frame_len,
            regular_frames,
            final_len,
        })
    }

    /// Total plaintext length.
    pub fn plaintext_len(&self) -> u64 {
        self.regular_frames * self.frame_len + self.final_len
    }

    /// The ciphertext byte range holding plaintext bytes `range` (whole frames), for a ranged
    /// GET. Add the final frame (the last `final_len + 40` bytes) to prove the length.
    pub fn ciphertext_range(&self, range: Range<u64>) -> Range<u64> {
        let stride = self.frame_len + REGULAR_OVERHEAD;
        let first = range.start / self.frame_len;
        let last = range.end.saturating_sub(1) / self.frame_len;
        let start = self.header_len + first * stride;
        let end = if last >= self.regular_frames {
            self.header_len + self.regular_frames * stride + FINAL_OVERHEAD + self.final_len
        } else {
            self.header_len + (last + 1) * stride
        };
        start..end
    }
}

/// Decrypts byte ranges of a message held in a seekable source (a file, a ranged object reader).
pub struct SeekableDecryptor<R: Read + Seek> {
    inner: R,
    header: MessageHeader,
    keys: MessageKeys,
    layout: FrameLayout,
    final_plain: Vec<u8>,
}

impl<R: Read + Seek> SeekableDecryptor<R> {
    /// Reads and authenticates the header, then reads and verifies the final frame, which proves
    /// the plaintext length: a truncated or extended object fails here.
    pub fn open(mut inner: R, keyrings: &[&RawAesKeyring], limits: Limits) -> io::Result<Self> {
        inner.seek(SeekFrom::Start(0))?;
        let header = MessageHeader::read_from(&mut inner, &limits)?;
        let data_key = header.unwrap_data_key(keyrings)?;
        Self::with_data_key(inner, header, &data_key)
    }

    /// As [`SeekableDecryptor::open`], for a header the caller read ([`MessageHeader::read_from`]
    /// at offset 0 of `inner`) and a data key it unwrapped (an HSM, a KMS).
    pub fn with_data_key(mut inner: R, header: MessageHeader, data_key: &Dek) -> io::Result<Self> {
        let keys = authenticate(&header, data_key)?;
        let total = inner.seek(SeekFrom::End(0))?;
        let layout =
            FrameLayout::from_total(header.len() as u64, u64::from(header.frame_len), total)
                .ok_or_else(|| {
                    invalid(Error::Format(
                        "object length matches no message: truncated or extended",
                    ))
                })?;
        let seq = u32::try_from(layout.regular_frames + 1)
            .map_err(|_| invalid(Error::Format("too many frames")))?;
        let final_start =
            layout.header_len + layout.regular_frames * (layout.frame_len + REGULAR_OVERHEAD);
        inner.seek(SeekFrom::Start(final_start))?;
        let mut head = [0u8; 4 + 4 + IV_LEN + 4];
        inner.read_exact(&mut head)?;
        let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        if word(0) != FINAL_MARKER
            || word(4) != seq
            || head[8..8 + IV_LEN] != iv(seq)
            || u64::from(word(20)) != layout.final_len
        {
            return Err(invalid(Error::Decrypt));
        }
        let mut buf = vec![0u8; layout.final_len as usize + TAG_LEN];
        inner.read_exact(&mut buf)?;
        let n = keys.open_frame(true, seq, &mut buf).map_err(invalid)?;
        buf.truncate(n);
        Ok(SeekableDecryptor {
            inner,
            header,
            keys,
            layout,
            final_plain: buf,
        })
    }

    /// The authenticated header.
    pub fn header(&self) -> &MessageHeader {
        &self.header
    }

    /// The frame layout (plaintext length, ciphertext ranges).
    pub fn layout(&self) -> &FrameLayout {
        &self.layout
    }

    /// Decrypts plaintext bytes `range`, reading only the frames it touches.
    pub fn read_range(&mut self, range: Range<u64>) -> io::Result<Vec<u8>> {
        let total = self.layout.plaintext_len();
        if range.start > range.end || range.end > total {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range {}..{} outside the plaintext (0..{total})",
                    range.start, range.end
                ),
            ));
        }
        let f = self.layout.frame_len;
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let mut pos = range.start;
        while pos < range.end {
            let index = pos / f; // 0-based frame index
            let frame = if index >= self.layout.regular_frames {
                self.final_plain.clone()
            } else {
                self.regular(index)?
            };
            let from = (pos - index * f) as usize;
            let to = ((range.end - index * f).min(frame.len() as u64)) as usize;
            out.extend_from_slice(&frame[from..to]);
            pos = index * f + to as u64;
        }
        Ok(out)
    }

    fn regular(&mut self, index: u64) -> io::Result<Vec<u8>> {
        let seq = u32::try_from(index + 1).map_err(|_| invalid(Error::Decrypt))?;
        let start = self.layout.header_len + index * (self.layout.frame_len + REGULAR_OVERHEAD);
        self.inner.seek(SeekFrom::Start(start))?;
        let mut head = [0u8; 4 + IV_LEN];
        self.inner.read_exact(&mut head)?;
        if head[..4] != seq.to_be_bytes() || head[4..] != iv(seq) {
            return Err(invalid(Error::Decrypt));
        }
        let mut buf = vec![0u8; self.layout.frame_len as usize + TAG_LEN];
        self.inner.read_exact(&mut buf)?;
        let n = self
            .keys
            .open_frame(false, seq, &mut buf)
            .map_err(invalid)?;
        buf.truncate(n);
        Ok(buf)
    }
}

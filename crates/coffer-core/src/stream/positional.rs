//! Whole messages from sources that can be read at any offset (regular files): every worker reads
//! its own batch, so no single reading thread limits the throughput; the caller's thread only
//! writes the batches out, in order.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;

use super::frame::{FINAL_MARKER, IV_LEN, MessageKeys, TAG_LEN, iv};
use super::header::{MessageHeader, invalid};
use super::pool;
use super::reader::authenticate;
use super::seek::FrameLayout;
use crate::error::Error;
use crate::secret::Dek;

/// A source that reads at a given offset without a shared cursor (`pread`), from any thread.
pub trait ReadAt: Sync {
    /// Fills `buf` from `offset`, or fails (a short source is an `UnexpectedEof` error).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset)
            .ok()
            .filter(|&s| s <= self.len() && self.len() - s >= buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(&self[start..start + buf.len()]);
        Ok(())
    }
}

/// Runs `work(index, buffer)` for batches `0..count` on `threads` scoped workers, at most `bound`
/// ahead of the writer, and hands each result to `emit` in index order. The first error (in
/// index order) stops everything.
fn ordered<F, E>(count: u64, threads: usize, bound: usize, work: F, mut emit: E) -> io::Result<()>
where
    F: Fn(u64, Vec<u8>) -> io::Result<Vec<u8>> + Sync,
    E: FnMut(&[u8]) -> io::Result<()>,
{
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(bound);
    let job_rx = std::sync::Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<(u64, io::Result<Vec<u8>>)>();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let (job_rx, done_tx, work) = (&job_rx, done_tx.clone(), &work);
            scope.spawn(move || {
                loop {
                    let next = job_rx
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .recv();
                    let Ok((index, buf)) = next else { return };
                    if done_tx.send((index, work(index, buf))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        // Owned here, so returning early closes the job channel and the workers stop.
        let job_tx = job_tx;
        let mut handed = 0u64;
        let mut spare: Vec<Vec<u8>> = Vec::new();
        let mut ready = BTreeMap::new();
        for want in 0..count {
            while handed < count && handed < want + bound as u64 {
                let buf = spare.pop().unwrap_or_default();
                job_tx
                    .send((handed, buf))
                    .map_err(|_| invalid(Error::Module("frame workers stopped")))?;
                handed += 1;
            }
            let bytes = loop {
                if let Some(r) = ready.remove(&want) {
                    break r;
                }
                let (index, r) = done_rx
                    .recv()
                    .map_err(|_| invalid(Error::Module("frame workers stopped")))?;
                ready.insert(index, r);
            }?;
            emit(&bytes)?;
            spare.push(bytes);
        }
        Ok(())
    })
}

fn truncated() -> io::Error {
    invalid(Error::Format(
        "truncated message: a frame or the final frame is missing",
    ))
}

/// The big-endian word at `at`, or `None` past the end of `src`.
fn word_at<R: ReadAt + ?Sized>(src: &R, at: u64) -> io::Result<Option<u32>> {
    let mut word = [0u8; 4];
    match src.read_exact_at(&mut word, at) {
        Ok(()) => Ok(Some(u32::from_be_bytes(word))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Why a message's length does not fit its frames: finds the final frame by its position
/// (regular frame `i` starts with sequence number `i + 1`, so a binary search over frame starts
/// finds the first one that is not regular, in O(log frames) reads) and reports the bytes after
/// it, or truncation when there is no final frame. Only the error path reads this way.
fn diagnose_length<R: ReadAt + ?Sized>(src: &R, header: &MessageHeader, total: u64) -> io::Error {
    let header_len = header.len() as u64;
    let stride = u64::from(header.frame_len) + (4 + IV_LEN + TAG_LEN) as u64;
    let regular = |i: u64| -> bool {
        let at = header_len + i * stride;
        at < total && matches!(word_at(src, at), Ok(Some(w)) if u64::from(w) == i + 1)
    };
    // Frames 0..lo are regular, frame hi is not (hi bounded by the input length).
    let (mut lo, mut hi) = (0u64, total.saturating_sub(header_len) / stride + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if regular(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let at = header_len + lo * stride;
    if let Ok(Some(FINAL_MARKER)) = word_at(src, at) {
        let len_at = at + 4 + 4 + IV_LEN as u64;
        if let Ok(Some(n)) = word_at(src, len_at) {
            let end = len_at + 4 + u64::from(n) + TAG_LEN as u64;
            if n <= header.frame_len && end < total {
                return invalid(Error::TrailingBytes {
                    extra: total - end,
                    message_len: end,
                });
            }
        }
    }
    truncated()
}

/// Decrypts the whole message in `src` (`total` bytes, starting with `header`, which the caller
/// read) into `out`, with `threads` workers each reading, checking and opening its own batch of
/// frames; returns the plaintext length. The length must match the final frame exactly, every
/// frame's sequence number, IV and tag are checked, and a batch's plaintext is written only after
/// all its tags verify (batches in order).
pub fn decrypt_at<R: ReadAt + ?Sized, W: Write>(
    src: &R,
    total: u64,
    header: &MessageHeader,
    data_key: &Dek,
    out: &mut W,
    threads: usize,
) -> io::Result<u64> {
    let keys = authenticate(header, data_key)?;
    let frame_len = header.frame_len as usize;
    let layout = FrameLayout::from_total(header.len() as u64, u64::from(header.frame_len), total)
        .ok_or_else(|| diagnose_length(src, header, total))?;
    // The final frame must sit where the length puts it and record the length the input leaves
    // for it; if not, say why before any frame is opened (a cut message, or data after a
    // complete one).
    let stride = (4 + IV_LEN + frame_len + TAG_LEN) as u64;
    let final_at = layout.header_len + layout.regular_frames * stride;
    let final_len_at = final_at + 4 + 4 + IV_LEN as u64;
    if word_at(src, final_at)? != Some(FINAL_MARKER)
        || word_at(src, final_len_at)?.map(u64::from) != Some(layout.final_len)
    {
        return Err(diagnose_length(src, header, total));
    }
    let frames = layout.regular_frames + 1;
    if frames >= u64::from(FINAL_MARKER) {
        return Err(invalid(Error::Format("too many frames")));
    }
    let per = pool::frames_per_batch(frame_len) as u64;
    let count = frames.div_ceil(per);
    let bound = pool::in_flight_bound(threads, per as usize * frame_len);
    let work = |index: u64, mut buf: Vec<u8>| -> io::Result<Vec<u8>> {
        let first = index * per;
        let end_frame = (first + per).min(frames);
        let start = layout.header_len + first * stride;
        let end = if end_frame == frames {
            total
        } else {
            layout.header_len + end_frame * stride
        };
        let len = usize::try_from(end - start).map_err(|_| truncated())?;
        buf.resize(len, 0);
        src.read_exact_at(&mut buf, start).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                truncated()
            } else {
                e
            }
        })?;
        open_frames(
            &keys,
            frame_len,
            &layout,
            first,
            end_frame == frames,
            &mut buf,
        )?;
        Ok(buf)
    };
    let mut written = 0u64;
    ordered(count, threads, bound, work, |plain| {
        written += plain.len() as u64;
        out.write_all(plain)
    })?;
    Ok(written)
}

/// Checks and opens the frames in `buf` (frame `first` on, ending with the final frame when
/// `has_final`), leaving only their plaintext at its front.
fn open_frames(
    keys: &MessageKeys,
    frame_len: usize,
    layout: &FrameLayout,
    first: u64,
    has_final: bool,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    let word = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let (mut read, mut write) = (0usize, 0usize);
    let mut frame = first;
    while read < buf.len() {
        let seq = u32::try_from(frame + 1).map_err(|_| invalid(Error::Decrypt))?;
        let last = has_final && frame == layout.regular_frames;
        let mut at = read;
        if last {
            if word(buf, at) != FINAL_MARKER {
                // A regular frame where the length puts the final one: the message was cut
                // (or its length changed).
                return Err(truncated());
            }
            at += 4;
        }
        if word(buf, at) != seq || buf[at + 4..at + 4 + IV_LEN] != iv(seq) {
            return Err(invalid(Error::Decrypt));
        }
        at += 4 + IV_LEN;
        let n = if last {
            let n = word(buf, at) as usize;
            if n as u64 != layout.final_len {
                return Err(invalid(Error::Decrypt));
            }
            at += 4;
            n
        } else {
            frame_len
        };
        let body = at..at + n + TAG_LEN;
        if body.end > buf.len() {
            return Err(truncated());
        }
        let plain = keys
            .open_frame(last, seq, &mut buf[body.clone()])
            .map_err(invalid)?;
        buf.copy_within(body.start..body.start + plain, write);
        write += plain;
        read = body.end;
        frame += 1;
    }
    buf.truncate(write);
    Ok(())
}

/// Encrypts `len` bytes of `src` (from offset 0) as the frames of a message whose header is
/// already written to `out`: each of `threads` workers reads its batch of frames straight into
/// their places in a wire buffer, seals them there and adds the frame headers and tags, so the
/// bytes are copied only by the kernel; the caller's thread writes the batches in order.
pub(crate) fn seal_at<R: ReadAt + ?Sized, W: Write>(
    keys: &MessageKeys,
    frame_len: usize,
    src: &R,
    len: u64,
    out: &mut W,
    threads: usize,
) -> io::Result<()> {
    let fl = frame_len as u64;
    let frames = len.div_ceil(fl).max(1);
    if frames >= u64::from(FINAL_MARKER) {
        return Err(invalid(Error::invalid(
            "message",
            "more than 2^32 - 2 frames",
        )));
    }
    let per = pool::frames_per_batch(frame_len) as u64;
    let count = frames.div_ceil(per);
    let bound = pool::in_flight_bound(threads, per as usize * frame_len);
    let work = |index: u64, mut wire: Vec<u8>| -> io::Result<Vec<u8>> {
        let (first, end_frame) = (index * per, ((index + 1) * per).min(frames));
        // The batch's exact wire size, so a recycled buffer of the same size is not re-zeroed.
        let regular = end_frame - first - u64::from(end_frame == frames);
        let mut size = regular * (4 + IV_LEN + TAG_LEN) as u64 + regular * fl;
        if end_frame == frames {
            size += (4 + 4 + IV_LEN + 4 + TAG_LEN) as u64 + (len - (frames - 1) * fl);
        }
        wire.resize(
            usize::try_from(size).map_err(|_| invalid(Error::Decrypt))?,
            0,
        );
        let mut at = 0usize;
        for f in first..end_frame {
            let last = f + 1 == frames;
            let seq = u32::try_from(f + 1).map_err(|_| invalid(Error::Decrypt))?;
            let (p0, p1) = (f * fl, ((f + 1) * fl).min(len));
            let n = (p1 - p0) as usize;
            if last {
                wire[at..at + 4].copy_from_slice(&FINAL_MARKER.to_be_bytes());
                at += 4;
            }
            wire[at..at + 4].copy_from_slice(&seq.to_be_bytes());
            wire[at + 4..at + 4 + IV_LEN].copy_from_slice(&iv(seq));
            at += 4 + IV_LEN;
            if last {
                wire[at..at + 4].copy_from_slice(&(n as u32).to_be_bytes());
                at += 4;
            }
            src.read_exact_at(&mut wire[at..at + n], p0).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    invalid(Error::invalid(
                        "input",
                        "shorter than its length: it changed while being encrypted",
                    ))
                } else {
                    e
                }
            })?;
            let tag = keys
                .seal_frame(last, seq, &mut wire[at..at + n])
                .map_err(invalid)?;
            wire[at + n..at + n + TAG_LEN].copy_from_slice(&tag);
            at += n + TAG_LEN;
        }
        Ok(wire)
    };
    ordered(count, threads, bound, work, |wire| out.write_all(wire))
}

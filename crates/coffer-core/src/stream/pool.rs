//! Frames sealed or opened in batches, on several threads, handed back in order, with a bound on
//! the batches in flight (so memory stays a few batches per thread whatever the stream's length).
//!
//! A batch is a run of consecutive frames in one buffer (about 512 KiB), so the threads meet once
//! per batch rather than once per frame.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::frame::{FINAL_MARKER, IV_LEN, MessageKeys, TAG_LEN, iv};
use crate::error::{Error, Result};

/// What the workers do to each batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `buf` is plaintext, `frame_len` bytes per frame (the final frame may be shorter); it comes
    /// back sealed in place, with one tag per frame.
    Seal,
    /// `buf` is `ciphertext ‖ tag` per frame; it comes back as the frames' plaintext, only if
    /// every tag verifies.
    Open,
}

/// A run of frames: the first one's sequence number, whether the run ends with the final frame,
/// the bytes, and (after sealing) the frames as they go on the wire.
pub(crate) struct Batch {
    pub(crate) seq: u32,
    pub(crate) last: bool,
    pub(crate) buf: Vec<u8>,
    /// Sealing writes the serialized frames here (sequence number, IV, final length, ciphertext,
    /// tag), so the thread that writes the output only hands one buffer to the writer.
    pub(crate) wire: Vec<u8>,
}

/// Plaintext bytes per batch (rounded to whole frames, at least one).
const BATCH_BYTES: usize = 512 * 1024;

/// Frames per batch for a frame length.
pub(crate) fn frames_per_batch(frame_len: usize) -> usize {
    (BATCH_BYTES / frame_len.max(1)).max(1)
}

/// The default number of worker threads: the machine's available parallelism.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Batches in flight: two per thread and one more, capped near 64 MiB of frames.
pub(crate) fn in_flight_bound(threads: usize, batch_bytes: usize) -> usize {
    let by_memory = (64usize << 20) / batch_bytes.max(1);
    (threads * 2 + 1).min(by_memory).max(2)
}

/// Seals the frames of `batch` in place (regular frames of `frame_len`, the final one possibly
/// shorter or empty) and serializes them into `batch.wire`.
pub(crate) fn seal_batch(keys: &MessageKeys, frame_len: usize, batch: &mut Batch) -> Result<()> {
    let total = batch.buf.len();
    let frames = total.div_ceil(frame_len.max(1)).max(1);
    batch.wire.clear();
    batch
        .wire
        .reserve(total + frames * (4 + IV_LEN + TAG_LEN) + 8);
    let mut start = 0;
    let mut seq = batch.seq;
    loop {
        let end = (start + frame_len).min(total);
        let last = batch.last && end == total;
        let tag = keys.seal_frame(last, seq, &mut batch.buf[start..end])?;
        if last {
            batch.wire.extend_from_slice(&FINAL_MARKER.to_be_bytes());
        }
        batch.wire.extend_from_slice(&seq.to_be_bytes());
        batch.wire.extend_from_slice(&iv(seq));
        if last {
            let n = u32::try_from(end - start).map_err(|_| Error::invalid("frame", "too large"))?;
            batch.wire.extend_from_slice(&n.to_be_bytes());
        }
        batch.wire.extend_from_slice(&batch.buf[start..end]);
        batch.wire.extend_from_slice(&tag);
        if end == total {
            return Ok(());
        }
        start = end;
        seq = seq.checked_add(1).ok_or(Error::Decrypt)?;
    }
}

/// Opens the frames of `batch` in place and leaves only their plaintext in `buf`.
pub(crate) fn open_batch(keys: &MessageKeys, frame_len: usize, batch: &mut Batch) -> Result<()> {
    let stride = frame_len + TAG_LEN;
    let total = batch.buf.len();
    let (mut read, mut write) = (0, 0);
    let mut seq = batch.seq;
    while read < total {
        let end = (read + stride).min(total);
        let last = batch.last && end == total;
        let n = keys.open_frame(last, seq, &mut batch.buf[read..end])?;
        batch.buf.copy_within(read..read + n, write);
        write += n;
        read = end;
        seq = seq.wrapping_add(1);
    }
    batch.buf.truncate(write);
    Ok(())
}

fn work(op: Op, keys: &MessageKeys, frame_len: usize, batch: &mut Batch) -> Result<()> {
    match op {
        Op::Seal => seal_batch(keys, frame_len, batch),
        Op::Open => open_batch(keys, frame_len, batch),
    }
}

type Done = (Batch, Result<()>);

pub(crate) struct Pool {
    jobs: Option<SyncSender<Batch>>,
    results: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    ready: BTreeMap<u32, Done>,
    /// Sequence numbers of the batches in flight, in submission order.
    order: std::collections::VecDeque<u32>,
    bound: usize,
}

impl Pool {
    /// Starts `threads` workers applying `op` with `frame_len`-byte frames.
    pub(crate) fn new(
        op: Op,
        keys: Arc<MessageKeys>,
        frame_len: usize,
        threads: usize,
        bound: usize,
    ) -> Result<Self> {
        let (jobs, job_rx) = mpsc::sync_channel::<Batch>(bound);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, results) = mpsc::channel::<Done>();
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (rx, tx, keys) = (Arc::clone(&job_rx), done_tx.clone(), Arc::clone(&keys));
            let handle = std::thread::Builder::new()
                .name(format!("coffer-frames-{i}"))
                .spawn(move || {
                    loop {
                        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(mut batch) = next else { break };
                        let r = work(op, &keys, frame_len, &mut batch);
                        if tx.send((batch, r)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|_| Error::invalid("frame workers", "cannot start a thread"))?;
            workers.push(handle);
        }
        Ok(Pool {
            jobs: Some(jobs),
            results,
            workers,
            ready: BTreeMap::new(),
            order: std::collections::VecDeque::new(),
            bound,
        })
    }

    /// True when another batch may be submitted without exceeding the bound.
    pub(crate) fn has_room(&self) -> bool {
        self.order.len() < self.bound
    }

    /// Hands a batch to the workers (callers keep `has_room()` true).
    pub(crate) fn submit(&mut self, batch: Batch) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or(Error::Module("frame workers"))?;
        let seq = batch.seq;
        jobs.send(batch)
            .map_err(|_| Error::Module("frame workers stopped"))?;
        self.order.push_back(seq);
        Ok(())
    }

    /// The oldest batch in flight once done; `block` waits for it, otherwise `None` if it is not
    /// done yet (or nothing is in flight).
    pub(crate) fn next(&mut self, block: bool) -> Result<Option<Batch>> {
        let Some(&want) = self.order.front() else {
            return Ok(None);
        };
        loop {
            if let Some((batch, r)) = self.ready.remove(&want) {
                self.order.pop_front();
                return r.map(|()| Some(batch));
            }
            let got = if block {
                self.results
                    .recv()
                    .map_err(|_| Error::Module("frame workers stopped"))?
            } else {
                match self.results.try_recv() {
                    Ok(d) => d,
                    Err(mpsc::TryRecvError::Empty) => return Ok(None),
                    Err(mpsc::TryRecvError::Disconnected) => {
                        return Err(Error::Module("frame workers stopped"));
                    }
                }
            };
            self.ready.insert(got.0.seq, got);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the job channel ends each worker's loop.
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

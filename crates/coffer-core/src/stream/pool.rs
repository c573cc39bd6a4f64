//! Frames sealed or opened on several threads, handed back in sequence order, with a bound on the
//! frames in flight (so memory stays a few frames per thread whatever the stream's length).

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::frame::{MessageKeys, TAG_LEN};
use crate::error::{Error, Result};

/// What the workers do to each frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `buf` is plaintext; it comes back as ciphertext ‖ tag.
    Seal,
    /// `buf` is ciphertext ‖ tag; it comes back as plaintext (only if the tag verifies).
    Open,
}

/// One frame: its sequence number, whether it is the final frame, and its bytes.
pub(crate) struct Frame {
    pub(crate) seq: u32,
    pub(crate) last: bool,
    pub(crate) buf: Vec<u8>,
}

type Done = (u32, bool, Result<Vec<u8>>);

/// The default number of worker threads: the machine's available parallelism.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How many frames may be in flight: a few per thread, capped near 64 MiB of frames, at least one
/// more than the threads so they never starve.
pub(crate) fn in_flight_bound(threads: usize, frame_len: usize) -> usize {
    let by_memory = (64usize << 20) / frame_len.max(1);
    (threads * 4).min(by_memory).max(threads + 1)
}

pub(crate) struct Pool {
    jobs: Option<SyncSender<Frame>>,
    results: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    ready: BTreeMap<u32, (bool, Result<Vec<u8>>)>,
    next: u32,
    in_flight: usize,
    bound: usize,
}

fn work(op: Op, keys: &MessageKeys, mut frame: Frame) -> Result<Vec<u8>> {
    match op {
        Op::Seal => {
            let tag = keys.seal_frame(frame.last, frame.seq, &mut frame.buf)?;
            frame.buf.extend_from_slice(&tag);
        }
        Op::Open => {
            let n = keys.open_frame(frame.last, frame.seq, &mut frame.buf)?;
            frame.buf.truncate(n);
        }
    }
    Ok(frame.buf)
}

impl Pool {
    /// Starts `threads` workers; the first frame submitted must carry sequence number `first`.
    pub(crate) fn new(
        op: Op,
        keys: Arc<MessageKeys>,
        threads: usize,
        bound: usize,
        first: u32,
    ) -> Result<Self> {
        let (jobs, job_rx) = mpsc::sync_channel::<Frame>(bound);
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
                        let Ok(frame) = next else { break };
                        let (seq, last) = (frame.seq, frame.last);
                        if tx.send((seq, last, work(op, &keys, frame))).is_err() {
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
            next: first,
            in_flight: 0,
            bound,
        })
    }

    /// True when another frame may be submitted without exceeding the bound.
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight < self.bound
    }

    /// Hands a frame to the workers (callers keep `has_room()` true).
    pub(crate) fn submit(&mut self, frame: Frame) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or(Error::Module("frame workers"))?;
        jobs.send(frame)
            .map_err(|_| Error::Module("frame workers stopped"))?;
        self.in_flight += 1;
        Ok(())
    }

    /// The next frame in sequence order; `block` waits for it, otherwise `None` if it is not done.
    /// Returns `(seq, last, bytes)` (sealed frame with its tag, or plaintext).
    pub(crate) fn next(&mut self, block: bool) -> Result<Option<(u32, bool, Vec<u8>)>> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        loop {
            let seq = self.next;
            if let Some((last, r)) = self.ready.remove(&seq) {
                self.in_flight -= 1;
                self.next = seq.wrapping_add(1);
                return r.map(|b| Some((seq, last, b)));
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
            self.ready.insert(got.0, (got.1, got.2));
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

/// Capacity for a frame buffer: its plaintext and room for the tag.
pub(crate) fn frame_capacity(frame_len: usize) -> usize {
    frame_len + TAG_LEN
}

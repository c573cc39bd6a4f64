//! The per-process machinery behind a keyring: a tokio runtime (key store, Redis, KEK
//! providers), a rayon pool (batches) and the opened [`coffer_keys::Keyring`].
//!
//! Nothing is created until the first call that needs it, and everything is tied to the
//! process id that created it (docs/DESIGN.md §A2): a pre-fork server (gunicorn, uWSGI,
//! multiprocessing) that imports the application and then forks gets, in each child, a fresh
//! runtime, fresh connections and a fresh L1 cache on first use. The parent's copies are
//! leaked in the child, never dropped there: their threads do not exist after `fork()`, and
//! dropping them would wait for those threads forever.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use pyo3::prelude::*;

use crate::errors;

/// How many times this process's ancestors forked on the way to it: a `pthread_atfork`
/// child handler counts each fork. Comparing it costs a load, where asking the kernel for the
/// process id costs a system call on every encryption.
static FORKS: AtomicU64 = AtomicU64::new(0);
static WATCH_FORKS: Once = Once::new();

extern "C" fn forked_child() {
    // Async-signal-safe: one atomic add.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// This process's place in the fork count (starts counting on first use).
#[allow(unsafe_code)] // one FFI call, below
fn fork_generation() -> u64 {
    WATCH_FORKS.call_once(|| {
        // SAFETY: registers a child handler that only increments an atomic; no prepare or
        // parent handler. It stays registered for the life of the process.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
        // Without the handler a fork would go unnoticed by the count: mark it unusable, and
        // `is_current` compares process ids instead (a system call per check, as before).
        if rc != 0 {
            FORKS.store(u64::MAX, Ordering::Relaxed);
        }
    });
    FORKS.load(Ordering::Relaxed)
}

/// Runtime, pool and keyring of one process. The fields are `Option`s only so that `Drop`
/// can move them out (to leak them in a forked child, or drop them in order); they are `Some`
/// for the whole life of the value.
pub struct Process {
    pid: u32,
    forks: u64,
    rt: Option<tokio::runtime::Runtime>,
    pool: Option<rayon::ThreadPool>,
    keyring: Option<coffer_keys::Keyring>,
}

impl Process {
    /// Builds the runtime and pool, then opens the keyring with `open` on that runtime.
    pub fn start<F, Fut>(open: F) -> PyResult<Process>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = PyResult<coffer_keys::Keyring>>,
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("coffer-io")
            .enable_all()
            .build()
            .map_err(|e| errors::config(format!("cannot start the I/O runtime: {e}")))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("coffer-batch-{i}"))
            .build()
            .map_err(|e| errors::config(format!("cannot start the batch thread pool: {e}")))?;
        let keyring = rt.block_on(open())?;
        Ok(Process {
            pid: std::process::id(),
            forks: fork_generation(),
            rt: Some(rt),
            pool: Some(pool),
            keyring: Some(keyring),
        })
    }

    /// Whether this is the process that built it (false in a forked child). A fork is seen
    /// by the fork count (no system call); the process id is compared too when the count
    /// cannot be kept.
    pub fn is_current(&self) -> bool {
        let forks = fork_generation();
        forks == self.forks && (forks != u64::MAX || self.pid == std::process::id())
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        // Some from `start` until `drop`.
        #[allow(clippy::expect_used)]
        self.rt.as_ref().expect("runtime present until drop")
    }

    /// The keyring.
    pub fn keyring(&self) -> &coffer_keys::Keyring {
        #[allow(clippy::expect_used)]
        self.keyring.as_ref().expect("keyring present until drop")
    }

    /// Runs `op` on this thread with a scope whose spawned jobs run on this process's batch
    /// pool (they may borrow what `op` can see); returns when `op` and every job are done.
    pub fn in_place_scope<'scope, R>(&self, op: impl FnOnce(&rayon::Scope<'scope>) -> R) -> R {
        match &self.pool {
            Some(pool) => pool.in_place_scope(op),
            None => rayon::in_place_scope(op),
        }
    }

    /// Runs `f` in this process's batch pool (its `par_iter`s use that pool's threads).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// Runs a future to completion. It is polled once with the GIL held: a call served from
    /// the L1 cache completes then, without the cost of releasing the GIL. Otherwise (a key
    /// store query, a KEK unwrap) the GIL is released while the runtime drives the rest.
    pub fn run<F>(&self, py: Python<'_>, fut: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let mut fut = pin!(fut);
        {
            let _guard = self.rt().enter();
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
        }
        py.detach(|| self.rt().block_on(fut))
    }

    /// Runs a future on this thread without touching the GIL (call it inside `py.detach`).
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.rt().block_on(fut)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.is_current() {
            // A forked child: the runtime's and pool's threads are the parent's. Leak.
            std::mem::forget(self.keyring.take());
            std::mem::forget(self.rt.take());
            std::mem::forget(self.pool.take());
            return;
        }
        if let Some(rt) = self.rt.take() {
            {
                // Connection pools close through the runtime that owns them.
                let _guard = rt.enter();
                drop(self.keyring.take());
            }
            rt.shutdown_background();
        }
        drop(self.pool.take());
    }
}

/// A handle shared by every object that uses one keyring.
pub type Shared = Arc<Process>;

//! What benchmarks set up the same way: their Tokio runtimes (tests that drive a runtime by
//! hand use the same two).
//!
//! A benchmark that measures one call at a time blocks on a current-thread runtime, so the
//! figure holds no cross-thread wake-up; one that drives a network client (the AWS SDK,
//! object_store, an HSM session pool) gets two workers, as a small service would.

use tokio::runtime::{Builder, Runtime};

/// A current-thread runtime with I/O and timers.
pub fn current_thread() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

/// A multi-thread runtime of two workers, with I/O and timers.
pub fn two_workers() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

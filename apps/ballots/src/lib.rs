//! Ballots, Coffer's private-voting reference application, as a library: the binary
//! (`src/main.rs`) wires it to a listener, and the benchmark measures its encryption work.
//! README.md explains the design; docs/DESIGN.md §A1 the reasons.

pub mod api;
pub mod app;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod load;
pub mod pages;

use anyhow::Result;

/// Lets this process hold one descriptor per connection (10 000 voters and then some).
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// A multi-threaded Tokio runtime.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

//! Test support for Coffer's own tests (compare rustls's test crate): one copy of every helper
//! that integration tests, benchmarks and examples share.
//!
//! Services: [`pg`] (a throw-away PostgreSQL database), [`psql`] (SQL through the `psql`
//! client), [`redis`] (a private `redis-server`), [`moto`] (the AWS mock for S3 and KMS tests),
//! [`softhsm`] (a SoftHSM2 token), [`ports`] (free loopback ports), [`process`] (run a command,
//! wait for a listener). Small helpers: [`random`] (random keys and names), [`hex`] and
//! [`fixtures`] (fixed values for KEK provider tests).
//!
//! Everything here panics with a message that says what to start or install: these are test
//! helpers, and a panic is how a test reports a missing service.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod cli_audit;
pub mod columns_schema;
pub mod conformance;
pub mod fixtures;
pub mod hex;
pub mod memory;
pub mod moto;
pub mod pg;
pub mod ports;
pub mod process;
pub mod psql;
pub mod random;
pub mod redis;
pub mod softhsm;

/// The repository's `scripts/` directory (the scripts that set services up).
pub fn scripts_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

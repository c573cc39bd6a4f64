//! Test support for Coffer's own tests (compare rustls's test crate): one copy of every helper
//! that integration tests, benchmarks and examples share.
//!
//! Services: [`pg`] (a throw-away PostgreSQL database), [`psql`] (SQL through the `psql`
//! client), [`redis`] (a private `redis-server`), [`moto`] (the AWS mock for S3 and KMS tests),
//! [`softhsm`] (a SoftHSM2 token), [`ports`] (free loopback ports), [`process`] (run a command,
//! wait for a listener). Small helpers: [`random`] (random keys and names), [`hex`] and
//! [`fixtures`] (fixed values for KEK provider tests), [`keyring_fixtures`] (keyrings on a store
//! with local KEKs, and a scope with a sealed value), [`keyring_audit`] (an audit trail rewritten
//! by an attacker without the KEK).
//!
//! Tests, benchmarks and the patients example: [`columns_schema`] (coffer-columns.toml text).
//! Benchmarks: [`bench_setup`] (their runtimes). With the `server` feature, `server_client` (JSON
//! over HTTP to the encryption service); with `store`, `store_audit` (a SQL store's audit table
//! edited behind its back).
//!
//! Everything here panics with a message that says what to start or install: these are test
//! helpers, and a panic is how a test reports a missing service.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod bench_setup;
pub mod columns_schema;
pub mod conformance;
pub mod fixtures;
pub mod hex;
pub mod keyring_audit;
pub mod keyring_fixtures;
pub mod memory;
pub mod moto;
pub mod pg;
pub mod ports;
pub mod process;
pub mod psql;
pub mod random;
pub mod redis;
#[cfg(feature = "server")]
pub mod server_client;
pub mod softhsm;
#[cfg(feature = "store")]
pub mod store_audit;

/// The repository's `scripts/` directory (the scripts that set services up).
pub fn scripts_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

//! Test support for Coffer's own tests (skeleton; filled in by the test-kit work).
//!
//! Modules: `memory` (an in-memory `KeyStore`) and `conformance` (the store conformance suite);
//! `pg`, `psql`, `redis`, `moto`, `softhsm`, `ports` (throw-away services for integration tests).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod conformance;
pub mod memory;

//! Coffer's key hierarchy and lifecycle.
//!
//! KEKs come from [`KekProvider`]s (local keys here; HSM and KMS providers in their own crates),
//! wrap per-scope, versioned DEKs kept in a [`KeyStore`], which a [`Keyring`] resolves through a
//! two-tier cache to encrypt and decrypt fields. Rotation, crypto-shredding and the hash-chained
//! audit trail live here too. docs/KEYS.md describes the whole.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod bus;
pub mod cache;
pub mod config;
pub mod datakey;
mod error;
pub mod files;
pub mod kek;
pub mod keyring;
pub mod source;
pub mod store;

pub use audit::{AuditEvent, AuditFilter, AuditRecord, Operation};
pub use bus::{BusEvent, BusHandler, Invalidation, InvalidationBus};
pub use cache::{CacheKey, InvalidationHandler, L2Backend, L2Error};
pub use error::{Error, Result};
pub use files::FileKeyring;
pub use kek::{KekId, KekProvider, KekRing, LocalKek, WrapContext};
pub use keyring::{
    AUDIT_SCOPE, BatchItem, BlindIndexSpec, DekCheck, Keyring, KeyringConfig, LeasedFieldKey,
    LoadHook, RewrapReport, StatsSnapshot, TombstoneReport,
};
pub use source::{KekScheme, KekSource, SecretRef};
pub use store::{
    BulkCreate, CreateOutcome, DekRecord, DekState, KekRecord, KeyStore, NewDek, Rewrap,
    RotateOutcome, ScopePage, ScopeRecord, StoreInfo, prefix_upper_bound,
};

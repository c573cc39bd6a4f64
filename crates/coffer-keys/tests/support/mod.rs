//! Keyring scenarios, written once against [`Env`] (a key store that several keyrings, like
//! several processes, share). coffer-keys runs them all on the in-memory store
//! (`tests/keyring.rs`); coffer-store runs those that need SQL behaviour on SQLite and
//! PostgreSQL (its `tests/keyring.rs` includes this module by path).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

pub mod audit;
pub mod concurrency;
pub mod lifecycle;
pub mod scale;
pub mod scoped_keys;
pub mod writes;
pub mod wrong_kek;

use std::future::Future;
use std::sync::Arc;

use coffer_core::Kek;
use coffer_keys::{KekRing, KeyStore, Keyring, KeyringConfig};
use coffer_testkit::keyring_fixtures::KeyringSetup;
pub use coffer_testkit::keyring_fixtures::{col, open, ring, scope, seal};

/// A key store the scenarios run on.
pub trait Env {
    /// A handle on the store, as another process would open it (its own connections).
    fn store(&self) -> impl Future<Output = Arc<dyn KeyStore>>;

    /// Rewrites the detail of audit record `id` behind the store's back (an attacker with
    /// write access), without fixing the hash chain.
    fn tamper_audit_detail(&self, id: i64, detail: &str) -> impl Future<Output = ()>;

    /// Replaces the whole audit trail with `records` behind the store's back (an attacker with
    /// write access who rewrites rows and their hashes).
    fn rewrite_audit(&self, records: &[coffer_keys::AuditRecord]) -> impl Future<Output = ()>;
}

/// A keyring over the environment's store, as a new process would build it.
pub async fn keyring<E: Env>(env: &E, ring: KekRing, config: KeyringConfig) -> Keyring {
    KeyringSetup::with_ring(env.store().await, ring)
        .config(config)
        .build()
        .await
}

/// A keyring with one local KEK, `main/v1`, and `config`.
pub async fn configured<E: Env>(env: &E, kek: &Kek, config: KeyringConfig) -> Keyring {
    KeyringSetup::new(env.store().await, kek)
        .config(config)
        .build()
        .await
}

/// The default settings but for leases of `block` encryptions.
pub fn leasing(block: u64) -> KeyringConfig {
    KeyringConfig {
        lease_block: block,
        ..KeyringConfig::default()
    }
}

/// A keyring with one local KEK, `main/v1`, and the default settings.
pub async fn one_kek<E: Env>(env: &E, kek: &Kek) -> Keyring {
    configured(env, kek, KeyringConfig::default()).await
}

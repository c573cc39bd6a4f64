//! Keyring scenarios, written once against [`Env`] (a key store that several keyrings, like
//! several processes, share). coffer-keys runs them all on the in-memory store
//! (`tests/keyring.rs`); coffer-store runs those that need SQL behaviour on SQLite and
//! PostgreSQL (its `tests/keyring.rs` includes this module by path).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

pub mod audit;
pub mod concurrency;
pub mod lifecycle;
pub mod scoped_keys;
pub mod writes;
pub mod wrong_kek;

use std::future::Future;
use std::sync::Arc;

use coffer_core::{ColumnId, Kek, ScopeId};
use coffer_keys::{KekId, KekProvider, KekRing, KeyStore, Keyring, KeyringConfig, LocalKek};

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

pub fn scope(s: &str) -> ScopeId {
    ScopeId::new(s).unwrap()
}

pub fn col(s: &str) -> ColumnId {
    ColumnId::new(s).unwrap()
}

pub fn local(name: &str, version: u32, kek: &Kek) -> (KekId, Arc<dyn KekProvider>) {
    let id = KekId::new(name, version).unwrap();
    (id.clone(), Arc::new(LocalKek::new(id, kek.clone())))
}

pub fn ring(keks: &[(&str, u32, &Kek)], primary: (&str, u32)) -> KekRing {
    KekRing::new(
        keks.iter().map(|(n, v, k)| local(n, *v, k)),
        KekId::new(primary.0, primary.1).unwrap(),
    )
    .unwrap()
}

/// A keyring over the environment's store, as a new process would build it.
pub async fn keyring<E: Env>(env: &E, ring: KekRing, config: KeyringConfig) -> Keyring {
    Keyring::new(env.store().await, ring, config).await.unwrap()
}

/// A keyring with one local KEK, `main/v1`, and the default settings.
pub async fn one_kek<E: Env>(env: &E, kek: &Kek) -> Keyring {
    keyring(
        env,
        ring(&[("main", 1, kek)], ("main", 1)),
        KeyringConfig::default(),
    )
    .await
}

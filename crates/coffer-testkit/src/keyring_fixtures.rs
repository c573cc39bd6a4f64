//! Keyrings for tests and benchmarks, built one way: local KEKs in a ring, a keyring over a
//! store ([`KeyringSetup`], optionally with an L2 cache), a scope holding one sealed value
//! ([`Sealed`]), and the DEK behind it read back from the store ([`stored_dek`]).
//!
//! Values are sealed with `Suite::Gcm96` and an empty field context unless a test says
//! otherwise: what the scenarios check is the keyring, not the suite.

use std::sync::Arc;

use coffer_core::{ColumnId, Dek, FieldContext, Kek, KeyVersion, ScopeId, Suite};
use coffer_keys::{
    CacheKey, KekId, KekProvider, KekRing, KeyStore, Keyring, KeyringConfig, L2Backend, LocalKek,
    WrapContext,
};

/// A scope from a literal.
pub fn scope(s: &str) -> ScopeId {
    ScopeId::new(s).expect("a valid scope")
}

/// A column from a literal.
pub fn col(s: &str) -> ColumnId {
    ColumnId::new(s).expect("a valid column")
}

/// A local KEK provider `name`/`version` over `kek`, with its id.
pub fn local(name: &str, version: u32, kek: &Kek) -> (KekId, Arc<dyn KekProvider>) {
    let id = KekId::new(name, version).expect("a valid KEK id");
    (id.clone(), Arc::new(LocalKek::new(id, kek.clone())))
}

/// A ring of local KEKs `(name, version, kek)`, `primary` the one new DEKs are wrapped under.
pub fn ring(keks: &[(&str, u32, &Kek)], primary: (&str, u32)) -> KekRing {
    KekRing::new(
        keks.iter().map(|(n, v, k)| local(n, *v, k)),
        KekId::new(primary.0, primary.1).expect("a valid KEK id"),
    )
    .expect("a valid KEK ring")
}

/// A ring of one local KEK, `main/v1`.
pub fn main_ring(kek: &Kek) -> KekRing {
    let (id, provider) = local("main", 1, kek);
    KekRing::single(id, provider)
}

/// A keyring over a store: one local KEK `main/v1` and the default settings unless changed.
pub struct KeyringSetup {
    store: Arc<dyn KeyStore>,
    ring: KekRing,
    config: KeyringConfig,
    l2: Option<(Arc<dyn L2Backend>, CacheKey)>,
}

impl KeyringSetup {
    /// A keyring over `store` with `kek` as the local KEK `main/v1`.
    pub fn new(store: Arc<dyn KeyStore>, kek: &Kek) -> Self {
        Self::with_ring(store, main_ring(kek))
    }

    /// A keyring over `store` with the KEKs of `ring`.
    pub fn with_ring(store: Arc<dyn KeyStore>, ring: KekRing) -> Self {
        KeyringSetup {
            store,
            ring,
            config: KeyringConfig::default(),
            l2: None,
        }
    }

    /// Other settings than the defaults.
    pub fn config(mut self, config: KeyringConfig) -> Self {
        self.config = config;
        self
    }

    /// An L2 cache, sealed under `key`.
    pub fn l2(mut self, backend: Arc<dyn L2Backend>, key: CacheKey) -> Self {
        self.l2 = Some((backend, key));
        self
    }

    /// The keyring, as a new process would build it.
    pub async fn build(self) -> Keyring {
        match self.l2 {
            None => Keyring::new(self.store, self.ring, self.config).await,
            Some((backend, key)) => {
                Keyring::with_l2(self.store, self.ring, self.config, backend, key).await
            }
        }
        .expect("the keyring starts")
    }
}

/// `plaintext` sealed under `column` of `scope`'s active key.
pub async fn seal(kr: &Keyring, scope: &ScopeId, column: &ColumnId, plaintext: &[u8]) -> Vec<u8> {
    kr.encrypt(scope, column, Suite::Gcm96, &FieldContext::new(), plaintext)
        .await
        .expect("encrypt")
}

/// `ciphertext` opened; panics on an error or a NULL.
pub async fn open(kr: &Keyring, scope: &ScopeId, column: &ColumnId, ciphertext: &[u8]) -> Vec<u8> {
    kr.decrypt(scope, column, &FieldContext::new(), ciphertext)
        .await
        .expect("decrypt")
        .expect("a value, not NULL")
}

/// A scope created through a keyring, and one value sealed in it.
#[derive(Clone, Debug)]
pub struct Sealed {
    /// The scope, created.
    pub scope: ScopeId,
    /// The column the value is sealed under.
    pub column: ColumnId,
    /// The sealed value.
    pub ct: Vec<u8>,
}

impl Sealed {
    /// Creates `scope` through `kr` and seals `plaintext` under `column`.
    pub async fn create(kr: &Keyring, scope: &str, column: &str, plaintext: &[u8]) -> Sealed {
        let (scope, column) = (self::scope(scope), col(column));
        kr.create_scope(&scope).await.expect("create scope");
        let ct = seal(kr, &scope, &column, plaintext).await;
        Sealed { scope, column, ct }
    }

    /// The value opened through `kr`.
    pub async fn open(&self, kr: &Keyring) -> Vec<u8> {
        open(kr, &self.scope, &self.column, &self.ct).await
    }
}

/// The DEK `version` of `scope` as `store` holds it, unwrapped with the local KEK `main/v1`
/// over `kek` (what a test compares cache entries or a bare column key against).
pub async fn stored_dek(store: &dyn KeyStore, kek: &Kek, scope: &ScopeId, version: u32) -> Dek {
    let rec = store
        .dek(scope, KeyVersion(version))
        .await
        .expect("the store answers")
        .expect("the DEK exists");
    let store_id = store.info().await.expect("the store answers").store_id;
    let (_, provider) = local("main", 1, kek);
    provider
        .unwrap(
            rec.wrapped.as_deref().expect("a wrapped DEK"),
            &WrapContext {
                store_id: &store_id,
                scope,
                version: rec.version,
                key_id: &rec.key_id,
            },
        )
        .await
        .expect("the DEK unwraps")
}

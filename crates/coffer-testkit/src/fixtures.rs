//! Fixed test values for KEK provider tests: the slot a DEK is wrapped for.

use coffer_core::wrap::KeyMetadata;
use coffer_core::{KeyVersion, ScopeId};
use coffer_keys::WrapContext;

/// What a wrapped DEK is bound to: store id, scope, version, key id (and the DEK algorithm, for
/// metadata tags). [`DekSlot::new`] gives fixed values; change fields with struct update syntax.
#[derive(Debug, Clone)]
pub struct DekSlot {
    /// The key store's id.
    pub store: Vec<u8>,
    /// The scope.
    pub scope: ScopeId,
    /// The DEK version.
    pub version: KeyVersion,
    /// The DEK's key id.
    pub key_id: [u8; 16],
    /// The DEK algorithm named in the metadata tag.
    pub algorithm: &'static str,
}

impl DekSlot {
    /// Store `[7; 16]`, scope `tenant:acme`, version 1, key id `[9; 16]`, `aes256-gcm`.
    pub fn new() -> Self {
        DekSlot {
            store: vec![7; 16],
            scope: ScopeId::new("tenant:acme").expect("a valid scope"),
            version: KeyVersion(1),
            key_id: [9; 16],
            algorithm: "aes256-gcm",
        }
    }

    /// [`DekSlot::new`] in another scope.
    pub fn in_scope(scope: &str) -> Self {
        DekSlot {
            scope: ScopeId::new(scope).expect("a valid scope"),
            ..Self::new()
        }
    }

    /// The context a KEK provider wraps and unwraps under.
    pub fn wrap_context(&self) -> WrapContext<'_> {
        WrapContext {
            store_id: &self.store,
            scope: &self.scope,
            version: self.version,
            key_id: &self.key_id,
        }
    }

    /// The metadata a DEK's tag is computed over.
    pub fn metadata(&self) -> KeyMetadata<'_> {
        KeyMetadata {
            store_id: &self.store,
            scope: &self.scope,
            version: self.version,
            key_id: &self.key_id,
            algorithm: self.algorithm,
        }
    }
}

impl Default for DekSlot {
    fn default() -> Self {
        Self::new()
    }
}

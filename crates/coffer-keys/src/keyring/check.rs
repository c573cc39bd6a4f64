//! `coffer keys check`'s second half: that the configured KEKs open the DEKs the store holds,
//! not only their canaries (a DEK wrapped under a wrong key cannot be told by its canary).

use coffer_core::{KeyVersion, ScopeId};

use super::Keyring;
use crate::error::{Error, Result};

/// What [`Keyring::check_deks`] found.
#[derive(Debug, Default)]
pub struct DekCheck {
    /// Live scopes in the store.
    pub scopes: u64,
    /// Active DEKs unwrapped (one per scope checked).
    pub checked: u64,
    /// Active DEKs that did not open, with why.
    pub failed: Vec<(ScopeId, KeyVersion, Error)>,
    /// Whether only a random sample of the scopes was checked.
    pub sampled: bool,
}

impl Keyring {
    /// Unwraps the active DEK of every live scope (or of `limit` scopes drawn at random when
    /// there are more) through its KEK, bypassing the caches, and checks its tag. A DEK that
    /// does not open is listed with its error ([`Error::WrongKek`], [`Error::UnknownKek`], a
    /// provider error); the store is only read. Unwraps made here are not audited one by one.
    pub async fn check_deks(&self, limit: Option<usize>) -> Result<DekCheck> {
        let mut scopes: Vec<ScopeId> = self
            .inner
            .store
            .scopes()
            .await?
            .into_iter()
            .filter(|s| !s.is_destroyed())
            .map(|s| s.scope)
            .collect();
        let mut report = DekCheck {
            scopes: scopes.len() as u64,
            ..DekCheck::default()
        };
        if let Some(limit) = limit
            && scopes.len() > limit
        {
            // A partial Fisher-Yates shuffle: the first `limit` are a uniform sample.
            for i in 0..limit {
                let r = u64::from_le_bytes(coffer_core::digest::random_array()?);
                let j = i + (r % (scopes.len() - i) as u64) as usize;
                scopes.swap(i, j);
            }
            scopes.truncate(limit);
            report.sampled = true;
        }
        for scope in scopes {
            let Some(rec) = self.inner.store.active_dek(&scope).await? else {
                continue;
            };
            let Some(wrapped) = rec.wrapped.as_deref() else {
                continue;
            };
            match self.unwrap_for(&rec, wrapped, false).await {
                Ok(_) => report.checked += 1,
                Err(Error::Crypto(_)) => report.failed.push((
                    scope,
                    rec.version,
                    Error::WrongKek {
                        kek: rec.kek.to_string(),
                    },
                )),
                Err(e) => report.failed.push((scope, rec.version, e)),
            }
        }
        Ok(report)
    }
}

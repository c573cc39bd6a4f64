//! `coffer keys check`'s second half: that the configured KEKs open the DEKs the store holds,
//! not only their canaries (a DEK wrapped under a wrong key cannot be told by its canary).

use coffer_core::{KeyVersion, ScopeId};

use super::Keyring;
use crate::error::{Error, Result};
use crate::store::DekRecord;

/// What [`Keyring::check_deks`] found.
#[derive(Debug, Default)]
pub struct DekCheck {
    /// Live scopes with an active DEK in the store.
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
    ///
    /// The store is read a page of 1 000 active DEKs at a time, so memory stays
    /// bounded at any number of scopes: with `limit`, a reservoir sample of `limit` DEKs is
    /// kept while every page is read (a uniform sample); without, each page is checked and
    /// dropped.
    pub async fn check_deks(&self, limit: Option<usize>) -> Result<DekCheck> {
        let mut report = DekCheck::default();
        let mut reservoir: Vec<DekRecord> = Vec::new();
        let mut after: Option<ScopeId> = None;
        loop {
            let page = self
                .inner
                .store
                .active_deks_page(after.as_ref(), CHECK_PAGE)
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.scope.clone());
            for rec in page {
                report.scopes += 1;
                match limit {
                    None => self.check_one(rec, &mut report).await,
                    Some(limit) if reservoir.len() < limit => reservoir.push(rec),
                    Some(limit) => {
                        // Algorithm R: the n-th DEK replaces a kept one with probability
                        // limit / n.
                        let r = u64::from_le_bytes(coffer_core::digest::random_array()?);
                        let j = (r % report.scopes) as usize;
                        if j < limit {
                            reservoir[j] = rec;
                        }
                    }
                }
            }
        }
        if let Some(limit) = limit {
            report.sampled = report.scopes > limit as u64;
            for rec in reservoir {
                self.check_one(rec, &mut report).await;
            }
        }
        Ok(report)
    }

    async fn check_one(&self, rec: DekRecord, report: &mut DekCheck) {
        let Some(wrapped) = rec.wrapped.as_deref() else {
            return;
        };
        match self.unwrap_for(&rec, wrapped, false).await {
            Ok(_) => report.checked += 1,
            Err(Error::Crypto(_)) => report.failed.push((
                rec.scope.clone(),
                rec.version,
                Error::WrongKek {
                    kek: rec.kek.to_string(),
                },
            )),
            Err(e) => report.failed.push((rec.scope.clone(), rec.version, e)),
        }
    }
}

/// Active DEKs read per page by [`Keyring::check_deks`].
pub const CHECK_PAGE: usize = 1_000;

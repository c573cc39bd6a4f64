//! The key store at millions of scopes (docs/KEYS.md, "Scale"): scopes created in bulk, a data
//! subject's scopes listed by prefix and erased together.

use std::collections::HashSet;

use coffer_core::{KeyVersion, ScopeId};

use super::Keyring;
use crate::audit::Operation;
use crate::error::{Error, Result};
use crate::store::{BulkCreate, ScopePage, ScopeRecord};

/// Scopes per store call of [`Keyring::create_scopes`]: one transaction each, a few multi-row
/// statements inside.
pub const BULK_BATCH: usize = 5_000;

/// Scopes read per page when a subject's scopes are collected.
const SUBJECT_PAGE: usize = 1_000;

impl Keyring {
    /// Creates many scopes, each with its first DEK wrapped under the primary KEK, in one store
    /// transaction per [`BULK_BATCH`] scopes, and one `create` audit record per scope created
    /// (appended as one chained batch). Returns one outcome per name, in order: a scope that
    /// exists is left alone ([`BulkCreate::Exists`], also for a name repeated in `scopes`), a
    /// destroyed one stays a tombstone ([`BulkCreate::Destroyed`]) and is never re-created. So
    /// a run that was interrupted can be repeated with the same list. Reserved names
    /// (`coffer:…`) refuse the whole call before anything is written. The new DEKs are not put
    /// in L1 (a bulk load would only evict the keys in use).
    pub async fn create_scopes(&self, scopes: &[ScopeId]) -> Result<Vec<BulkCreate>> {
        for s in scopes {
            Self::refuse_reserved(s)?;
        }
        if scopes.is_empty() {
            return Ok(Vec::new());
        }
        self.audit_ready().await?;
        let mut out = Vec::with_capacity(scopes.len());
        for chunk in scopes.chunks(BULK_BATCH) {
            let mut results = vec![BulkCreate::Exists; chunk.len()];
            let mut seen = HashSet::with_capacity(chunk.len());
            let mut firsts = Vec::with_capacity(chunk.len());
            let mut at = Vec::with_capacity(chunk.len());
            for (i, s) in chunk.iter().enumerate() {
                if !seen.insert(s.as_str()) {
                    continue;
                }
                // A scope that does not exist has no version floor: its first version is 1.
                let (_dek, new) = self.new_dek(s, KeyVersion(1)).await?;
                firsts.push(new);
                at.push(i);
            }
            let outcomes = self.inner.store.create_scopes(&firsts).await?;
            if outcomes.len() != firsts.len() {
                return Err(Error::store(format!(
                    "the key store answered {} outcomes for {} scopes",
                    outcomes.len(),
                    firsts.len()
                )));
            }
            let mut events = Vec::new();
            for ((i, new), o) in at.iter().zip(&firsts).zip(outcomes) {
                if matches!(o, BulkCreate::Created { .. }) {
                    events.push(
                        self.event(Operation::Create)
                            .scope(new.scope.as_str())
                            .version(new.version.0)
                            .kek(new.kek.to_string())
                            .detail("created in bulk"),
                    );
                }
                results[*i] = o;
            }
            self.audit_batch(&events).await?;
            out.extend(results);
        }
        Ok(out)
    }

    /// The scopes of a data subject, destroyed ones included: `subject` itself and every scope
    /// whose name starts with `subject/`, read page by page in name order.
    pub async fn subject_scopes(&self, subject: &ScopeId) -> Result<Vec<ScopeRecord>> {
        Self::refuse_reserved(subject)?;
        let mut out = Vec::new();
        if let Some(s) = self.inner.store.scope(subject).await? {
            out.push(s);
        }
        let prefix = format!("{}/", subject.as_str());
        let mut after = None;
        loop {
            let page = self
                .inner
                .store
                .list_scopes(&ScopePage {
                    prefix: Some(prefix.clone()),
                    after: after.take(),
                    limit: SUBJECT_PAGE,
                })
                .await?;
            let full = page.len() >= SUBJECT_PAGE;
            after = page.last().map(|s| s.scope.as_str().to_owned());
            out.extend(page);
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// Erases a data subject (GDPR art. 17): destroys `subject` and every live scope under
    /// `subject/`, each exactly as [`destroy`](Self::destroy) does (wraps erased, caches
    /// invalidated here and in other processes, a tombstone line in the ledger) but audited
    /// as `erase`, naming the subject. Returns each scope destroyed now with how many key
    /// versions it held; scopes destroyed earlier are skipped. Nothing to erase is an empty
    /// list, not an error: the caller tells "unknown" from "already erased" with
    /// [`subject_scopes`](Self::subject_scopes).
    pub async fn erase_subject(&self, subject: &ScopeId) -> Result<Vec<(ScopeId, u32)>> {
        let mut done = Vec::new();
        for s in self.subject_scopes(subject).await? {
            if s.is_destroyed() {
                continue;
            }
            let why = format!("erasure of data subject '{subject}'");
            let n = self.shred(&s.scope, Operation::Erase, &why).await?;
            done.push((s.scope, n));
        }
        Ok(done)
    }
}

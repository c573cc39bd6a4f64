//! The audit path: every event goes through [`Keyring::record`] (or the keyring's own calls),
//! chained with the store's audit chain key; the head is exported outside the store (a gauge, a
//! periodic log line, an optional anchor file) and [`Keyring::verify_audit`] checks the trail.
//!
//! The chain key is the DEK of the reserved scope [`AUDIT_SCOPE`], created on first need under
//! the primary KEK and re-wrapped by KEK rotation like every DEK; the MAC key is an HKDF
//! subkey of it ([`ChainKey`]).

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_core::{KeyVersion, ScopeId};

use super::Keyring;
use crate::audit::{
    self, Anchor, AuditEvent, AuditFilter, AuditRecord, ChainKey, ChainKeyState, Verification,
};
use crate::error::{Error, Result};
use crate::store::{CreateOutcome, DekRecord, DekState};

/// The scope whose DEK keys the audit chain. Scope names starting with `coffer:` are Coffer's
/// own: the keyring's public API refuses them.
pub const AUDIT_SCOPE: &str = "coffer:audit";

/// The prefix of reserved scope names.
pub const RESERVED_PREFIX: &str = "coffer:";

/// The head is logged at INFO at most once per this many appends, or per minute.
const LOG_EVERY: u64 = 1000;
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// What this process last exported of the head.
#[derive(Default)]
pub(super) struct HeadExport {
    state: std::sync::Mutex<HeadState>,
}

#[derive(Default)]
struct HeadState {
    /// The highest id written to the anchor file by this process.
    anchored: i64,
    appends_since_log: u64,
    last_log: Option<Instant>,
}

impl Keyring {
    /// Refuses a reserved scope (`coffer:…`) in the public API.
    pub(super) fn refuse_reserved(scope: &ScopeId) -> Result<()> {
        if scope.as_str().starts_with(RESERVED_PREFIX) {
            return Err(Error::State(format!(
                "scope '{scope}' is reserved: names starting with '{RESERVED_PREFIX}' belong to \
                 Coffer itself (the audit chain key lives there); choose another scope name"
            )));
        }
        Ok(())
    }

    /// Appends an event to the audit trail (for operations made outside the keyring, such as
    /// `coffer keys init`).
    pub async fn record(&self, event: AuditEvent) -> Result<()> {
        self.audit(event).await
    }

    /// Makes sure this process can append audit records (the chain key opens, or is made)
    /// before an operation changes the store, so that a process lacking the KEK of the chain
    /// key is refused before the change rather than after it.
    pub(super) async fn audit_ready(&self) -> Result<()> {
        Box::pin(self.chain_key()).await.map(|_| ())
    }

    pub(super) async fn audit(&self, event: AuditEvent) -> Result<()> {
        // Boxed: opening the key unwraps a DEK, whose path may audit (never for this key).
        let key = Box::pin(self.chain_key()).await?;
        let rec = self.inner.store.append_audit(&event, Some(key)).await?;
        self.export_head(&rec);
        Ok(())
    }

    /// Appends `events` as one chained batch (one store round trip or a few).
    pub(super) async fn audit_batch(&self, events: &[AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let key = Box::pin(self.chain_key()).await?;
        if let Some(rec) = self.inner.store.append_audits(events, Some(key)).await? {
            self.export_head(&rec);
        }
        Ok(())
    }

    /// The store's chain key, created (under the primary KEK) if the store has none; opened
    /// once per process.
    pub(super) async fn chain_key(&self) -> Result<Arc<ChainKey>> {
        self.inner
            .chain
            .get_or_try_init(|| async {
                let scope = ScopeId::new(AUDIT_SCOPE)?;
                let rec = match self.inner.store.dek(&scope, KeyVersion(1)).await? {
                    Some(rec) => rec,
                    None => {
                        let (dek, new) = self.new_dek(&scope, KeyVersion(1)).await?;
                        match self.inner.store.create_scope(&new).await? {
                            CreateOutcome::Created(rec) => {
                                tracing::info!(
                                    kek = %rec.kek,
                                    "audit chain key created; records from now on are keyed"
                                );
                                return Ok(Arc::new(ChainKey::derive(&dek, rec.created_at_us)?));
                            }
                            CreateOutcome::Existing(rec) => rec,
                        }
                    }
                };
                Ok(Arc::new(self.open_chain_key(&rec).await?))
            })
            .await
            .cloned()
    }

    async fn open_chain_key(&self, rec: &DekRecord) -> Result<ChainKey> {
        let Some(wrapped) = rec
            .wrapped
            .as_deref()
            .filter(|_| rec.state != DekState::Destroyed)
        else {
            return Err(Error::State(format!(
                "the audit chain key (scope '{AUDIT_SCOPE}') was erased from the key store; the \
                 keyed audit records can no longer be checked (restore the key store from a backup)"
            )));
        };
        // Not counted in `kek_unwraps` (the data keys' KEK traffic): once per process, under
        // its own counter.
        let kek = self.inner.keks.get(&rec.kek)?;
        let ctx = crate::kek::WrapContext {
            store_id: &self.inner.store_id,
            scope: &rec.scope,
            version: rec.version,
            key_id: &rec.key_id,
        };
        let dek = kek.unwrap(wrapped, &ctx).await?;
        self.check_tag(rec, &dek).map_err(|_| Error::WrongKek {
            kek: rec.kek.to_string(),
        })?;
        metrics::counter!("coffer_audit_chain_key_opens_total").increment(1);
        Ok(ChainKey::derive(&dek, rec.created_at_us)?)
    }

    /// Reads the whole trail and checks it ([`audit::verify_trail`]) with the store's chain
    /// key; never writes. When the store has a chain key that this process cannot open (no KEK
    /// for it, a wrong one, the provider down), the records keyed with it come back unchecked
    /// ([`audit::Outcome::Unchecked`]) with the reason.
    pub async fn verify_audit(&self) -> Result<(Vec<AuditRecord>, Verification)> {
        let records = self.inner.store.audit(&AuditFilter::default()).await?;
        let scope = ScopeId::new(AUDIT_SCOPE)?;
        let opened;
        let state = match self.inner.chain.get() {
            Some(k) => ChainKeyState::Present(k.as_ref()),
            None => match self.inner.store.dek(&scope, KeyVersion(1)).await? {
                None => ChainKeyState::Absent,
                Some(rec) => match self.open_chain_key(&rec).await {
                    Ok(k) => {
                        opened = k;
                        ChainKeyState::Present(&opened)
                    }
                    Err(e) => ChainKeyState::Unavailable {
                        created_at_us: rec.created_at_us,
                        reason: e.to_string(),
                    },
                },
            },
        };
        let v = audit::verify_trail(&records, &state)?;
        Ok((records, v))
    }

    /// Exports the head after an append: the `coffer_audit_head_id` gauge, an INFO line now
    /// and then, and the anchor file when one is configured.
    fn export_head(&self, rec: &AuditRecord) {
        metrics::gauge!("coffer_audit_head_id").set(rec.id as f64);
        let Ok(mut st) = self.inner.head.state.lock() else {
            return;
        };
        st.appends_since_log += 1;
        let due = st.last_log.is_none_or(|t| t.elapsed() >= LOG_INTERVAL)
            || st.appends_since_log >= LOG_EVERY;
        if due {
            tracing::info!(
                audit_head_id = rec.id,
                audit_head_hash = %&hex::encode(rec.hash)[..16],
                "audit trail head"
            );
            st.appends_since_log = 0;
            st.last_log = Some(Instant::now());
        }
        if let Some(path) = &self.inner.config.audit_anchor_file
            && rec.id > st.anchored
        {
            let anchor = Anchor {
                id: rec.id,
                hash: rec.hash,
            };
            match write_anchor(path, &anchor) {
                Ok(()) => st.anchored = rec.id,
                Err(e) => {
                    metrics::counter!("coffer_audit_anchor_errors_total").increment(1);
                    tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "could not write the audit anchor file"
                    );
                }
            }
        }
    }
}

/// Replaces `path` with `anchor`'s line atomically: a 0600 temporary file beside it, synced,
/// then renamed over it.
pub fn write_anchor(path: &Path, anchor: &Anchor) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "anchor".to_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(anchor.to_line().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

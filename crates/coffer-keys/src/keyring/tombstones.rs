//! The tombstone ledger (`[audit] tombstone_file`, docs/KEYS.md §7.7): a file outside the key
//! store with one line per destroyed scope. Restoring a key-store backup taken before a destroy
//! brings the scope's wraps back; the ledger is how Coffer notices and destroys them again.
//!
//! A line is `v1 <destroyed-at-µs> <scope as hex> <mac as hex>`, the MAC being the audit chain
//! key's tombstone MAC over `store id ‖ destroyed-at ‖ scope` (docs/FORMAT.md, "Tombstone
//! ledger"): without a KEK nobody can add a line that makes Coffer destroy a scope, and a
//! ledger of another key store does not apply. Lines that do not verify are skipped and
//! counted, never acted on.
//!
//! When it is read: in full by [`Keyring::apply_tombstones`] (which `coffer keys restored` calls
//! after [`Keyring::mark_restored`]); at start-up only its newest line is checked, which is cheap
//! at any size and finds a store restored to before the latest destroy
//! ([`Keyring::check_tombstones_at_start`]).

use std::io::{BufRead as _, Write as _};
use std::path::Path;

use coffer_core::ScopeId;

use super::Keyring;
use crate::audit::Operation;
use crate::error::{Error, Result};

/// What reading the ledger found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TombstoneReport {
    /// Lines that verified.
    pub entries: u64,
    /// Scopes the store held alive that were destroyed again.
    pub reapplied: Vec<String>,
    /// Lines that did not parse or verify (skipped).
    pub rejected: u64,
}

/// One verified ledger line.
struct Entry {
    scope: ScopeId,
    destroyed_at_us: i64,
}

fn body(store_id: &[u8; 16], at: i64, scope: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + 8 + scope.len());
    b.extend_from_slice(store_id);
    b.extend_from_slice(&at.to_be_bytes());
    b.extend_from_slice(scope.as_bytes());
    b
}

impl Keyring {
    /// Appends `scope`'s tombstone (after its destroy committed). Written with `O_APPEND` and
    /// synced; the file is made 0600 if new.
    pub(super) async fn append_tombstone(&self, scope: &ScopeId, at: i64) -> Result<()> {
        let Some(path) = self.inner.config.tombstone_file.clone() else {
            return Ok(());
        };
        let key = Box::pin(self.chain_key()).await?;
        let mac = key.tombstone_mac(&body(&self.inner.store_id, at, scope.as_str()));
        let line = format!(
            "v1 {at} {} {}\n",
            hex::encode(scope.as_str()),
            hex::encode(mac)
        );
        let write = move || -> std::io::Result<()> {
            let mut opts = std::fs::OpenOptions::new();
            opts.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&path)?;
            f.write_all(line.as_bytes())?;
            f.sync_data()
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| Error::State(format!("writing the tombstone ledger: {e}")))?
            .map_err(|e| {
                Error::State(format!(
                    "scope '{scope}' was destroyed, but its line could not be appended to the \
                     tombstone ledger ({e}); fix the file's permissions and add it with \
                     `coffer keys destroy {scope} --yes` again, or a restore of an older key \
                     store would bring the scope back"
                ))
            })
    }

    /// Reads every line of the ledger and destroys again each listed scope that the store holds
    /// alive. Without a ledger configured, an empty report.
    pub async fn apply_tombstones(&self) -> Result<TombstoneReport> {
        let Some(path) = self.inner.config.tombstone_file.clone() else {
            return Ok(TombstoneReport::default());
        };
        let (entries, rejected) = self.read_ledger(&path, false).await?;
        let mut report = TombstoneReport {
            entries: entries.len() as u64,
            rejected,
            ..TombstoneReport::default()
        };
        for e in entries {
            if self.reapply(&e).await? {
                report.reapplied.push(e.scope.as_str().to_owned());
            }
        }
        if rejected > 0 {
            tracing::warn!(
                path = %path.display(),
                rejected,
                "tombstone ledger lines that do not verify under this key store's audit key were skipped"
            );
        }
        Ok(report)
    }

    /// At start-up: checks the ledger's newest line only. If the store holds that scope alive,
    /// the store was restored to before it, and the whole ledger is applied.
    pub async fn check_tombstones_at_start(&self) -> Result<TombstoneReport> {
        let Some(path) = self.inner.config.tombstone_file.clone() else {
            return Ok(TombstoneReport::default());
        };
        let (newest, _) = self.read_ledger(&path, true).await?;
        let Some(e) = newest.last() else {
            return Ok(TombstoneReport::default());
        };
        if !self.is_alive(&e.scope).await? {
            return Ok(TombstoneReport::default());
        }
        tracing::warn!(
            scope = %e.scope,
            "the key store holds a scope the tombstone ledger says was destroyed: it was restored \
             from an older copy; destroying every listed scope again"
        );
        self.apply_tombstones().await
    }

    /// The verified lines (only the last verified one when `last_only`), and how many were
    /// rejected. A missing file is an empty ledger.
    async fn read_ledger(&self, path: &Path, last_only: bool) -> Result<(Vec<Entry>, u64)> {
        // No file, or an empty one: nothing to check, and no need for the audit key.
        match std::fs::metadata(path) {
            Ok(m) if m.len() > 0 => {}
            Ok(_) => return Ok((Vec::new(), 0)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => {
                return Err(Error::State(format!(
                    "reading the tombstone ledger {}: {e}",
                    path.display()
                )));
            }
        }
        let key = Box::pin(self.chain_key()).await?;
        let store_id = self.inner.store_id;
        let path = path.to_owned();
        let read = move || -> std::io::Result<(Vec<Entry>, u64)> {
            let f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok((Vec::new(), 0));
                }
                Err(e) => return Err(e),
            };
            if last_only && let Some(e) = newest_in_tail(&f, &store_id, &key)? {
                return Ok((vec![e], 0));
            }
            let (mut out, mut rejected) = (Vec::new(), 0u64);
            for line in std::io::BufReader::new(f).lines() {
                let line = line?;
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match parse(line, &store_id, &key) {
                    Some(e) => {
                        if last_only {
                            out.clear();
                        }
                        out.push(e);
                    }
                    None => rejected += 1,
                }
            }
            Ok((out, rejected))
        };
        tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| Error::State(format!("reading the tombstone ledger: {e}")))?
            .map_err(|e| {
                Error::State(format!(
                    "reading the tombstone ledger: {e}; check the file \
                 named by [audit] tombstone_file"
                ))
            })
    }

    /// Whether the store holds `scope` and it is not destroyed.
    async fn is_alive(&self, scope: &ScopeId) -> Result<bool> {
        Ok(self
            .inner
            .store
            .scope(scope)
            .await?
            .is_some_and(|s| !s.is_destroyed()))
    }

    /// Destroys `e.scope` again if the store holds it alive; whether it did.
    async fn reapply(&self, e: &Entry) -> Result<bool> {
        if !self.is_alive(&e.scope).await? {
            return Ok(false);
        }
        let deks = self.inner.store.deks(&e.scope).await?;
        let n = self.inner.store.destroy_scope(&e.scope).await?;
        let versions: Vec<_> = deks.iter().map(|d| d.version).collect();
        self.forget(&e.scope, &versions).await;
        self.audit(
            self.event(Operation::Destroy)
                .scope(e.scope.as_str())
                .detail(format!(
                    "{n} key versions erased again from the tombstone ledger (destroyed at {} µs; \
                     the key store had been restored from an older copy)",
                    e.destroyed_at_us
                )),
        )
        .await?;
        Ok(true)
    }
}

/// How much of the ledger's end the start-up check reads (a few hundred lines): the newest
/// entry is found there without reading, or verifying, the millions before it.
const TAIL_BYTES: u64 = 64 * 1024;

/// The newest verified entry among the ledger's last [`TAIL_BYTES`], if any (the caller reads
/// the whole file when there is none, e.g. after a run of altered lines). Leaves `f` at its
/// start.
fn newest_in_tail(
    mut f: &std::fs::File,
    store_id: &[u8; 16],
    key: &crate::audit::ChainKey,
) -> std::io::Result<Option<Entry>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let len = f.metadata()?.len();
    let from = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut tail)?;
    f.seek(SeekFrom::Start(0))?;
    let text = String::from_utf8_lossy(&tail);
    // Starting mid-file, the first piece is part of a line: never parse it.
    let skip = usize::from(from > 0);
    Ok(text
        .lines()
        .skip(skip)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|l| parse(l, store_id, key)))
}

/// A line, if it parses and its MAC verifies.
fn parse(line: &str, store_id: &[u8; 16], key: &crate::audit::ChainKey) -> Option<Entry> {
    let mut parts = line.split_ascii_whitespace();
    if parts.next()? != "v1" {
        return None;
    }
    let at: i64 = parts.next()?.parse().ok()?;
    let scope = String::from_utf8(hex::decode(parts.next()?).ok()?).ok()?;
    let mac: [u8; 32] = hex::decode(parts.next()?).ok()?.try_into().ok()?;
    if parts.next().is_some() || !key.verify_tombstone(&body(store_id, at, &scope), &mac) {
        return None;
    }
    Some(Entry {
        scope: ScopeId::new(&scope).ok()?,
        destroyed_at_us: at,
    })
}

//! The audit trail: append-only, hash-chained with a secret key, and free of secrets.
//!
//! Each record's hash is `HMAC-SHA-256(chain key, previous hash ‖ canonical encoding of the
//! record)`, the record's fields encoded as tag‖length‖bytes components (docs/FORMAT.md §1). The
//! chain key ([`ChainKey`]) comes from a DEK the store keeps only wrapped under the KEKs, so
//! whoever can write the database but not use a KEK cannot recompute a hash: changing, removing,
//! inserting or reordering rows breaks the chain, which [`verify_trail`] (and
//! `coffer keys audit --verify`) finds. Records written before the store had a chain key keep
//! their unkeyed `SHA-256` hashes (another body label). The first record chains from 32 zero
//! bytes. Removing the newest records leaves a valid shorter chain: only an [`Anchor`] kept
//! outside the store finds that (docs/KEYS.md §4).

use std::fmt;
use std::str::FromStr;

pub use coffer_core::audit::ChainKey;
use coffer_core::digest::Sha256;
use coffer_core::encoding;

use crate::error::{Error, Result};

/// Length of a chain hash.
pub const HASH_LEN: usize = 32;

/// The hash the first record chains from.
pub const GENESIS: [u8; HASH_LEN] = [0; HASH_LEN];

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// The key store was initialised.
    Init,
    /// A KEK version was registered.
    KekRegister,
    /// A scope and its first DEK were created.
    Create,
    /// A new DEK version became active.
    Rotate,
    /// A DEK was re-wrapped under another KEK.
    Rewrap,
    /// A version changed state (e.g. decrypt-only → retired).
    StateChange,
    /// A scope was crypto-shredded.
    Destroy,
    /// A scope was crypto-shredded as part of a data subject's erasure (`coffer keys
    /// erase-subject`): one record per scope, naming the subject.
    Erase,
    /// A DEK was unwrapped by its KEK (a cache miss reaching the KEK provider).
    KekUnwrap,
    /// A request was refused (destroyed key, wrong tenant, wrong KEK).
    AccessDenied,
    /// A scope's keys were declared compromised: emergency rotation, caches flushed. Alert on it.
    Compromise,
    /// The key store was declared restored from a backup: epoch bumped, versions skipped ahead.
    Restore,
    /// Data was encrypted, decrypted or indexed through the service: one record per token,
    /// scope and minute, with its counts (failed decryptions included).
    DataAccess,
    /// An admin request through the service (create, assign, rotate, destroy), recorded with the
    /// admin token as actor beside the keyring's own record of the key change.
    AdminRequest,
}

impl Operation {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Init => "init",
            Operation::KekRegister => "kek-register",
            Operation::Create => "create",
            Operation::Rotate => "rotate",
            Operation::Rewrap => "rewrap",
            Operation::StateChange => "state-change",
            Operation::Destroy => "destroy",
            Operation::Erase => "erase",
            Operation::KekUnwrap => "kek-unwrap",
            Operation::AccessDenied => "access-denied",
            Operation::Compromise => "compromise",
            Operation::Restore => "restore",
            Operation::DataAccess => "data-access",
            Operation::AdminRequest => "admin-request",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "init" => Operation::Init,
            "kek-register" => Operation::KekRegister,
            "create" => Operation::Create,
            "rotate" => Operation::Rotate,
            "rewrap" => Operation::Rewrap,
            "state-change" => Operation::StateChange,
            "destroy" => Operation::Destroy,
            "erase" => Operation::Erase,
            "kek-unwrap" => Operation::KekUnwrap,
            "access-denied" => Operation::AccessDenied,
            "compromise" => Operation::Compromise,
            "restore" => Operation::Restore,
            "data-access" => Operation::DataAccess,
            "admin-request" => Operation::AdminRequest,
            other => {
                return Err(Error::store(format!(
                    "unknown audit operation '{}'",
                    other.escape_debug()
                )));
            }
        })
    }
}

/// An event to append. Never holds key material or plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who asked: an operator (`user@host`), a service token id, an application name.
    pub actor: String,
    /// What happened.
    pub operation: Operation,
    /// The scope, if any.
    pub scope: Option<String>,
    /// The DEK version, if any.
    pub version: Option<u32>,
    /// The KEK version involved, if any (`name/vN`).
    pub kek: Option<String>,
    /// Free text (counts, reasons), no secrets.
    pub detail: String,
}

impl AuditEvent {
    /// An event with no scope, version, KEK or detail.
    pub fn new(actor: impl Into<String>, operation: Operation) -> Self {
        AuditEvent {
            actor: actor.into(),
            operation,
            scope: None,
            version: None,
            kek: None,
            detail: String::new(),
        }
    }

    /// Sets the scope.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Sets the version.
    pub fn version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// Sets the KEK.
    pub fn kek(mut self, kek: impl Into<String>) -> Self {
        self.kek = Some(kek.into());
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// A stored event with its position, time and chain hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the trail (1, 2, …).
    pub id: i64,
    /// When (database clock, µs since the Unix epoch).
    pub at_us: i64,
    /// The event.
    pub event: AuditEvent,
    /// The previous record's hash.
    pub prev_hash: [u8; HASH_LEN],
    /// This record's hash.
    pub hash: [u8; HASH_LEN],
}

/// Which records to read.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only this scope.
    pub scope: Option<String>,
    /// Only records at or after this time (µs since the Unix epoch).
    pub since_us: Option<i64>,
    /// At most this many (the oldest first).
    pub limit: Option<u32>,
}

/// The body label of a record hashed without a key (written before the store had a chain key).
const UNKEYED_LABEL: &[u8] = b"coffer/v1/audit";
/// The body label of a record MACed with the chain key: differs from [`UNKEYED_LABEL`], so an
/// unkeyed hash never equals a keyed one over the same fields.
const KEYED_LABEL: &[u8] = b"coffer/v1/audit-keyed";

/// The canonical body of a record under `label`.
fn body(label: &[u8], id: i64, at_us: i64, event: &AuditEvent) -> Result<Vec<u8>> {
    let id = id.to_be_bytes();
    let at = at_us.to_be_bytes();
    let version = event.version.map(u32::to_be_bytes);
    // Absent optional fields are encoded as absent components (tag 0x00 marks "none"), so
    // `None` and `Some("")` hash differently.
    let opt = |v: Option<&[u8]>| -> (u8, Vec<u8>) {
        match v {
            Some(b) => (1, b.to_vec()),
            None => (0, Vec::new()),
        }
    };
    let (scope_tag, scope) = opt(event.scope.as_deref().map(str::as_bytes));
    let (version_tag, version) = opt(version.as_ref().map(|v| v.as_slice()));
    let (kek_tag, kek) = opt(event.kek.as_deref().map(str::as_bytes));
    Ok(encoding::encode(&[
        (0x01, label),
        (0x02, &id),
        (0x03, &at),
        (0x04, event.actor.as_bytes()),
        (0x05, event.operation.as_str().as_bytes()),
        (0x10 | scope_tag, &scope),
        (0x20 | version_tag, &version),
        (0x30 | kek_tag, &kek),
        (0x06, event.detail.as_bytes()),
    ])?)
}

/// The unkeyed chain hash of a record: `SHA-256(prev ‖ body)`. Only records written before the
/// store had a chain key are hashed this way.
pub fn chain_hash(
    prev: &[u8; HASH_LEN],
    id: i64,
    at_us: i64,
    event: &AuditEvent,
) -> Result<[u8; HASH_LEN]> {
    let body = body(UNKEYED_LABEL, id, at_us, event)?;
    let mut ctx = Sha256::new();
    ctx.update(prev);
    ctx.update(&body);
    Ok(ctx.finish())
}

/// The keyed chain hash of a record: `HMAC-SHA-256(chain key, prev ‖ body)`, with its own body
/// label.
pub fn keyed_hash(
    key: &ChainKey,
    prev: &[u8; HASH_LEN],
    id: i64,
    at_us: i64,
    event: &AuditEvent,
) -> Result<[u8; HASH_LEN]> {
    Ok(key.mac(prev, &body(KEYED_LABEL, id, at_us, event)?))
}

/// The hash a store writes for a new record: keyed when it is given the chain key.
pub fn record_hash(
    key: Option<&ChainKey>,
    prev: &[u8; HASH_LEN],
    id: i64,
    at_us: i64,
    event: &AuditEvent,
) -> Result<[u8; HASH_LEN]> {
    match key {
        Some(k) => keyed_hash(k, prev, id, at_us, event),
        None => chain_hash(prev, id, at_us, event),
    }
}

/// Where a chain breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    /// The first record whose hashes do not match (for a trail that lost all of its keyed
    /// records: the id after the last record).
    pub id: i64,
    /// Why.
    pub reason: &'static str,
}

/// What the verifier knows of the store's chain key.
#[derive(Debug)]
pub enum ChainKeyState<'a> {
    /// The store has no chain key: every record must be an unkeyed hash.
    Absent,
    /// The store's chain key, opened.
    Present(&'a ChainKey),
    /// The store has a chain key created at this time, but this process cannot open it.
    Unavailable {
        /// When the chain key was created (µs).
        created_at_us: i64,
        /// Why it cannot be opened (no secret in it).
        reason: String,
    },
}

impl ChainKeyState<'_> {
    fn created_at_us(&self) -> Option<i64> {
        match self {
            ChainKeyState::Absent => None,
            ChainKeyState::Present(k) => Some(k.created_at_us()),
            ChainKeyState::Unavailable { created_at_us, .. } => Some(*created_at_us),
        }
    }
}

/// The result of checking a whole trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// Records read.
    pub records: usize,
    /// Records verified as unkeyed hashes (written before the chain key existed).
    pub unkeyed: usize,
    /// Records verified with the chain key.
    pub keyed: usize,
    /// The last record checked: its id and hash (the head to anchor).
    pub head: Option<(i64, [u8; HASH_LEN])>,
    /// What was found.
    pub outcome: Outcome,
}

/// The verdict of [`verify_trail`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every record checks.
    Intact,
    /// The chain is broken at this record.
    Broken(ChainBreak),
    /// The records before `from_id` check; from `from_id` on they are keyed with a chain key
    /// this process cannot open, so they were not checked.
    Unchecked {
        /// The first record not checked.
        from_id: i64,
        /// Why the key could not be opened.
        reason: String,
    },
}

/// Checks a complete trail read from the start (no filter). Every record must chain from the
/// one before with consecutive ids and carry a hash that recomputes: an unkeyed SHA-256 hash
/// for the records written before the store had a chain key, the chain key's HMAC for all
/// others. A record hashed without the key is refused once a keyed record came before it or
/// when it is dated at or after the chain key's creation, and a store that has a chain key
/// must hold at least one keyed record: so the tail cannot be rewritten with unkeyed hashes.
pub fn verify_trail(records: &[AuditRecord], key: &ChainKeyState<'_>) -> Result<Verification> {
    let mut v = Verification {
        records: records.len(),
        unkeyed: 0,
        keyed: 0,
        head: None,
        outcome: Outcome::Intact,
    };
    let broken = |mut v: Verification, id, reason| {
        v.outcome = Outcome::Broken(ChainBreak { id, reason });
        Ok(v)
    };
    let created = key.created_at_us();
    let mut prev = GENESIS;
    let mut expected_id = None;
    let mut seen_keyed = false;
    for r in records {
        if let Some(e) = expected_id
            && r.id != e
        {
            return broken(v, r.id, "a record is missing before this one");
        }
        if r.prev_hash != prev {
            return broken(v, r.id, "does not chain from the record before it");
        }
        if chain_hash(&prev, r.id, r.at_us, &r.event)? == r.hash {
            if seen_keyed {
                return broken(
                    v,
                    r.id,
                    "hashed without the chain key after keyed records: the trail was rewritten from here",
                );
            }
            if created.is_some_and(|c| r.at_us > c) {
                return broken(
                    v,
                    r.id,
                    "hashed without the chain key although it is dated after the key was created:                      the trail was rewritten from here",
                );
            }
            v.unkeyed += 1;
        } else if created.is_some_and(|c| r.at_us < c) {
            // Keyed records are all written after the key was created: a record dated before
            // that is an unkeyed one whose contents changed, key or no key.
            return broken(v, r.id, "its contents were changed after it was written");
        } else {
            match key {
                ChainKeyState::Present(k) => {
                    if keyed_hash(k, &prev, r.id, r.at_us, &r.event)? != r.hash {
                        return broken(v, r.id, "its contents were changed after it was written");
                    }
                    seen_keyed = true;
                    v.keyed += 1;
                }
                ChainKeyState::Absent => {
                    return broken(
                        v,
                        r.id,
                        "its contents were changed after it was written (or it was keyed with a                          chain key that is no longer in the store)",
                    );
                }
                ChainKeyState::Unavailable { reason, .. } => {
                    v.outcome = Outcome::Unchecked {
                        from_id: r.id,
                        reason: reason.clone(),
                    };
                    return Ok(v);
                }
            }
        }
        prev = r.hash;
        v.head = Some((r.id, r.hash));
        expected_id = Some(r.id + 1);
    }
    if created.is_some() && !seen_keyed {
        let next = records.last().map_or(1, |r| r.id + 1);
        return broken(
            v,
            next,
            "the store has an audit chain key but no keyed record: keyed records were removed              or rewritten (or the key was made by an append that then failed; the next append              writes one)",
        );
    }
    Ok(v)
}

/// Checks a complete trail of a store that has no chain key (every record unkeyed): the first
/// break, if any. [`verify_trail`] checks keyed trails.
pub fn verify_chain(records: &[AuditRecord]) -> Result<Option<ChainBreak>> {
    Ok(
        match verify_trail(records, &ChainKeyState::Absent)?.outcome {
            Outcome::Broken(b) => Some(b),
            Outcome::Intact | Outcome::Unchecked { .. } => None,
        },
    )
}

/// A head recorded outside the store (`id hash-hex`): the trail must still hold record `id`
/// with that hash. Records after it are fine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// The record id.
    pub id: i64,
    /// Its hash.
    pub hash: [u8; HASH_LEN],
}

impl Anchor {
    /// Parses `ID HASH`, `ID:HASH` (hash in hex); surrounding white space is ignored.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::config(
                "an audit anchor is `ID HASH` or `ID:HASH` (a record id and its 64 hex digit hash, \
                 as the anchor file holds)",
            )
        };
        let t = text.trim();
        let (id, hash) = t
            .split_once(|c: char| c == ':' || c.is_whitespace())
            .ok_or_else(bad)?;
        let id: i64 = id.trim().parse().map_err(|_| bad())?;
        let bytes = hex::decode(hash.trim()).map_err(|_| bad())?;
        let hash: [u8; HASH_LEN] = bytes.try_into().map_err(|_| bad())?;
        if id < 1 {
            return Err(bad());
        }
        Ok(Anchor { id, hash })
    }

    /// The anchor file's text: `id hash-hex` and a newline.
    pub fn to_line(&self) -> String {
        format!("{} {}\n", self.id, hex::encode(self.hash))
    }

    /// Checks `records` (the whole trail, oldest first) against this anchor: `None` if the
    /// anchored record is there with this hash, else what is wrong.
    pub fn check(&self, records: &[AuditRecord]) -> Option<String> {
        match records.iter().find(|r| r.id == self.id) {
            None => Some(format!(
                "record {} named by the anchor is missing (the trail ends at {}): records were \
                 removed from the end, or the store was restored from an older copy",
                self.id,
                records
                    .last()
                    .map_or_else(|| "nothing".to_owned(), |r| r.id.to_string())
            )),
            Some(r) if r.hash != self.hash => Some(format!(
                "record {} differs from the anchor (hash {}…, anchored {}…): the trail was \
                 rewritten up to there, or the store is another copy",
                self.id,
                &hex::encode(r.hash)[..12],
                &hex::encode(self.hash)[..12]
            )),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(events: &[AuditEvent]) -> Vec<AuditRecord> {
        let mut prev = GENESIS;
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let id = i as i64 + 1;
            let at = 1_000 + id;
            let hash = chain_hash(&prev, id, at, e).unwrap();
            out.push(AuditRecord {
                id,
                at_us: at,
                event: e.clone(),
                prev_hash: prev,
                hash,
            });
            prev = hash;
        }
        out
    }

    fn sample() -> Vec<AuditEvent> {
        vec![
            AuditEvent::new("ops@host", Operation::Init),
            AuditEvent::new("ops@host", Operation::Create)
                .scope("tenant:acme")
                .version(1)
                .kek("main/v1"),
            AuditEvent::new("ops@host", Operation::Rotate)
                .scope("tenant:acme")
                .version(2),
            AuditEvent::new("ops@host", Operation::Destroy)
                .scope("tenant:acme")
                .detail("2 versions"),
        ]
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify_chain(&chain(&sample())).unwrap(), None);
    }

    #[test]
    fn every_change_breaks_the_chain_at_that_record() {
        let good = chain(&sample());
        for i in 0..good.len() {
            type Edit = Box<dyn Fn(&mut AuditRecord)>;
            let edits: Vec<Edit> = vec![
                Box::new(|r| r.event.actor.push('x')),
                Box::new(|r| r.event.detail.push('x')),
                Box::new(|r| r.event.scope = Some("tenant:other".into())),
                Box::new(|r| r.event.version = Some(99)),
                Box::new(|r| r.event.kek = None),
                Box::new(|r| r.at_us += 1),
                Box::new(|r| r.event.operation = Operation::KekUnwrap),
            ];
            for edit in &edits {
                let mut bad = good.clone();
                edit(&mut bad[i]);
                if bad[i] == good[i] {
                    continue;
                }
                let broken = verify_chain(&bad).unwrap().expect("break found");
                assert_eq!(broken.id, good[i].id);
            }
        }
    }

    #[test]
    fn removing_or_reordering_records_is_found() {
        let good = chain(&sample());
        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(verify_chain(&removed).unwrap().unwrap().id, 3);
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        assert!(verify_chain(&swapped).unwrap().is_some());
    }

    #[test]
    fn none_and_empty_hash_differently() {
        let a = AuditEvent::new("x", Operation::Init);
        let b = a.clone().scope("");
        assert_ne!(
            chain_hash(&GENESIS, 1, 1, &a).unwrap(),
            chain_hash(&GENESIS, 1, 1, &b).unwrap()
        );
    }
}

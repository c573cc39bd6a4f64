//! The audit trail: append-only, hash-chained, and free of secrets.
//!
//! Each record's hash is `SHA-256(previous hash ‖ canonical encoding of the record)`, the record's
//! fields encoded as tag‖length‖bytes components (docs/FORMAT.md §1). Changing, removing or
//! reordering any row breaks every hash after it, which [`verify_chain`] (and
//! `coffer keys audit --verify`) finds. The first record chains from 32 zero bytes.

use std::fmt;
use std::str::FromStr;

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

/// The chain hash of a record.
pub fn chain_hash(
    prev: &[u8; HASH_LEN],
    id: i64,
    at_us: i64,
    event: &AuditEvent,
) -> Result<[u8; HASH_LEN]> {
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
    let body = encoding::encode(&[
        (0x01, b"coffer/v1/audit".as_slice()),
        (0x02, &id),
        (0x03, &at),
        (0x04, event.actor.as_bytes()),
        (0x05, event.operation.as_str().as_bytes()),
        (0x10 | scope_tag, &scope),
        (0x20 | version_tag, &version),
        (0x30 | kek_tag, &kek),
        (0x06, event.detail.as_bytes()),
    ])?;
    let mut ctx = Sha256::new();
    ctx.update(prev);
    ctx.update(&body);
    Ok(ctx.finish())
}

/// Where a chain breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    /// The first record whose hashes do not match.
    pub id: i64,
    /// Why.
    pub reason: &'static str,
}

/// Checks a complete trail read from the start (no filter): every record chains from the one
/// before, and each hash is recomputed. Returns the first break, if any.
pub fn verify_chain(records: &[AuditRecord]) -> Result<Option<ChainBreak>> {
    let mut prev = GENESIS;
    let mut expected_id = None;
    for r in records {
        if let Some(e) = expected_id
            && r.id != e
        {
            return Ok(Some(ChainBreak {
                id: r.id,
                reason: "a record is missing before this one",
            }));
        }
        if r.prev_hash != prev {
            return Ok(Some(ChainBreak {
                id: r.id,
                reason: "does not chain from the record before it",
            }));
        }
        if chain_hash(&prev, r.id, r.at_us, &r.event)? != r.hash {
            return Ok(Some(ChainBreak {
                id: r.id,
                reason: "its contents were changed after it was written",
            }));
        }
        prev = r.hash;
        expected_id = Some(r.id + 1);
    }
    Ok(None)
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

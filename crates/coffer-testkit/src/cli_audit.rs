//! Forged audit trails for the audit tests of the CLI (`coffer keys audit --verify`): what an
//! attacker with write access to the key store, and without the KEK, can compute.

use coffer_keys::audit::{self, AuditRecord};

/// `records` with `records[from..]` re-hashed with plain SHA-256 (the unkeyed chain) and their
/// ids renumbered so they stay consecutive; the records before `from` are kept as they are.
pub fn rehash_unkeyed(mut records: Vec<AuditRecord>, from: usize) -> Vec<AuditRecord> {
    let mut prev = match from.checked_sub(1) {
        Some(last_kept) => records[last_kept].hash,
        None => audit::GENESIS,
    };
    for (i, r) in records.iter_mut().enumerate().skip(from) {
        r.id = i as i64 + 1;
        r.prev_hash = prev;
        r.hash = audit::chain_hash(&prev, r.id, r.at_us, &r.event)
            .expect("hashing an audit event failed");
        prev = r.hash;
    }
    records
}

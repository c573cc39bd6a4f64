//! What an attacker with write access to the key store, but no KEK, can do to the audit trail:
//! the records the tamper-evidence tests write back behind the store's back.

use coffer_keys::AuditRecord;
use coffer_keys::audit;

/// `records[from..]` re-hashed with plain SHA-256 (all an attacker without the KEK can compute),
/// ids renumbered so that they stay consecutive.
pub fn rehash_unkeyed(mut records: Vec<AuditRecord>, from: usize) -> Vec<AuditRecord> {
    let mut prev = if from == 0 {
        audit::GENESIS
    } else {
        records[from - 1].hash
    };
    for (i, r) in records.iter_mut().enumerate().skip(from) {
        r.id = i64::try_from(i).expect("fewer records than i64::MAX") + 1;
        r.prev_hash = prev;
        r.hash = audit::chain_hash(&prev, r.id, r.at_us, &r.event).expect("a record hashes");
        prev = r.hash;
    }
    records
}

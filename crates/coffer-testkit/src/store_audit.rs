//! The audit table of a SQL key store (SQLite or PostgreSQL, through `sqlx::AnyPool`) edited
//! behind the store's back, as an attacker with write access to the database would: what the
//! tamper-evidence tests of coffer-store and the CLI do to a trail before they verify it.

use coffer_keys::AuditRecord;
use sqlx::AnyPool;

/// Rewrites the detail of audit record `id`, without fixing the hash chain.
pub async fn tamper_audit_detail(pool: &AnyPool, id: i64, detail: &str) {
    let done = sqlx::query("UPDATE coffer_audit SET detail = $1 WHERE id = $2")
        .bind(detail.to_owned())
        .bind(id)
        .execute(pool)
        .await
        .expect("the audit table takes the update");
    assert_eq!(done.rows_affected(), 1, "no audit record {id}");
}

/// Replaces the whole audit trail with `records`, rows and hashes as given.
pub async fn rewrite_audit(pool: &AnyPool, records: &[AuditRecord]) {
    let mut tx = pool.begin().await.expect("a transaction");
    sqlx::query("DELETE FROM coffer_audit")
        .execute(&mut *tx)
        .await
        .expect("the audit table empties");
    for r in records {
        let e = &r.event;
        sqlx::query(
            "INSERT INTO coffer_audit (id, at_us, actor, operation, scope, version, kek, \
             detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(r.id)
        .bind(r.at_us)
        .bind(e.actor.clone())
        .bind(e.operation.as_str())
        .bind(e.scope.clone())
        .bind(e.version.map(i64::from))
        .bind(e.kek.clone())
        .bind(e.detail.clone())
        .bind(r.prev_hash.to_vec())
        .bind(r.hash.to_vec())
        .execute(&mut *tx)
        .await
        .expect("the audit table takes the row");
    }
    tx.commit().await.expect("the rewrite commits");
}

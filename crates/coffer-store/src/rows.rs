//! Rows and statements of [`SqlStore`](crate::SqlStore): decoding rows into records, and the
//! multi-row statements that bulk creation and the audit trail share.

use std::str::FromStr;

use coffer_core::{KeyVersion, ScopeId};
use coffer_keys::audit::{self, AuditEvent, AuditRecord};
use coffer_keys::{BulkCreate, DekRecord, DekState, Error, KekId, NewDek, Result, ScopeRecord};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::store::Backend;

/// Rows per multi-row statement of a bulk scope creation: 1 parameter per scope row, 7 per DEK
/// row, 10 per audit row (SQLite allows 32 766 parameters a statement, PostgreSQL 65 535).
const SCOPE_CHUNK: usize = 5_000;
const DEK_CHUNK: usize = 4_000;
const AUDIT_CHUNK: usize = 3_000;

pub(crate) const DEK_COLUMNS: &str = "scope, version, key_id, state, wrapped, kek_name, kek_version, \
     wrap_algorithm, key_check, encryptions, created_at_us, state_changed_at_us";

pub(crate) fn to_u32(v: i64, what: &str) -> Result<u32, sqlx::Error> {
    u32::try_from(v).map_err(|_| sqlx::Error::Decode(format!("{what} out of range").into()))
}

pub(crate) fn decode_dek(row: &AnyRow) -> Result<DekRecord, sqlx::Error> {
    let bad = |e: Error| sqlx::Error::Decode(e.to_string().into());
    let scope: String = row.try_get("scope")?;
    let key_id: Vec<u8> = row.try_get("key_id")?;
    let state: String = row.try_get("state")?;
    let kek_name: String = row.try_get("kek_name")?;
    Ok(DekRecord {
        scope: ScopeId::new(scope).map_err(|e| bad(e.into()))?,
        version: KeyVersion(to_u32(row.try_get("version")?, "version")?),
        key_id: key_id
            .try_into()
            .map_err(|_| sqlx::Error::Decode("key id is not 16 bytes".into()))?,
        state: DekState::from_str(&state).map_err(bad)?,
        wrapped: row.try_get("wrapped")?,
        kek: KekId::new(
            kek_name,
            to_u32(row.try_get("kek_version")?, "KEK version")?,
        )
        .map_err(bad)?,
        wrap_algorithm: row.try_get("wrap_algorithm")?,
        check: row.try_get("key_check")?,
        encryptions: u64::try_from(row.try_get::<i64, _>("encryptions")?)
            .map_err(|_| sqlx::Error::Decode("negative counter".into()))?,
        created_at_us: row.try_get("created_at_us")?,
        state_changed_at_us: row.try_get("state_changed_at_us")?,
    })
}

pub(crate) fn decode_scope(row: &AnyRow) -> Result<ScopeRecord, sqlx::Error> {
    let scope: String = row.try_get("scope")?;
    Ok(ScopeRecord {
        scope: ScopeId::new(scope).map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
        created_at_us: row.try_get("created_at_us")?,
        destroyed_at_us: row.try_get("destroyed_at_us")?,
    })
}

pub(crate) fn decode_audit(row: &AnyRow) -> Result<AuditRecord, sqlx::Error> {
    let hash = |name: &str| -> Result<[u8; 32], sqlx::Error> {
        let v: Vec<u8> = row.try_get(name)?;
        v.try_into()
            .map_err(|_| sqlx::Error::Decode("audit hash is not 32 bytes".into()))
    };
    let op: String = row.try_get("operation")?;
    let version: Option<i64> = row.try_get("version")?;
    Ok(AuditRecord {
        id: row.try_get("id")?,
        at_us: row.try_get("at_us")?,
        event: AuditEvent {
            actor: row.try_get("actor")?,
            operation: op
                .parse()
                .map_err(|e: Error| sqlx::Error::Decode(e.to_string().into()))?,
            scope: row.try_get("scope")?,
            version: version.map(|v| to_u32(v, "version")).transpose()?,
            kek: row.try_get("kek")?,
            detail: row.try_get("detail")?,
        },
        prev_hash: hash("prev_hash")?,
        hash: hash("hash")?,
    })
}

/// The query for a scope's active version (in a transaction or on the pool).
pub(crate) fn active_sql() -> String {
    format!("SELECT {DEK_COLUMNS} FROM coffer_deks WHERE scope = $1 AND state = 'active'")
}

pub(crate) async fn active_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    scope: &str,
) -> Result<Option<DekRecord>, sqlx::Error> {
    let row = sqlx::query(&active_sql())
        .bind(scope)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(decode_dek).transpose()
}

pub(crate) fn insert_dek_sql(now: &str) -> String {
    format!(
        "INSERT INTO coffer_deks ({DEK_COLUMNS}) \
         VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8, 0, {now}, {now}) RETURNING {DEK_COLUMNS}"
    )
}

pub(crate) async fn insert_dek(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    now: &str,
    new: &NewDek,
) -> Result<DekRecord, sqlx::Error> {
    let row = sqlx::query(&insert_dek_sql(now))
        .bind(new.scope.as_str().to_owned())
        .bind(i64::from(new.version.0))
        .bind(new.key_id.to_vec())
        .bind(new.wrapped.clone())
        .bind(new.kek.name().to_owned())
        .bind(i64::from(new.kek.version()))
        .bind(new.wrap_algorithm.clone())
        .bind(new.check.clone())
        .fetch_one(&mut **tx)
        .await?;
    decode_dek(&row)
}

/// `($1, $2, <tail>), ($3, $4, <tail>), …`: `rows` groups of `per` parameters, each group
/// followed by `tail` (SQL with no parameters) inside its parentheses. On SQLite the parameters
/// are anonymous `?`, numbered in the order they appear (the order these statements bind
/// them): SQLite looks every numbered or named parameter up among those it has seen, so a
/// statement of n of them takes time in n² to prepare (4 000 rows of 8 took 1.2 s with `?NNN`
/// and 16 ms with `?`; `$N` was slower still), which made bulk creation CPU-bound on SQLite.
pub(crate) fn placeholders(backend: Backend, rows: usize, per: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(rows * (per * 7 + tail.len() + 4));
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for p in 0..per {
            if p > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(r * per + p + 1).to_string());
                }
            }
        }
        sql.push_str(tail);
        sql.push(')');
    }
    sql
}

/// Inserts a batch of new scopes and their first DEKs in the open transaction: the outcome of
/// each, in order (see [`KeyStore::create_scopes`]).
pub(crate) async fn create_scopes_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    firsts: &[NewDek],
) -> Result<Vec<BulkCreate>, sqlx::Error> {
    use std::collections::HashMap;
    let now = backend.now();
    let mut created: HashMap<String, i64> = HashMap::with_capacity(firsts.len());
    for chunk in firsts.chunks(SCOPE_CHUNK) {
        let sql = format!(
            "INSERT INTO coffer_scopes (scope, created_at_us) VALUES {} \
             ON CONFLICT (scope) DO NOTHING RETURNING scope, created_at_us",
            placeholders(backend, chunk.len(), 1, &format!(", {now}"))
        );
        let mut q = sqlx::query(&sql);
        for f in chunk {
            q = q.bind(f.scope.as_str().to_owned());
        }
        for row in q.fetch_all(&mut **tx).await? {
            created.insert(row.try_get("scope")?, row.try_get("created_at_us")?);
        }
    }
    let new: Vec<&NewDek> = firsts
        .iter()
        .filter(|f| created.contains_key(f.scope.as_str()))
        .collect();
    for chunk in new.chunks(DEK_CHUNK) {
        let sql = format!(
            "INSERT INTO coffer_deks (scope, version, key_id, wrapped, kek_name, kek_version, \
             wrap_algorithm, key_check, state, encryptions, created_at_us, state_changed_at_us) \
             VALUES {}",
            placeholders(
                backend,
                chunk.len(),
                8,
                &format!(", 'active', 0, {now}, {now}")
            )
        );
        let mut q = sqlx::query(&sql);
        for f in chunk {
            q = q
                .bind(f.scope.as_str().to_owned())
                .bind(i64::from(f.version.0))
                .bind(f.key_id.to_vec())
                .bind(f.wrapped.clone())
                .bind(f.kek.name().to_owned())
                .bind(i64::from(f.kek.version()))
                .bind(f.wrap_algorithm.clone())
                .bind(f.check.clone());
        }
        q.execute(&mut **tx).await?;
    }
    // The scopes not inserted exist: alive, or tombstones.
    let others: Vec<&str> = firsts
        .iter()
        .map(|f| f.scope.as_str())
        .filter(|s| !created.contains_key(*s))
        .collect();
    let mut destroyed: HashMap<String, i64> = HashMap::new();
    for chunk in others.chunks(SCOPE_CHUNK) {
        let sql = format!(
            "SELECT scope, destroyed_at_us FROM coffer_scopes \
             WHERE destroyed_at_us IS NOT NULL AND scope IN {}",
            placeholders(backend, 1, chunk.len(), "")
        );
        let mut q = sqlx::query(&sql);
        for s in chunk {
            q = q.bind((*s).to_owned());
        }
        for row in q.fetch_all(&mut **tx).await? {
            destroyed.insert(row.try_get("scope")?, row.try_get("destroyed_at_us")?);
        }
    }
    Ok(firsts
        .iter()
        .map(|f| {
            let s = f.scope.as_str();
            if let Some(&created_at_us) = created.get(s) {
                BulkCreate::Created { created_at_us }
            } else if let Some(&destroyed_at_us) = destroyed.get(s) {
                BulkCreate::Destroyed { destroyed_at_us }
            } else {
                BulkCreate::Exists
            }
        })
        .collect())
}

/// The last audit record's id and hash (the genesis hash when there is none) and the database
/// clock, read in the open transaction.
pub(crate) async fn audit_head_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    now: &str,
) -> Result<(i64, [u8; 32], i64), sqlx::Error> {
    let sql = format!(
        "SELECT {now} AS now_us, \
         (SELECT id FROM coffer_audit ORDER BY id DESC LIMIT 1) AS last_id, \
         (SELECT hash FROM coffer_audit ORDER BY id DESC LIMIT 1) AS last_hash"
    );
    let row = sqlx::query(&sql).fetch_one(&mut **tx).await?;
    let at_us: i64 = row.try_get("now_us")?;
    let last_id: Option<i64> = row.try_get("last_id")?;
    let last_hash: Option<Vec<u8>> = row.try_get("last_hash")?;
    let prev: [u8; 32] = match last_hash {
        None => audit::GENESIS,
        Some(h) => h
            .try_into()
            .map_err(|_| sqlx::Error::Decode("audit hash is not 32 bytes".into()))?,
    };
    Ok((last_id.unwrap_or(0), prev, at_us))
}

/// Inserts chained audit records in multi-row statements.
pub(crate) async fn insert_audits_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    records: &[AuditRecord],
) -> Result<(), sqlx::Error> {
    for chunk in records.chunks(AUDIT_CHUNK) {
        let sql = format!(
            "INSERT INTO coffer_audit (id, at_us, actor, operation, scope, version, kek, detail, \
             prev_hash, hash) VALUES {}",
            placeholders(backend, chunk.len(), 10, "")
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            let e = &r.event;
            q = q
                .bind(r.id)
                .bind(r.at_us)
                .bind(e.actor.clone())
                .bind(e.operation.as_str())
                .bind(e.scope.clone())
                .bind(e.version.map(i64::from))
                .bind(e.kek.clone())
                .bind(e.detail.clone())
                .bind(r.prev_hash.to_vec())
                .bind(r.hash.to_vec());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

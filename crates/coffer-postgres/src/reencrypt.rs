//! The re-encryption job: moves rows from old DEK versions to the active one, and plaintext
//! columns into encrypted ones, in batches locked with `FOR UPDATE SKIP LOCKED`.
//!
//! Every property the job needs lives in the rows themselves: a row is pending while its
//! version column is NULL (not migrated yet) or below the active version. So the job is
//! idempotent (a done row is never selected again), resumable (a killed worker's open batch
//! rolls back; a rerun picks up the rest) and safe to run on many machines at once (a row
//! locked by one worker is skipped by the others). Application writes to a locked row wait
//! for the batch to commit and then apply on top, so none is lost.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_core::field::text;
use coffer_core::{Header, KeyVersion, Nulls, ValueType};
use coffer_keys::DekState;
use futures_util::future::try_join_all;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row as _};

use crate::columns::{Columns, index_value};
use crate::error::{Error, Result};
use crate::schema::{Column, Storage};
use crate::sealed::IndexValue;
use crate::value::canonical_json;

/// Job settings.
#[derive(Clone, Debug)]
pub struct ReencryptOptions {
    /// Rows per batch (one transaction each; default 1 000).
    pub batch_size: u32,
    /// At most this many rows per second per worker (`None`: as fast as possible).
    pub rate: Option<f64>,
    /// Set each migrated plaintext source column to NULL in the same UPDATE.
    pub clear_plaintext: bool,
    /// Stop after this many rows (for a canary run); `None`: until no row is pending.
    pub max_rows: Option<u64>,
    /// How long a worker waits for rows other transactions hold locked before giving up
    /// (default 60 s).
    pub locked_wait: Duration,
}

impl Default for ReencryptOptions {
    fn default() -> Self {
        ReencryptOptions {
            batch_size: 1000,
            rate: None,
            clear_plaintext: false,
            max_rows: None,
            locked_wait: Duration::from_secs(60),
        }
    }
}

/// What one batch did.
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchReport {
    /// Rows rewritten.
    pub rows: u64,
    /// Of which filled from a plaintext column.
    pub migrated: u64,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// Rows rewritten.
    pub rows: u64,
    /// Of which filled from a plaintext column.
    pub migrated: u64,
    /// Batches committed.
    pub batches: u64,
    /// The version rows were moved to.
    pub active: Option<KeyVersion>,
    /// Rows still pending when the run ended (version column NULL or below the active version
    /// as the key store has it then): 0 unless `max_rows` stopped it first.
    pub remaining: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Where a table's data stands: how many values each key version sealed (read from the
/// ciphertext headers, not the version column), and what is left to migrate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Encrypted values per DEK version, over every encrypted column.
    pub values_by_version: BTreeMap<u32, u64>,
    /// Rows per value of the version column (`None`: NULL, not migrated yet).
    pub rows_by_version_column: BTreeMap<Option<i32>, u64>,
    /// Values still only in a plaintext source column.
    pub plaintext_left: u64,
    /// Values in an encrypted TEXT column that are not Coffer ciphertexts.
    pub not_ciphertext: u64,
}

impl Census {
    /// Versions below `active` that still seal a value.
    pub fn old_versions(&self, active: KeyVersion) -> Vec<KeyVersion> {
        self.values_by_version
            .iter()
            .filter(|(v, n)| **v < active.0 && **n > 0)
            .map(|(v, _)| KeyVersion(*v))
            .collect()
    }
}

/// The re-encryption job for one table. Clone it to run several workers.
#[derive(Clone, Debug)]
pub struct Reencryptor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cols: Columns,
    pool: PgPool,
    opts: ReencryptOptions,
    row_type: tokio::sync::OnceCell<String>,
}

struct Statements {
    select_first: String,
    select_after: String,
    update: String,
}

impl Reencryptor {
    /// A job for `cols`'s table on `pool`.
    pub fn new(cols: Columns, pool: PgPool, opts: ReencryptOptions) -> Self {
        Reencryptor {
            inner: Arc::new(Inner {
                cols,
                pool,
                opts,
                row_type: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// The table's columns.
    pub fn columns(&self) -> &Columns {
        &self.inner.cols
    }

    fn table_name(&self) -> &str {
        self.inner.cols.table().name()
    }

    /// The SQL type of the row-id column (to compare keyset cursors in its own order).
    async fn row_type(&self) -> Result<&str> {
        let t = &self.inner.cols.table().inner;
        self.inner
            .row_type
            .get_or_try_init(|| async {
                let ty: Option<String> = sqlx::query_scalar(
                    "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                     WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
                )
                .bind(&t.sql)
                .bind(&t.row_id)
                .fetch_optional(&self.inner.pool)
                .await?
                .flatten();
                ty.ok_or_else(|| {
                    Error::Schema(format!(
                        "table '{}' or its row-id column '{}' does not exist in this database",
                        t.name, t.row_id
                    ))
                })
            })
            .await
            .map(String::as_str)
    }

    fn statements(&self, row_type: &str) -> Statements {
        let t = &self.inner.cols.table().inner;
        // Every reference is qualified with the alias `t`: an unqualified ORDER BY would
        // sort by the text output column of the same name.
        let mut select = format!("SELECT t.{}::text AS coffer_row_id", t.row_id_sql);
        for c in &t.columns {
            let _ = write!(select, ", t.{}", c.sql);
            if let Some((_, src)) = &c.migrate_from {
                let _ = write!(
                    select,
                    ", {}",
                    source_expr(&format!("t.{src}"), c.value_type)
                );
            }
        }
        let _ = write!(
            select,
            " FROM {} AS t WHERE (t.{v} IS NULL OR t.{v} < $1)",
            t.sql,
            v = t.version_sql
        );
        let tail = format!(
            " ORDER BY t.{} LIMIT $2 FOR UPDATE OF t SKIP LOCKED",
            t.row_id_sql
        );
        let select_first = format!("{select}{tail}");
        let select_after = format!(
            "{select} AND t.{} > CAST($3 AS {row_type}){tail}",
            t.row_id_sql
        );

        let mut sets = Vec::new();
        let mut names = vec!["rid".to_owned()];
        let mut types = vec!["text[]".to_owned()];
        for (i, c) in t.columns.iter().enumerate() {
            sets.push(format!("{} = v.c{i}", c.sql));
            names.push(format!("c{i}"));
            types.push(match c.storage {
                Storage::Bytea => "bytea[]".into(),
                Storage::Text => "text[]".into(),
            });
            if self.inner.opts.clear_plaintext
                && let Some((_, src)) = &c.migrate_from
            {
                sets.push(format!("{src} = NULL"));
            }
        }
        for (i, ix) in t.indexes.iter().enumerate() {
            names.push(format!("i{i}"));
            if ix.prefix.is_some() {
                sets.push(format!("{} = v.i{i}::bytea[]", ix.sql));
                types.push("text[]".into());
            } else {
                sets.push(format!("{} = v.i{i}", ix.sql));
                types.push("bytea[]".into());
            }
        }
        sets.push(format!("{} = v.ver", t.version_sql));
        names.push("ver".into());
        types.push("int4[]".into());
        let params: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, ty)| format!("${}::{ty}", i + 1))
            .collect();
        let update = format!(
            "UPDATE {table} AS t SET {sets} FROM unnest({params}) AS v({names}) \
             WHERE t.{rid} = CAST(v.rid AS {row_type})",
            table = t.sql,
            sets = sets.join(", "),
            params = params.join(", "),
            names = names.join(", "),
            rid = t.row_id_sql,
        );
        Statements {
            select_first,
            select_after,
            update,
        }
    }

    /// The active version and how many rows are pending (version column NULL or older). The
    /// active version is read from the key store, not from a cached pointer: a rotation made
    /// a moment ago (in this process or another) counts.
    pub async fn pending(&self) -> Result<(KeyVersion, u64)> {
        let t = &self.inner.cols.table().inner;
        let active = self
            .inner
            .cols
            .keyring()
            .refresh_active(self.inner.cols.scope()?)
            .await?;
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE {v} IS NULL OR {v} < $1",
            t.sql,
            v = t.version_sql
        ))
        .bind(version_i32(active))
        .fetch_one(&self.inner.pool)
        .await?;
        let n = u64::try_from(n).unwrap_or(0);
        metrics::gauge!("coffer_reencrypt_pending_rows", "table" => t.name.clone()).set(n as f64);
        Ok((active, n))
    }

    /// Runs until no row is pending (or `max_rows`), calling `progress` after every batch
    /// with the rows done so far.
    pub async fn run(&self, mut progress: impl FnMut(u64) + Send) -> Result<RunReport> {
        let started = Instant::now();
        let row_type = self.row_type().await?.to_owned();
        let st = self.statements(&row_type);
        let mut report = RunReport::default();
        let mut idle_since: Option<Instant> = None;
        'sweeps: loop {
            // From the key store, not the cached pointer (which may predate a rotation for up
            // to `active_ttl`); the seals below then use it too.
            let active = self
                .inner
                .cols
                .keyring()
                .refresh_active(self.inner.cols.scope()?)
                .await?;
            report.active = Some(active);
            let mut cursor: Option<String> = None;
            let mut swept = 0u64;
            loop {
                let limit = match self.inner.opts.max_rows {
                    Some(max) if report.rows >= max => break 'sweeps,
                    Some(max) => (max - report.rows).min(u64::from(self.inner.opts.batch_size)),
                    None => u64::from(self.inner.opts.batch_size),
                };
                let (b, last) = self.batch(&st, active, cursor.as_deref(), limit).await?;
                if b.rows == 0 {
                    break;
                }
                cursor = last;
                swept += b.rows;
                report.rows += b.rows;
                report.migrated += b.migrated;
                report.batches += 1;
                progress(report.rows);
                if let Some(rate) = self.inner.opts.rate.filter(|r| *r > 0.0) {
                    let due = Duration::from_secs_f64(report.rows as f64 / rate);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            if swept > 0 {
                idle_since = None;
                continue;
            }
            // Nothing this worker could lock: done, or rows are held by other workers or
            // transactions (wait for them), or rows arrived under an older version.
            let (now_active, pending) = self.pending().await?;
            if pending == 0 {
                break;
            }
            if now_active != active {
                // Rotated while this sweep ran: sweep again under the new version.
                idle_since = None;
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.inner.opts.locked_wait {
                return Err(Error::Busy {
                    table: self.table_name().to_owned(),
                    rows: pending,
                    waited: self.inner.opts.locked_wait,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Done means no row left on an older version: counted, not assumed.
        report.remaining = self.pending().await?.1;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Runs `workers` copies of the job at once in this process (each its own transactions
    /// and cursor). Returns the combined report.
    pub async fn run_workers(
        &self,
        workers: usize,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<RunReport> {
        let started = Instant::now();
        let progress = Arc::new(progress);
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tasks = (0..workers.max(1)).map(|_| {
            let job = self.clone();
            let progress = Arc::clone(&progress);
            let done = Arc::clone(&done);
            async move {
                let mut last = 0;
                let r = job
                    .run(move |n| {
                        let total = done.fetch_add(n - last, std::sync::atomic::Ordering::Relaxed)
                            + (n - last);
                        last = n;
                        progress(total);
                    })
                    .await?;
                Ok::<_, Error>(r)
            }
        });
        let reports = try_join_all(tasks).await?;
        let mut total = RunReport {
            elapsed: started.elapsed(),
            ..RunReport::default()
        };
        for r in reports {
            total.rows += r.rows;
            total.migrated += r.migrated;
            total.batches += r.batches;
            total.active = total.active.max(r.active);
        }
        total.remaining = self.pending().await?.1;
        Ok(total)
    }

    /// One batch: lock up to `limit` pending rows after `cursor`, rewrite them, commit.
    async fn batch(
        &self,
        st: &Statements,
        active: KeyVersion,
        cursor: Option<&str>,
        limit: u64,
    ) -> Result<(BatchReport, Option<String>)> {
        let started = Instant::now();
        let t = &self.inner.cols.table().inner;
        let mut tx = self.inner.pool.begin().await?;
        let q = match cursor {
            None => sqlx::query(&st.select_first),
            Some(_) => sqlx::query(&st.select_after),
        }
        .bind(version_i32(active))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let q = match cursor {
            Some(c) => q.bind(c.to_owned()),
            None => q,
        };
        let rows = q.fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok((BatchReport::default(), None));
        }
        // The active keys of every index, once per batch.
        let mut index_keys = Vec::with_capacity(t.indexes.len());
        let mut lowest = active;
        for ix in &t.indexes {
            let (v, keys) = self.inner.cols.active_index_keys(ix).await?;
            lowest = lowest.min(v);
            index_keys.push(keys);
        }
        let n = rows.len();
        let mut rids = Vec::with_capacity(n);
        let mut cols_bytes: Vec<Vec<Option<Vec<u8>>>> =
            vec![Vec::with_capacity(n); t.columns.len()];
        let mut cols_text: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(n); t.columns.len()];
        let mut idx_single: Vec<Vec<Option<Vec<u8>>>> =
            vec![Vec::with_capacity(n); t.indexes.len()];
        let mut idx_tokens: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(n); t.indexes.len()];
        let mut versions = Vec::with_capacity(n);
        let mut report = BatchReport::default();
        for row in &rows {
            let (rid, values, row_version, migrated) = self.rewrite_row(row, active).await?;
            if migrated {
                report.migrated += 1;
            }
            // `row_version` already covers every value's header; the indexes used `lowest`.
            let row_version = row_version.min(lowest);
            for (i, (c, v)) in t.columns.iter().zip(&values).enumerate() {
                let sealed = &v.1;
                match c.storage {
                    Storage::Bytea => cols_bytes[i].push(sealed.clone()),
                    Storage::Text => cols_text[i].push(sealed.as_deref().map(text::encode)),
                }
            }
            for (i, ix) in t.indexes.iter().enumerate() {
                let parts: Vec<Option<&[u8]>> =
                    ix.columns.iter().map(|p| values[*p].0.as_deref()).collect();
                match index_value(ix, &index_keys[i], &parts)? {
                    IndexValue::Single(v) => idx_single[i].push(v),
                    IndexValue::Tokens(v) => idx_tokens[i].push(v.map(|t| array_literal(&t))),
                }
            }
            versions.push(version_i32(row_version));
            rids.push(rid);
        }
        let last = rids.last().cloned();
        let mut q = sqlx::query(&st.update).bind(rids);
        for (i, c) in t.columns.iter().enumerate() {
            q = match c.storage {
                Storage::Bytea => q.bind(std::mem::take(&mut cols_bytes[i])),
                Storage::Text => q.bind(std::mem::take(&mut cols_text[i])),
            };
        }
        for (i, ix) in t.indexes.iter().enumerate() {
            q = match ix.prefix {
                Some(_) => q.bind(std::mem::take(&mut idx_tokens[i])),
                None => q.bind(std::mem::take(&mut idx_single[i])),
            };
        }
        let updated = q.bind(versions).execute(&mut *tx).await?.rows_affected();
        if updated != n as u64 {
            return Err(Error::Row {
                table: t.name.clone(),
                row: format!("({n} rows)"),
                reason: format!("the batch update matched {updated} rows of {n}; rolled back"),
            });
        }
        tx.commit().await?;
        report.rows = n as u64;
        let table = t.name.clone();
        metrics::counter!("coffer_reencrypt_rows_total", "table" => table.clone())
            .increment(report.rows);
        metrics::counter!("coffer_reencrypt_migrated_rows_total", "table" => table.clone())
            .increment(report.migrated);
        metrics::counter!("coffer_reencrypt_batches_total", "table" => table.clone()).increment(1);
        metrics::histogram!("coffer_reencrypt_batch_seconds", "table" => table)
            .record(started.elapsed().as_secs_f64());
        Ok((report, last))
    }

    /// Decrypts (or reads from plaintext) every encrypted column of one row and seals it
    /// under the active version. Returns the row id, per column (plaintext, new ciphertext),
    /// the lowest version used and whether a plaintext was migrated.
    #[allow(clippy::type_complexity)]
    async fn rewrite_row(
        &self,
        row: &PgRow,
        active: KeyVersion,
    ) -> Result<(
        String,
        Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>,
        KeyVersion,
        bool,
    )> {
        let t = &self.inner.cols.table().inner;
        let rid: String = row.try_get(0)?;
        let row_err = |reason: String| Error::Row {
            table: t.name.clone(),
            row: rid.clone(),
            reason,
        };
        let mut at = 1;
        let mut out = Vec::with_capacity(t.columns.len());
        let mut migrated = false;
        let mut lowest = active;
        for c in &t.columns {
            let cipher =
                read_cipher(row, at, c).map_err(|e| row_err(format!("{}: {e}", c.name)))?;
            at += 1;
            let source = match &c.migrate_from {
                Some(_) => {
                    let s = read_source(row, at, c.value_type)
                        .map_err(|e| row_err(format!("{} (plaintext source): {e}", c.name)))?;
                    at += 1;
                    Some(s)
                }
                None => None,
            };
            // `plain`: None = NULL (SQL NULL or authenticated NULL).
            let (plain, keep) = match (cipher, source) {
                (Some(ct), _) => {
                    let plain = self
                        .inner
                        .cols
                        .open_bytes(c, &rid, &ct, None)
                        .await
                        .map_err(|e| row_err(format!("{}: {e}", c.name)))?;
                    // A value already under the active version keeps its ciphertext.
                    let keep = match Header::parse(&ct) {
                        Ok((h, _)) if h.version >= active => Some(ct),
                        _ => None,
                    };
                    (plain, keep)
                }
                (None, Some(src)) => {
                    migrated |= src.is_some();
                    (src, None)
                }
                (None, None) => {
                    if c.nulls == Nulls::Authenticated {
                        return Err(row_err(format!(
                            "{}: SQL NULL in a column with authenticated NULLs (removed without the key?)",
                            c.name
                        )));
                    }
                    out.push((None, None));
                    continue;
                }
            };
            let sealed = match keep {
                Some(ct) => Some(ct),
                None if plain.is_none() && c.nulls == Nulls::Passthrough => None,
                None => Some(
                    self.inner
                        .cols
                        .seal_bytes(c, &rid, plain.as_deref(), None)
                        .await
                        .map_err(|e| row_err(format!("{}: {e}", c.name)))?,
                ),
            };
            if let Some(s) = &sealed
                && let Ok((h, _)) = Header::parse(s)
            {
                lowest = lowest.min(h.version);
            }
            out.push((plain, sealed));
        }
        Ok((rid, out, lowest, migrated))
    }

    /// Counts values per key version from the ciphertext headers of every encrypted column,
    /// rows per version-column value, and plaintext left to migrate. Reads one or a few
    /// bytes per value; takes no locks.
    pub async fn census(&self) -> Result<Census> {
        let t = &self.inner.cols.table().inner;
        let pool = &self.inner.pool;
        let mut census = Census::default();
        for c in &t.columns {
            let first = match c.storage {
                Storage::Bytea => c.sql.clone(),
                Storage::Text => format!(
                    "decode(translate(substring({} from 5 for 8), '-_', '+/'), 'base64')",
                    c.sql
                ),
            };
            let filter = match c.storage {
                Storage::Bytea => format!("{} IS NOT NULL AND length({}) > 0", c.sql, c.sql),
                Storage::Text => format!("{} LIKE 'cf1:%' AND length({}) >= 12", c.sql, c.sql),
            };
            let rows: Vec<(i32, i64)> = sqlx::query_as(&format!(
                "SELECT get_byte({first}, 0) & 31, count(*) FROM {} WHERE {filter} GROUP BY 1",
                t.sql
            ))
            .fetch_all(pool)
            .await?;
            for (v, n) in rows {
                if v == 31 {
                    // Escaped (large) versions: parse each header.
                    let heads: Vec<Vec<u8>> = sqlx::query_scalar(&format!(
                        "SELECT substring({first} from 1 for 6) FROM {} WHERE {filter} AND get_byte({first}, 0) & 31 = 31",
                        t.sql
                    ))
                    .fetch_all(pool)
                    .await?;
                    for h in heads {
                        let v = Header::parse(&h)
                            .map(|(h, _)| h.version.0)
                            .unwrap_or(u32::MAX);
                        *census.values_by_version.entry(v).or_default() += 1;
                    }
                } else {
                    *census.values_by_version.entry(v as u32).or_default() +=
                        u64::try_from(n).unwrap_or(0);
                }
            }
            if c.storage == Storage::Text {
                let bad: i64 = sqlx::query_scalar(&format!(
                    "SELECT count(*) FROM {} WHERE {} IS NOT NULL AND NOT ({filter})",
                    t.sql, c.sql
                ))
                .fetch_one(pool)
                .await?;
                census.not_ciphertext += u64::try_from(bad).unwrap_or(0);
            }
            if let Some((_, src)) = &c.migrate_from {
                let left: i64 = sqlx::query_scalar(&format!(
                    "SELECT count(*) FROM {} WHERE {} IS NULL AND {src} IS NOT NULL",
                    t.sql, c.sql
                ))
                .fetch_one(pool)
                .await?;
                census.plaintext_left += u64::try_from(left).unwrap_or(0);
            }
        }
        let rows: Vec<(Option<i32>, i64)> = sqlx::query_as(&format!(
            "SELECT {v}, count(*) FROM {} GROUP BY 1",
            t.sql,
            v = t.version_sql
        ))
        .fetch_all(pool)
        .await?;
        for (v, n) in rows {
            census
                .rows_by_version_column
                .insert(v, u64::try_from(n).unwrap_or(0));
        }
        Ok(census)
    }
}

/// Versions of `scope` that are decrypt-only and seal no value in any of `jobs`' tables,
/// checked by two header censuses (docs/DESIGN.md §K3: two empty scans). Retires them when `retire`
/// is set (refused per version while its grace period runs). Every table that uses the
/// scope must be among `jobs`.
pub async fn retirable(jobs: &[Reencryptor], retire: bool) -> Result<Vec<KeyVersion>> {
    let Some(first) = jobs.first() else {
        return Ok(Vec::new());
    };
    let keyring = first.columns().keyring();
    let scope = first.columns().scope()?.clone();
    if jobs
        .iter()
        .any(|j| j.columns().scope().ok() != Some(&scope))
    {
        return Err(Error::Schema(
            "retirable: every table must share one scope".into(),
        ));
    }
    let deks = keyring.store().deks(&scope).await?;
    let mut candidates: Vec<KeyVersion> = deks
        .iter()
        .filter(|d| d.state == DekState::DecryptOnly)
        .map(|d| d.version)
        .collect();
    for _pass in 0..2 {
        for job in jobs {
            let c = job.census().await?;
            if c.plaintext_left > 0 {
                return Ok(Vec::new());
            }
            candidates.retain(|v| c.values_by_version.get(&v.0).copied().unwrap_or(0) == 0);
            candidates.retain(|v| {
                !c.rows_by_version_column
                    .keys()
                    .any(|rv| rv.is_some_and(|rv| i64::from(rv) == i64::from(v.0)))
            });
        }
    }
    if retire {
        for v in &candidates {
            keyring.retire(&scope, *v, keyring.retire_grace()).await?;
        }
    }
    Ok(candidates)
}

fn version_i32(v: KeyVersion) -> i32 {
    i32::try_from(v.0).unwrap_or(i32::MAX)
}

/// The SELECT expression that reads a plaintext source column in a form that converts to
/// the canonical encoding without loss.
fn source_expr(src: &str, t: ValueType) -> String {
    match t {
        ValueType::Text | ValueType::Json => format!("{src}::text"),
        ValueType::Int64 => format!("{src}::int8"),
        ValueType::Bool => format!("{src}::bool"),
        ValueType::Date => format!("({src}::date - DATE '1970-01-01')::int4"),
        ValueType::Timestamp => {
            format!("floor(extract(epoch FROM {src}::timestamptz) * 1000000)::int8")
        }
        ValueType::Uuid => format!("{src}::uuid::text"),
        _ => format!("{src}::bytea"),
    }
}

fn read_source(row: &PgRow, at: usize, t: ValueType) -> Result<Option<Vec<u8>>, String> {
    let e = |e: sqlx::Error| e.to_string();
    Ok(match t {
        ValueType::Text => row
            .try_get::<Option<String>, _>(at)
            .map_err(e)?
            .map(String::into_bytes),
        ValueType::Json => match row.try_get::<Option<String>, _>(at).map_err(e)? {
            Some(j) => Some(canonical_json(&j).map_err(|v| v.0)?),
            None => None,
        },
        ValueType::Int64 | ValueType::Timestamp => row
            .try_get::<Option<i64>, _>(at)
            .map_err(e)?
            .map(|v| v.to_be_bytes().to_vec()),
        ValueType::Bool => row
            .try_get::<Option<bool>, _>(at)
            .map_err(e)?
            .map(|b| vec![u8::from(b)]),
        ValueType::Date => row
            .try_get::<Option<i32>, _>(at)
            .map_err(e)?
            .map(|d| d.to_be_bytes().to_vec()),
        ValueType::Uuid => match row.try_get::<Option<String>, _>(at).map_err(e)? {
            Some(u) => Some(
                uuid::Uuid::parse_str(&u)
                    .map_err(|_| "not a UUID".to_owned())?
                    .as_bytes()
                    .to_vec(),
            ),
            None => None,
        },
        _ => row.try_get::<Option<Vec<u8>>, _>(at).map_err(e)?,
    })
}

fn read_cipher(row: &PgRow, at: usize, c: &Column) -> Result<Option<Vec<u8>>, String> {
    match c.storage {
        Storage::Bytea => row
            .try_get::<Option<Vec<u8>>, _>(at)
            .map_err(|e| e.to_string()),
        Storage::Text => match row
            .try_get::<Option<String>, _>(at)
            .map_err(|e| e.to_string())?
        {
            Some(s) => text::decode(&s).map(Some).map_err(|_| {
                "not a Coffer ciphertext (a plaintext written into an encrypted column?)".to_owned()
            }),
            None => Ok(None),
        },
    }
}

/// A PostgreSQL array literal of BYTEA values in hex form, cast with `::bytea[]`.
fn array_literal(tokens: &[Vec<u8>]) -> String {
    let mut s = String::with_capacity(2 + tokens.len() * 20);
    s.push('{');
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("\"\\\\x");
        for b in t {
            let _ = write!(s, "{b:02x}");
        }
        s.push('"');
    }
    s.push('}');
    s
}

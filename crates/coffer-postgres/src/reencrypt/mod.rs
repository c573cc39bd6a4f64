//! The re-encryption job: moves rows from old DEK versions to the active one, and plaintext
//! columns into encrypted ones, in batches locked with `FOR UPDATE SKIP LOCKED`.
//!
//! Every property the job needs lives in the rows themselves: a row is pending while its
//! version column is NULL (not migrated yet) or below its scope's active version. So the job
//! is idempotent (a done row is never selected again), resumable (a killed worker's open batch
//! rolls back; a rerun picks up the rest) and safe to run on many machines at once (a row
//! locked by one worker is skipped by the others). Application writes to a locked row wait
//! for the batch to commit and then apply on top, so none is lost.
//!
//! A table with a scope template (`tenant:{tenant_id}/patients`) is walked scope by scope:
//! pages of distinct placeholder values, each scope's active version read from the key store,
//! scopes grouped by active version, and each group's rows moved in batches, every row sealed
//! under its own scope. Destroyed and missing scopes are counted and left alone. With per-row
//! keys (`keys = "row"`), a rotation re-wraps each row's key and recomputes its blind indexes;
//! the values keep their ciphertext.

mod batch;
mod census;
mod scopes;
mod sql;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_core::KeyVersion;
use futures_util::future::try_join_all;
use sqlx::PgPool;

use crate::columns::Columns;
use crate::error::{Error, Result};

pub use census::{Census, retirable};
use scopes::{PAGE, ScopeState};
pub use scopes::{ScopeStanding, Standing};
use sql::Mode;

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
    /// Of which (per-row keys) had their row key re-wrapped, values untouched.
    pub rewrapped: u64,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// Rows rewritten.
    pub rows: u64,
    /// Of which filled from a plaintext column.
    pub migrated: u64,
    /// Of which (per-row keys) had their row key re-wrapped while every value kept its
    /// ciphertext.
    pub rewrapped: u64,
    /// Batches committed.
    pub batches: u64,
    /// The version rows were moved to; for a scope template, the highest active version
    /// among its scopes.
    pub active: Option<KeyVersion>,
    /// Rows still pending when the run ended (version column NULL or below the active version
    /// as the key store has it then): 0 unless `max_rows` stopped it first.
    pub remaining: u64,
    /// Scopes that hold rows (one for a fixed scope).
    pub scopes: u64,
    /// Destroyed scopes that hold rows, and those rows: shredded, left as they are.
    pub destroyed_scopes: u64,
    /// Rows in destroyed scopes.
    pub destroyed_rows: u64,
    /// Scopes that hold rows but are missing from the key store, and those rows (left as
    /// they are; see [`Standing::missing`]).
    pub missing_scopes: u64,
    /// Rows in missing scopes.
    pub missing_rows: u64,
    /// Rows whose placeholder values are NULL or cannot form a scope id (left as they are).
    pub unresolvable_rows: u64,
    /// Rows whose per-row key was erased: shredded, skipped.
    pub erased_rows: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl RunReport {
    fn left_alone(&mut self, s: &Standing) {
        self.remaining = s.pending;
        self.scopes = s.scopes;
        self.destroyed_scopes = s.destroyed_scopes;
        self.destroyed_rows = s.destroyed_rows;
        self.missing_scopes = s.missing_scopes;
        self.missing_rows = s.missing_rows;
        self.unresolvable_rows = s.unresolvable_rows;
        self.erased_rows = s.erased_rows;
        if self.active.is_none() {
            self.active = s.active;
        }
    }
}

/// The re-encryption job for one table. Clone it to run several workers.
///
/// Built from a [`Columns`] of a table with a fixed scope, it covers the table. Built from a
/// table with a scope template, it covers every scope of the template; built from
/// [`Columns::for_scope`], only that scope's rows.
#[derive(Clone, Debug)]
pub struct Reencryptor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cols: Columns,
    pool: PgPool,
    opts: ReencryptOptions,
    mode: Mode,
    /// The placeholder columns as SQL text expressions (`t."tenant_id"::text`).
    placeholders: Vec<String>,
    /// An error found when the job was made (a placeholder that is not an SQL identifier),
    /// given back by every call.
    invalid: Option<String>,
    row_type: tokio::sync::OnceCell<String>,
}

impl Reencryptor {
    /// A job for `cols`'s table on `pool` (for a table with a scope template: every scope,
    /// or the one `cols` was resolved to with [`Columns::for_scope`]).
    pub fn new(cols: Columns, pool: PgPool, opts: ReencryptOptions) -> Self {
        let t = cols.table().scope_template().clone();
        let (placeholders, invalid) = match sql::placeholder_exprs(&cols.table().inner) {
            Ok(p) => (p, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let mode = if !t.is_template() {
            Mode::Fixed
        } else {
            match cols.scope().ok().and_then(|s| t.match_scope(s.as_str())) {
                Some(vals) => {
                    // In the template's placeholder order.
                    let order = t.placeholders();
                    Mode::One(
                        order
                            .iter()
                            .map(|p| {
                                vals.iter()
                                    .find(|(n, _)| n == p)
                                    .map(|(_, v)| (*v).to_owned())
                                    .unwrap_or_default()
                            })
                            .collect(),
                    )
                }
                None => Mode::Walk,
            }
        };
        Reencryptor {
            inner: Arc::new(Inner {
                cols,
                pool,
                opts,
                mode,
                placeholders,
                invalid,
                row_type: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// The table's columns.
    pub fn columns(&self) -> &Columns {
        &self.inner.cols
    }

    /// Whether the job walks every scope of a scope template (rather than one scope).
    pub fn walks_scopes(&self) -> bool {
        matches!(self.inner.mode, Mode::Walk)
    }

    fn table_name(&self) -> &str {
        self.inner.cols.table().name()
    }

    fn check(&self) -> Result<()> {
        match &self.inner.invalid {
            Some(e) => Err(Error::Schema(e.clone())),
            None => Ok(()),
        }
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

    /// The active version and how many rows are pending (version column NULL or older). The
    /// active version is read from the key store, not from a cached pointer: a rotation made
    /// a moment ago (in this process or another) counts. For a scope template, the version is
    /// the highest active version among its scopes and the count covers every scope
    /// ([`standing`](Self::standing) has the details).
    pub async fn pending(&self) -> Result<(KeyVersion, u64)> {
        self.check()?;
        let s = self.standing(0).await?;
        Ok((s.active.unwrap_or(KeyVersion(0)), s.pending))
    }

    /// Runs until no row is pending (or `max_rows`), calling `progress` after every batch
    /// with the rows done so far.
    pub async fn run(&self, mut progress: impl FnMut(u64) + Send) -> Result<RunReport> {
        self.check()?;
        let started = Instant::now();
        let row_type = self.row_type().await?.to_owned();
        let t = &self.inner.cols.table().inner;
        let st = sql::statements(
            t,
            &self.inner.placeholders,
            &row_type,
            self.inner.opts.clear_plaintext,
        );
        let mut report = RunReport::default();
        let mut idle_since: Option<Instant> = None;
        let standing = 'sweeps: loop {
            let mut swept = 0u64;
            let mut after: Option<Vec<String>> = None;
            loop {
                let page = self.scope_page(after.as_deref()).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.values.clone());
                let full = page.len() == PAGE && self.walks_scopes();
                // Scopes with pending rows, grouped by active version (read from the key
                // store, not the cached pointer, so the seals below use it too).
                let mut groups: BTreeMap<KeyVersion, Vec<&[String]>> = BTreeMap::new();
                for r in &page {
                    let scope = self.scope_of(&r.values);
                    if let ScopeState::Active(v) = self.classify(scope.as_ref(), r, true).await?
                        && r.pending_under(v)
                    {
                        groups.entry(v).or_default().push(&r.values);
                    }
                }
                for (active, tuples) in groups {
                    report.active = report.active.max(Some(active));
                    // One text[] per placeholder.
                    let arrays: Vec<Vec<String>> = (0..self.inner.placeholders.len())
                        .map(|p| tuples.iter().map(|t| t[p].clone()).collect())
                        .collect();
                    let mut cursor: Option<String> = None;
                    loop {
                        let limit = match self.inner.opts.max_rows {
                            Some(max) if report.rows >= max => break 'sweeps None,
                            Some(max) => {
                                (max - report.rows).min(u64::from(self.inner.opts.batch_size))
                            }
                            None => u64::from(self.inner.opts.batch_size),
                        };
                        let (b, last) = self
                            .batch(&st, active, &arrays, cursor.as_deref(), limit)
                            .await?;
                        if b.rows == 0 {
                            break;
                        }
                        cursor = last;
                        swept += b.rows;
                        report.rows += b.rows;
                        report.migrated += b.migrated;
                        report.rewrapped += b.rewrapped;
                        report.batches += 1;
                        progress(report.rows);
                        if let Some(rate) = self.inner.opts.rate.filter(|r| *r > 0.0) {
                            let due = Duration::from_secs_f64(report.rows as f64 / rate);
                            if let Some(wait) = due.checked_sub(started.elapsed()) {
                                tokio::time::sleep(wait).await;
                            }
                        }
                    }
                }
                if !full {
                    break;
                }
            }
            // Done means no row left on an older version: counted, not assumed.
            let standing = self.standing(0).await?;
            if standing.pending == 0 {
                break Some(standing);
            }
            if swept > 0 {
                // Rows written under a stale pointer, or a rotation during the sweep: again.
                idle_since = None;
                continue;
            }
            // Nothing this worker could lock: rows are held by other workers or transactions
            // (wait for them), or a scope rotated after this sweep read it (the next sweep
            // reads it again).
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.inner.opts.locked_wait {
                return Err(Error::Busy {
                    table: self.table_name().to_owned(),
                    rows: standing.pending,
                    waited: self.inner.opts.locked_wait,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let standing = match standing {
            Some(s) => s,
            None => self.standing(0).await?,
        };
        report.left_alone(&standing);
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
        let mut total = RunReport::default();
        for r in reports {
            total.rows += r.rows;
            total.migrated += r.migrated;
            total.rewrapped += r.rewrapped;
            total.batches += r.batches;
            total.active = total.active.max(r.active);
        }
        let standing = self.standing(0).await?;
        total.left_alone(&standing);
        total.elapsed = started.elapsed();
        Ok(total)
    }
}

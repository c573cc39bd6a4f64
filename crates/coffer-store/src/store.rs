//! [`SqlStore`]: the key store on SQLite or PostgreSQL through sqlx's `Any` driver, one code
//! path for both. Only the migrations' type names and the clock expression differ.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coffer_core::{KeyVersion, ScopeId};
use coffer_keys::audit::{self, AuditEvent, AuditFilter, AuditRecord};
use coffer_keys::{
    BulkCreate, CreateOutcome, DekRecord, DekState, Error, KekId, KekRecord, KeyStore, NewDek,
    Result, Rewrap, RotateOutcome, ScopePage, ScopeRecord, StoreInfo,
};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

use crate::rows::*;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 4;

/// DEKs per multi-row UPDATE in a KEK rotation (8 parameters each, well under both databases'
/// parameter limits).
const REWRAP_CHUNK: usize = 250;

/// How many times a transaction that lost a race (unique violation, SQLite busy) is retried.
const RETRIES: u32 = 20;

/// Which database a store lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (`sqlite:PATH`).
    Sqlite,
    /// PostgreSQL (`postgres://…`).
    Postgres,
}

impl Backend {
    pub(crate) fn now(self) -> &'static str {
        match self {
            Backend::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
        }
    }

    /// The collation clause that makes a comparison of scope names follow code point order
    /// (PostgreSQL's `"C"`, served by the index of migration 0004; SQLite's default BINARY
    /// already does).
    fn code_point(self) -> &'static str {
        match self {
            Backend::Postgres => " COLLATE \"C\"",
            Backend::Sqlite => "",
        }
    }

    fn begin(self) -> &'static str {
        match self {
            // Take the write lock up front: a deferred transaction that reads, then writes,
            // fails at once with SQLITE_BUSY instead of waiting when another writer is active.
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }
}

type TxFuture<'c, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// A key store in SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// PostgreSQL only: the LISTEN/NOTIFY invalidation bus.
    bus: Option<Arc<crate::notify::PgBus>>,
}

fn db(e: sqlx::Error) -> Error {
    Error::store(e)
}

fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.is_unique_violation()
                || matches!(
                    d.code().as_deref(),
                    Some("5" | "6" | "517" | "40001" | "40P01")
                )
        }
        _ => false,
    }
}

impl SqlStore {
    /// Connects to `sqlite:PATH` (the file is created, mode 0600, on first use) or
    /// `postgres://…`, and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(Error::config(
                    "sqlite: needs a file path, e.g. sqlite:keys.db",
                ));
            }
            create_private_file(Path::new(path))?;
            (Backend::Sqlite, format!("sqlite://{path}"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(Error::config(
                "the key store URL must start with sqlite: or postgres://",
            ));
        };
        let max = if backend == Backend::Sqlite { 4 } else { 10 };
        let sqlite = backend == Backend::Sqlite;
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Freed cells and pages are zeroed, so the wraps a destroy erases do
                        // not linger in the file's free space (docs/KEYS.md, "What a destroy
                        // leaves behind"). A per-connection setting.
                        sqlx::query("PRAGMA secure_delete = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| Error::store(format!("cannot open the key store: {e}")))?;
        let bus = (backend == Backend::Postgres).then(|| {
            Arc::new(crate::notify::PgBus {
                pool: pool.clone(),
                url: crate::notify::Url(Arc::from(url.as_str())),
            })
        });
        let store = SqlStore { pool, backend, bus };
        store.migrate().await?;
        Ok(store)
    }

    /// After a destroy has committed: removes the erased wraps' old row versions where the
    /// database keeps them. SQLite (with `secure_delete` on every connection) checkpoints its
    /// write-ahead log and truncates it to zero bytes; PostgreSQL vacuums `coffer_deks`, which
    /// frees the dead row versions that still hold the wraps. Best effort: the destroy has
    /// committed either way; a failure (a reader holding the WAL, a long transaction keeping an
    /// old snapshot) is logged, and the next destroy or the database's own checkpoint and
    /// autovacuum finish the job. What neither can reach (PostgreSQL's WAL and its archives,
    /// replicas, backups, the file system's freed blocks) is in docs/KEYS.md.
    async fn purge_erased(&self) {
        let outcome = match self.backend {
            Backend::Sqlite => sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&self.pool)
                .await
                .map(|row| {
                    use sqlx::Row as _;
                    // (busy, log frames, checkpointed frames); busy = 1: a reader held it.
                    row.try_get::<i64, _>(0).unwrap_or(1) == 0
                }),
            Backend::Postgres => sqlx::query("VACUUM coffer_deks")
                .execute(&self.pool)
                .await
                .map(|_| true),
        };
        match outcome {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "after a destroy, the SQLite write-ahead log could not be truncated (a reader \
                 held it); the erased wraps leave it at the next checkpoint"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "after a destroy, the erased wraps' old row versions could not be purged now; \
                 the database's own checkpoint or autovacuum will"
            ),
        }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool (for tests and tools that inspect the tables).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Up to `limit` live DEKs wrapped under `kek` (`under`) or under any other KEK, in scope
    /// and version order.
    async fn live_deks_by_kek(
        &self,
        kek: &KekId,
        under: bool,
        limit: usize,
    ) -> Result<Vec<DekRecord>> {
        let which = if under { "" } else { "NOT " };
        let sql = format!(
            "SELECT {DEK_COLUMNS} FROM coffer_deks \
             WHERE wrapped IS NOT NULL AND {which}(kek_name = $1 AND kek_version = $2) \
             ORDER BY scope, version LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(kek.name().to_owned())
            .bind(i64::from(kek.version()))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(decode_dek)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn migrate(&self) -> Result<()> {
        if self.backend == Backend::Sqlite {
            // WAL lets readers go on while a writer commits; it is a property of the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&self.pool)
                .await
                .map_err(db)?;
        }
        let migrator = match self.backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        // Two processes opening a new SQLite file at once (say `coffer serve &` and `coffer
        // tokens create`) race on its first migration; SQLite has no migration lock, so the
        // loser retries and finds the migrations applied. PostgreSQL takes an advisory lock.
        let mut attempt = 0;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => break,
                Err(_) if self.backend == Backend::Sqlite && attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => return Err(Error::store(format!("migrating the key store: {e}"))),
            }
        }
        let id: [u8; 16] = coffer_core::digest::random_array()?;
        let sql = format!(
            "INSERT INTO coffer_meta (singleton, store_id, created_at_us) VALUES (1, $1, {}) \
             ON CONFLICT (singleton) DO NOTHING",
            self.backend.now()
        );
        sqlx::query(&sql)
            .bind(id.to_vec())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Runs `f` in a transaction, retrying when it loses a race.
    async fn retry<T, F>(&self, mut f: F) -> Result<T>
    where
        F: for<'c> FnMut(&'c mut sqlx::Transaction<'static, sqlx::Any>) -> TxFuture<'c, T>,
    {
        let mut attempt = 0;
        loop {
            let mut tx = self
                .pool
                .begin_with(self.backend.begin())
                .await
                .map_err(db)?;
            let r = f(&mut tx).await;
            let r = match r {
                Ok(v) => tx.commit().await.map(|_| v),
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            };
            match r {
                Ok(v) => return Ok(v),
                Err(e) if is_retryable(&e) && attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(2 << attempt.min(6))).await;
                }
                Err(e) => return Err(db(e)),
            }
        }
    }
}

/// Creates the SQLite file with mode 0600 if it does not exist: it holds wrapped keys only, but
/// nobody else has any business reading them.
fn create_private_file(path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        return Err(Error::config(format!(
            "the directory of the key store {} does not exist",
            path.display()
        )));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(|_| ())
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(Error::store(format!(
                    "cannot create the key store {}: {e}",
                    path.display()
                )))
            }
        })
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn info(&self) -> Result<StoreInfo> {
        let row = sqlx::query("SELECT store_id, epoch FROM coffer_meta WHERE singleton = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let id: Vec<u8> = row.try_get("store_id").map_err(db)?;
        let epoch: i64 = row.try_get("epoch").map_err(db)?;
        Ok(StoreInfo {
            store_id: id
                .try_into()
                .map_err(|_| Error::store("the store id is not 16 bytes"))?,
            schema_version: SCHEMA_VERSION,
            epoch: to_u32(epoch, "epoch").map_err(db)?,
        })
    }

    async fn now_us(&self) -> Result<i64> {
        let row = sqlx::query(&format!("SELECT {} AS now_us", self.backend.now()))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        row.try_get("now_us").map_err(db)
    }

    async fn register_kek(&self, kek: &KekRecord) -> Result<bool> {
        let sql = format!(
            "INSERT INTO coffer_keks (kek_name, kek_version, kind, canary_wrapped, canary_check, \
             registered_at_us) VALUES ($1, $2, $3, $4, $5, {}) \
             ON CONFLICT (kek_name, kek_version) DO NOTHING",
            self.backend.now()
        );
        let done = sqlx::query(&sql)
            .bind(kek.id.name().to_owned())
            .bind(i64::from(kek.id.version()))
            .bind(kek.kind.clone())
            .bind(kek.canary_wrapped.clone())
            .bind(kek.canary_check.clone())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn keks(&self) -> Result<Vec<KekRecord>> {
        let rows = sqlx::query(
            "SELECT kek_name, kek_version, kind, canary_wrapped, canary_check, registered_at_us \
             FROM coffer_keks ORDER BY kek_name, kek_version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let name: String = r.try_get("kek_name").map_err(db)?;
                let version: i64 = r.try_get("kek_version").map_err(db)?;
                Ok(KekRecord {
                    id: KekId::new(name, to_u32(version, "KEK version").map_err(db)?)?,
                    kind: r.try_get("kind").map_err(db)?,
                    canary_wrapped: r.try_get("canary_wrapped").map_err(db)?,
                    canary_check: r.try_get("canary_check").map_err(db)?,
                    registered_at_us: r.try_get("registered_at_us").map_err(db)?,
                })
            })
            .collect()
    }

    async fn create_scope(&self, first: &NewDek) -> Result<CreateOutcome> {
        let now = self.backend.now();
        let scope = first.scope.as_str().to_owned();
        let outcome = self
            .retry(|tx| {
                let scope = scope.clone();
                let first = first.clone();
                Box::pin(async move {
                    let sql = format!(
                        "INSERT INTO coffer_scopes (scope, created_at_us) VALUES ($1, {now}) \
                         ON CONFLICT (scope) DO NOTHING"
                    );
                    let inserted = sqlx::query(&sql)
                        .bind(scope.clone())
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                    if inserted == 1 {
                        return insert_dek(tx, now, &first)
                            .await
                            .map(|r| Ok(CreateOutcome::Created(r)));
                    }
                    match active_in(tx, &scope).await? {
                        Some(r) => Ok(Ok(CreateOutcome::Existing(r))),
                        None => Ok(Err(())),
                    }
                })
            })
            .await?;
        match outcome {
            Ok(o) => Ok(o),
            Err(()) => {
                let destroyed = self
                    .scope(&first.scope)
                    .await?
                    .is_some_and(|s| s.is_destroyed());
                Err(if destroyed {
                    Error::Destroyed {
                        scope: scope.clone(),
                        version: None,
                    }
                } else {
                    Error::State(format!(
                        "scope '{scope}' exists but has no active version; rotate it with \
                         `coffer keys rotate {scope}`"
                    ))
                })
            }
        }
    }

    async fn create_scopes(&self, firsts: &[NewDek]) -> Result<Vec<BulkCreate>> {
        if firsts.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.backend;
        let firsts: Arc<[NewDek]> = firsts.into();
        self.retry(|tx| {
            let firsts = Arc::clone(&firsts);
            Box::pin(async move { create_scopes_in(tx, backend, &firsts).await })
        })
        .await
    }

    async fn list_scopes(&self, page: &ScopePage) -> Result<Vec<ScopeRecord>> {
        let c = self.backend.code_point();
        let mut sql = String::from(
            "SELECT scope, created_at_us, destroyed_at_us FROM coffer_scopes WHERE 1 = 1",
        );
        let mut binds = Vec::new();
        if let Some(p) = page.prefix.as_deref().filter(|p| !p.is_empty()) {
            binds.push(p.to_owned());
            sql.push_str(&format!(" AND scope{c} >= ${}", binds.len()));
            if let Some(upper) = coffer_keys::prefix_upper_bound(p) {
                binds.push(upper);
                sql.push_str(&format!(" AND scope{c} < ${}", binds.len()));
            }
        }
        if let Some(a) = &page.after {
            binds.push(a.clone());
            sql.push_str(&format!(" AND scope{c} > ${}", binds.len()));
        }
        sql.push_str(&format!(" ORDER BY scope{c} LIMIT {}", page.limit.max(1)));
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db)?;
        rows.iter()
            .map(decode_scope)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn active_deks_page(
        &self,
        after: Option<&ScopeId>,
        limit: usize,
    ) -> Result<Vec<DekRecord>> {
        // The partial unique index on the active version serves this range in scope order.
        let cond = if after.is_some() {
            "AND scope > $1"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {DEK_COLUMNS} FROM coffer_deks WHERE state = 'active' {cond} \
             ORDER BY scope LIMIT {}",
            limit.max(1)
        );
        let mut q = sqlx::query(&sql);
        if let Some(a) = after {
            q = q.bind(a.as_str().to_owned());
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db)?;
        rows.iter()
            .map(decode_dek)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn deks_not_under_after(
        &self,
        kek: &KekId,
        after: Option<(&ScopeId, KeyVersion)>,
        limit: usize,
    ) -> Result<Vec<DekRecord>> {
        // A range of the primary key from the cursor on: each batch costs the same however
        // many DEKs were re-wrapped before it.
        let cond = if after.is_some() {
            "AND (scope, version) > ($3, $4)"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {DEK_COLUMNS} FROM coffer_deks \
             WHERE wrapped IS NOT NULL AND NOT (kek_name = $1 AND kek_version = $2) {cond} \
             ORDER BY scope, version LIMIT {}",
            limit.max(1)
        );
        let mut q = sqlx::query(&sql)
            .bind(kek.name().to_owned())
            .bind(i64::from(kek.version()));
        if let Some((scope, version)) = after {
            q = q.bind(scope.as_str().to_owned()).bind(i64::from(version.0));
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db)?;
        rows.iter()
            .map(decode_dek)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn append_audits(
        &self,
        events: &[AuditEvent],
        key: Option<Arc<audit::ChainKey>>,
    ) -> Result<Option<AuditRecord>> {
        if events.is_empty() {
            return Ok(None);
        }
        let now = self.backend.now();
        let backend = self.backend;
        let serialize = backend == Backend::Postgres;
        let events: Arc<[AuditEvent]> = events.into();
        self.retry(|tx| {
            let events = Arc::clone(&events);
            let key = key.clone();
            Box::pin(async move {
                // As append_audit: appends take turns (SQLite's BEGIN IMMEDIATE, PostgreSQL's
                // self-conflicting lock), then the whole batch is chained onto the head.
                if serialize {
                    sqlx::query("LOCK TABLE coffer_audit IN SHARE ROW EXCLUSIVE MODE")
                        .execute(&mut **tx)
                        .await?;
                }
                let (mut id, mut prev, at_us) = audit_head_in(tx, now).await?;
                let mut records = Vec::with_capacity(events.len());
                for event in events.iter() {
                    id += 1;
                    let hash = audit::record_hash(key.as_deref(), &prev, id, at_us, event)
                        .map_err(|e| sqlx::Error::Encode(e.to_string().into()))?;
                    records.push(AuditRecord {
                        id,
                        at_us,
                        event: event.clone(),
                        prev_hash: prev,
                        hash,
                    });
                    prev = hash;
                }
                insert_audits_in(tx, backend, &records).await?;
                Ok(records.pop())
            })
        })
        .await
    }

    async fn scope(&self, scope: &ScopeId) -> Result<Option<ScopeRecord>> {
        let row = sqlx::query(
            "SELECT scope, created_at_us, destroyed_at_us FROM coffer_scopes WHERE scope = $1",
        )
        .bind(scope.as_str().to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(decode_scope).transpose().map_err(db)
    }

    async fn scopes(&self) -> Result<Vec<ScopeRecord>> {
        let rows = sqlx::query(
            "SELECT scope, created_at_us, destroyed_at_us FROM coffer_scopes ORDER BY scope",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(decode_scope)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn dek(&self, scope: &ScopeId, version: KeyVersion) -> Result<Option<DekRecord>> {
        let sql =
            format!("SELECT {DEK_COLUMNS} FROM coffer_deks WHERE scope = $1 AND version = $2");
        let row = sqlx::query(&sql)
            .bind(scope.as_str().to_owned())
            .bind(i64::from(version.0))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(decode_dek).transpose().map_err(db)
    }

    async fn deks(&self, scope: &ScopeId) -> Result<Vec<DekRecord>> {
        let sql =
            format!("SELECT {DEK_COLUMNS} FROM coffer_deks WHERE scope = $1 ORDER BY version");
        let rows = sqlx::query(&sql)
            .bind(scope.as_str().to_owned())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(decode_dek)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn active_dek(&self, scope: &ScopeId) -> Result<Option<DekRecord>> {
        let row = sqlx::query(&active_sql())
            .bind(scope.as_str().to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(decode_dek).transpose().map_err(db)
    }

    async fn max_version(&self, scope: &ScopeId) -> Result<u32> {
        let row = sqlx::query(
            "SELECT COALESCE((SELECT MAX(version) FROM coffer_deks WHERE scope = $1), 0) AS v, \
             COALESCE((SELECT version_floor FROM coffer_scopes WHERE scope = $1), 0) AS f",
        )
        .bind(scope.as_str().to_owned())
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let v: i64 = row.try_get("v").map_err(db)?;
        let f: i64 = row.try_get("f").map_err(db)?;
        to_u32(v.max(f), "version").map_err(db)
    }

    async fn mark_restored(&self, gap: u32) -> Result<u32> {
        self.retry(|tx| {
            Box::pin(async move {
                sqlx::query("UPDATE coffer_meta SET epoch = epoch + 1 WHERE singleton = 1")
                    .execute(&mut **tx)
                    .await?;
                sqlx::query(
                    "UPDATE coffer_scopes SET version_floor = version_floor + $1 + \
                     COALESCE((SELECT MAX(d.version) FROM coffer_deks d \
                     WHERE d.scope = coffer_scopes.scope), 0)",
                )
                .bind(i64::from(gap))
                .execute(&mut **tx)
                .await?;
                let row = sqlx::query("SELECT epoch FROM coffer_meta WHERE singleton = 1")
                    .fetch_one(&mut **tx)
                    .await?;
                to_u32(row.try_get("epoch")?, "epoch")
            })
        })
        .await
    }

    async fn rotate(&self, expected: KeyVersion, new: &NewDek) -> Result<RotateOutcome> {
        let now = self.backend.now();
        let scope = new.scope.as_str().to_owned();
        let outcome = self
            .retry(|tx| {
                let scope = scope.clone();
                let new = new.clone();
                Box::pin(async move {
                    // Write first: the compare-and-swap on the active version.
                    let sql = format!(
                        "UPDATE coffer_deks SET state = 'decrypt-only', state_changed_at_us = {now} \
                         WHERE scope = $1 AND version = $2 AND state = 'active'"
                    );
                    let swapped = sqlx::query(&sql)
                        .bind(scope.clone())
                        .bind(i64::from(expected.0))
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                    if swapped == 1 {
                        return insert_dek(tx, now, &new).await.map(|r| Some(RotateOutcome::Rotated(r)));
                    }
                    Ok(active_in(tx, &scope).await?.map(RotateOutcome::Lost))
                })
            })
            .await?;
        match outcome {
            Some(o) => Ok(o),
            None => Err(Error::State(format!(
                "scope '{scope}' has no active version to rotate from (destroyed or unknown)"
            ))),
        }
    }

    async fn lease(&self, scope: &ScopeId, version: KeyVersion, n: u64) -> Result<Option<u64>> {
        let n = i64::try_from(n).map_err(|_| Error::config("lease block too large"))?;
        let row = sqlx::query(
            "UPDATE coffer_deks SET encryptions = encryptions + $1 \
             WHERE scope = $2 AND version = $3 AND state = 'active' RETURNING encryptions",
        )
        .bind(n)
        .bind(scope.as_str().to_owned())
        .bind(i64::from(version.0))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| {
            r.try_get::<i64, _>("encryptions")
                .map_err(db)
                .map(|v| u64::try_from(v).unwrap_or(0))
        })
        .transpose()
    }

    async fn set_state(
        &self,
        scope: &ScopeId,
        version: KeyVersion,
        from: DekState,
        to: DekState,
    ) -> Result<bool> {
        if to == DekState::Destroyed || from == DekState::Destroyed {
            return Err(Error::State(
                "destroying goes through destroy_scope, which erases the wrapped key".into(),
            ));
        }
        let sql = format!(
            "UPDATE coffer_deks SET state = $1, state_changed_at_us = {} \
             WHERE scope = $2 AND version = $3 AND state = $4",
            self.backend.now()
        );
        let done = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(scope.as_str().to_owned())
            .bind(i64::from(version.0))
            .bind(from.as_str())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn deks_not_under(&self, kek: &KekId, limit: usize) -> Result<Vec<DekRecord>> {
        self.live_deks_by_kek(kek, false, limit).await
    }

    async fn deks_under(&self, kek: &KekId, limit: usize) -> Result<Vec<DekRecord>> {
        self.live_deks_by_kek(kek, true, limit).await
    }

    async fn count_deks_not_under(&self, kek: &KekId) -> Result<u64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM coffer_deks \
             WHERE wrapped IS NOT NULL AND NOT (kek_name = $1 AND kek_version = $2)",
        )
        .bind(kek.name().to_owned())
        .bind(i64::from(kek.version()))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(u64::try_from(row.try_get::<i64, _>("n").map_err(db)?).unwrap_or(0))
    }

    async fn replace_wraps(&self, rewraps: &[Rewrap]) -> Result<u64> {
        let backend = self.backend;
        let rewraps = rewraps.to_vec();
        self.retry(|tx| {
            let rewraps = rewraps.clone();
            Box::pin(async move {
                // One multi-row UPDATE … FROM (VALUES …) per chunk: a round trip per chunk, not
                // per DEK. VALUES columns are column1…column8 in both PostgreSQL and SQLite.
                let mut n = 0;
                for chunk in rewraps.chunks(REWRAP_CHUNK) {
                    let mut sql = String::from(
                        "UPDATE coffer_deks SET wrapped = v.column3, kek_name = v.column4, \
                         kek_version = v.column5, wrap_algorithm = v.column6 FROM (VALUES ",
                    );
                    sql.push_str(&placeholders(backend, chunk.len(), 8, ""));
                    sql.push_str(
                        ") AS v WHERE coffer_deks.scope = v.column1 \
                         AND coffer_deks.version = v.column2 AND coffer_deks.kek_name = v.column7 \
                         AND coffer_deks.kek_version = v.column8 AND coffer_deks.wrapped IS NOT NULL",
                    );
                    let mut q = sqlx::query(&sql);
                    for r in chunk {
                        q = q
                            .bind(r.scope.as_str().to_owned())
                            .bind(i64::from(r.version.0))
                            .bind(r.wrapped.clone())
                            .bind(r.new.name().to_owned())
                            .bind(i64::from(r.new.version()))
                            .bind(r.wrap_algorithm.clone())
                            .bind(r.old.name().to_owned())
                            .bind(i64::from(r.old.version()));
                    }
                    n += q.execute(&mut **tx).await?.rows_affected();
                }
                Ok(n)
            })
        })
        .await
    }

    async fn destroy_scope(&self, scope: &ScopeId) -> Result<u32> {
        let now = self.backend.now();
        let scope = scope.as_str().to_owned();
        let n = self
            .retry(|tx| {
                let scope = scope.clone();
                Box::pin(async move {
                    let sql = format!(
                        "UPDATE coffer_scopes SET destroyed_at_us = {now} \
                     WHERE scope = $1 AND destroyed_at_us IS NULL"
                    );
                    sqlx::query(&sql)
                        .bind(scope.clone())
                        .execute(&mut **tx)
                        .await?;
                    let sql = format!(
                        "UPDATE coffer_deks SET wrapped = NULL, state = 'destroyed', \
                     state_changed_at_us = {now} WHERE scope = $1 AND wrapped IS NOT NULL"
                    );
                    let n = sqlx::query(&sql)
                        .bind(scope)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                    Ok(u32::try_from(n).unwrap_or(u32::MAX))
                })
            })
            .await?;
        self.purge_erased().await;
        Ok(n)
    }

    async fn append_audit(
        &self,
        event: &AuditEvent,
        key: Option<Arc<audit::ChainKey>>,
    ) -> Result<AuditRecord> {
        let now = self.backend.now();
        let serialize = self.backend == Backend::Postgres;
        let record = self
            .retry(|tx| {
                let event = event.clone();
                let key = key.clone();
                Box::pin(async move {
                    // Appends take turns: each reads the last record to chain onto it. SQLite's
                    // BEGIN IMMEDIATE already serializes writers; on PostgreSQL a lock that
                    // conflicts only with itself does (reads go on). Without it, concurrent
                    // appends collide on the next id and exhaust their retries under load.
                    if serialize {
                        sqlx::query("LOCK TABLE coffer_audit IN SHARE ROW EXCLUSIVE MODE")
                            .execute(&mut **tx)
                            .await?;
                    }
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
                    let id = last_id.unwrap_or(0) + 1;
                    let hash = audit::record_hash(key.as_deref(), &prev, id, at_us, &event)
                        .map_err(|e| sqlx::Error::Encode(e.to_string().into()))?;
                    sqlx::query(
                        "INSERT INTO coffer_audit (id, at_us, actor, operation, scope, version, \
                         kek, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(id)
                    .bind(at_us)
                    .bind(event.actor.clone())
                    .bind(event.operation.as_str())
                    .bind(event.scope.clone())
                    .bind(event.version.map(i64::from))
                    .bind(event.kek.clone())
                    .bind(event.detail.clone())
                    .bind(prev.to_vec())
                    .bind(hash.to_vec())
                    .execute(&mut **tx)
                    .await?;
                    Ok(AuditRecord {
                        id,
                        at_us,
                        event,
                        prev_hash: prev,
                        hash,
                    })
                })
            })
            .await?;
        Ok(record)
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT id, at_us, actor, operation, scope, version, kek, detail, prev_hash, hash \
             FROM coffer_audit WHERE (CAST($1 AS TEXT) IS NULL OR scope = $1) AND (CAST($2 AS BIGINT) IS NULL OR at_us >= $2) \
             ORDER BY id LIMIT $3",
        )
        .bind(filter.scope.clone())
        .bind(filter.since_us)
        .bind(filter.limit.map(i64::from).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(decode_audit)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    fn invalidation_bus(&self) -> Option<Arc<dyn coffer_keys::InvalidationBus>> {
        self.bus
            .clone()
            .map(|b| b as Arc<dyn coffer_keys::InvalidationBus>)
    }
}

//! The database: ballots, their options, votes and the has-voted table, on PostgreSQL or SQLite
//! through one code path (sqlx's Any driver; only the DDL and the locking clause differ).
//!
//! Privacy by schema (docs/DESIGN.md §A1): a vote is `(ballot_id, option_id)` and nothing else — no
//! voter, no time, no id; whether someone voted lives in `has_voted` as a keyed tag, written in
//! the same transaction; votes are written in batches, each sorted, so neither table's order
//! links a vote to a voter beyond the batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::error::AppError;

/// Which database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite (the embedded default).
    Sqlite,
}

/// A ballot's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Taking votes.
    Open,
    /// Closed: counts final, texts readable until the retention period ends.
    Closed,
    /// The key was destroyed: counts only.
    Shredded,
}

impl Status {
    fn parse(s: &str) -> Status {
        match s {
            "open" => Status::Open,
            "closed" => Status::Closed,
            _ => Status::Shredded,
        }
    }

    /// The name shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Closed => "closed",
            Status::Shredded => "shredded",
        }
    }
}

/// A row of `ballots`.
#[derive(Clone, Debug)]
pub struct BallotRow {
    /// Random id (public).
    pub id: String,
    /// The ballot's data key sealed under its key-store scope; NULL once shredded.
    pub encrypted_dek: Option<Vec<u8>>,
    /// The sealed measure.
    pub measure: Vec<u8>,
    /// SHA-256 of the admin token.
    pub admin_hash: Vec<u8>,
    /// Whether write-ins are allowed.
    pub allow_write_ins: bool,
    /// Open, closed or shredded.
    pub status: Status,
}

/// A row of `ballot_options`.
#[derive(Clone, Debug)]
pub struct OptionRow {
    /// The row's id across all ballots (what a vote row stores; never shown).
    pub id: i64,
    /// The option's number within its ballot, 1..n: its id in the API and the pages. The listed
    /// options are 1..k in order; write-ins follow in the order they were first stored.
    pub number: i64,
    /// Created by a voter's write-in.
    pub is_write_in: bool,
    /// The sealed text.
    pub text: Vec<u8>,
    /// The text's equality index (keyed; finds equal write-ins).
    pub text_index: Vec<u8>,
}

/// A new ballot.
pub struct NewBallot<'a> {
    /// Id.
    pub id: &'a str,
    /// Sealed data key.
    pub encrypted_dek: Option<&'a [u8]>,
    /// Sealed measure.
    pub measure: &'a [u8],
    /// SHA-256 of the admin token.
    pub admin_hash: &'a [u8],
    /// Write-ins allowed.
    pub allow_write_ins: bool,
    /// Creation hour.
    pub created_hour: i64,
    /// Options in order: (sealed text, equality index).
    pub options: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A voter's choice, ready to store.
#[derive(Clone, Debug)]
pub enum Choice {
    /// One of the ballot's options.
    Option {
        /// Its row id.
        id: i64,
        /// Its number within the ballot.
        number: i64,
    },
    /// A write-in: its sealed text and equality index. An equal write-in (or option) already on
    /// the ballot is reused.
    WriteIn {
        /// Sealed text.
        text: Vec<u8>,
        /// Equality index.
        index: Vec<u8>,
    },
}

/// A vote waiting for its batch.
#[derive(Clone, Debug)]
pub struct PendingVote {
    /// The ballot.
    pub ballot: String,
    /// The voter's has-voted tag.
    pub voter_tag: Vec<u8>,
    /// The choice.
    pub choice: Choice,
}

/// What became of a vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Stored for the option of this number (within the ballot).
    Accepted(i64),
    /// The voter had voted already.
    AlreadyVoted,
    /// The ballot is not open.
    Closed,
}

/// The database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

const DDL: &[(&str, &str)] = &[
    (
        "CREATE TABLE IF NOT EXISTS ballots (
            id TEXT PRIMARY KEY,
            encrypted_dek BYTEA,
            measure BYTEA NOT NULL,
            admin_hash BYTEA NOT NULL,
            allow_write_ins BIGINT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open', 'closed', 'shredded')),
            created_hour BIGINT NOT NULL,
            closed_at BIGINT,
            shred_after BIGINT)",
        "CREATE TABLE IF NOT EXISTS ballots (
            id TEXT PRIMARY KEY,
            encrypted_dek BLOB,
            measure BLOB NOT NULL,
            admin_hash BLOB NOT NULL,
            allow_write_ins INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open', 'closed', 'shredded')),
            created_hour INTEGER NOT NULL,
            closed_at INTEGER,
            shred_after INTEGER)",
    ),
    (
        "CREATE TABLE IF NOT EXISTS ballot_options (
            id BIGSERIAL PRIMARY KEY,
            ballot_id TEXT NOT NULL REFERENCES ballots (id),
            position BIGINT,
            number BIGINT,
            is_write_in BIGINT NOT NULL,
            text BYTEA NOT NULL,
            text_index BYTEA NOT NULL,
            UNIQUE (ballot_id, text_index),
            UNIQUE (ballot_id, id))",
        "CREATE TABLE IF NOT EXISTS ballot_options (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ballot_id TEXT NOT NULL REFERENCES ballots (id),
            position INTEGER,
            number INTEGER,
            is_write_in INTEGER NOT NULL,
            text BLOB NOT NULL,
            text_index BLOB NOT NULL,
            UNIQUE (ballot_id, text_index),
            UNIQUE (ballot_id, id))",
    ),
    (
        "CREATE TABLE IF NOT EXISTS votes (
            ballot_id TEXT NOT NULL,
            option_id BIGINT NOT NULL,
            FOREIGN KEY (ballot_id, option_id) REFERENCES ballot_options (ballot_id, id))",
        "CREATE TABLE IF NOT EXISTS votes (
            ballot_id TEXT NOT NULL,
            option_id INTEGER NOT NULL,
            FOREIGN KEY (ballot_id, option_id) REFERENCES ballot_options (ballot_id, id))",
    ),
    (
        "CREATE INDEX IF NOT EXISTS votes_by_option ON votes (ballot_id, option_id)",
        "CREATE INDEX IF NOT EXISTS votes_by_option ON votes (ballot_id, option_id)",
    ),
    (
        "CREATE TABLE IF NOT EXISTS has_voted (
            ballot_id TEXT NOT NULL REFERENCES ballots (id),
            voter_tag BYTEA NOT NULL,
            PRIMARY KEY (ballot_id, voter_tag))",
        "CREATE TABLE IF NOT EXISTS has_voted (
            ballot_id TEXT NOT NULL REFERENCES ballots (id),
            voter_tag BLOB NOT NULL,
            PRIMARY KEY (ballot_id, voter_tag))",
    ),
];

/// `($1, $2), ($3, $4), …` for `rows` rows of `width` parameters.
fn values(rows: usize, width: usize) -> String {
    let mut s = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..width {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(r * width + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

fn option_row(r: &AnyRow) -> Result<OptionRow, sqlx::Error> {
    Ok(OptionRow {
        id: r.try_get(0)?,
        is_write_in: r.try_get::<i64, _>(1)? != 0,
        text: r.try_get(2)?,
        text_index: r.try_get(3)?,
        number: r.try_get(4)?,
    })
}

impl Db {
    /// Connects and creates the tables if they are missing.
    pub async fn connect(url: &str, connections: u32) -> Result<Db, AppError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(AppError::internal("sqlite: needs a file path"));
            }
            // Owner-only, like the key store: it holds sealed keys.
            if let Err(e) = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                && e.kind() != std::io::ErrorKind::AlreadyExists
            {
                return Err(AppError::internal(format!("cannot create {path}: {e}")));
            }
            (Backend::Sqlite, format!("sqlite://{path}"))
        } else {
            (Backend::Postgres, url.to_owned())
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .map_err(|e| AppError::internal(format!("cannot open the database: {e}")))?;
        let db = Db { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    fn begin(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    async fn migrate(&self) -> Result<(), AppError> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&self.pool)
                .await?;
        }
        let mut tx = self.pool.begin_with(self.begin()).await?;
        if self.backend == Backend::Postgres {
            // Instances starting together would race on CREATE TABLE IF NOT EXISTS.
            sqlx::query("SELECT pg_advisory_xact_lock(7366021)")
                .execute(&mut *tx)
                .await?;
        }
        for (pg, lite) in DDL {
            let sql = if self.backend == Backend::Postgres {
                pg
            } else {
                lite
            };
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        self.number_options(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Option numbers within each ballot (1..n). Databases from before they existed get the
    /// column, and every option without a number gets one: the listed options 1..k in their
    /// order, then the write-ins in the order they were stored (their row ids).
    async fn number_options(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    ) -> Result<(), AppError> {
        let has_column = match self.backend {
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = \
                 current_schema() AND table_name = 'ballot_options' AND column_name = 'number'"
            }
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM pragma_table_info('ballot_options') WHERE name = 'number'"
            }
        };
        let n: i64 = sqlx::query(has_column)
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
        if n == 0 {
            sqlx::query("ALTER TABLE ballot_options ADD COLUMN number BIGINT")
                .execute(&mut **tx)
                .await?;
        }
        let missing = sqlx::query("SELECT id FROM ballot_options WHERE number IS NULL LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?;
        if missing.is_some() {
            let done = sqlx::query(
                "UPDATE ballot_options SET number = n.num FROM (SELECT id, ROW_NUMBER() OVER \
                 (PARTITION BY ballot_id ORDER BY is_write_in, position, id) AS num \
                 FROM ballot_options) AS n WHERE ballot_options.id = n.id \
                 AND ballot_options.number IS NULL",
            )
            .execute(&mut **tx)
            .await?;
            tracing::info!(
                options = done.rows_affected(),
                "numbered the options of existing ballots within each ballot"
            );
        }
        sqlx::query(
            "CREATE UNIQUE INDEX IF NOT EXISTS ballot_options_number \
             ON ballot_options (ballot_id, number)",
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), AppError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Stores a new ballot and its options; returns the option numbers in order (1..n).
    pub async fn insert_ballot(&self, b: NewBallot<'_>) -> Result<Vec<i64>, AppError> {
        let mut tx = self.pool.begin_with(self.begin()).await?;
        sqlx::query(
            "INSERT INTO ballots (id, encrypted_dek, measure, admin_hash, allow_write_ins, status, \
             created_hour) VALUES ($1, $2, $3, $4, $5, 'open', $6)",
        )
        .bind(b.id)
        .bind(b.encrypted_dek)
        .bind(b.measure)
        .bind(b.admin_hash)
        .bind(i64::from(b.allow_write_ins))
        .bind(b.created_hour)
        .execute(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(b.options.len());
        for (position, (text, index)) in b.options.iter().enumerate() {
            let number = position as i64 + 1;
            sqlx::query(
                "INSERT INTO ballot_options (ballot_id, position, number, is_write_in, text, \
                 text_index) VALUES ($1, $2, $3, 0, $4, $5)",
            )
            .bind(b.id)
            .bind(position as i64)
            .bind(number)
            .bind(text.as_slice())
            .bind(index.as_slice())
            .execute(&mut *tx)
            .await?;
            ids.push(number);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// A ballot.
    pub async fn ballot(&self, id: &str) -> Result<Option<BallotRow>, AppError> {
        let row = sqlx::query(
            "SELECT id, encrypted_dek, measure, admin_hash, allow_write_ins, status \
             FROM ballots WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| ballot_row(&r)).transpose().map_err(Into::into)
    }

    /// The newest ballots.
    pub async fn recent_ballots(&self, limit: i64) -> Result<Vec<BallotRow>, AppError> {
        let rows = sqlx::query(
            "SELECT id, encrypted_dek, measure, admin_hash, allow_write_ins, status \
             FROM ballots ORDER BY created_hour DESC, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(ballot_row)
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    /// A ballot's state.
    pub async fn status(&self, id: &str) -> Result<Option<Status>, AppError> {
        let row = sqlx::query("SELECT status FROM ballots WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<String, _>(0))
            .transpose()?
            .map(|s| Status::parse(&s)))
    }

    /// A ballot's options: the listed ones, in order, then (with `write_ins`) the write-ins.
    pub async fn options(&self, id: &str, write_ins: bool) -> Result<Vec<OptionRow>, AppError> {
        let sql = if write_ins {
            "SELECT id, is_write_in, text, text_index, number FROM ballot_options \
             WHERE ballot_id = $1 ORDER BY is_write_in, position, number"
        } else {
            "SELECT id, is_write_in, text, text_index, number FROM ballot_options \
             WHERE ballot_id = $1 AND is_write_in = 0 ORDER BY position"
        };
        let rows = sqlx::query(sql).bind(id).fetch_all(&self.pool).await?;
        rows.iter()
            .map(option_row)
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    /// Votes cast on a ballot.
    pub async fn total(&self, id: &str) -> Result<i64, AppError> {
        let row = sqlx::query("SELECT COUNT(*) FROM votes WHERE ballot_id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Votes per option of a ballot.
    pub async fn counts(&self, id: &str) -> Result<HashMap<i64, i64>, AppError> {
        let rows = sqlx::query(
            "SELECT option_id, COUNT(*) FROM votes WHERE ballot_id = $1 GROUP BY option_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            out.insert(r.try_get(0)?, r.try_get(1)?);
        }
        Ok(out)
    }

    /// Closes an open ballot; `false` if it was not open.
    pub async fn close(&self, id: &str, now: i64, shred_after: i64) -> Result<bool, AppError> {
        let done = sqlx::query(
            "UPDATE ballots SET status = 'closed', closed_at = $2, shred_after = $3 \
             WHERE id = $1 AND status = 'open'",
        )
        .bind(id)
        .bind(now)
        .bind(shred_after)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Closed ballots whose retention period has ended.
    pub async fn due_for_shredding(&self, now: i64) -> Result<Vec<String>, AppError> {
        let rows = sqlx::query(
            "SELECT id FROM ballots WHERE status = 'closed' AND shred_after <= $1 ORDER BY id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    /// After the ballot's key is destroyed: drops the sealed data key and the has-voted tags
    /// (meaningless without the key); options and votes stay, so the counts remain.
    pub async fn mark_shredded(&self, id: &str) -> Result<(), AppError> {
        let mut tx = self.pool.begin_with(self.begin()).await?;
        sqlx::query(
            "UPDATE ballots SET status = 'shredded', encrypted_dek = NULL WHERE id = $1 \
             AND status = 'closed'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM has_voted WHERE ballot_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes a batch of votes in one transaction and says what became of each. Either the
    /// whole batch commits or none of it does (the caller answers every vote with the error).
    pub async fn write_votes(&self, votes: &[PendingVote]) -> Result<Vec<VoteOutcome>, AppError> {
        let mut outcomes = vec![VoteOutcome::Closed; votes.len()];
        if votes.is_empty() {
            return Ok(outcomes);
        }
        let mut tx = self.pool.begin_with(self.begin()).await?;

        // 1. Which ballots are open, locked against a concurrent close until we commit.
        let ballots: Vec<&str> = votes
            .iter()
            .map(|v| v.ballot.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // A batch with write-ins numbers new options, so it takes its ballots' rows exclusively
        // (a concurrent batch of another process must not hand out the same numbers); others
        // share them. SQLite's BEGIN IMMEDIATE serializes every batch anyway.
        let has_write_ins = votes
            .iter()
            .any(|v| matches!(v.choice, Choice::WriteIn { .. }));
        let lock = match (self.backend, has_write_ins) {
            (Backend::Postgres, true) => " ORDER BY id FOR UPDATE",
            (Backend::Postgres, false) => " ORDER BY id FOR SHARE",
            (Backend::Sqlite, _) => "",
        };
        let sql = format!(
            "SELECT id FROM ballots WHERE status = 'open' AND id IN ({}){lock}",
            (1..=ballots.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(&sql);
        for b in &ballots {
            q = q.bind(*b);
        }
        let open: BTreeSet<String> = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;

        // 2. The has-voted tags, sorted (not in arrival order); the first of a voter's
        //    duplicates within the batch wins.
        let mut first: BTreeMap<(&str, &[u8]), usize> = BTreeMap::new();
        for (i, v) in votes.iter().enumerate() {
            if !open.contains(&v.ballot) {
                continue;
            }
            first
                .entry((v.ballot.as_str(), v.voter_tag.as_slice()))
                .or_insert(i);
        }
        for (i, v) in votes.iter().enumerate() {
            if open.contains(&v.ballot) {
                outcomes[i] = VoteOutcome::AlreadyVoted;
            }
        }
        let mut accepted: Vec<usize> = Vec::with_capacity(first.len());
        if !first.is_empty() {
            let sql = format!(
                "INSERT INTO has_voted (ballot_id, voter_tag) VALUES {} \
                 ON CONFLICT DO NOTHING RETURNING ballot_id, voter_tag",
                values(first.len(), 2)
            );
            let mut q = sqlx::query(&sql);
            for (ballot, tag) in first.keys() {
                q = q.bind(*ballot).bind(*tag);
            }
            for r in q.fetch_all(&mut *tx).await? {
                let ballot: String = r.try_get(0)?;
                let tag: Vec<u8> = r.try_get(1)?;
                if let Some(i) = first.get(&(ballot.as_str(), tag.as_slice())) {
                    accepted.push(*i);
                }
            }
        }

        // 3. Write-ins become options of their ballot (an equal one is reused).
        let mut write_ins: BTreeMap<(&str, &[u8]), &[u8]> = BTreeMap::new();
        for &i in &accepted {
            if let Choice::WriteIn { text, index } = &votes[i].choice {
                write_ins
                    .entry((votes[i].ballot.as_str(), index.as_slice()))
                    .or_insert(text.as_slice());
            }
        }
        // (row id, number) of every write-in of the batch, by (ballot, equality index).
        let mut write_in_ids: HashMap<(String, Vec<u8>), (i64, i64)> = HashMap::new();
        if !write_ins.is_empty() {
            self.find_write_ins(&mut tx, &write_ins, &mut write_in_ids)
                .await?;
            // The new ones, numbered after the ballot's last option, in index order (the
            // indexes are keyed hashes: the order says nothing about who wrote what).
            let new: Vec<(&str, &[u8], &[u8])> = write_ins
                .iter()
                .filter(|((b, i), _)| !write_in_ids.contains_key(&((*b).to_owned(), i.to_vec())))
                .map(|((b, i), t)| (*b, *i, *t))
                .collect();
            if !new.is_empty() {
                let ballots: Vec<&str> = new
                    .iter()
                    .map(|(b, _, _)| *b)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let sql = format!(
                    "SELECT ballot_id, MAX(number) FROM ballot_options WHERE ballot_id IN ({}) \
                     GROUP BY ballot_id",
                    values(ballots.len(), 1).replace(['(', ')'], "")
                );
                let mut q = sqlx::query(&sql);
                for b in &ballots {
                    q = q.bind(*b);
                }
                let mut last: HashMap<String, i64> = HashMap::new();
                for r in q.fetch_all(&mut *tx).await? {
                    last.insert(r.try_get(0)?, r.try_get::<Option<i64>, _>(1)?.unwrap_or(0));
                }
                let sql = format!(
                    "INSERT INTO ballot_options (ballot_id, is_write_in, text, text_index, number) \
                     VALUES {}",
                    values(new.len(), 5)
                );
                let mut q = sqlx::query(&sql);
                for (ballot, index, text) in &new {
                    let n = last.entry((*ballot).to_owned()).or_insert(0);
                    *n += 1;
                    q = q
                        .bind(*ballot)
                        .bind(1_i64)
                        .bind(*text)
                        .bind(*index)
                        .bind(*n);
                }
                q.execute(&mut *tx).await?;
                self.find_write_ins(&mut tx, &write_ins, &mut write_in_ids)
                    .await?;
            }
        }

        // 4. The votes themselves, sorted by ballot and option.
        let mut rows: Vec<(&str, i64, i64, usize)> = Vec::with_capacity(accepted.len());
        for &i in &accepted {
            let v = &votes[i];
            let (option, number) = match &v.choice {
                Choice::Option { id, number } => (*id, *number),
                Choice::WriteIn { index, .. } => *write_in_ids
                    .get(&(v.ballot.clone(), index.clone()))
                    .ok_or_else(|| AppError::internal("a write-in option was not stored"))?,
            };
            rows.push((v.ballot.as_str(), option, number, i));
        }
        rows.sort_unstable();
        if !rows.is_empty() {
            let sql = format!(
                "INSERT INTO votes (ballot_id, option_id) VALUES {}",
                values(rows.len(), 2)
            );
            let mut q = sqlx::query(&sql);
            for (ballot, option, _, _) in &rows {
                q = q.bind(*ballot).bind(*option);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        for (_, _, number, i) in rows {
            outcomes[i] = VoteOutcome::Accepted(number);
        }
        Ok(outcomes)
    }

    /// Adds to `found` the (row id, number) of each of `write_ins` already stored.
    async fn find_write_ins(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        write_ins: &BTreeMap<(&str, &[u8]), &[u8]>,
        found: &mut HashMap<(String, Vec<u8>), (i64, i64)>,
    ) -> Result<(), AppError> {
        let sql = format!(
            "SELECT id, ballot_id, text_index, number FROM ballot_options \
             WHERE (ballot_id, text_index) IN (VALUES {})",
            values(write_ins.len(), 2)
        );
        let mut q = sqlx::query(&sql);
        for (ballot, index) in write_ins.keys() {
            q = q.bind(*ballot).bind(*index);
        }
        for r in q.fetch_all(&mut **tx).await? {
            found.insert(
                (r.try_get(1)?, r.try_get(2)?),
                (r.try_get(0)?, r.try_get(3)?),
            );
        }
        Ok(())
    }
}

fn ballot_row(r: &AnyRow) -> Result<BallotRow, sqlx::Error> {
    Ok(BallotRow {
        id: r.try_get(0)?,
        encrypted_dek: r.try_get(1)?,
        measure: r.try_get(2)?,
        admin_hash: r.try_get(3)?,
        allow_write_ins: r.try_get::<i64, _>(4)? != 0,
        status: Status::parse(&r.try_get::<String, _>(5)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_lists() {
        assert_eq!(values(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(values(1, 1), "($1)");
    }
}

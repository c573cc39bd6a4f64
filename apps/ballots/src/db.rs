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
    /// The option's id (what a vote stores).
    pub id: i64,
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
    Option(i64),
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
    /// Stored for this option.
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
            is_write_in BIGINT NOT NULL,
            text BYTEA NOT NULL,
            text_index BYTEA NOT NULL,
            UNIQUE (ballot_id, text_index),
            UNIQUE (ballot_id, id))",
        "CREATE TABLE IF NOT EXISTS ballot_options (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ballot_id TEXT NOT NULL REFERENCES ballots (id),
            position INTEGER,
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
        tx.commit().await?;
        Ok(())
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), AppError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Stores a new ballot and its options; returns the option ids in order.
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
            let row = sqlx::query(
                "INSERT INTO ballot_options (ballot_id, position, is_write_in, text, text_index) \
                 VALUES ($1, $2, 0, $3, $4) RETURNING id",
            )
            .bind(b.id)
            .bind(position as i64)
            .bind(text.as_slice())
            .bind(index.as_slice())
            .fetch_one(&mut *tx)
            .await?;
            ids.push(row.try_get(0)?);
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
            "SELECT id, is_write_in, text, text_index FROM ballot_options \
             WHERE ballot_id = $1 ORDER BY is_write_in, position, id"
        } else {
            "SELECT id, is_write_in, text, text_index FROM ballot_options \
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
        let lock = if self.backend == Backend::Postgres {
            " ORDER BY id FOR SHARE"
        } else {
            ""
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
        let mut write_in_ids: HashMap<(String, Vec<u8>), i64> = HashMap::new();
        if !write_ins.is_empty() {
            let sql = format!(
                "INSERT INTO ballot_options (ballot_id, is_write_in, text, text_index) \
                 SELECT column1, 1, column2, column3 FROM (VALUES {}) AS w WHERE true \
                 ON CONFLICT (ballot_id, text_index) DO NOTHING",
                values(write_ins.len(), 3)
            );
            let mut q = sqlx::query(&sql);
            for ((ballot, index), text) in &write_ins {
                q = q.bind(*ballot).bind(*text).bind(*index);
            }
            q.execute(&mut *tx).await?;
            let sql = format!(
                "SELECT id, ballot_id, text_index FROM ballot_options \
                 WHERE (ballot_id, text_index) IN (VALUES {})",
                values(write_ins.len(), 2)
            );
            let mut q = sqlx::query(&sql);
            for (ballot, index) in write_ins.keys() {
                q = q.bind(*ballot).bind(*index);
            }
            for r in q.fetch_all(&mut *tx).await? {
                write_in_ids.insert((r.try_get(1)?, r.try_get(2)?), r.try_get(0)?);
            }
        }

        // 4. The votes themselves, sorted by ballot and option.
        let mut rows: Vec<(&str, i64, usize)> = Vec::with_capacity(accepted.len());
        for &i in &accepted {
            let v = &votes[i];
            let option = match &v.choice {
                Choice::Option(id) => *id,
                Choice::WriteIn { index, .. } => *write_in_ids
                    .get(&(v.ballot.clone(), index.clone()))
                    .ok_or_else(|| AppError::internal("a write-in option was not stored"))?,
            };
            rows.push((v.ballot.as_str(), option, i));
        }
        rows.sort_unstable();
        if !rows.is_empty() {
            let sql = format!(
                "INSERT INTO votes (ballot_id, option_id) VALUES {}",
                values(rows.len(), 2)
            );
            let mut q = sqlx::query(&sql);
            for (ballot, option, _) in &rows {
                q = q.bind(*ballot).bind(*option);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        for (_, option, i) in rows {
            outcomes[i] = VoteOutcome::Accepted(option);
        }
        Ok(outcomes)
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

//! The application's state and its two background tasks: the vote writer (group commit) and the
//! shredder (destroys ballot keys after the retention period).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{mpsc, oneshot};

use crate::config::AppConfig;
use crate::crypto::{Cipher, Keys};
use crate::db::{Db, OptionRow, PendingVote, Status, VoteOutcome};
use crate::error::AppError;

/// What a request needs to know about a ballot, cached per worker for `key_cache_ttl`: its
/// opened keys and its sealed texts (never plaintext, which exists only while a request runs).
pub struct BallotInfo {
    /// Id.
    pub id: String,
    /// The ballot's keys; `None` once shredded.
    pub cipher: Option<Cipher>,
    /// The sealed measure.
    pub measure: Vec<u8>,
    /// The listed options (sealed), in order.
    pub options: Vec<OptionRow>,
    /// Their numbers (what a vote names) and row ids.
    pub option_ids: HashMap<i64, i64>,
    /// Write-ins allowed.
    pub allow_write_ins: bool,
    /// SHA-256 of the admin token.
    pub admin_hash: Vec<u8>,
}

impl BallotInfo {
    /// The cipher, or [`AppError::Shredded`].
    pub fn cipher(&self) -> Result<&Cipher, AppError> {
        self.cipher.as_ref().ok_or(AppError::Shredded)
    }
}

type VoteReply = oneshot::Sender<Result<VoteOutcome, String>>;

/// The shared state of every request.
pub struct App {
    /// The database.
    pub db: Db,
    /// Ballot keys.
    pub keys: Keys,
    /// Settings.
    pub cfg: AppConfig,
    ballots: moka::future::Cache<String, Arc<BallotInfo>>,
    statuses: moka::future::Cache<String, Status>,
    writer: mpsc::Sender<(PendingVote, VoteReply)>,
    /// The Prometheus exposition.
    pub metrics: PrometheusHandle,
}

/// Seconds since 1970.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Longest ballot id looked up (ours are 16 characters).
const MAX_ID: usize = 64;

/// A ballot id can only be unpadded base64url: anything else (empty, too long, a NUL, a path
/// trick) is no ballot, answered without a database query.
pub fn check_id(id: &str) -> Result<(), AppError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(AppError::NotFound("no such ballot"))
    }
}

/// `n` random bytes as unpadded base64url.
pub fn random_id(n: usize) -> Result<String, AppError> {
    coffer_core::token::random_token(n)
        .map(|t| t.as_str().to_owned())
        .map_err(|_| AppError::internal("random generator"))
}

/// The hash domain of admin tokens: none, as the hashes stored since the first release are plain
/// SHA-256 of the token.
const ADMIN_TOKEN_DOMAIN: &[u8] = b"";

/// SHA-256 of an admin token.
pub fn token_hash(token: &str) -> Vec<u8> {
    coffer_core::token::hash_token(ADMIN_TOKEN_DOMAIN, token).to_vec()
}

/// Whether `token` is the admin token `stored` is the hash of (constant time).
pub fn token_matches(token: &str, stored: &[u8]) -> bool {
    coffer_core::token::verify_token(ADMIN_TOKEN_DOMAIN, token, stored)
}

impl App {
    /// The state, and the vote writer and shredder started on the current runtime.
    pub fn start(db: Db, keys: Keys, cfg: AppConfig, metrics: PrometheusHandle) -> Arc<App> {
        let (tx, rx) = mpsc::channel(cfg.max_batch * 8);
        let app = Arc::new(App {
            ballots: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cfg.key_cache_ttl)
                .build(),
            statuses: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cfg.status_cache_ttl)
                .build(),
            db,
            keys,
            cfg,
            writer: tx,
            metrics,
        });
        tokio::spawn(write_votes(app.db.clone(), rx, app.cfg.max_batch));
        tokio::spawn(shred_loop(Arc::downgrade(&app)));
        app
    }

    /// A ballot, from the worker's cache or the database.
    pub async fn ballot(&self, id: &str) -> Result<Arc<BallotInfo>, AppError> {
        check_id(id)?;
        if let Some(info) = self.ballots.get(id).await {
            metrics::counter!("ballots_key_cache_hits_total").increment(1);
            return Ok(info);
        }
        metrics::counter!("ballots_key_cache_misses_total").increment(1);
        // One load per ballot and worker at a time (single flight).
        self.ballots
            .try_get_with(id.to_owned(), self.load_ballot(id))
            .await
            .map_err(|e| match &*e {
                AppError::NotFound(m) => AppError::NotFound(m),
                e => AppError::internal(e),
            })
    }

    async fn load_ballot(&self, id: &str) -> Result<Arc<BallotInfo>, AppError> {
        let row = self
            .db
            .ballot(id)
            .await?
            .ok_or(AppError::NotFound("no such ballot"))?;
        let options = self.db.options(id, false).await?;
        let cipher = match self.keys.open(id, row.encrypted_dek.as_deref()).await {
            Ok(c) => Some(c),
            Err(AppError::Shredded) => None,
            Err(e) => return Err(e),
        };
        Ok(Arc::new(BallotInfo {
            id: row.id,
            cipher,
            measure: row.measure,
            option_ids: options.iter().map(|o| (o.number, o.id)).collect(),
            options,
            allow_write_ins: row.allow_write_ins,
            admin_hash: row.admin_hash,
        }))
    }

    /// A ballot's state, trusted for `status_cache_ttl` (votes check it in their transaction).
    pub async fn status(&self, id: &str) -> Result<Status, AppError> {
        check_id(id)?;
        if let Some(s) = self.statuses.get(id).await {
            return Ok(s);
        }
        let s = self
            .db
            .status(id)
            .await?
            .ok_or(AppError::NotFound("no such ballot"))?;
        self.statuses.insert(id.to_owned(), s).await;
        Ok(s)
    }

    /// Forgets what this worker cached about a ballot.
    pub async fn forget(&self, id: &str) {
        self.ballots.invalidate(id).await;
        self.statuses.invalidate(id).await;
    }

    /// Queues a vote for the next batch and waits for its commit.
    pub async fn cast(&self, vote: PendingVote) -> Result<VoteOutcome, AppError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send((vote, tx))
            .await
            .map_err(|_| AppError::internal("the vote writer has stopped"))?;
        match rx.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(AppError::Internal(e)),
            Err(_) => Err(AppError::internal("the vote writer dropped a vote")),
        }
    }

    /// Destroys the keys of closed ballots past their retention period.
    pub async fn shred_due(&self) -> Result<usize, AppError> {
        let due = self.db.due_for_shredding(now()).await?;
        for id in &due {
            // Key first: if we stop between the two steps, the next pass finishes the row.
            self.keys.shred(id).await?;
            self.db.mark_shredded(id).await?;
            self.forget(id).await;
            metrics::counter!("ballots_shredded_total").increment(1);
            tracing::info!(ballot = %id, "ballot key destroyed after its retention period");
        }
        Ok(due.len())
    }
}

/// The vote writer: takes every vote queued (up to `max_batch`), writes them in one transaction,
/// answers each, and repeats. One commit (one fsync) serves a whole batch.
async fn write_votes(db: Db, mut rx: mpsc::Receiver<(PendingVote, VoteReply)>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let (votes, replies): (Vec<PendingVote>, Vec<VoteReply>) = batch.drain(..).unzip();
        let started = Instant::now();
        let result = db.write_votes(&votes).await;
        metrics::histogram!("ballots_vote_batch_size").record(votes.len() as f64);
        metrics::histogram!("ballots_vote_batch_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, votes = votes.len(), "a vote batch failed; none of it was stored");
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

async fn shred_loop(app: std::sync::Weak<App>) {
    let interval = match app.upgrade() {
        Some(a) => a.cfg.shred_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { return };
        if let Err(e) = app.shred_due().await {
            tracing::error!(error = %e, "shredding failed; will retry");
        }
    }
}

//! The JSON API and the operations the web pages share with it.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};

use crate::app::{App, BallotInfo, now, random_id, token_hash, token_matches};
use crate::crypto::{MAX_MEASURE, MAX_OPTION, normalize_choice};
use crate::db::{Choice, NewBallot, PendingVote, Status, VoteOutcome};
use crate::error::AppError;

/// Longest voter id, in bytes.
pub const MAX_VOTER: usize = 128;
/// Most options on a ballot.
pub const MAX_OPTIONS: usize = 50;

/// `POST /api/ballots`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBallot {
    /// The question put to the voters.
    pub measure: String,
    /// The options, in order (2–50).
    pub options: Vec<String>,
    /// Whether voters may write in their own option (default true).
    #[serde(default = "yes")]
    pub allow_write_ins: bool,
}

fn yes() -> bool {
    true
}

/// An option as shown.
#[derive(Debug, Serialize)]
pub struct OptionView {
    /// Its id within the ballot, 1..n (what a vote names).
    pub id: i64,
    /// Its text.
    pub text: String,
}

/// A created ballot.
#[derive(Debug, Serialize)]
pub struct Created {
    /// Id.
    pub id: String,
    /// The token that closes the ballot: shown once, stored only as a hash.
    pub admin_token: String,
    /// The options with their ids.
    pub options: Vec<OptionView>,
}

/// A ballot as shown to a voter.
#[derive(Debug, Serialize)]
pub struct BallotView {
    /// Id.
    pub id: String,
    /// open, closed or shredded.
    pub status: &'static str,
    /// The measure (`null` once shredded).
    pub measure: Option<String>,
    /// Whether write-ins are allowed.
    pub allow_write_ins: bool,
    /// The listed options (empty once shredded).
    pub options: Vec<OptionView>,
}

/// `POST /api/ballots/{id}/votes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    /// Who votes. A real deployment takes this from its authentication; it is stored only as a
    /// keyed tag in the has-voted table, never beside the vote.
    pub voter: String,
    /// One of the ballot's options…
    pub option_id: Option<i64>,
    /// …or a write-in.
    pub write_in: Option<String>,
}

/// A stored vote. For a listed option, its id; for a write-in, only that it was counted: the id
/// of a write-in's option would tell the voter whether someone else had written the same text
/// in before (the same id) or not (the next free id), a count per option while the ballot is
/// open.
#[derive(Debug, Serialize)]
pub struct Voted {
    /// The listed option voted for (absent for a write-in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub option_id: Option<i64>,
    /// Whether the vote was a write-in (absent when not).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub write_in: bool,
}

/// One line of a tally.
#[derive(Debug, Serialize)]
pub struct TallyLine {
    /// The option.
    pub id: i64,
    /// Its text (`null` once the ballot is shredded).
    pub text: Option<String>,
    /// Written in by a voter.
    pub write_in: bool,
    /// Votes.
    pub votes: i64,
}

/// A tally. While the ballot is open it holds only the number of votes cast: per-option counts
/// (and the write-ins) would let whoever knows when someone voted read their choice from the
/// change, so they are published only once the ballot is closed.
#[derive(Debug, Serialize)]
pub struct Tally {
    /// Id.
    pub id: String,
    /// open, closed or shredded.
    pub status: &'static str,
    /// The measure (`null` once shredded).
    pub measure: Option<String>,
    /// Votes in all.
    pub total: i64,
    /// Whether the per-option counts are withheld (the ballot is open).
    pub results_hidden: bool,
    /// Once closed: listed options first, in order, then write-ins by votes. Empty while open.
    pub options: Vec<TallyLine>,
}

fn check_text(what: &'static str, text: &str, max: usize) -> Result<(), AppError> {
    if text.trim().is_empty() {
        return Err(AppError::bad("empty_text", format!("the {what} is empty")));
    }
    if text.len() > max {
        return Err(AppError::bad(
            "too_long",
            format!("the {what} is longer than {max} bytes"),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(AppError::bad(
            "bad_text",
            format!("the {what} contains control characters"),
        ));
    }
    Ok(())
}

/// Creates a ballot: its key scope and data key, its sealed measure and options.
pub async fn create(app: &App, req: CreateBallot) -> Result<Created, AppError> {
    check_text("measure", &req.measure, MAX_MEASURE)?;
    if !(2..=MAX_OPTIONS).contains(&req.options.len()) {
        return Err(AppError::bad(
            "bad_options",
            format!("a ballot has 2–{MAX_OPTIONS} options"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for o in &req.options {
        check_text("option", o, MAX_OPTION)?;
        if o.contains('\n') {
            return Err(AppError::bad("bad_text", "an option is one line"));
        }
        if !seen.insert(normalize_choice(o)) {
            return Err(AppError::bad(
                "duplicate_option",
                "two options are the same (ignoring case and spacing)",
            ));
        }
    }
    let id = random_id(12)?;
    let admin_token = random_id(32)?;
    let (blob, cipher) = app.keys.create(&id).await?;
    let measure = cipher.seal_measure(&id, req.measure.trim())?;
    let mut options = Vec::with_capacity(req.options.len());
    for o in &req.options {
        let index = cipher.choice_index(o)?;
        options.push((cipher.seal_option(&id, &index, o.trim())?, index));
    }
    let ids = app
        .db
        .insert_ballot(NewBallot {
            id: &id,
            encrypted_dek: blob.as_deref(),
            measure: &measure,
            admin_hash: &token_hash(&admin_token),
            allow_write_ins: req.allow_write_ins,
            created_hour: now() / 3600 * 3600,
            options,
        })
        .await?;
    metrics::counter!("ballots_created_total").increment(1);
    Ok(Created {
        id,
        admin_token,
        options: ids
            .into_iter()
            .zip(req.options)
            .map(|(id, text)| OptionView {
                id,
                text: text.trim().to_owned(),
            })
            .collect(),
    })
}

/// A ballot's measure and options, opened for this request.
pub async fn view(app: &App, id: &str) -> Result<BallotView, AppError> {
    let info = app.ballot(id).await?;
    let status = app.status(id).await?;
    let (measure, options) = match &info.cipher {
        Some(c) => {
            let mut options = Vec::with_capacity(info.options.len());
            for o in &info.options {
                options.push(OptionView {
                    id: o.number,
                    text: c.open_option(id, &o.text_index, &o.text)?,
                });
            }
            (Some(c.open_measure(id, &info.measure)?), options)
        }
        None => (None, Vec::new()),
    };
    Ok(BallotView {
        id: info.id.clone(),
        status: status.as_str(),
        measure,
        allow_write_ins: info.allow_write_ins,
        options,
    })
}

/// Casts a vote and waits until it is committed.
pub async fn vote(app: &App, id: &str, req: VoteRequest) -> Result<Voted, AppError> {
    let started = Instant::now();
    let result = vote_inner(app, id, req).await;
    let outcome = match &result {
        Ok(_) => "accepted",
        Err(AppError::AlreadyVoted) => "already_voted",
        Err(AppError::Closed) => "closed",
        Err(AppError::Internal(_)) => "error",
        Err(_) => "rejected",
    };
    metrics::counter!("ballots_votes_total", "outcome" => outcome).increment(1);
    metrics::histogram!("ballots_vote_seconds").record(started.elapsed().as_secs_f64());
    result
}

async fn vote_inner(app: &App, id: &str, req: VoteRequest) -> Result<Voted, AppError> {
    if req.voter.is_empty() || req.voter.len() > MAX_VOTER {
        return Err(AppError::bad(
            "bad_voter",
            format!("voter is 1–{MAX_VOTER} bytes"),
        ));
    }
    let info = app.ballot(id).await?;
    let cipher = match info.cipher() {
        Ok(c) => c,
        Err(AppError::Shredded) => return Err(AppError::Closed),
        Err(e) => return Err(e),
    };
    let is_write_in = req.write_in.is_some();
    let choice = match (req.option_id, req.write_in) {
        (Some(option), None) => {
            let Some(&id) = info.option_ids.get(&option) else {
                return Err(AppError::bad(
                    "unknown_option",
                    "option_id is not an option of this ballot: use an id its page or \
                     GET /api/ballots/{id} lists",
                ));
            };
            Choice::Option { id, number: option }
        }
        (None, Some(text)) => {
            if !info.allow_write_ins {
                return Err(AppError::bad(
                    "write_ins_not_allowed",
                    "this ballot takes no write-ins",
                ));
            }
            check_text("write-in", &text, MAX_OPTION)?;
            if text.contains('\n') {
                return Err(AppError::bad("bad_text", "a write-in is one line"));
            }
            let index = cipher.choice_index(&text)?;
            // A write-in equal to a listed option is a vote for that option.
            match listed_option(&info, &index) {
                Some((id, number)) => Choice::Option { id, number },
                None => Choice::WriteIn {
                    text: cipher.seal_option(id, &index, text.trim())?,
                    index,
                },
            }
        }
        _ => {
            return Err(AppError::bad(
                "bad_choice",
                "give exactly one of option_id and write_in",
            ));
        }
    };
    let pending = PendingVote {
        ballot: info.id.clone(),
        voter_tag: cipher.voter_tag(&req.voter)?,
        choice,
    };
    match app.cast(pending).await? {
        VoteOutcome::Accepted(option_id) => Ok(if is_write_in {
            Voted {
                option_id: None,
                write_in: true,
            }
        } else {
            Voted {
                option_id: Some(option_id),
                write_in: false,
            }
        }),
        VoteOutcome::AlreadyVoted => Err(AppError::AlreadyVoted),
        VoteOutcome::Closed => Err(AppError::Closed),
    }
}

/// The listed option with this equality index: (row id, number).
fn listed_option(info: &BallotInfo, index: &[u8]) -> Option<(i64, i64)> {
    info.options
        .iter()
        .find(|o| o.text_index == index)
        .map(|o| (o.id, o.number))
}

/// The tally: while the ballot is open, the number of votes cast and nothing per option; once it
/// is closed, the counts per option (integer group-by on option ids), opening only the texts.
pub async fn tally(app: &App, id: &str) -> Result<Tally, AppError> {
    let started = Instant::now();
    let info = app.ballot(id).await?;
    // The state straight from the database: once it says closed, no vote can commit any more
    // (a batch holds the ballot's row lock until its commit, and closing waits for it).
    let status = app
        .db
        .status(id)
        .await?
        .ok_or(AppError::NotFound("no such ballot"))?;
    let measure = match &info.cipher {
        Some(c) => Some(c.open_measure(id, &info.measure)?),
        None => None,
    };
    if status == Status::Open {
        let total = app.db.total(id).await?;
        metrics::histogram!("ballots_tally_seconds").record(started.elapsed().as_secs_f64());
        return Ok(Tally {
            id: info.id.clone(),
            status: status.as_str(),
            measure,
            total,
            results_hidden: true,
            options: Vec::new(),
        });
    }
    let counts = app.db.counts(id).await?;
    let options = app.db.options(id, true).await?;
    let mut lines = Vec::with_capacity(options.len());
    for o in options {
        let text = match &info.cipher {
            Some(c) => Some(c.open_option(id, &o.text_index, &o.text)?),
            None => None,
        };
        lines.push(TallyLine {
            id: o.number,
            text,
            write_in: o.is_write_in,
            votes: counts.get(&o.id).copied().unwrap_or(0),
        });
    }
    // Listed options keep their order; write-ins follow, most votes first.
    lines.sort_by_key(|l| (l.write_in, if l.write_in { -l.votes } else { 0 }));
    metrics::histogram!("ballots_tally_seconds").record(started.elapsed().as_secs_f64());
    Ok(Tally {
        id: info.id.clone(),
        status: status.as_str(),
        measure,
        total: counts.values().sum(),
        results_hidden: false,
        options: lines,
    })
}

/// Closes a ballot with its admin token; its key is destroyed after the retention period.
pub async fn close(app: &App, id: &str, token: &str) -> Result<Option<i64>, AppError> {
    let info = app.ballot(id).await?;
    if !token_matches(token, &info.admin_hash) {
        return Err(AppError::Unauthorized);
    }
    let at = now();
    let shred_after = at.saturating_add(app.cfg.retention.as_secs() as i64);
    let closed = app.db.close(id, at, shred_after).await?;
    app.forget(id).await;
    if !closed {
        return match app.db.status(id).await? {
            Some(Status::Open) | None => Err(AppError::internal("close did not take")),
            Some(_) => Err(AppError::Closed),
        };
    }
    Ok(Some(shred_after))
}

// ---- JSON handlers -----------------------------------------------------------------------

type Shared = State<Arc<App>>;

/// `POST /api/ballots`.
pub async fn create_json(
    State(app): Shared,
    body: Result<Json<CreateBallot>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Created>), AppError> {
    let Json(req) = body.map_err(|e| AppError::bad("bad_json", e.body_text()))?;
    Ok((StatusCode::CREATED, Json(create(&app, req).await?)))
}

/// `GET /api/ballots/{id}`.
pub async fn view_json(
    State(app): Shared,
    Path(id): Path<String>,
) -> Result<Json<BallotView>, AppError> {
    Ok(Json(view(&app, &id).await?))
}

/// `POST /api/ballots/{id}/votes`.
pub async fn vote_json(
    State(app): Shared,
    Path(id): Path<String>,
    body: Result<Json<VoteRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Voted>), AppError> {
    let Json(req) = body.map_err(|e| AppError::bad("bad_json", e.body_text()))?;
    Ok((StatusCode::CREATED, Json(vote(&app, &id, req).await?)))
}

/// `GET /api/ballots/{id}/tally`.
pub async fn tally_json(
    State(app): Shared,
    Path(id): Path<String>,
) -> Result<Json<Tally>, AppError> {
    Ok(Json(tally(&app, &id).await?))
}

/// `POST /api/ballots/{id}/close` with `Authorization: Bearer <admin token>`.
pub async fn close_json(
    State(app): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    let token = bearer(&headers).ok_or(AppError::Unauthorized)?;
    let shred_after = close(&app, &id, token).await?;
    Ok(Json(
        serde_json::json!({"id": id, "status": "closed", "shred_after": shred_after}),
    ))
}

/// `GET /metrics` with `Authorization: Bearer <metrics token>`. Without a configured token it
/// refuses every request.
pub async fn metrics(State(app): Shared, headers: HeaderMap) -> Result<String, AppError> {
    let token = bearer(&headers).ok_or(AppError::MetricsUnauthorized)?;
    let Some(stored) = &app.cfg.metrics_token_hash else {
        return Err(AppError::MetricsUnauthorized);
    };
    if !coffer_core::token::verify_token(crate::config::METRICS_TOKEN_DOMAIN, token, stored) {
        return Err(AppError::MetricsUnauthorized);
    }
    Ok(app.metrics.render())
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// `GET /healthz`: the database answers.
pub async fn healthz(State(app): Shared) -> Result<Json<serde_json::Value>, AppError> {
    app.db.ping().await?;
    Ok(Json(serde_json::json!({
        "status": "ok",
        "encryption": app.keys.keyring().is_some(),
    })))
}

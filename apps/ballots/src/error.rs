//! Errors as HTTP answers: `{"error": {"code": …, "message": …}}`, as the Coffer service does.
//! Internal errors are logged with their cause and answered with a generic message: no text of a
//! ballot and no key material is ever part of an error.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The input is malformed or breaks a limit.
    #[error("{message}")]
    BadRequest {
        /// A stable machine-readable code.
        code: &'static str,
        /// What to fix.
        message: String,
    },
    /// No such ballot (or option).
    #[error("{0}")]
    NotFound(&'static str),
    /// The ballot is closed.
    #[error("the ballot is closed")]
    Closed,
    /// This voter has voted in this ballot already.
    #[error("this voter has already voted in this ballot")]
    AlreadyVoted,
    /// The ballot's key was destroyed after its retention period: its texts are gone.
    #[error(
        "the ballot's key was destroyed after its retention period; its texts are gone, its counts remain"
    )]
    Shredded,
    /// The admin token is missing or wrong.
    #[error("closing a ballot needs its admin token (Authorization: Bearer …)")]
    Unauthorized,
    /// A failure on our side, logged; the message is generic.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    /// A bad request.
    pub fn bad(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// An internal error from any cause (logged, never sent).
    pub fn internal(e: impl std::fmt::Display) -> AppError {
        AppError::Internal(e.to_string())
    }

    /// The HTTP status and code.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::Closed => (StatusCode::CONFLICT, "ballot_closed"),
            AppError::AlreadyVoted => (StatusCode::CONFLICT, "already_voted"),
            AppError::Shredded => (StatusCode::GONE, "ballot_shredded"),
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> AppError {
        AppError::Internal(format!("database: {e}"))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        if let AppError::Internal(cause) = &self {
            tracing::error!(error = %cause, "request failed");
        }
        let body = json!({"error": {"code": code, "message": self.to_string()}});
        (status, Json(body)).into_response()
    }
}

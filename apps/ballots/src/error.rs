//! Errors as HTTP answers: `{"error": {"code": …, "message": …}}`, as the Coffer service does.
//! Internal errors are logged with their cause and answered with a generic message: no text of a
//! ballot and no key material is ever part of an error.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use coffer_core::ErrorKind;
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
    /// `/metrics` without its token (or with a wrong one).
    #[error(
        "GET /metrics needs Authorization: Bearer <metrics token>; the operator sets it with \
         metrics_token in the [app] table"
    )]
    MetricsUnauthorized,
    /// A state-changing request that did not come from the application's own page (cross-site,
    /// or without the page's form token).
    #[error("{0}")]
    Forbidden(&'static str),
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

    /// The answer to a Coffer library error of `kind` about a ballot's key: a destroyed key is a
    /// shredded ballot; anything else is ours (logged, generic answer), since a request carries
    /// no key material or ciphertext of its own.
    pub fn of_kind(kind: ErrorKind, error: &dyn std::fmt::Display) -> AppError {
        match kind {
            ErrorKind::Destroyed => AppError::Shredded,
            ErrorKind::Decrypt
            | ErrorKind::NotFound
            | ErrorKind::Denied
            | ErrorKind::Conflict
            | ErrorKind::InvalidInput
            | ErrorKind::Unavailable
            | ErrorKind::WrongKek
            | ErrorKind::Internal => AppError::internal(error),
            _ => AppError::internal(error),
        }
    }

    /// What kind of failure this is, in Coffer's one taxonomy.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AppError::BadRequest { .. } => ErrorKind::InvalidInput,
            AppError::NotFound(_) => ErrorKind::NotFound,
            AppError::Closed | AppError::AlreadyVoted => ErrorKind::Conflict,
            AppError::Shredded => ErrorKind::Destroyed,
            AppError::Unauthorized | AppError::MetricsUnauthorized | AppError::Forbidden(_) => {
                ErrorKind::Denied
            }
            AppError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The HTTP status and code.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::Closed => (StatusCode::CONFLICT, "ballot_closed"),
            AppError::AlreadyVoted => (StatusCode::CONFLICT, "already_voted"),
            AppError::Shredded => (StatusCode::GONE, "ballot_shredded"),
            AppError::Unauthorized | AppError::MetricsUnauthorized => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_classify_every_variant() {
        let table = [
            (AppError::bad("bad_json", "x"), ErrorKind::InvalidInput),
            (AppError::NotFound("no such ballot"), ErrorKind::NotFound),
            (AppError::Closed, ErrorKind::Conflict),
            (AppError::AlreadyVoted, ErrorKind::Conflict),
            (AppError::Shredded, ErrorKind::Destroyed),
            (AppError::Unauthorized, ErrorKind::Denied),
            (AppError::MetricsUnauthorized, ErrorKind::Denied),
            (AppError::Forbidden("x"), ErrorKind::Denied),
            (AppError::internal("x"), ErrorKind::Internal),
        ];
        for (e, kind) in table {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }

    #[test]
    fn every_library_kind_has_an_answer() {
        for kind in ErrorKind::ALL {
            let e = AppError::of_kind(kind, &"detail");
            let (status, _) = e.status();
            if kind == ErrorKind::Destroyed {
                assert_eq!(status, StatusCode::GONE);
            } else {
                // Logged, never sent: the answer is generic.
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{kind}");
                assert_eq!(e.to_string(), "internal error");
            }
        }
    }
}

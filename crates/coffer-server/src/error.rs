//! Errors as the service reports them: a status, a stable code and a message that says what to
//! fix. Bad input is a 4xx naming the problem (and the batch item); a value that does not
//! authenticate is one opaque 422; a failure of the key store or KEK provider is a 503 whose
//! body carries only a reference to the server log line with the detail (DESIGN §7).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A malformed `[service]` table or service setting.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `bad_base64`, `wrong_tenant`, `decryption_failed`.
    pub code: &'static str,
    /// What happened and what to do about it.
    pub message: String,
    /// The batch item (0-based) the error is about, when it is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Message.
    pub message: String,
    /// Batch item.
    pub item: Option<usize>,
    /// Seconds to wait (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            item: None,
            retry_after: None,
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Names the batch item the error is about (and says so in the message).
    pub fn at(mut self, item: usize) -> Self {
        if self.item.is_none() {
            self.message = format!("item {item}: {}", self.message);
            self.item = Some(item);
        }
        self
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// A 503 whose detail goes to the log only, under a reference the client sees.
    pub fn unavailable(detail: &dyn std::fmt::Display) -> Self {
        let mut r = [0u8; 6];
        let _ = aws_lc_rs::rand::fill(&mut r);
        let reference = hex::encode(r);
        tracing::error!(reference = %reference, error = %detail, "request failed in a dependency");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "the service could not complete the request (key store or key-encryption key \
                 provider); try again, and if it persists give the operator reference {reference}"
            ),
        )
    }

    /// The outcome label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self.status.as_u16() {
            401 | 403 => "denied",
            429 => "rate_limited",
            422 if self.code == "decryption_failed" => "decryption_failed",
            400..=499 => "client_error",
            _ => "server_error",
        }
    }
}

impl From<coffer_keys::Error> for ApiError {
    fn from(e: coffer_keys::Error) -> Self {
        use coffer_core::Error as C;
        use coffer_keys::Error as K;
        match e {
            K::UnknownScope(s) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_scope",
                format!(
                    "scope '{s}' does not exist; an admin creates it with POST /v1/admin/scopes"
                ),
            ),
            K::UnknownVersion { scope, version } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_key_version",
                format!(
                    "scope '{scope}' has no key {version}: the value was not written by this key store"
                ),
            ),
            e @ K::Destroyed { .. } => {
                ApiError::new(StatusCode::GONE, "key_destroyed", e.to_string())
            }
            K::ScopeExists(s) => ApiError::new(
                StatusCode::CONFLICT,
                "scope_exists",
                format!("scope '{s}' already exists (or was destroyed, which is final)"),
            ),
            K::State(m) => ApiError::new(StatusCode::CONFLICT, "key_state", m),
            K::Crypto(C::Decrypt | C::Unwrap) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "decryption_failed",
                "the value did not decrypt: wrong scope, column, context, domain or type, or the \
                 value was altered",
            ),
            K::Crypto(C::Format(what)) => {
                ApiError::bad_request("bad_ciphertext", format!("not a Coffer value: {what}"))
            }
            K::Crypto(e @ C::UnauthenticatedNull) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "null", e.to_string())
            }
            K::Crypto(
                e @ (C::NotFipsApproved { .. } | C::RowContextInDeterministic | C::Invalid { .. }),
            ) => ApiError::bad_request("invalid", e.to_string()),
            other => ApiError::unavailable(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.retry_after;
        let code = self.code;
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut resp = (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code,
                    message: self.message,
                    item: self.item,
                },
            }),
        )
            .into_response();
        if let Some(s) = retry
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp.extensions_mut().insert(crate::app::ErrorCode(code));
        if unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"coffer\""),
            );
        }
        resp
    }
}

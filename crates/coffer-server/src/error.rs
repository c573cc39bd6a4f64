//! Errors as the service reports them: a status, a stable code and a message that says what to
//! fix. Bad input is a 4xx naming the problem (and the batch item); a value that does not
//! authenticate is one opaque 422; a failure of the key store or KEK provider is a 503 whose
//! body carries only a reference to the server log line with the detail (docs/DESIGN.md §E3).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffer_core::ErrorKind;
use serde::Serialize;
use utoipa::ToSchema;

/// A malformed `[service]` table or service setting.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// Always [`ErrorKind::InvalidInput`]: fix the setting and start again.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

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
        let r: [u8; 6] = coffer_core::digest::random_array().unwrap_or_default();
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

impl ApiError {
    /// The response to an error of `kind` with no code of its own: a 4xx for what the client can
    /// change, and a 503 whose detail goes to the log only for the service's own dependencies,
    /// configuration and KEK (the client can change none of them).
    pub fn of_kind(kind: ErrorKind, error: &dyn std::fmt::Display) -> Self {
        match kind {
            ErrorKind::Decrypt => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "decryption_failed",
                DECRYPTION_FAILED,
            ),
            ErrorKind::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", error.to_string())
            }
            ErrorKind::Destroyed => {
                ApiError::new(StatusCode::GONE, "key_destroyed", error.to_string())
            }
            ErrorKind::Denied => ApiError::forbidden("forbidden", error.to_string()),
            ErrorKind::Conflict => {
                ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string())
            }
            // Invalid input that reaches here is the service's configuration (coffer.toml, a
            // KEK missing from it), not the request: request input is checked before the keyring.
            ErrorKind::InvalidInput
            | ErrorKind::Unavailable
            | ErrorKind::WrongKek
            | ErrorKind::Internal => ApiError::unavailable(error),
            _ => ApiError::unavailable(error),
        }
    }
}

/// The one message of every failed decryption.
const DECRYPTION_FAILED: &str = "the value did not decrypt: wrong scope, column, context, domain \
                                 or type, or the value was altered";

impl From<coffer_keys::Error> for ApiError {
    /// By kind ([`ApiError::of_kind`]), except the errors that have a code of their own in the
    /// API (documented per route in the OpenAPI description).
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
            // A version named by a value, not by the client: the value is not this store's.
            K::UnknownVersion { scope, version } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_key_version",
                format!(
                    "scope '{scope}' has no key {version}: the value was not written by this key store"
                ),
            ),
            K::ScopeExists(s) => ApiError::new(
                StatusCode::CONFLICT,
                "scope_exists",
                format!("scope '{s}' already exists (or was destroyed, which is final)"),
            ),
            K::State(m) => ApiError::new(StatusCode::CONFLICT, "key_state", m),
            // A DEK of the value's header that does not unwrap: the value is not this store's.
            K::Crypto(C::Unwrap) => ApiError::of_kind(ErrorKind::Decrypt, &e),
            K::Crypto(C::Format(what)) => {
                ApiError::bad_request("bad_ciphertext", format!("not a Coffer value: {what}"))
            }
            K::Crypto(e @ C::UnauthenticatedNull) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "null", e.to_string())
            }
            // Core's invalid input comes from the request's parameters (suite, domain, context).
            K::Crypto(e) if e.kind() == ErrorKind::InvalidInput => {
                ApiError::bad_request("invalid", e.to_string())
            }
            // Encryption limits stay a 503 the operator sees (rotate the key).
            K::Crypto(e @ C::EncryptionLimit { .. }) => ApiError::unavailable(&e),
            other => ApiError::of_kind(other.kind(), &other),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_status() {
        for kind in ErrorKind::ALL {
            let e = ApiError::of_kind(kind, &"detail");
            assert!(
                e.status.is_client_error() || e.status == StatusCode::SERVICE_UNAVAILABLE,
                "{kind}"
            );
            // A 503 never shows the detail; a 4xx never shows it for a failed decryption.
            if e.status == StatusCode::SERVICE_UNAVAILABLE || kind == ErrorKind::Decrypt {
                assert!(!e.message.contains("detail"), "{kind}");
            }
        }
        assert_eq!(
            ApiError::of_kind(ErrorKind::Decrypt, &"x").status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            ApiError::of_kind(ErrorKind::Destroyed, &"x").status,
            StatusCode::GONE
        );
    }

    #[test]
    fn keyring_errors_keep_their_statuses_and_codes() {
        use coffer_core::Error as C;
        use coffer_keys::Error as K;
        let table: Vec<(K, u16, &str)> = vec![
            (K::UnknownScope("s".into()), 404, "unknown_scope"),
            (
                K::UnknownVersion {
                    scope: "s".into(),
                    version: coffer_core::KeyVersion(3),
                },
                422,
                "unknown_key_version",
            ),
            (
                K::Destroyed {
                    scope: "s".into(),
                    version: None,
                },
                410,
                "key_destroyed",
            ),
            (K::ScopeExists("s".into()), 409, "scope_exists"),
            (K::State("retired".into()), 409, "key_state"),
            (K::Crypto(C::Decrypt), 422, "decryption_failed"),
            (K::Crypto(C::Unwrap), 422, "decryption_failed"),
            (K::Crypto(C::Format("prefix")), 400, "bad_ciphertext"),
            (K::Crypto(C::UnauthenticatedNull), 422, "null"),
            (K::Crypto(C::RowContextInDeterministic), 400, "invalid"),
            (
                K::Crypto(C::EncryptionLimit { limit: 1 }),
                503,
                "unavailable",
            ),
            (K::Crypto(C::Module("rng")), 503, "unavailable"),
            (K::WrongKek { kek: "k".into() }, 503, "unavailable"),
            (K::UnknownKek { kek: "k".into() }, 503, "unavailable"),
            (K::config("bad"), 503, "unavailable"),
            (K::store("down"), 503, "unavailable"),
            (K::provider("k", "timeout"), 503, "unavailable"),
        ];
        for (e, status, code) in table {
            let shown = e.to_string();
            let api = ApiError::from(e);
            assert_eq!((api.status.as_u16(), api.code), (status, code), "{shown}");
        }
    }
}

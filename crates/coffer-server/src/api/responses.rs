//! The error answers the data endpoints share, written once for their OpenAPI entries (each
//! endpoint adds its own 400, 413 or 422 descriptions).

use std::collections::BTreeMap;

use utoipa::openapi::response::Response;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{IntoResponses, ToSchema};

use crate::error::ErrorBody;

const UNAUTHORIZED: (u16, &str) = (401, "Missing, invalid, expired or revoked token");
const FORBIDDEN: (u16, &str) = (403, "Another tenant's scope, or an admin token");
const UNKNOWN_SCOPE: (u16, &str) = (404, "Unknown scope");
const SHREDDED: (u16, &str) = (410, "The scope was crypto-shredded");
const RATE_LIMITED: (u16, &str) = (429, "Rate limited");
const UNAVAILABLE: (u16, &str) = (503, "Key store or KEK provider unavailable");

/// Each status with its description and an [`ErrorBody`] as JSON.
fn errors(list: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|&(status, description)| {
            let body = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", body)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// What a request for a scope answers before it reaches the scope's keys: 401, 403, 404.
pub struct ScopeErrors;

impl IntoResponses for ScopeErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[UNAUTHORIZED, FORBIDDEN, UNKNOWN_SCOPE])
    }
}

/// What every data operation can answer: [`ScopeErrors`], and 410, 429, 503.
pub struct DataErrors;

impl IntoResponses for DataErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            UNAUTHORIZED,
            FORBIDDEN,
            UNKNOWN_SCOPE,
            SHREDDED,
            RATE_LIMITED,
            UNAVAILABLE,
        ])
    }
}

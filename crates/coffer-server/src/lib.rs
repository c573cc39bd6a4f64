//! The Coffer encryption service: `coffer serve`.
//!
//! HTTP/JSON (axum) batch endpoints to encrypt, decrypt, blind-index, generate and open data
//! keys and rewrap, for tenants whose API tokens reach only the scopes they own; key
//! administration for admin tokens; `/metrics` (Prometheus), `/healthz`, `/readyz` and
//! `/openapi.json`. Logs are JSON and pass a redactor. No cryptography lives here: every
//! operation is a [`coffer_keys::Keyring`] call. docs/SERVICE.md is the manual.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod api;
pub mod app;
mod audit;
pub mod config;
pub mod decode;
pub mod error;
mod serve;
pub mod telemetry;
pub mod tokens;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;

pub use app::App;
pub use config::ServiceConfig;
pub use serve::{Listening, disable_core_dumps, serve};

pub(crate) fn rfc3339(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| us.to_string())
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Coffer encryption service",
        description = "Batch field encryption, blind indexes, data keys and rewrap for tenants; \
                       key administration for admins. docs/SERVICE.md has curl examples for \
                       every endpoint."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "data", description = "Tenant tokens: the scopes their tenant owns"),
        (name = "admin", description = "Admin tokens: key administration, no data"),
        (name = "ops", description = "Health, readiness and this document (no token); metrics (the metrics token or an admin token)"),
    )
)]
struct ApiDoc;

/// Liveness and the cryptographic module in use.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the process answers.
    pub status: &'static str,
    /// Coffer version.
    pub version: &'static str,
    /// The crypto module (aws-lc-rs / AWS-LC) and its version.
    pub module: String,
    /// Whether this build links the FIPS module and runs in FIPS mode.
    pub fips_mode: bool,
}

/// Readiness: whether the key store and the KEKs answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// `ok` or `unavailable`.
    pub store: &'static str,
    /// `ok`, `unavailable`, or `unknown` (not checked: the key store is unavailable).
    pub kek: &'static str,
}

/// How long a readiness check waits for the key store or a KEK.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Liveness: answers while the process runs; reports the crypto module and FIPS mode.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    let s = coffer_core::fips::status();
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        module: format!("{} {}", s.module_crate, s.module_version),
        fips_mode: s.fips_mode,
    })
}

/// Readiness: the key store answers a query and every configured KEK opens its canary
/// (checked at most every 5 s).
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Key store or a KEK unavailable", body = Ready),
    ))]
async fn readyz(State(app): State<App>) -> Response {
    let cached = app
        .0
        .ready
        .lock()
        .ok()
        .and_then(|r| *r)
        .filter(|(at, _, _)| at.elapsed() < std::time::Duration::from_secs(5));
    let (store_ok, kek_ok) = match cached {
        Some((_, s, k)) => (s, k),
        None => {
            let store_ok =
                match tokio::time::timeout(READY_TIMEOUT, app.keyring().store().now_us()).await {
                    Ok(Ok(_)) => true,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "readiness: key store unavailable");
                        false
                    }
                    Err(_) => {
                        tracing::error!("readiness: the key store did not answer within 2 s");
                        false
                    }
                };
            let kek_ok = store_ok
                && match tokio::time::timeout(READY_TIMEOUT, app.keyring().check_keks()).await {
                    Ok(Ok(results)) => results.iter().all(|(id, r)| match r {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::error!(kek = %id, error = %e, "readiness: KEK unavailable");
                            false
                        }
                    }),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "readiness: KEK check failed");
                        false
                    }
                    Err(_) => {
                        tracing::error!("readiness: a KEK did not answer within 2 s");
                        false
                    }
                };
            if let Ok(mut r) = app.0.ready.lock() {
                *r = Some((std::time::Instant::now(), store_ok, kek_ok));
            }
            (store_ok, kek_ok)
        }
    };
    let status = if store_ok && kek_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(Ready {
            store: word(store_ok),
            kek: if store_ok { word(kek_ok) } else { "unknown" },
        }),
    )
        .into_response()
}

/// How old the count of DEKs pending KEK rotation may get before a scrape starts a new one.
pub const KEY_COUNT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Prometheus metrics (text exposition format). Needs the `[service] metrics_token` or an admin
/// token. The key-store count behind `coffer_keys_deks_pending_kek_rotation` runs at most every
/// 30 s, never once per scrape.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses(
        (status = 200, description = "Metrics", content_type = "text/plain", body = String),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "A tenant token", body = ErrorBody),
    ),
    security(("token" = [])))]
async fn metrics_text(
    State(app): State<App>,
    req: axum::http::Request<axum::body::Body>,
) -> Response {
    let (mut parts, _) = req.into_parts();
    let scraper = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .zip(app.config().metrics_token.as_ref())
        .is_some_and(|(t, m)| m.verify(t));
    if !scraper {
        use axum::extract::FromRequestParts as _;
        let caller = match app::Caller::from_request_parts(&mut parts, &app).await {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        };
        if let Err(e) = caller.require_admin() {
            return e.into_response();
        }
    }
    app.refresh_key_count().await;
    let body = app
        .0
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The router and its OpenAPI document, built from the same route list (so they cannot
/// disagree).
pub fn router(app: App) -> (axum::Router, utoipa::openapi::OpenApi) {
    let mut r = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::encrypt))
        .routes(routes!(api::decrypt))
        .routes(routes!(api::blind_index))
        .routes(routes!(api::generate_data_keys))
        .routes(routes!(api::decrypt_data_keys))
        .routes(routes!(api::rewrap))
        .routes(routes!(api::scope_info))
        .routes(routes!(admin::create_scope, admin::list_scopes))
        .routes(routes!(admin::scope_info, admin::destroy))
        .routes(routes!(admin::rotate))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .routes(routes!(openapi_json));
    if app.config().bench_endpoints {
        r = r.routes(routes!(api::bench_echo));
    }
    let (router, doc) = r.split_for_parts();
    let cfg = app.config().clone();
    let doc_json = std::sync::Arc::new(doc.to_pretty_json().unwrap_or_default());
    let router = router
        .layer(axum::Extension(OpenApiJson(doc_json)))
        .fallback(app::not_found)
        .method_not_allowed_fallback(app::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            app::detach,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            app::observe,
        ))
        .layer(tower_http::request_id::PropagateRequestIdLayer::new(
            axum::http::HeaderName::from_static(app::REQUEST_ID),
        ))
        .layer(tower_http::request_id::SetRequestIdLayer::new(
            axum::http::HeaderName::from_static(app::REQUEST_ID),
            app::MakeRequestId,
        ))
        .layer(axum::middleware::from_fn(app::plain_request_id))
        .with_state(app);
    (router, doc)
}

#[derive(Clone)]
struct OpenApiJson(std::sync::Arc<String>);

/// This document: every endpoint, its request and response schemas.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn openapi_json(axum::Extension(doc): axum::Extension<OpenApiJson>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.as_ref().clone(),
    )
        .into_response()
}

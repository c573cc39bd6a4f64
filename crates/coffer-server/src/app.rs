//! Shared state, authentication, tenancy checks, rate limits and the per-request middleware
//! (metrics and the access log line).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use coffer_core::ScopeId;
use coffer_keys::{AuditEvent, Keyring, Operation};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::de::DeserializeOwned;

use crate::audit::AccessLog;
use crate::config::ServiceConfig;
use crate::error::ApiError;
use crate::tokens::{self, Role, TokenRecord, TokenStore};

/// A cached token or scope owner and when it was read from the store.
///
/// Entries expire `token_cache_ttl` after they were read, as before; but the first request that
/// finds an entry older than half that starts one background read that replaces it. Under
/// steady traffic an entry in use therefore never expires: when it did, every request in
/// flight missed at the same moment and each queried the store (a thousand queries through a
/// pool of 10 connections every 5 s under the load benchmark, with waits of 2 s and more).
/// A revocation still takes effect within the TTL.
pub(crate) struct Fresh<V> {
    value: V,
    read_at: Instant,
    refreshing: AtomicBool,
}

impl<V> Fresh<V> {
    fn new(value: V) -> Arc<Self> {
        Arc::new(Fresh {
            value,
            read_at: Instant::now(),
            refreshing: AtomicBool::new(false),
        })
    }

    /// Whether the caller should read the entry again: true for one caller once the entry is
    /// older than half of `ttl` (a failed read is not retried; the entry then expires).
    fn claim_refresh(&self, ttl: Duration) -> bool {
        self.read_at.elapsed() >= ttl / 2 && !self.refreshing.swap(true, Ordering::AcqRel)
    }
}

/// The service's shared state. Cheap to clone.
#[derive(Clone)]
pub struct App(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) keyring: Keyring,
    pub(crate) tokens: TokenStore,
    pub(crate) config: ServiceConfig,
    token_cache: moka::future::Cache<String, Arc<Fresh<Option<Arc<TokenRecord>>>>>,
    owner_cache: moka::future::Cache<String, Arc<Fresh<Option<String>>>>,
    limiter: DefaultKeyedRateLimiter<String>,
    pub(crate) access: AccessLog,
    pub(crate) metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub(crate) ready: Mutex<Option<(Instant, bool, bool)>>,
    /// Detached requests still running (they outlive a timeout; shutdown waits for them).
    detached: tokio::sync::watch::Sender<usize>,
}

impl App {
    /// Builds the state.
    pub fn new(
        keyring: Keyring,
        tokens: TokenStore,
        config: ServiceConfig,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Self {
        let ttl = config.token_cache_ttl.max(Duration::from_millis(1));
        let quota =
            Quota::per_second(NonZeroU32::new(config.rate_limit).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(config.rate_burst).unwrap_or(NonZeroU32::MIN));
        App(Arc::new(Inner {
            keyring,
            tokens,
            token_cache: moka::future::Cache::builder()
                .time_to_live(ttl)
                .max_capacity(100_000)
                .build(),
            owner_cache: moka::future::Cache::builder()
                .time_to_live(ttl)
                .max_capacity(100_000)
                .build(),
            limiter: RateLimiter::keyed(quota),
            access: AccessLog::default(),
            metrics,
            ready: Mutex::new(None),
            detached: tokio::sync::watch::Sender::new(0),
            config,
        }))
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.0.keyring
    }

    /// The settings.
    pub fn config(&self) -> &ServiceConfig {
        &self.0.config
    }

    /// Writes the data-access audit records gathered so far (`last`: at shutdown, when
    /// records that cannot be written go to the log).
    pub async fn flush_audit(&self, last: bool) {
        self.0.access.flush(&self.0.keyring, last).await;
    }

    /// Waits until no detached request is running, or `limit` has passed; returns how many
    /// were still running.
    pub(crate) async fn wait_detached(&self, limit: Duration) -> usize {
        let mut rx = self.0.detached.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
        *self.0.detached.borrow()
    }

    /// Forgets idle rate-limit buckets.
    pub(crate) fn trim_limiter(&self) {
        self.0.limiter.retain_recent();
    }

    async fn token(&self, id: &str) -> Result<Option<Arc<TokenRecord>>, ApiError> {
        if self.0.config.token_cache_ttl.is_zero() {
            return Ok(self.0.tokens.get(id).await?.map(Arc::new));
        }
        if let Some(t) = self.0.token_cache.get(id).await {
            if t.claim_refresh(self.0.config.token_cache_ttl) {
                let app = self.clone();
                let id = id.to_owned();
                tokio::spawn(async move {
                    match app.0.tokens.get(&id).await {
                        Ok(fresh) => {
                            let fresh = Fresh::new(fresh.map(Arc::new));
                            app.0.token_cache.insert(id, fresh).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "could not refresh a cached token"),
                    }
                });
            }
            return Ok(t.value.clone());
        }
        // Unknown ids are remembered too, so a stream of made-up tokens costs no query each.
        let t = self.0.tokens.get(id).await?.map(Arc::new);
        self.0
            .token_cache
            .insert(id.to_owned(), Fresh::new(t.clone()))
            .await;
        Ok(t)
    }

    async fn owner(&self, scope: &str) -> Result<Option<String>, ApiError> {
        if self.0.config.token_cache_ttl.is_zero() {
            return Ok(self.0.tokens.owner(scope).await?);
        }
        if let Some(o) = self.0.owner_cache.get(scope).await {
            if o.claim_refresh(self.0.config.token_cache_ttl) {
                let app = self.clone();
                let scope = scope.to_owned();
                tokio::spawn(async move {
                    match app.0.tokens.owner(&scope).await {
                        Ok(fresh) => app.0.owner_cache.insert(scope, Fresh::new(fresh)).await,
                        Err(e) => tracing::warn!(error = %e, "could not refresh a scope owner"),
                    }
                });
            }
            return Ok(o.value.clone());
        }
        let o = self.0.tokens.owner(scope).await?;
        self.0
            .owner_cache
            .insert(scope.to_owned(), Fresh::new(o.clone()))
            .await;
        Ok(o)
    }

    /// Forgets what this process cached about a scope's owner.
    pub(crate) async fn forget_owner(&self, scope: &str) {
        self.0.owner_cache.invalidate(scope).await;
    }

    /// Checks that the caller's tenant owns `scope` (an explicit owner column compared for
    /// equality, docs/DESIGN.md §S1). Another tenant's scope is a 403 and an audit record; a scope
    /// nobody owns is a 403 too, and one that does not exist a 404.
    pub async fn authorize(&self, caller: &Caller, scope: &str) -> Result<ScopeId, ApiError> {
        let tenant = caller.tenant()?;
        let id = ScopeId::new(scope)
            .map_err(|e| ApiError::bad_request("bad_scope", format!("scope '{scope}': {e}")))?;
        match self.owner(scope).await? {
            Some(owner) if owner == tenant => Ok(id),
            owner => {
                let exists = self.0.keyring.store().scope(&id).await?.is_some();
                if owner.is_none() && !exists {
                    return Err(coffer_keys::Error::UnknownScope(scope.to_owned()).into());
                }
                let detail = if owner.is_some() {
                    format!("tenant '{tenant}' asked for a scope another tenant owns")
                } else {
                    format!("tenant '{tenant}' asked for a scope no tenant owns")
                };
                tracing::warn!(token_id = %caller.token_id, tenant = %tenant, scope = %scope, "access denied: scope not owned by the caller's tenant");
                let event = AuditEvent::new(
                    format!("token:{}", caller.token_id),
                    Operation::AccessDenied,
                )
                .scope(scope)
                .detail(detail);
                if let Err(e) = self.0.keyring.record(event).await {
                    tracing::error!(error = %e, "could not write the access-denied audit record");
                }
                metrics::counter!("coffer_service_access_denied_total").increment(1);
                Err(ApiError::forbidden(
                    "wrong_tenant",
                    format!(
                        "this token's tenant does not own scope '{scope}'; use a token of the \
                         owning tenant (the attempt was audited)"
                    ),
                ))
            }
        }
    }
}

/// Who is calling: a verified, unexpired, unrevoked token.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's public id.
    pub token_id: String,
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// The tenant, or a 403 for admin tokens (they administer keys and reach no data).
    pub fn tenant(&self) -> Result<&str, ApiError> {
        match &self.role {
            Role::Tenant(t) => Ok(t),
            Role::Admin => Err(ApiError::forbidden(
                "admin_token",
                "admin tokens administer keys and reach no data; use a tenant token \
                 (`coffer tokens create --tenant T`)",
            )),
        }
    }

    /// Passes admin tokens; a 403 for tenant tokens.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Tenant(_) => Err(ApiError::forbidden(
                "not_admin",
                "this endpoint needs an admin token (`coffer tokens create --admin`)",
            )),
        }
    }
}

/// A caller's token id and tenant (none for admin tokens).
type Who = (String, Option<String>);

/// Filled in by the [`Caller`] extractor for the access log and metrics.
#[derive(Clone, Default)]
pub(crate) struct CallerSlot(Arc<Mutex<Option<Who>>>);

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized("missing token: send `Authorization: Bearer cft_…`")
            })?;
        let text = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("malformed Authorization header: expected `Bearer cft_…`")
            })?;
        let id = tokens::parse_id(text)
            .ok_or_else(|| ApiError::unauthorized("malformed token: expected cft_<id>_<secret>"))?;
        let record = app
            .token(id)
            .await?
            .filter(|r| tokens::verify(r, text))
            .ok_or_else(|| ApiError::unauthorized("invalid token"))?;
        if record.revoked_at_us.is_some() {
            return Err(ApiError::unauthorized("token revoked"));
        }
        if record.expires_at_us.is_some_and(|e| e <= now_us()) {
            return Err(ApiError::unauthorized(
                "token expired; ask an operator for a new one",
            ));
        }
        if let Some(slot) = parts.extensions.get::<CallerSlot>()
            && let Ok(mut s) = slot.0.lock()
        {
            let tenant = match &record.role {
                Role::Tenant(t) => Some(t.clone()),
                Role::Admin => None,
            };
            *s = Some((record.id.clone(), tenant));
        }
        if let Err(not_until) = app.0.limiter.check_key(&record.id) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this token sent more than {} requests per second; slow down",
                    app.0.config.rate_limit
                ),
            );
            e.retry_after = Some(wait.as_secs().max(1));
            return Err(e);
        }
        Ok(Caller {
            token_id: record.id.clone(),
            role: record.role.clone(),
        })
    }
}

/// A data request's caller and the scope in its path, checked for ownership before the body is
/// read: another tenant's scope is refused (and audited) whatever the body holds.
#[derive(Clone, Debug)]
pub struct Owned {
    /// The caller (a tenant token).
    pub caller: Caller,
    /// The scope, owned by the caller's tenant.
    pub scope: ScopeId,
}

impl FromRequestParts<App> for Owned {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, app).await?;
        let axum::extract::Path(scope) =
            axum::extract::Path::<String>::from_request_parts(parts, app)
                .await
                .map_err(|e| ApiError::bad_request("bad_scope", e.body_text()))?;
        let scope = app.authorize(&caller, &scope).await?;
        Ok(Owned { caller, scope })
    }
}

/// A JSON body whose rejections are [`ApiError`]s with clear messages.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        use axum::extract::rejection::JsonRejection;
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::bad_request(
                "bad_request",
                format!(
                    "the JSON does not match the request schema: {}",
                    source_text(&e)
                ),
            )),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::bad_request(
                "bad_json",
                format!("the body is not valid JSON: {}", source_text(&e)),
            )),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_type",
                "send the body as JSON with `Content-Type: application/json`",
            )),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is larger than this service accepts ([service] \
                 max_body_bytes); split the batch",
            )),
            Err(e) => Err(ApiError::bad_request("bad_request", e.body_text())),
        }
    }
}

fn source_text(e: &dyn std::error::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(s) = inner.source() {
        inner = s;
    }
    inner.to_string()
}

/// The operation name of a route, for metrics and logs.
fn operation(path: &str, method: &axum::http::Method) -> &'static str {
    match (path, method.as_str()) {
        ("/v1/scopes/{scope}/encrypt", _) => "encrypt",
        ("/v1/scopes/{scope}/decrypt", _) => "decrypt",
        ("/v1/scopes/{scope}/blind-index", _) => "blind_index",
        ("/v1/scopes/{scope}/datakeys", _) => "generate_data_key",
        ("/v1/scopes/{scope}/datakeys/decrypt", _) => "decrypt_data_key",
        ("/v1/scopes/{scope}/rewrap", _) => "rewrap",
        ("/v1/scopes/{scope}", _) => "scope_info",
        ("/v1/admin/scopes", "POST") => "admin_create_scope",
        ("/v1/admin/scopes", _) => "admin_list_scopes",
        ("/v1/admin/scopes/{scope}", "DELETE") => "admin_destroy_scope",
        ("/v1/admin/scopes/{scope}", _) => "admin_scope_info",
        ("/v1/admin/scopes/{scope}/rotate", _) => "admin_rotate",
        ("/v1/bench/echo/{scope}", _) => "bench_echo",
        ("/healthz", _) => "healthz",
        ("/readyz", _) => "readyz",
        ("/metrics", _) => "metrics",
        ("/openapi.json", _) => "openapi",
        _ => "other",
    }
}

/// The error code an [`ApiError`] response carried, for metrics.
#[derive(Clone, Copy)]
pub(crate) struct ErrorCode(pub &'static str);

/// Counts, times and logs every request: operation, outcome, status and latency; never the
/// body, the query string or a header value.
pub(crate) async fn observe(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let op = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| operation(p.as_str(), req.method()))
        .unwrap_or("other");
    let slot = CallerSlot::default();
    req.extensions_mut().insert(slot.clone());
    let gauge = metrics::gauge!("coffer_service_requests_in_flight");
    gauge.increment(1.0);
    let resp = next.run(req).await;
    gauge.decrement(1.0);
    let status = resp.status();
    let code = resp.extensions().get::<ErrorCode>().map(|c| c.0);
    let outcome = match (status.as_u16(), code) {
        (200..=299, _) => "ok",
        (422, Some("decryption_failed")) => "decryption_failed",
        (401 | 403, _) => "denied",
        (429, _) => "rate_limited",
        (400..=499, _) => "client_error",
        (503, Some("timeout")) => "timeout",
        _ => "server_error",
    };
    let elapsed = start.elapsed();
    let who = slot.0.lock().ok().and_then(|s| s.clone());
    let tenant = who.as_ref().and_then(|w| w.1.clone());
    if op != "metrics" && op != "healthz" && op != "readyz" {
        if app.0.config.metrics_tenant_label {
            let t = tenant.clone().unwrap_or_else(|| "-".to_owned());
            metrics::counter!("coffer_service_requests_total", "operation" => op, "outcome" => outcome, "tenant" => t.clone()).increment(1);
            metrics::histogram!("coffer_service_request_duration_seconds", "operation" => op, "outcome" => outcome, "tenant" => t).record(elapsed.as_secs_f64());
        } else {
            metrics::counter!("coffer_service_requests_total", "operation" => op, "outcome" => outcome).increment(1);
            metrics::histogram!("coffer_service_request_duration_seconds", "operation" => op, "outcome" => outcome).record(elapsed.as_secs_f64());
        }
    }
    let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let token_id = who.as_ref().map(|w| w.0.as_str()).unwrap_or("-");
    let tenant = tenant.as_deref().unwrap_or("-");
    if status.is_server_error() {
        tracing::error!(
            operation = op,
            status = status.as_u16(),
            error_code = code.unwrap_or("-"),
            token_id,
            tenant,
            latency_us,
            "request"
        );
    } else if status.is_client_error() {
        tracing::warn!(
            operation = op,
            status = status.as_u16(),
            error_code = code.unwrap_or("-"),
            token_id,
            tenant,
            latency_us,
            "request"
        );
    } else {
        tracing::info!(
            operation = op,
            status = status.as_u16(),
            token_id,
            tenant,
            latency_us,
            "request"
        );
    }
    resp
}

/// Runs the rest of the request in its own task, so that neither the request timeout nor a
/// client that hangs up cancels it half-way (a key-store transaction dropped mid-flight can
/// leave a pooled connection inside it). The timeout answers 503 and lets the task finish on
/// its own; a panic answers 500 (the panic hook has logged it, redacted).
pub(crate) async fn detach(State(app): State<App>, req: Request, next: Next) -> Response {
    app.0.detached.send_modify(|n| *n += 1);
    let done = Detached(app.clone());
    let task = tokio::spawn(async move {
        let _done = done; // counts the request finished even if it panics
        next.run(req).await
    });
    match tokio::time::timeout(app.0.config.request_timeout, task).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            if !e.is_panic() {
                tracing::error!(error = %e, "request task failed");
            }
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; the server log has the detail",
            )
            .into_response()
        }
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {:?} ([service] request_timeout); it may still \
                 complete, so retry only what is safe to repeat",
                app.0.config.request_timeout
            ),
        )
        .into_response(),
    }
}

/// Counts a detached request finished when dropped.
struct Detached(App);

impl Drop for Detached {
    fn drop(&mut self) {
        self.0.0.detached.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// JSON 405 for a known path with another method.
pub(crate) async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; GET /openapi.json lists the methods",
    )
    .into_response()
}

/// JSON 404 for unknown routes.
pub(crate) async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such endpoint; GET /openapi.json lists them",
    )
    .into_response()
}

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
use coffer_keys::Keyring;
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

/// How many unknown presented tokens are remembered, and for how long.
const UNKNOWN_TOKENS: u64 = 10_000;
const UNKNOWN_TOKEN_TTL: Duration = Duration::from_secs(30);
/// At most one access-denied log line per tenant this often (each denial is counted).
const DENIAL_LOG_EVERY: Duration = Duration::from_secs(10);

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
    /// Failed authentications per client address.
    auth_limiter: DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Client addresses over their failed-authentication limit, and until when.
    auth_blocked: moka::sync::Cache<std::net::IpAddr, Instant>,
    /// Hashes of presented tokens the store does not know (bounded, short-lived): a token
    /// sent again is refused without a query, and unknown ids never fill `token_cache`.
    unknown_tokens: moka::sync::Cache<[u8; 32], ()>,
    /// Tenants whose access denial was logged in the last [`DENIAL_LOG_EVERY`].
    denial_logged: moka::sync::Cache<String, ()>,
    pub(crate) access: AccessLog,
    pub(crate) metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub(crate) ready: Mutex<Option<(Instant, bool, bool)>>,
    /// When the last count of DEKs pending KEK rotation started.
    key_count_at: Mutex<Option<Instant>>,
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
        let auth_quota =
            Quota::per_second(NonZeroU32::new(config.auth_failure_rate).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(config.auth_failure_burst).unwrap_or(NonZeroU32::MIN));
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
            auth_limiter: RateLimiter::keyed(auth_quota),
            auth_blocked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            denial_logged: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(DENIAL_LOG_EVERY)
                .build(),
            unknown_tokens: moka::sync::Cache::builder()
                .max_capacity(UNKNOWN_TOKENS)
                .time_to_live(UNKNOWN_TOKEN_TTL)
                .build(),
            access: AccessLog::default(),
            metrics,
            ready: Mutex::new(None),
            key_count_at: Mutex::new(None),
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

    /// Data-access items counted and not yet written to the audit trail.
    pub fn unrecorded_audit_items(&self) -> u64 {
        self.0.access.unrecorded()
    }

    /// Waits until no detached request is running, or `limit` has passed; returns how many
    /// were still running.
    pub(crate) async fn wait_detached(&self, limit: Duration) -> usize {
        let mut rx = self.0.detached.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
        *self.0.detached.borrow()
    }

    /// Counts the DEKs pending KEK rotation into their gauge, unless a count started less than
    /// [`crate::KEY_COUNT_INTERVAL`] ago: scrapes read the gauge, and never make the key store
    /// count once each (one scrape per interval waits for the count; the others do not).
    pub(crate) async fn refresh_key_count(&self) {
        {
            let Ok(mut at) = self.0.key_count_at.lock() else {
                return;
            };
            if at.is_some_and(|t| t.elapsed() < crate::KEY_COUNT_INTERVAL) {
                return;
            }
            *at = Some(Instant::now());
        }
        metrics::counter!("coffer_service_key_counts_total").increment(1);
        let kek = self.keyring().keks().primary_id().clone();
        match self.keyring().store().count_deks_not_under(&kek).await {
            Ok(n) => metrics::gauge!("coffer_keys_deks_pending_kek_rotation").set(n as f64),
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count DEKs pending KEK rotation"),
        }
    }

    /// Forgets idle rate-limit buckets.
    pub(crate) fn trim_limiter(&self) {
        self.0.limiter.retain_recent();
        self.0.auth_limiter.retain_recent();
    }

    /// A 429 if `ip` is over its failed-authentication limit (checked before any token work).
    fn auth_blocked(&self, ip: Option<std::net::IpAddr>) -> Result<(), ApiError> {
        let Some(ip) = ip else { return Ok(()) };
        match self.0.auth_blocked.get(&ip) {
            Some(until) if until > Instant::now() => Err(self.too_many_failures(until)),
            Some(_) => {
                self.0.auth_blocked.invalidate(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed authentication from `ip`: the 401 it was, or a 429 once the address is
    /// over its limit.
    fn auth_failed(&self, ip: Option<std::net::IpAddr>, e: ApiError) -> ApiError {
        metrics::counter!("coffer_service_auth_failures_total").increment(1);
        let Some(ip) = ip else { return e };
        match self.0.auth_limiter.check_key(&ip) {
            Ok(()) => e,
            Err(not_until) => {
                let wait = not_until
                    .wait_time_from(governor::clock::Clock::now(
                        &governor::clock::DefaultClock::default(),
                    ))
                    .max(Duration::from_secs(1));
                let until = Instant::now() + wait;
                self.0.auth_blocked.insert(ip, until);
                tracing::warn!(client = %ip, "client address over its failed-authentication limit");
                self.too_many_failures(until)
            }
        }
    }

    fn too_many_failures(&self, until: Instant) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "auth_rate_limited",
            format!(
                "too many failed authentications from this address (more than {} per second); \
                 wait, then send a valid token",
                self.0.config.auth_failure_rate
            ),
        );
        let left = until.saturating_duration_since(Instant::now());
        e.retry_after = Some(left.as_secs_f64().ceil().max(1.0) as u64);
        e
    }

    async fn token(&self, id: &str) -> Result<Option<Arc<TokenRecord>>, ApiError> {
        if self.0.config.token_cache_ttl.is_zero() {
            metrics::counter!("coffer_service_token_lookups_total").increment(1);
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
        metrics::counter!("coffer_service_token_lookups_total").increment(1);
        let t = self.0.tokens.get(id).await?.map(Arc::new);
        // Unknown ids go to the caller's negative cache, never into this one (they would
        // evict the tokens in use).
        if t.is_some() {
            self.0
                .token_cache
                .insert(id.to_owned(), Fresh::new(t.clone()))
                .await;
        }
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
    /// equality, docs/DESIGN.md §S1). Another tenant's scope is a 403, counted for the next
    /// access-denied audit record; a scope nobody owns is a 403 too, and one that does not exist
    /// a 404.
    pub async fn authorize(&self, caller: &Caller, scope: &str) -> Result<ScopeId, ApiError> {
        let tenant = caller.tenant()?;
        let id = ScopeId::new(scope)
            .map_err(|e| ApiError::bad_request("bad_scope", format!("scope '{scope}': {e}")))?;
        match self.owner(scope).await? {
            Some(owner) if owner == tenant => Ok(id),
            owner => {
                if owner.is_none() && self.0.keyring.store().scope(&id).await?.is_none() {
                    return Err(coffer_keys::Error::UnknownScope(scope.to_owned()).into());
                }
                let reason = if owner.is_some() {
                    "owned-by-another-tenant"
                } else {
                    "unowned"
                };
                // Counted, and written with the access counts; one log line per tenant per
                // DENIAL_LOG_EVERY at most.
                self.0.access.deny(&caller.token_id, tenant, scope, reason);
                if !self.0.denial_logged.contains_key(tenant) {
                    self.0.denial_logged.insert(tenant.to_owned(), ());
                    tracing::warn!(token_id = %caller.token_id, tenant = %tenant, scope = %scope, reason, "access denied: scope not owned by the caller's tenant (further denials of this tenant are counted, and logged again after 10 s)");
                }
                metrics::counter!("coffer_service_access_denied_total").increment(1);
                Err(ApiError::forbidden(
                    "wrong_tenant",
                    format!(
                        "this token's tenant does not own scope '{scope}'; use a token of the \
                         owning tenant (the attempt is audited)"
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

/// What the [`Caller`] extractor learnt, for the access log and metrics.
#[derive(Default)]
pub(crate) struct SlotData {
    /// The verified caller.
    who: Option<Who>,
    /// The first 8 hex digits of the id of a token that parsed but was refused (never the
    /// secret).
    presented: Option<String>,
}

/// Filled in by the [`Caller`] extractor for the access log and metrics.
#[derive(Clone, Default)]
pub(crate) struct CallerSlot(Arc<Mutex<SlotData>>);

impl CallerSlot {
    fn presented(parts: &Parts, id: &str) {
        if let Some(slot) = parts.extensions.get::<CallerSlot>()
            && let Ok(mut s) = slot.0.lock()
        {
            s.presented = Some(id.chars().take(8).collect());
        }
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let ip = client_ip(&app.0.config.trusted_proxies, &parts.headers, peer);
        app.auth_blocked(ip)?;
        let fail = |e: ApiError| app.auth_failed(ip, e);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                fail(ApiError::unauthorized(
                    "missing token: send `Authorization: Bearer cft_…`",
                ))
            })?;
        let text = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                fail(ApiError::unauthorized(
                    "malformed Authorization header: expected `Bearer cft_…`",
                ))
            })?;
        let id = tokens::parse_id(text).ok_or_else(|| {
            fail(ApiError::unauthorized(
                "malformed token: expected cft_<id>_<secret>",
            ))
        })?;
        CallerSlot::presented(parts, id);
        let presented: [u8; 32] =
            coffer_core::token::hash_token(coffer_core::token::SERVICE_DOMAIN, text);
        if app.0.unknown_tokens.contains_key(&presented) {
            return Err(fail(ApiError::unauthorized("invalid token")));
        }
        let Some(record) = app.token(id).await? else {
            app.0.unknown_tokens.insert(presented, ());
            return Err(fail(ApiError::unauthorized("invalid token")));
        };
        if !tokens::verify(&record, text) {
            return Err(fail(ApiError::unauthorized("invalid token")));
        }
        if record.revoked_at_us.is_some() {
            return Err(fail(ApiError::unauthorized("token revoked")));
        }
        if record.expires_at_us.is_some_and(|e| e <= now_us()) {
            return Err(fail(ApiError::unauthorized(
                "token expired; ask an operator for a new one",
            )));
        }
        if let Some(slot) = parts.extensions.get::<CallerSlot>()
            && let Ok(mut s) = slot.0.lock()
        {
            let tenant = match &record.role {
                Role::Tenant(t) => Some(t.clone()),
                Role::Admin => None,
            };
            s.who = Some((record.id.clone(), tenant));
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
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let body = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the request body is larger than this service accepts ([service] \
                     max_body_bytes); split the batch",
                ));
            }
            Err(_) => {
                return Err(ApiError::bad_request(
                    "bad_request",
                    "the request body could not be read; send it again",
                ));
            }
        };
        crate::decode::decode_json(&body).map(JsonBody)
    }
}

/// `application/json` or `application/<something>+json`, as axum's `Json` accepts.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
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
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let peer = client_addr(&req).map(|a| a.ip());
    let client = client_ip(&app.0.config.trusted_proxies, req.headers(), peer);
    let client = client.as_ref().map(ToString::to_string);
    let client = client.as_deref().unwrap_or("-");
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
    let (who, presented) = slot
        .0
        .lock()
        .ok()
        .map(|s| (s.who.clone(), s.presented.clone()))
        .unwrap_or_default();
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
    // A refused token's id prefix (the id is public; the secret is never kept).
    let token_id_prefix = if who.is_none() {
        presented.as_deref().unwrap_or("-")
    } else {
        "-"
    };
    let status_code = status.as_u16();
    let error_code = code.unwrap_or("-");
    if status.is_server_error() {
        tracing::error!(
            operation = op,
            status = status_code,
            error_code,
            token_id,
            tenant,
            client,
            request_id = %request_id,
            latency_us,
            "request"
        );
    } else if status.is_client_error() {
        tracing::warn!(
            operation = op,
            status = status_code,
            error_code,
            token_id,
            token_id_prefix,
            tenant,
            client,
            request_id = %request_id,
            latency_us,
            "request"
        );
    } else {
        tracing::info!(
            operation = op,
            status = status_code,
            token_id,
            tenant,
            client,
            request_id = %request_id,
            latency_us,
            "request"
        );
    }
    resp
}

/// The request-id header: set on every request (a client's own id is kept when it is short and
/// plain), logged on its request line, and returned on the response.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// The client's address: the peer's, or, when the peer is one of the `trusted_proxies`, the
/// nearest `X-Forwarded-For` address that is not itself a trusted proxy (each proxy appends
/// the address it received the request from, so the entries left of the last untrusted one
/// are whatever the client wrote). A header that does not parse falls back to the peer.
pub(crate) fn client_ip(
    trusted: &[ipnet::IpNet],
    headers: &axum::http::HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Option<std::net::IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut nearest = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return Some(peer);
        };
        for part in text.rsplit(',') {
            let Ok(ip) = part.trim().parse::<std::net::IpAddr>() else {
                return Some(peer);
            };
            nearest = ip;
            if !is_trusted(&ip) {
                return Some(ip);
            }
        }
    }
    Some(nearest)
}

/// The peer address of the connection (behind a proxy, the proxy's; [`client_ip`] reads the
/// forwarding header of trusted proxies).
pub(crate) fn client_addr<B>(req: &axum::http::Request<B>) -> Option<std::net::SocketAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0)
}

/// Request ids: 16 random hex digits.
#[derive(Clone, Copy, Default)]
pub(crate) struct MakeRequestId;

impl tower_http::request_id::MakeRequestId for MakeRequestId {
    fn make_request_id<B>(
        &mut self,
        _: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let r: [u8; 8] = coffer_core::digest::random_array().ok()?;
        axum::http::HeaderValue::from_str(&hex::encode(r))
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

/// Drops a client's request id that is not 1 to 64 characters of `[A-Za-z0-9._-]` (a new one is
/// made): the id goes into log lines.
pub(crate) async fn plain_request_id(mut req: Request, next: Next) -> Response {
    let ok = req.headers().get_all(REQUEST_ID).iter().count() <= 1
        && req.headers().get(REQUEST_ID).is_none_or(|v| {
            let b = v.as_bytes();
            !b.is_empty()
                && b.len() <= 64
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        });
    if !ok {
        req.headers_mut().remove(REQUEST_ID);
    }
    next.run(req).await
}

/// Runs the rest of the request in its own task, so that neither the request timeout nor a
/// client that hangs up cancels it half-way (a key-store transaction dropped mid-flight can
/// leave a pooled connection inside it). The timeout answers 503 and lets the task finish on
/// its own; a panic answers 500 (the panic hook has logged it, redacted).
pub(crate) async fn detach(State(app): State<App>, req: Request, next: Next) -> Response {
    app.0.detached.send_modify(|n| *n += 1);
    let done = Detached(app.clone());
    let data = is_data_request(req.uri().path());
    let settler = app.clone();
    let task = tokio::spawn(async move {
        let _done = done; // counts the request finished even if it panics
        let resp = next.run(req).await;
        if !data {
            return resp;
        }
        // Before the answer leaves: at most `audit_max_unrecorded` items answered and not yet
        // in the audit trail (crate::audit).
        let bound = settler.0.config.audit_max_unrecorded;
        match settler.0.access.settle(&settler.0.keyring, bound).await {
            Ok(()) => resp,
            Err(crate::audit::Unrecorded(n)) => {
                metrics::counter!("coffer_service_audit_withheld_total").increment(1);
                tracing::error!(
                    unrecorded = n,
                    bound,
                    "answer withheld: the data-access audit records could not be written"
                );
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "audit_unavailable",
                    "the answer was withheld because its data-access audit record could not be \
                     written to the key store; the server log has the cause. Retry once the key \
                     store is reachable",
                )
                .into_response()
            }
        }
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

/// Whether a path is a data endpoint, whose items are counted in the data-access audit (the
/// admin endpoints write their records before they answer; health, metrics and the document
/// hold no data).
fn is_data_request(path: &str) -> bool {
    path.starts_with("/v1/") && !path.starts_with("/v1/admin/")
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

//! Key administration for admin tokens: create a scope for a tenant, list scopes, show versions,
//! rotate, crypto-shred. Every change is in the hash-chained audit trail (the keyring writes it).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use coffer_core::ScopeId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{ScopeInfo, scope_info_of};
use crate::app::{App, Caller, JsonBody};
use crate::error::{ApiError, ErrorBody};

/// Create-scope request.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScope {
    /// The scope, e.g. `acme:patients`. Its name grants nothing: ownership is `tenant`.
    pub scope: String,
    /// The tenant that owns it: only that tenant's tokens reach it.
    pub tenant: String,
}

/// A created scope (or one this tenant owned already).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CreatedScope {
    /// The scope.
    pub scope: String,
    /// Its owner.
    pub tenant: String,
    /// Its active version.
    pub version: u32,
    /// `created` or `exists` (already this tenant's).
    pub outcome: String,
}

/// A scope in the list.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ScopeSummary {
    /// The scope.
    pub scope: String,
    /// Its owner, if a tenant owns it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Whether it was crypto-shredded.
    pub destroyed: bool,
}

/// Scope list.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ScopeList {
    /// Every scope of the key store.
    pub scopes: Vec<ScopeSummary>,
}

/// Rotation result.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Rotated {
    /// The scope.
    pub scope: String,
    /// The new active version (the previous one is decrypt-only).
    pub version: u32,
}

/// Destruction result.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Destroyed {
    /// The scope.
    pub scope: String,
    /// How many key versions were erased.
    pub versions_destroyed: u32,
}

/// Confirmation for a destruction.
#[derive(Clone, Debug, Deserialize, IntoParams)]
pub struct DestroyParams {
    /// The scope's name again: destruction is final.
    pub confirm: Option<String>,
}

/// Records who asked for an administrative change (the keyring records the change itself).
async fn record(app: &App, caller: &Caller, scope: &str, detail: String) {
    let event = coffer_keys::AuditEvent::new(
        format!("token:{}", caller.token_id),
        coffer_keys::Operation::AdminRequest,
    )
    .scope(scope)
    .detail(detail);
    if let Err(e) = app.keyring().record(event).await {
        tracing::error!(error = %e, token_id = %caller.token_id, "could not write the admin-request audit record");
    }
}

fn owned_by_another(scope: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "owned_by_another_tenant",
        format!("scope '{scope}' already belongs to another tenant; ownership never changes"),
    )
}

fn scope_id(scope: &str) -> Result<ScopeId, ApiError> {
    ScopeId::new(scope)
        .map_err(|e| ApiError::bad_request("bad_scope", format!("scope '{scope}': {e}")))
}

fn tenant_ok(t: &str) -> Result<(), ApiError> {
    if t.is_empty() || t.len() > 128 || t.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_tenant",
            "tenant must be 1 to 128 characters, none of them control characters",
        ));
    }
    Ok(())
}

/// Create a scope owned by a tenant. A scope that exists already is never given to a tenant
/// here: keys made outside the service (`coffer keys`, `coffer reencrypt`) stay out of reach of
/// every token.
#[utoipa::path(post, path = "/v1/admin/scopes", tag = "admin",
    request_body = CreateScope,
    responses(
        (status = 201, description = "Created", body = CreatedScope),
        (status = 200, description = "Already this tenant's", body = CreatedScope),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 409, description = "Exists and is not this tenant's (unowned, another tenant's, or destroyed)", body = ErrorBody),
        (status = 503, description = "Key store or KEK provider unavailable", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn create_scope(
    State(app): State<App>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateScope>,
) -> Result<(StatusCode, Json<CreatedScope>), ApiError> {
    caller.require_admin()?;
    let id = scope_id(&req.scope)?;
    tenant_ok(&req.tenant)?;
    let existing = app.keyring().store().scope(&id).await?;
    if existing.as_ref().is_some_and(|s| s.is_destroyed()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "scope_destroyed",
            format!(
                "scope '{}' was destroyed; a destroyed scope is never re-created",
                req.scope
            ),
        ));
    }
    let before = app.0.tokens.owner(&req.scope).await?;
    let (status, outcome) = match (&existing, before.as_deref()) {
        (Some(_), Some(t)) if t == req.tenant => (StatusCode::OK, "exists"),
        (Some(_), Some(_)) => return Err(owned_by_another(&req.scope)),
        // An existing scope with no owner was made outside the service (`coffer keys`,
        // `coffer reencrypt`): giving it to a tenant would let an admin token reach its data.
        (Some(_), None) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "scope_not_owned",
                format!(
                    "scope '{}' exists and is not owned by tenant '{}': it was made outside the \
                     service (e.g. by `coffer keys` or `coffer reencrypt`), and an existing \
                     scope cannot be given to a tenant. Create a scope under a new name for \
                     the tenant with this endpoint and have the tenant encrypt its data there; \
                     this scope stays reachable through the CLI and libraries only",
                    req.scope, req.tenant
                ),
            ));
        }
        (None, _) => {
            app.keyring().ensure_scope(&id).await?;
            (StatusCode::CREATED, "created")
        }
    };
    // The owner row refers to the scope, so it comes second. If writing it fails, the scope
    // stays without an owner, which no token reaches.
    let owner = app.0.tokens.assign(&req.scope, &req.tenant).await?;
    app.forget_owner(&req.scope).await;
    if owner != req.tenant {
        return Err(owned_by_another(&req.scope));
    }
    let version = app.keyring().active_version(&id).await?;
    record(
        &app,
        &caller,
        &req.scope,
        format!("create-scope tenant={} outcome={outcome}", req.tenant),
    )
    .await;
    tracing::info!(scope = %req.scope, tenant = %req.tenant, outcome, token_id = %caller.token_id, "scope assigned");
    Ok((
        status,
        Json(CreatedScope {
            scope: req.scope,
            tenant: req.tenant,
            version: version.0,
            outcome: outcome.to_owned(),
        }),
    ))
}

/// Every scope and its owner.
#[utoipa::path(get, path = "/v1/admin/scopes", tag = "admin",
    responses(
        (status = 200, description = "Scopes", body = ScopeList),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn list_scopes(
    State(app): State<App>,
    caller: Caller,
) -> Result<Json<ScopeList>, ApiError> {
    caller.require_admin()?;
    let owners: std::collections::HashMap<String, String> =
        app.0.tokens.owners().await?.into_iter().collect();
    let scopes = app
        .keyring()
        .store()
        .scopes()
        .await?
        .into_iter()
        .map(|s| ScopeSummary {
            tenant: owners.get(s.scope.as_str()).cloned(),
            destroyed: s.is_destroyed(),
            scope: s.scope.to_string(),
        })
        .collect();
    Ok(Json(ScopeList { scopes }))
}

/// A scope's owner and key versions.
#[utoipa::path(get, path = "/v1/admin/scopes/{scope}", tag = "admin",
    params(("scope" = String, Path, description = "The scope")),
    responses(
        (status = 200, description = "Owner and versions", body = ScopeInfo),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "Unknown scope", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn scope_info(
    State(app): State<App>,
    caller: Caller,
    Path(scope): Path<String>,
) -> Result<Json<ScopeInfo>, ApiError> {
    caller.require_admin()?;
    let id = scope_id(&scope)?;
    let owner = app.0.tokens.owner(&scope).await?;
    Ok(Json(scope_info_of(&app, &id, owner).await?))
}

/// Rotate: a new DEK version becomes active; the old one stays for decryption.
#[utoipa::path(post, path = "/v1/admin/scopes/{scope}/rotate", tag = "admin",
    params(("scope" = String, Path, description = "The scope")),
    responses(
        (status = 200, description = "The new active version", body = Rotated),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "Unknown scope", body = ErrorBody),
        (status = 410, description = "Destroyed", body = ErrorBody),
        (status = 503, description = "Key store or KEK provider unavailable", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn rotate(
    State(app): State<App>,
    caller: Caller,
    Path(scope): Path<String>,
) -> Result<Json<Rotated>, ApiError> {
    caller.require_admin()?;
    let id = scope_id(&scope)?;
    let rec = app.keyring().rotate(&id).await?;
    record(
        &app,
        &caller,
        &scope,
        format!("rotate -> v{}", rec.version.0),
    )
    .await;
    tracing::info!(scope = %scope, version = rec.version.0, token_id = %caller.token_id, "scope rotated");
    Ok(Json(Rotated {
        scope,
        version: rec.version.0,
    }))
}

/// Crypto-shred a scope: every key version is erased and the data under it is unrecoverable.
/// Pass `?confirm=<scope>`.
#[utoipa::path(delete, path = "/v1/admin/scopes/{scope}", tag = "admin",
    params(("scope" = String, Path, description = "The scope"), DestroyParams),
    responses(
        (status = 200, description = "Destroyed", body = Destroyed),
        (status = 400, description = "Missing or wrong confirmation", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "Unknown scope", body = ErrorBody),
        (status = 503, description = "Key store or KEK provider unavailable", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn destroy(
    State(app): State<App>,
    caller: Caller,
    Path(scope): Path<String>,
    Query(q): Query<DestroyParams>,
) -> Result<Json<Destroyed>, ApiError> {
    caller.require_admin()?;
    let id = scope_id(&scope)?;
    if q.confirm.as_deref() != Some(scope.as_str()) {
        return Err(ApiError::bad_request(
            "confirm",
            format!("destroying a scope is final: repeat its name as ?confirm={scope} to go ahead"),
        ));
    }
    let n = app.keyring().destroy(&id).await?;
    record(
        &app,
        &caller,
        &scope,
        format!("destroy confirmed: {n} versions erased"),
    )
    .await;
    tracing::warn!(scope = %scope, versions = n, token_id = %caller.token_id, "scope crypto-shredded");
    Ok(Json(Destroyed {
        scope,
        versions_destroyed: n,
    }))
}

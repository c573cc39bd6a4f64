//! `GET /v1/scopes/{scope}`: a scope's key versions (also used by the admin endpoints).

use axum::Json;
use axum::extract::State;
use coffer_core::ScopeId;
use serde::Serialize;
use utoipa::ToSchema;

use super::ScopeErrors;
use crate::app::{App, Owned};
use crate::error::ApiError;

/// One key version of a scope.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct VersionInfo {
    /// Version number.
    pub version: u32,
    /// `active`, `decrypt-only`, `retired` or `destroyed`.
    pub state: String,
    /// The KEK version that wraps it.
    pub kek: String,
    /// Encryptions leased under it so far (an upper bound).
    pub encryptions: u64,
    /// Created, RFC 3339.
    pub created_at: String,
}

/// A scope's owner and versions.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ScopeInfo {
    /// The scope.
    pub scope: String,
    /// The owning tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Whether it was crypto-shredded.
    pub destroyed: bool,
    /// Its versions, oldest first.
    pub versions: Vec<VersionInfo>,
}

pub(crate) async fn scope_info_of(
    app: &App,
    scope: &ScopeId,
    tenant: Option<String>,
) -> Result<ScopeInfo, ApiError> {
    let store = app.keyring().store();
    let Some(rec) = store.scope(scope).await? else {
        return Err(coffer_keys::Error::UnknownScope(scope.to_string()).into());
    };
    let versions = store
        .deks(scope)
        .await?
        .into_iter()
        .map(|d| VersionInfo {
            version: d.version.0,
            state: d.state.as_str().to_owned(),
            kek: d.kek.to_string(),
            encryptions: d.encryptions,
            created_at: crate::rfc3339(d.created_at_us),
        })
        .collect();
    Ok(ScopeInfo {
        scope: scope.to_string(),
        tenant,
        destroyed: rec.is_destroyed(),
        versions,
    })
}

/// A scope's key versions (for the owning tenant).
#[utoipa::path(get, path = "/v1/scopes/{scope}", tag = "data",
    params(("scope" = String, Path, description = "A scope the token's tenant owns")),
    responses(
        (status = 200, description = "Versions and states", body = ScopeInfo),
        ScopeErrors,
    ),
    security(("token" = [])))]
pub async fn scope_info(
    State(app): State<App>,
    Owned { caller, scope }: Owned,
) -> Result<Json<ScopeInfo>, ApiError> {
    let tenant = caller.tenant()?.to_owned();
    Ok(Json(scope_info_of(&app, &scope, Some(tenant)).await?))
}

//! `POST /v1/scopes/{scope}/rewrap`.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coffer_core::field::text;
use coffer_core::{Header, ScopeId};
use coffer_keys::BatchItem;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    Components, DataErrors, Encoding, FieldRef, TypeName, audit, check_batch, check_distinct,
    decode_value, failed,
};
use crate::app::{App, JsonBody, Owned};
use crate::error::{ApiError, ErrorBody};

/// One value to move to the active key version: a field ciphertext (with its column and
/// context) or a wrapped data key.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewrapItem {
    /// The column (field ciphertexts).
    #[serde(default)]
    pub column: Option<String>,
    /// Row context, as when encrypted.
    #[serde(default)]
    pub context: Option<Components>,
    /// Search domain, as when encrypted.
    #[serde(default)]
    pub domain: Option<Components>,
    /// Value type, as when encrypted.
    #[serde(default, rename = "type")]
    pub value_type: TypeName,
    /// A field ciphertext (`cf1:…`).
    #[serde(default)]
    pub ciphertext: Option<String>,
    /// A wrapped data key (base64).
    #[serde(default)]
    pub wrapped: Option<String>,
}

/// Rewrap request.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewrapRequest {
    /// The values.
    pub items: Vec<RewrapItem>,
}

/// A rewrapped value.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Rewrapped {
    /// The field ciphertext under the active version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<String>,
    /// The wrapped data key under the active version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrapped: Option<String>,
    /// Whether it changed (`false`: it was under the active version already).
    pub changed: bool,
}

/// Rewrap response.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RewrapResponse {
    /// The active version.
    pub version: u32,
    /// One per item, in order.
    pub items: Vec<Rewrapped>,
}

/// Move field ciphertexts and wrapped data keys to the scope's active key version (values
/// already under it come back unchanged). The plaintext never leaves the service.
#[utoipa::path(post, path = "/v1/scopes/{scope}/rewrap", tag = "data",
    params(("scope" = String, Path, description = "A scope the token's tenant owns")),
    request_body = RewrapRequest,
    responses(
        (status = 200, description = "Values under the active version, in order", body = RewrapResponse),
        (status = 400, description = "Malformed request or item", body = ErrorBody),
        (status = 422, description = "An item did not decrypt (opaque)", body = ErrorBody),
        DataErrors,
    ),
    security(("token" = [])))]
pub async fn rewrap(
    State(app): State<App>,
    Owned { caller, scope }: Owned,
    JsonBody(req): JsonBody<RewrapRequest>,
) -> Result<Json<RewrapResponse>, ApiError> {
    check_batch(&app, req.items.len())?;
    check_distinct(
        "columns",
        req.items
            .iter()
            .filter_map(|i| i.column.as_deref())
            .map(|c| (c, "")),
    )?;
    let active = app.keyring().active_version(&scope).await?;
    let mut out = Vec::with_capacity(req.items.len());
    for (i, item) in req.items.iter().enumerate() {
        let r = rewrap_one(&app, &scope, active, item)
            .await
            .map_err(|e| failed(&app, &caller, &scope, "rewrap", i, e))?;
        out.push(r);
    }
    audit(&app, &caller, &scope, "rewrap", out.len() as u64, 0);
    Ok(Json(RewrapResponse {
        version: active.0,
        items: out,
    }))
}

async fn rewrap_one(
    app: &App,
    scope: &ScopeId,
    active: coffer_core::KeyVersion,
    item: &RewrapItem,
) -> Result<Rewrapped, ApiError> {
    match (&item.ciphertext, &item.wrapped, &item.column) {
        (Some(c), None, Some(col)) => {
            let field = FieldRef::parse(col, c, &item.context, &item.domain, item.value_type)?;
            let (header, _) = Header::parse(&field.ciphertext)
                .map_err(|_| ApiError::bad_request("bad_ciphertext", "not a Coffer ciphertext"))?;
            let plain = field.open(app, scope).await?;
            if header.version == active {
                return Ok(Rewrapped {
                    ciphertext: Some(c.trim().to_owned()),
                    wrapped: None,
                    changed: false,
                });
            }
            let batch = [BatchItem {
                column: &field.column,
                suite: header.suite,
                ctx: field.context(),
                plaintext: plain.as_deref().map(|p| p.as_slice()),
            }];
            let (_, sealed) = app.keyring().encrypt_batch(scope, &batch).await?;
            let sealed = sealed.into_iter().next().ok_or_else(|| {
                ApiError::unavailable(&"encrypt_batch returned no value for one item")
            })?;
            Ok(Rewrapped {
                ciphertext: Some(text::encode(&sealed)),
                wrapped: None,
                changed: true,
            })
        }
        (None, Some(w), None) => {
            let blob = decode_value(Encoding::Base64, w)?;
            let new = app.keyring().rewrap_data_key(scope, &blob).await?;
            Ok(Rewrapped {
                ciphertext: None,
                changed: new.is_some(),
                wrapped: Some(new.map(|b| STANDARD.encode(b)).unwrap_or_else(|| w.clone())),
            })
        }
        _ => Err(ApiError::bad_request(
            "bad_item",
            "give either ciphertext with its column (and context, domain, type), or wrapped",
        )),
    }
}

//! `POST /v1/scopes/{scope}/decrypt`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    Components, DataErrors, Encoding, FieldRef, Plain, TypeName, audit, check_batch,
    check_distinct, failed,
};
use crate::app::{App, JsonBody, Owned};
use crate::error::{ApiError, ErrorBody};

/// One value to decrypt, with the column, context, domain and type it was encrypted with.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptItem {
    /// The column's stable id, e.g. `patients.ssn`.
    pub column: String,
    /// Row context (randomized modes only), e.g. the row's primary key: bound into the value.
    #[serde(default)]
    pub context: Option<Components>,
    /// Search domain (e.g. a sub-tenant): the same for every row that must compare equal.
    #[serde(default)]
    pub domain: Option<Components>,
    /// Value type (default `bytes`), bound into the value.
    #[serde(default, rename = "type")]
    pub value_type: TypeName,
    /// The ciphertext (`cf1:…`).
    pub ciphertext: String,
}

/// Decrypt request.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    /// The values.
    pub items: Vec<DecryptItem>,
    /// How plaintexts are returned (default `base64`).
    #[serde(default)]
    pub encoding: Encoding,
}

/// One plaintext.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Opened {
    /// The value, as encrypt takes it: a string in `encoding` for `bytes` and `text`, the type's
    /// JSON value for the other types; absent for an authenticated NULL.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub plaintext: Option<Plain>,
    /// Whether the value is an authenticated NULL.
    pub null: bool,
}

/// Decrypt response.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DecryptResponse {
    /// One per item, in order.
    pub items: Vec<Opened>,
}

/// Decrypt a batch of field values (each with the key version its header names).
#[utoipa::path(post, path = "/v1/scopes/{scope}/decrypt", tag = "data",
    params(("scope" = String, Path, description = "A scope the token's tenant owns")),
    request_body = DecryptRequest,
    responses(
        (status = 200, description = "Plaintexts, in order", body = DecryptResponse),
        (status = 400, description = "Malformed request, item or ciphertext", body = ErrorBody),
        (status = 422, description = "An item did not decrypt (opaque), or names an unknown version", body = ErrorBody),
        DataErrors,
    ),
    security(("token" = [])))]
pub async fn decrypt(
    State(app): State<App>,
    Owned { caller, scope }: Owned,
    JsonBody(req): JsonBody<DecryptRequest>,
) -> Result<Json<DecryptResponse>, ApiError> {
    check_batch(&app, req.items.len())?;
    check_distinct("columns", req.items.iter().map(|i| (i.column.as_str(), "")))?;
    let mut out = Vec::with_capacity(req.items.len());
    for (i, item) in req.items.iter().enumerate() {
        let field = FieldRef::parse(
            &item.column,
            &item.ciphertext,
            &item.context,
            &item.domain,
            item.value_type,
        )
        .map_err(|e| e.at(i))?;
        let v = field
            .open(&app, &scope)
            .await
            .map_err(|e| failed(&app, &caller, &scope, "decrypt", i, e.into()))?;
        out.push(Opened {
            plaintext: v
                .as_deref()
                .map(|p| item.value_type.decode(req.encoding, p).map(Plain::new))
                .transpose()
                .map_err(|e| e.at(i))?,
            null: v.is_none(),
        });
    }
    audit(&app, &caller, &scope, "decrypt", out.len() as u64, 0);
    Ok(Json(DecryptResponse { items: out }))
}

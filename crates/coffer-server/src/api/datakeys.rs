//! `POST /v1/scopes/{scope}/datakeys` and `POST /v1/scopes/{scope}/datakeys/decrypt`.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DataErrors, Encoding, Sensitive, audit, check_batch, decode_value, failed};
use crate::app::{App, JsonBody, Owned};
use crate::error::{ApiError, ErrorBody};

/// Data-key request.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataKeyRequest {
    /// How many keys (default 1).
    #[serde(default = "one")]
    pub count: usize,
}

fn one() -> usize {
    1
}

/// A fresh data key, like KMS GenerateDataKey.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DataKey {
    /// The 256-bit key, base64: use it, then forget it.
    #[schema(value_type = String)]
    pub plaintext: Sensitive,
    /// The key sealed under the scope (93 bytes, base64): store it beside your data.
    pub wrapped: String,
}

/// Data-key response.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DataKeyResponse {
    /// The keys.
    pub items: Vec<DataKey>,
}

/// A wrapped data key to open.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    /// As returned by `datakeys` (base64).
    pub wrapped: String,
}

/// Data-key decrypt request.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataKeyDecryptRequest {
    /// The wrapped keys.
    pub items: Vec<WrappedKey>,
}

/// An opened data key.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PlainKey {
    /// The 256-bit key, base64.
    #[schema(value_type = String)]
    pub plaintext: Sensitive,
}

/// Data-key decrypt response.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DataKeyDecryptResponse {
    /// One per item, in order.
    pub items: Vec<PlainKey>,
}

/// Generate data keys: each returned in plaintext and sealed under the scope (like KMS
/// GenerateDataKey).
#[utoipa::path(post, path = "/v1/scopes/{scope}/datakeys", tag = "data",
    params(("scope" = String, Path, description = "A scope the token's tenant owns")),
    request_body = DataKeyRequest,
    responses(
        (status = 200, description = "The keys", body = DataKeyResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        DataErrors,
    ),
    security(("token" = [])))]
pub async fn generate_data_keys(
    State(app): State<App>,
    Owned { caller, scope }: Owned,
    JsonBody(req): JsonBody<DataKeyRequest>,
) -> Result<Json<DataKeyResponse>, ApiError> {
    check_batch(&app, req.count)?;
    let mut out = Vec::with_capacity(req.count);
    for _ in 0..req.count {
        let (key, blob) = app.keyring().generate_data_key(&scope).await?;
        out.push(DataKey {
            plaintext: Sensitive::new(STANDARD.encode(key.expose_secret())),
            wrapped: STANDARD.encode(&blob),
        });
    }
    audit(
        &app,
        &caller,
        &scope,
        "generate_data_key",
        out.len() as u64,
        0,
    );
    Ok(Json(DataKeyResponse { items: out }))
}

/// Open wrapped data keys.
#[utoipa::path(post, path = "/v1/scopes/{scope}/datakeys/decrypt", tag = "data",
    params(("scope" = String, Path, description = "A scope the token's tenant owns")),
    request_body = DataKeyDecryptRequest,
    responses(
        (status = 200, description = "The keys, in order", body = DataKeyDecryptResponse),
        (status = 400, description = "Malformed request or item", body = ErrorBody),
        (status = 422, description = "A key did not open (opaque)", body = ErrorBody),
        DataErrors,
    ),
    security(("token" = [])))]
pub async fn decrypt_data_keys(
    State(app): State<App>,
    Owned { caller, scope }: Owned,
    JsonBody(req): JsonBody<DataKeyDecryptRequest>,
) -> Result<Json<DataKeyDecryptResponse>, ApiError> {
    check_batch(&app, req.items.len())?;
    let mut out = Vec::with_capacity(req.items.len());
    for (i, item) in req.items.iter().enumerate() {
        let blob = decode_value(Encoding::Base64, &item.wrapped).map_err(|e| e.at(i))?;
        match app.keyring().open_data_key(&scope, &blob).await {
            Ok(key) => out.push(PlainKey {
                plaintext: Sensitive::new(STANDARD.encode(key.expose_secret())),
            }),
            Err(e) => {
                let mut e = ApiError::from(e);
                if e.code == "decryption_failed" || e.code == "bad_ciphertext" {
                    e.message = "the wrapped key did not open: it belongs to another scope or \
                                 key store, or it was altered"
                        .to_owned();
                }
                return Err(failed(&app, &caller, &scope, "decrypt_data_key", i, e));
            }
        }
    }
    audit(
        &app,
        &caller,
        &scope,
        "decrypt_data_key",
        out.len() as u64,
        0,
    );
    Ok(Json(DataKeyDecryptResponse { items: out }))
}

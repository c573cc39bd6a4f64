//! `POST /v1/scopes/{scope}/encrypt`, and the load-benchmark echo that mimics it.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coffer_core::field::text;
use coffer_core::{ColumnId, FieldContext};
use coffer_keys::BatchItem;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::{
    Components, DataErrors, Encoding, Mode, Parts, Plain, TypeName, audit, check_batch,
    check_components, check_distinct, column, decode_value,
};
use crate::app::{App, JsonBody, Owned};
use crate::error::{ApiError, ErrorBody};

/// One value to encrypt.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptItem {
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
    /// The value: a string in `encoding` for `bytes` and `text`; for the other types the
    /// type's JSON value (`int`, `date`, `timestamp`: an integer; `bool`: a boolean; `uuid`: a
    /// UUID string; `json`: any JSON value). Omit it and set `null` for an authenticated NULL.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub plaintext: Option<Plain>,
    /// Seal an authenticated NULL (distinct from every value, including the empty one).
    #[serde(default)]
    pub null: bool,
    /// Mode (default `randomized`).
    #[serde(default)]
    pub mode: Mode,
}

/// Encrypt request.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptRequest {
    /// The values, at most `[service] max_batch`.
    pub items: Vec<EncryptItem>,
    /// How `plaintext` is written (default `base64`).
    #[serde(default)]
    pub encoding: Encoding,
}

/// One ciphertext.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Sealed {
    /// The ciphertext in text form (`cf1:…`); it names its key version.
    pub ciphertext: String,
}

/// Encrypt response.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EncryptResponse {
    /// The key version used.
    pub version: u32,
    /// One per item, in order.
    pub items: Vec<Sealed>,
}

/// One request item, checked: its column, its value (`None`: an authenticated NULL) and its row
/// context and domain components, borrowed from the request.
struct Prepared<'a> {
    column: ColumnId,
    value: Option<Zeroizing<Vec<u8>>>,
    row: Parts<'a>,
    domain: Parts<'a>,
}

/// Encrypt a batch of field values under the scope's active key version.
#[utoipa::path(post, path = "/v1/scopes/{scope}/encrypt", tag = "data",
    params(("scope" = String, Path, description = "A scope the token's tenant owns")),
    request_body = EncryptRequest,
    responses(
        (status = 200, description = "Ciphertexts, in order", body = EncryptResponse),
        (status = 400, description = "Malformed request or item", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        DataErrors,
    ),
    security(("token" = [])))]
pub async fn encrypt(
    State(app): State<App>,
    Owned { caller, scope }: Owned,
    JsonBody(req): JsonBody<EncryptRequest>,
) -> Result<Json<EncryptResponse>, ApiError> {
    check_batch(&app, req.items.len())?;
    check_distinct("columns", req.items.iter().map(|i| (i.column.as_str(), "")))?;
    // Each item checked and prepared, borrowing from the request: one list for all of it.
    let mut prepared = Vec::with_capacity(req.items.len());
    for (i, item) in req.items.iter().enumerate() {
        let column = column(&item.column).map_err(|e| e.at(i))?;
        check_components("context", &item.context).map_err(|e| e.at(i))?;
        check_components("domain", &item.domain).map_err(|e| e.at(i))?;
        if matches!(item.mode, Mode::Deterministic) && item.context.is_some() {
            return Err(ApiError::bad_request(
                "invalid",
                "deterministic values take no row context (equal values must compare equal \
                 across rows); use domain for a search domain, or a randomized mode",
            )
            .at(i));
        }
        let value = match (&item.plaintext, item.null) {
            (Some(p), false) => Some(
                item.value_type
                    .encode(req.encoding, p)
                    .map_err(|e| e.at(i))?,
            ),
            (None, true) => None,
            _ => {
                return Err(ApiError::bad_request(
                    "bad_item",
                    "give either plaintext or \"null\": true",
                )
                .at(i));
            }
        };
        prepared.push(Prepared {
            column,
            value,
            row: Components::parts(&item.context),
            domain: Components::parts(&item.domain),
        });
    }
    let batch: Vec<BatchItem<'_>> = req
        .items
        .iter()
        .zip(&prepared)
        .map(|(item, p)| BatchItem {
            column: &p.column,
            suite: item.mode.suite(),
            ctx: FieldContext::new()
                .with_row(p.row.as_slice())
                .with_domain(p.domain.as_slice())
                .with_type(item.value_type.value_type()),
            plaintext: p.value.as_deref().map(|v| v.as_slice()),
        })
        .collect();
    let (version, sealed) = app.keyring().encrypt_batch(&scope, &batch).await?;
    audit(&app, &caller, &scope, "encrypt", sealed.len() as u64, 0);
    Ok(Json(EncryptResponse {
        version: version.0,
        items: sealed
            .iter()
            .map(|c| Sealed {
                ciphertext: text::encode(c),
            })
            .collect(),
    }))
}

/// Load-benchmark endpoint (only with `[service] bench_endpoints = true`): everything encrypt
/// does — token, tenant check, JSON, base64 — except the cryptography; it returns each
/// plaintext, re-encoded, as its "ciphertext".
#[utoipa::path(post, path = "/v1/bench/echo/{scope}", tag = "bench",
    params(("scope" = String, Path, description = "A scope the token's tenant owns")),
    request_body = EncryptRequest,
    responses((status = 200, description = "The plaintexts back", body = EncryptResponse)),
    security(("token" = [])))]
pub async fn bench_echo(
    State(app): State<App>,
    Owned { caller, scope }: Owned,
    JsonBody(req): JsonBody<EncryptRequest>,
) -> Result<Json<EncryptResponse>, ApiError> {
    check_batch(&app, req.items.len())?;
    let mut items = Vec::with_capacity(req.items.len());
    for (i, item) in req.items.iter().enumerate() {
        column(&item.column).map_err(|e| e.at(i))?;
        let v = match &item.plaintext {
            Some(p) => item
                .value_type
                .encode(req.encoding, p)
                .map_err(|e| e.at(i))?,
            None => decode_value(req.encoding, "").map_err(|e| e.at(i))?,
        };
        items.push(Sealed {
            ciphertext: STANDARD.encode(&*v),
        });
    }
    audit(&app, &caller, &scope, "bench_echo", items.len() as u64, 0);
    Ok(Json(EncryptResponse { version: 0, items }))
}

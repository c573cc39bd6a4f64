//! `POST /v1/scopes/{scope}/blind-index`.

use axum::Json;
use axum::extract::State;
use coffer_core::Normalizer;
use coffer_keys::BlindIndexSpec;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    DataErrors, Encoding, Sensitive, audit, check_batch, check_distinct, column, decode_value,
};
use crate::app::{App, JsonBody, Owned};
use crate::error::{ApiError, ErrorBody};

/// One blind index to compute.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexItem {
    /// The column.
    pub column: String,
    /// The index name (one key per name; default `eq`).
    #[serde(default = "default_index")]
    pub index: String,
    /// Width in bits (default 32; see `coffer index plan`).
    #[serde(default = "default_bits")]
    pub bits: u16,
    /// Normalizers in order: `trim`, `casefold`, `nfc`, `digits`, `last:N`.
    #[serde(default)]
    pub normalize: Vec<String>,
    /// The values (several make a compound index; order matters), in `encoding`.
    #[schema(value_type = Vec<String>)]
    pub values: Vec<Sensitive>,
}

/// Longest index name, most normalizers and most values (compound parts) of one item.
const MAX_INDEX_NAME: usize = 64;
const MAX_NORMALIZERS: usize = 8;
const MAX_VALUES: usize = 16;

fn index_shape(item: &IndexItem) -> Result<(), ApiError> {
    let n = &item.index;
    if n.is_empty()
        || n.len() > MAX_INDEX_NAME
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Err(ApiError::bad_request(
            "bad_index",
            format!(
                "field `index` must be 1 to {MAX_INDEX_NAME} characters of A-Z, a-z, 0-9, \
                 `_`, `-`, `.` and `:`"
            ),
        ));
    }
    if item.normalize.len() > MAX_NORMALIZERS {
        return Err(ApiError::bad_request(
            "bad_normalizer",
            format!("field `normalize` takes at most {MAX_NORMALIZERS} normalizers"),
        ));
    }
    if item.values.len() > MAX_VALUES {
        return Err(ApiError::bad_request(
            "bad_item",
            format!("field `values` takes at most {MAX_VALUES} parts"),
        ));
    }
    Ok(())
}

fn default_index() -> String {
    "eq".to_owned()
}

fn default_bits() -> u16 {
    32
}

/// Blind-index request.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexRequest {
    /// The indexes to compute.
    pub items: Vec<IndexItem>,
    /// `false` (default): the index under the active version, to store with a row. `true`:
    /// the terms under every version that may still index rows, to search with `IN (…)`.
    #[serde(default)]
    pub search: bool,
    /// How `values` are written (default `base64`).
    #[serde(default)]
    pub encoding: Encoding,
}

/// An index under one key version.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IndexTerm {
    /// The key version.
    pub version: u32,
    /// The index, lowercase hex.
    pub index: String,
}

/// Blind-index response: one list per item (one term unless `search`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IndexResponse {
    /// One per item, in order.
    pub items: Vec<Vec<IndexTerm>>,
}

/// Compute blind indexes: under the active version (to store), or every live version (to search).
#[utoipa::path(post, path = "/v1/scopes/{scope}/blind-index", tag = "data",
    params(("scope" = String, Path, description = "A scope the token's tenant owns")),
    request_body = IndexRequest,
    responses(
        (status = 200, description = "Index terms, in order", body = IndexResponse),
        (status = 400, description = "Malformed request or item", body = ErrorBody),
        DataErrors,
    ),
    security(("token" = [])))]
pub async fn blind_index(
    State(app): State<App>,
    Owned { caller, scope }: Owned,
    JsonBody(req): JsonBody<IndexRequest>,
) -> Result<Json<IndexResponse>, ApiError> {
    check_batch(&app, req.items.len())?;
    check_distinct(
        "column and index names",
        req.items
            .iter()
            .map(|i| (i.column.as_str(), i.index.as_str())),
    )?;
    let mut out = Vec::with_capacity(req.items.len());
    for (i, item) in req.items.iter().enumerate() {
        index_shape(item).map_err(|e| e.at(i))?;
        let normalizers = item
            .normalize
            .iter()
            .map(|n| n.parse::<Normalizer>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::bad_request("bad_normalizer", e.to_string()).at(i))?;
        if item.values.is_empty() {
            return Err(ApiError::bad_request("bad_item", "values is empty").at(i));
        }
        let spec = BlindIndexSpec {
            column: column(&item.column).map_err(|e| e.at(i))?,
            name: item.index.clone(),
            bits: item.bits,
            normalizers,
        };
        let values = item
            .values
            .iter()
            .map(|v| decode_value(req.encoding, v.expose()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.at(i))?;
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        let terms = if req.search {
            app.keyring()
                .blind_index_terms(&scope, &spec, &refs)
                .await
                .map_err(|e| ApiError::from(e).at(i))?
        } else {
            vec![
                app.keyring()
                    .blind_index(&scope, &spec, &refs)
                    .await
                    .map_err(|e| ApiError::from(e).at(i))?,
            ]
        };
        out.push(
            terms
                .into_iter()
                .map(|(v, t)| IndexTerm {
                    version: v.0,
                    index: hex::encode(t),
                })
                .collect(),
        );
    }
    audit(&app, &caller, &scope, "blind_index", out.len() as u64, 0);
    Ok(Json(IndexResponse { items: out }))
}

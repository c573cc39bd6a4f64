//! Data endpoints for tenant tokens: batch encrypt, decrypt, blind index, data keys, rewrap, and
//! the versions of a scope. A batch is all or nothing: the first bad item fails the request with
//! its index, and nothing is returned for the others.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coffer_core::field::text;
use coffer_core::{ColumnId, FieldContext, Header, Normalizer, ScopeId, Suite, ValueType};
use coffer_keys::{BatchItem, BlindIndexSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::app::{App, Caller, JsonBody, Owned};
use crate::error::{ApiError, ErrorBody};

/// A plaintext, key or searched value in a request or response: serialized as the string
/// itself, shown as `[redacted]` by `Debug`, zeroized when dropped.
#[derive(Clone, Default, Deserialize, Serialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(transparent)]
pub struct Sensitive(String);

impl Sensitive {
    /// Wraps a value.
    pub fn new(s: String) -> Self {
        Sensitive(s)
    }

    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How plaintexts are written in requests and responses.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Standard base64 (the default): any bytes.
    #[default]
    Base64,
    /// The JSON string itself, as UTF-8.
    Utf8,
}

/// One string or a list of strings (row context and search domain components).
#[derive(Clone, Deserialize, ToSchema)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum Components {
    /// One component.
    One(String),
    /// Several components, each encoded separately (`["1","23"]` differs from `["12","3"]`).
    Many(Vec<String>),
}

impl std::fmt::Debug for Components {
    // Row and domain components can be personal data (a patient id): show only their count.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = match self {
            Components::One(_) => 1,
            Components::Many(v) => v.len(),
        };
        write!(f, "Components({n})")
    }
}

impl Components {
    fn parts(c: &Option<Components>) -> Vec<&[u8]> {
        match c {
            None => Vec::new(),
            Some(Components::One(s)) => vec![s.as_bytes()],
            Some(Components::Many(v)) => v.iter().map(|s| s.as_bytes()).collect(),
        }
    }
}

/// Encryption mode.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// AES-256-GCM, random IV, 96-bit tag (25 bytes of overhead). The default.
    #[default]
    Randomized,
    /// AES-256-GCM with a 128-bit tag (29 bytes).
    RandomizedTag128,
    /// AES-256-SIV: equal values give equal ciphertexts (searchable; no row context). Refused
    /// by FIPS builds.
    Deterministic,
}

impl Mode {
    fn suite(self) -> Suite {
        match self {
            Mode::Randomized => Suite::Gcm96,
            Mode::RandomizedTag128 => Suite::Gcm128,
            Mode::Deterministic => Suite::Siv,
        }
    }
}

/// The value type bound into the ciphertext (docs/FORMAT.md table 3). The plaintext is its
/// canonical encoding; the type only makes a value unreadable as another type.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TypeName {
    /// Raw bytes (default).
    #[default]
    Bytes,
    /// UTF-8 text.
    Text,
    /// i64 big-endian.
    Int,
    /// Days since 1970-01-01, i32 big-endian.
    Date,
    /// Microseconds since the epoch, i64 big-endian.
    Timestamp,
    /// RFC 8785 JSON.
    Json,
    /// One byte 0 or 1.
    Bool,
    /// 16 bytes.
    Uuid,
}

impl TypeName {
    fn value_type(self) -> ValueType {
        match self {
            TypeName::Bytes => ValueType::Bytes,
            TypeName::Text => ValueType::Text,
            TypeName::Int => ValueType::Int64,
            TypeName::Date => ValueType::Date,
            TypeName::Timestamp => ValueType::Timestamp,
            TypeName::Json => ValueType::Json,
            TypeName::Bool => ValueType::Bool,
            TypeName::Uuid => ValueType::Uuid,
        }
    }
}

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
    /// The value (see `encoding`); omit it and set `null` for an authenticated NULL.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub plaintext: Option<Sensitive>,
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
    /// The value (see `encoding`); absent for an authenticated NULL.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub plaintext: Option<Sensitive>,
    /// Whether the value is an authenticated NULL.
    pub null: bool,
}

/// Decrypt response.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DecryptResponse {
    /// One per item, in order.
    pub items: Vec<Opened>,
}

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

// ---- helpers -----------------------------------------------------------------------------

pub(crate) fn check_batch(app: &App, n: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad_request(
            "empty_batch",
            "nothing to do: give at least one item (or a count of at least 1)",
        ));
    }
    let max = app.config().max_batch;
    if n > max {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "{n} items; this service takes at most {max} per request ([service] max_batch)"
            ),
        ));
    }
    Ok(())
}

fn decode_value(enc: Encoding, s: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    match enc {
        Encoding::Utf8 => Ok(Zeroizing::new(s.as_bytes().to_vec())),
        Encoding::Base64 => STANDARD.decode(s).map(Zeroizing::new).map_err(|_| {
            ApiError::bad_request(
                "bad_base64",
                "the value is not standard base64 (send \"encoding\": \"utf8\" for text)",
            )
        }),
    }
}

fn encode_value(enc: Encoding, v: &[u8]) -> Result<String, ApiError> {
    match enc {
        Encoding::Base64 => Ok(STANDARD.encode(v)),
        Encoding::Utf8 => String::from_utf8(v.to_vec()).map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "not_utf8",
                "the plaintext is not UTF-8; ask for \"encoding\": \"base64\"",
            )
        }),
    }
}

fn column(c: &str) -> Result<ColumnId, ApiError> {
    ColumnId::new(c).map_err(|e| ApiError::bad_request("bad_column", format!("column '{c}': {e}")))
}

fn ciphertext(c: &str) -> Result<Vec<u8>, ApiError> {
    text::decode(c.trim()).map_err(|_| {
        ApiError::bad_request(
            "bad_ciphertext",
            "not a Coffer ciphertext: expected the text form cf1:…",
        )
    })
}

fn audit(app: &App, caller: &Caller, scope: &ScopeId, op: &'static str, ok: u64, failed: u64) {
    let tenant = caller.tenant().unwrap_or("-");
    app.0
        .access
        .add(&caller.token_id, tenant, scope.as_str(), op, ok, failed);
    metrics::counter!("coffer_service_items_total", "operation" => op).increment(ok);
}

// ---- handlers ----------------------------------------------------------------------------

/// Encrypt a batch of field values under the scope's active key version.
#[utoipa::path(post, path = "/v1/scopes/{scope}/encrypt", tag = "data",
    params(("scope" = String, Path, description = "A scope the token's tenant owns")),
    request_body = EncryptRequest,
    responses(
        (status = 200, description = "Ciphertexts, in order", body = EncryptResponse),
        (status = 400, description = "Malformed request or item", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Another tenant's scope, or an admin token", body = ErrorBody),
        (status = 404, description = "Unknown scope", body = ErrorBody),
        (status = 410, description = "The scope was crypto-shredded", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Key store or KEK provider unavailable", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn encrypt(
    State(app): State<App>,
    Owned { caller, scope }: Owned,
    JsonBody(req): JsonBody<EncryptRequest>,
) -> Result<Json<EncryptResponse>, ApiError> {
    check_batch(&app, req.items.len())?;
    let mut columns = Vec::with_capacity(req.items.len());
    let mut values = Vec::with_capacity(req.items.len());
    for (i, item) in req.items.iter().enumerate() {
        columns.push(column(&item.column).map_err(|e| e.at(i))?);
        if matches!(item.mode, Mode::Deterministic) && item.context.is_some() {
            return Err(ApiError::bad_request(
                "invalid",
                "deterministic values take no row context (equal values must compare equal \
                 across rows); use domain for a search domain, or a randomized mode",
            )
            .at(i));
        }
        let v = match (&item.plaintext, item.null) {
            (Some(p), false) => Some(decode_value(req.encoding, p.expose()).map_err(|e| e.at(i))?),
            (None, true) => None,
            _ => {
                return Err(ApiError::bad_request(
                    "bad_item",
                    "give either plaintext or \"null\": true",
                )
                .at(i));
            }
        };
        values.push(v);
    }
    // Each item's row-context and domain components, borrowed from the request.
    type Parts<'a> = (Vec<&'a [u8]>, Vec<&'a [u8]>);
    let contexts: Vec<Parts<'_>> = req
        .items
        .iter()
        .map(|i| (Components::parts(&i.context), Components::parts(&i.domain)))
        .collect();
    let batch: Vec<BatchItem<'_>> = req
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| BatchItem {
            column: &columns[i],
            suite: item.mode.suite(),
            ctx: FieldContext::new()
                .with_row(&contexts[i].0)
                .with_domain(&contexts[i].1)
                .with_type(item.value_type.value_type()),
            plaintext: values[i].as_deref().map(|v| v.as_slice()),
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

/// Decrypt a batch of field values (each with the key version its header names).
#[utoipa::path(post, path = "/v1/scopes/{scope}/decrypt", tag = "data",
    params(("scope" = String, Path, description = "A scope the token's tenant owns")),
    request_body = DecryptRequest,
    responses(
        (status = 200, description = "Plaintexts, in order", body = DecryptResponse),
        (status = 400, description = "Malformed request, item or ciphertext", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Another tenant's scope, or an admin token", body = ErrorBody),
        (status = 404, description = "Unknown scope", body = ErrorBody),
        (status = 410, description = "The scope was crypto-shredded", body = ErrorBody),
        (status = 422, description = "An item did not decrypt (opaque), or names an unknown version", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Key store or KEK provider unavailable", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn decrypt(
    State(app): State<App>,
    Owned { caller, scope }: Owned,
    JsonBody(req): JsonBody<DecryptRequest>,
) -> Result<Json<DecryptResponse>, ApiError> {
    check_batch(&app, req.items.len())?;
    let mut out = Vec::with_capacity(req.items.len());
    for (i, item) in req.items.iter().enumerate() {
        let col = column(&item.column).map_err(|e| e.at(i))?;
        let ct = ciphertext(&item.ciphertext).map_err(|e| e.at(i))?;
        let row = Components::parts(&item.context);
        let domain = Components::parts(&item.domain);
        let ctx = FieldContext::new()
            .with_row(&row)
            .with_domain(&domain)
            .with_type(item.value_type.value_type());
        match app.keyring().decrypt(&scope, &col, &ctx, &ct).await {
            Ok(v) => {
                let v = v.map(Zeroizing::new);
                out.push(Opened {
                    plaintext: v
                        .as_deref()
                        .map(|p| encode_value(req.encoding, p).map(Sensitive::new))
                        .transpose()
                        .map_err(|e| e.at(i))?,
                    null: v.is_none(),
                });
            }
            Err(e) => {
                audit(&app, &caller, &scope, "decrypt", i as u64, 1);
                return Err(ApiError::from(e).at(i));
            }
        }
    }
    audit(&app, &caller, &scope, "decrypt", out.len() as u64, 0);
    Ok(Json(DecryptResponse { items: out }))
}

/// Compute blind indexes: under the active version (to store), or every live version (to search).
#[utoipa::path(post, path = "/v1/scopes/{scope}/blind-index", tag = "data",
    params(("scope" = String, Path, description = "A scope the token's tenant owns")),
    request_body = IndexRequest,
    responses(
        (status = 200, description = "Index terms, in order", body = IndexResponse),
        (status = 400, description = "Malformed request or item", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Another tenant's scope, or an admin token", body = ErrorBody),
        (status = 404, description = "Unknown scope", body = ErrorBody),
        (status = 410, description = "The scope was crypto-shredded", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Key store or KEK provider unavailable", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn blind_index(
    State(app): State<App>,
    Owned { caller, scope }: Owned,
    JsonBody(req): JsonBody<IndexRequest>,
) -> Result<Json<IndexResponse>, ApiError> {
    check_batch(&app, req.items.len())?;
    let mut out = Vec::with_capacity(req.items.len());
    for (i, item) in req.items.iter().enumerate() {
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

/// Generate data keys: each returned in plaintext and sealed under the scope (like KMS
/// GenerateDataKey).
#[utoipa::path(post, path = "/v1/scopes/{scope}/datakeys", tag = "data",
    params(("scope" = String, Path, description = "A scope the token's tenant owns")),
    request_body = DataKeyRequest,
    responses(
        (status = 200, description = "The keys", body = DataKeyResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Another tenant's scope, or an admin token", body = ErrorBody),
        (status = 404, description = "Unknown scope", body = ErrorBody),
        (status = 410, description = "The scope was crypto-shredded", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Key store or KEK provider unavailable", body = ErrorBody),
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
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Another tenant's scope, or an admin token", body = ErrorBody),
        (status = 404, description = "Unknown scope", body = ErrorBody),
        (status = 410, description = "The scope was crypto-shredded", body = ErrorBody),
        (status = 422, description = "A key did not open (opaque)", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Key store or KEK provider unavailable", body = ErrorBody),
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
                audit(&app, &caller, &scope, "decrypt_data_key", i as u64, 1);
                let mut e = ApiError::from(e);
                if e.code == "decryption_failed" || e.code == "bad_ciphertext" {
                    e.message = "the wrapped key did not open: it belongs to another scope or \
                                 key store, or it was altered"
                        .to_owned();
                }
                return Err(e.at(i));
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

/// Move field ciphertexts and wrapped data keys to the scope's active key version (values
/// already under it come back unchanged). The plaintext never leaves the service.
#[utoipa::path(post, path = "/v1/scopes/{scope}/rewrap", tag = "data",
    params(("scope" = String, Path, description = "A scope the token's tenant owns")),
    request_body = RewrapRequest,
    responses(
        (status = 200, description = "Values under the active version, in order", body = RewrapResponse),
        (status = 400, description = "Malformed request or item", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Another tenant's scope, or an admin token", body = ErrorBody),
        (status = 404, description = "Unknown scope", body = ErrorBody),
        (status = 410, description = "The scope was crypto-shredded", body = ErrorBody),
        (status = 422, description = "An item did not decrypt (opaque)", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Key store or KEK provider unavailable", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn rewrap(
    State(app): State<App>,
    Owned { caller, scope }: Owned,
    JsonBody(req): JsonBody<RewrapRequest>,
) -> Result<Json<RewrapResponse>, ApiError> {
    check_batch(&app, req.items.len())?;
    let active = app.keyring().active_version(&scope).await?;
    let mut out = Vec::with_capacity(req.items.len());
    for (i, item) in req.items.iter().enumerate() {
        let r = rewrap_one(&app, &scope, active, item)
            .await
            .map_err(|e| e.at(i));
        match r {
            Ok(r) => out.push(r),
            Err(e) => {
                audit(&app, &caller, &scope, "rewrap", i as u64, 1);
                return Err(e);
            }
        }
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
            let col = column(col)?;
            let ct = ciphertext(c)?;
            let (header, _) = Header::parse(&ct)
                .map_err(|_| ApiError::bad_request("bad_ciphertext", "not a Coffer ciphertext"))?;
            let row = Components::parts(&item.context);
            let domain = Components::parts(&item.domain);
            let ctx = FieldContext::new()
                .with_row(&row)
                .with_domain(&domain)
                .with_type(item.value_type.value_type());
            let plain = app
                .keyring()
                .decrypt(scope, &col, &ctx, &ct)
                .await?
                .map(Zeroizing::new);
            if header.version == active {
                return Ok(Rewrapped {
                    ciphertext: Some(c.trim().to_owned()),
                    wrapped: None,
                    changed: false,
                });
            }
            let batch = [BatchItem {
                column: &col,
                suite: header.suite,
                ctx,
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
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Another tenant's scope, or an admin token", body = ErrorBody),
        (status = 404, description = "Unknown scope", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn scope_info(
    State(app): State<App>,
    Owned { caller, scope }: Owned,
) -> Result<Json<ScopeInfo>, ApiError> {
    let tenant = caller.tenant()?.to_owned();
    Ok(Json(scope_info_of(&app, &scope, Some(tenant)).await?))
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
        let v = decode_value(
            req.encoding,
            item.plaintext.as_ref().map_or("", |p| p.expose()),
        )
        .map_err(|e| e.at(i))?;
        items.push(Sealed {
            ciphertext: STANDARD.encode(&*v),
        });
    }
    audit(&app, &caller, &scope, "bench_echo", items.len() as u64, 0);
    Ok(Json(EncryptResponse { version: 0, items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_plaintext_or_context() {
        let item: EncryptItem = serde_json::from_str(
            r#"{"column":"ssn","context":["acme","patient-42"],"plaintext":"123-45-6789"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{item:?}");
        assert!(
            !shown.contains("123-45-6789") && !shown.contains("patient-42"),
            "{shown}"
        );
        let key = DataKey {
            plaintext: Sensitive::new("a2V5".to_owned()),
            wrapped: String::new(),
        };
        assert!(!format!("{key:?}").contains("a2V5"));
        assert_eq!(
            serde_json::to_value(&key)
                .ok()
                .map(|v| v["plaintext"].clone()),
            Some("a2V5".into())
        );
    }
}

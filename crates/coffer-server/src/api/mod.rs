//! Data endpoints for tenant tokens: batch encrypt, decrypt, blind index, data keys, rewrap, and
//! the versions of a scope. A batch is all or nothing: the first bad item fails the request with
//! its index, and nothing is returned for the others.
//!
//! One module per endpoint (its request and response types beside its handler); the value types
//! they share are in `types`, the helpers they share here.

mod datakeys;
mod decrypt;
mod encrypt;
mod index;
mod responses;
mod rewrap;
mod scope;
mod types;

pub use datakeys::*;
pub use decrypt::*;
pub use encrypt::*;
pub use index::*;
pub use rewrap::*;
pub use scope::*;
pub use types::*;

use responses::{DataErrors, ScopeErrors};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coffer_core::field::text;
use coffer_core::{ColumnId, FieldContext, ScopeId, ValueType};
use zeroize::Zeroizing;

use crate::app::{App, Caller};
use crate::error::ApiError;

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

/// Most distinct column names (blind indexes: column and index-name pairs) in one request:
/// each one is a subkey the keyring derives and may keep.
pub const MAX_DISTINCT_NAMES: usize = 64;

/// Most parts in one row context or search domain.
pub const MAX_COMPONENTS: usize = 16;

/// Refuses a request naming more than [`MAX_DISTINCT_NAMES`] distinct names.
pub(crate) fn check_distinct<'a>(
    what: &str,
    names: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<(), ApiError> {
    if names.size_hint().1.is_some_and(|n| n <= MAX_DISTINCT_NAMES) {
        // Too few names to pass the bound: no set to build.
        return Ok(());
    }
    let mut seen = std::collections::HashSet::new();
    for n in names {
        seen.insert(n);
        if seen.len() > MAX_DISTINCT_NAMES {
            return Err(ApiError::bad_request(
                "too_many_names",
                format!(
                    "one request may name at most {MAX_DISTINCT_NAMES} distinct {what}; split \
                     the batch by {what}"
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a row context or search domain of more than [`MAX_COMPONENTS`] parts.
pub(crate) fn check_components(field: &str, c: &Option<Components>) -> Result<(), ApiError> {
    match c {
        Some(Components::Many(v)) if v.len() > MAX_COMPONENTS => Err(ApiError::bad_request(
            "bad_item",
            format!("field `{field}` has more than {MAX_COMPONENTS} parts"),
        )),
        _ => Ok(()),
    }
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

/// Records a batch that failed at item `i` (the `i` before it succeeded) and returns the error,
/// marked with the item's index.
fn failed(
    app: &App,
    caller: &Caller,
    scope: &ScopeId,
    op: &'static str,
    i: usize,
    e: ApiError,
) -> ApiError {
    audit(app, caller, scope, op, i as u64, 1);
    e.at(i)
}

/// A field ciphertext as a request names it: its column and the row context, domain and value
/// type it was encrypted with (decrypt and rewrap read it the same way).
struct FieldRef<'a> {
    column: ColumnId,
    ciphertext: Vec<u8>,
    row: Parts<'a>,
    domain: Parts<'a>,
    value_type: ValueType,
}

impl<'a> FieldRef<'a> {
    /// Checks the column, then the ciphertext's text form.
    fn parse(
        column_id: &str,
        text_form: &str,
        context: &'a Option<Components>,
        domain: &'a Option<Components>,
        value_type: TypeName,
    ) -> Result<Self, ApiError> {
        check_components("context", context)?;
        check_components("domain", domain)?;
        Ok(FieldRef {
            column: column(column_id)?,
            ciphertext: ciphertext(text_form)?,
            row: Components::parts(context),
            domain: Components::parts(domain),
            value_type: value_type.value_type(),
        })
    }

    /// The context the value is bound to.
    fn context(&self) -> FieldContext<'_> {
        FieldContext::new()
            .with_row(self.row.as_slice())
            .with_domain(self.domain.as_slice())
            .with_type(self.value_type)
    }

    /// Decrypts the value (`None`: an authenticated NULL).
    async fn open(
        &self,
        app: &App,
        scope: &ScopeId,
    ) -> coffer_keys::Result<Option<Zeroizing<Vec<u8>>>> {
        let plain = app
            .keyring()
            .decrypt(scope, &self.column, &self.context(), &self.ciphertext)
            .await?;
        Ok(plain.map(Zeroizing::new))
    }
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

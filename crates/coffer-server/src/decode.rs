//! Request bodies to typed requests. Errors name the field (its path, e.g. `items[3].column`)
//! and what was expected there, and never the value that was sent: serde's own messages quote
//! it (`invalid type: integer 123456789, expected a string`), and a value in a request may be
//! a plaintext.

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::error::ApiError;

/// Path segments longer than this, or with characters outside `[A-Za-z0-9_.-]`, are shown as
/// `?` (map keys come from the client).
const MAX_SEGMENT: usize = 64;

/// Decodes a JSON body into `T`; the error says where and what was expected, without the value.
pub fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner_text = e.inner().to_string();
        // An unknown field's name is the client's text: the path stops at its parent.
        let path = if inner_text.starts_with("unknown field ") {
            let segs: Vec<_> = e.path().iter().cloned().collect();
            path_text(&segs[..segs.len().saturating_sub(1)])
        } else {
            path_text(&e.path().iter().cloned().collect::<Vec<_>>())
        };
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data => ApiError::bad_request(
                "bad_request",
                format!(
                    "the JSON does not match the request schema at `{path}`: {}",
                    data_message(&inner)
                ),
            ),
            Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                "bad_json",
                format!("the body is not valid JSON: {}", syntax_message(&inner)),
            ),
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("the body is not valid JSON: {}", syntax_message(&e)),
        )
    })?;
    Ok(value)
}

/// The endpoints whose bodies [`decode_request`] decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/scopes/{scope}/encrypt`
    Encrypt,
    /// `POST /v1/scopes/{scope}/decrypt`
    Decrypt,
    /// `POST /v1/scopes/{scope}/blind-index`
    BlindIndex,
    /// `POST /v1/scopes/{scope}/datakeys`
    DataKeys,
    /// `POST /v1/scopes/{scope}/datakeys/decrypt`
    DecryptDataKeys,
    /// `POST /v1/scopes/{scope}/rewrap`
    Rewrap,
    /// `POST /v1/admin/scopes`
    CreateScope,
}

impl Endpoint {
    /// Every endpoint with a body.
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Encrypt,
        Endpoint::Decrypt,
        Endpoint::BlindIndex,
        Endpoint::DataKeys,
        Endpoint::DecryptDataKeys,
        Endpoint::Rewrap,
        Endpoint::CreateScope,
    ];
}

/// Decodes `body` as the request of `endpoint`, and for encryption turns each plaintext into its
/// type's canonical bytes, as the handlers do before any key is used (the fuzz target's entry).
pub fn decode_request(endpoint: Endpoint, body: &[u8]) -> Result<(), ApiError> {
    use crate::api;
    match endpoint {
        Endpoint::Encrypt => {
            let r: api::EncryptRequest = decode_json(body)?;
            for (i, item) in r.items.iter().enumerate() {
                if let Some(p) = &item.plaintext {
                    item.value_type.encode(r.encoding, p).map_err(|e| e.at(i))?;
                }
            }
        }
        Endpoint::Decrypt => {
            let _: api::DecryptRequest = decode_json(body)?;
        }
        Endpoint::BlindIndex => {
            let _: api::IndexRequest = decode_json(body)?;
        }
        Endpoint::DataKeys => {
            let _: api::DataKeyRequest = decode_json(body)?;
        }
        Endpoint::DecryptDataKeys => {
            let _: api::DataKeyDecryptRequest = decode_json(body)?;
        }
        Endpoint::Rewrap => {
            let _: api::RewrapRequest = decode_json(body)?;
        }
        Endpoint::CreateScope => {
            let _: crate::admin::CreateScope = decode_json(body)?;
        }
    }
    Ok(())
}

/// The path as `items[3].column`, with client-chosen keys that do not look like field names
/// replaced by `?`.
pub fn path_text(path: &[serde_path_to_error::Segment]) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                let plain = !key.is_empty()
                    && key.len() <= MAX_SEGMENT
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                out.push_str(if plain { key } else { "?" });
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// serde_json's message without the position suffix.
fn bare(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// What was expected, from a serde data error, without what was found. serde's messages put
/// the value first and the expectation (which comes from our own types) last.
fn data_message(e: &serde_json::Error) -> String {
    let text = bare(e);
    let expected = text
        .rfind(", expected ")
        .map(|i| text[i + ", expected ".len()..].to_owned());
    let ours = |s: &str| {
        // Names in backquotes that serde took from our schema (`missing field `column``).
        s.len() <= 200 && !s.contains('"')
    };
    if text.starts_with("invalid type: ") {
        match expected {
            Some(x) if ours(&x) => format!("wrong JSON type; expected {x}"),
            _ => "wrong JSON type".to_owned(),
        }
    } else if text.starts_with("invalid value: ") || text.starts_with("invalid length ") {
        match expected {
            Some(x) if ours(&x) => format!("invalid value; expected {x}"),
            _ => "invalid value".to_owned(),
        }
    } else if text.starts_with("unknown variant ") {
        match expected {
            Some(x) if ours(&x) => format!("unknown value; expected {x}"),
            _ => "unknown value".to_owned(),
        }
    } else if text.starts_with("unknown field ") {
        match expected {
            Some(x) if ours(&x) => format!("unknown field; expected {x}"),
            _ => "unknown field".to_owned(),
        }
    } else if (text.starts_with("missing field `") || text.starts_with("duplicate field `"))
        && ours(&text)
    {
        // The field named is one of ours: a missing field is never the client's text, and a
        // duplicate is a known field (unknown ones fail first).
        text
    } else if text.starts_with("data did not match any variant") {
        "wrong JSON type or shape".to_owned()
    } else if text.starts_with("number out of range") {
        "number out of range".to_owned()
    } else {
        // A message of our own deserializers (they never quote values), or one we do not know:
        // keep only its first words when unknown.
        match text.split_once(':') {
            Some((head, _)) if ours(head) => head.to_owned(),
            _ if ours(&text) && !text.contains('`') => text,
            _ => "the value does not fit the field".to_owned(),
        }
    }
}

/// A syntax error's message: serde_json's syntax messages never quote the input; the position
/// is kept (it helps to find the mistake).
fn syntax_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.len() <= 200 && !text.contains('`') {
        text
    } else {
        format!("syntax error at line {} column {}", e.line(), e.column())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        column: String,
        #[serde(default)]
        null: bool,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        items: Vec<Item>,
    }

    #[test]
    fn errors_name_the_path_and_not_the_value() {
        let cases = [
            (
                r#"{"items":[{"column":91827364}]}"#,
                "91827364",
                "items[0].column",
            ),
            (
                r#"{"items":[{"column":"c","null":"Zebra7731"}]}"#,
                "Zebra7731",
                "items[0].null",
            ),
            (
                r#"{"items":[{"column":"c","Zebra7731":1}]}"#,
                "Zebra7731",
                "items[0]",
            ),
            (r#"{"items":"Zebra7731"}"#, "Zebra7731", "items"),
        ];
        for (body, value, path) in cases {
            let e = decode_json::<Req>(body.as_bytes()).unwrap_err();
            assert!(!e.message.contains(value), "{}", e.message);
            assert!(e.message.contains(&format!("`{path}`")), "{}", e.message);
            assert_eq!(e.code, "bad_request");
        }
        let e = decode_json::<Req>(br#"{"items":[{"column":"Zebra7731""#).unwrap_err();
        assert_eq!(e.code, "bad_json");
        assert!(!e.message.contains("Zebra7731"), "{}", e.message);
    }
}

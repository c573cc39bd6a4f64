//! What the store keeps beside an object's bytes: its size, S3 Content-Type and user metadata
//! (`x-amz-meta-*`). All of it is plaintext and unauthenticated: anyone with write access to the
//! bucket can change it without touching the ciphertext. What must be trusted belongs in the
//! encryption context, which the object's header authenticates.

use std::collections::BTreeMap;

use object_store::{Attribute, Attributes, ObjectMeta};

use crate::error::{Error, Result};

/// S3's limit on user metadata: keys and values together, in bytes.
const MAX_METADATA_BYTES: usize = 2 * 1024;

/// An object as the store describes it (no key needed to read this).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Bytes stored: the whole encrypted message (header, frames, tags).
    pub size: u64,
    /// The S3 Content-Type, as stored (unauthenticated).
    pub content_type: Option<String>,
    /// The user metadata (`x-amz-meta-*`), as stored (unauthenticated).
    pub metadata: BTreeMap<String, String>,
    /// The store's entity tag of this version of the object.
    pub e_tag: Option<String>,
}

impl ObjectInfo {
    pub(crate) fn new(meta: &ObjectMeta, attributes: &Attributes) -> Self {
        let mut content_type = None;
        let mut metadata = BTreeMap::new();
        for (k, v) in attributes {
            match k {
                Attribute::ContentType => content_type = Some(v.to_string()),
                Attribute::Metadata(name) => {
                    metadata.insert(name.to_string(), v.to_string());
                }
                _ => {}
            }
        }
        ObjectInfo {
            size: meta.size,
            content_type,
            metadata,
            e_tag: meta.e_tag.clone(),
        }
    }
}

/// The S3 attributes for a content type and user metadata, checked against what S3 keeps
/// intact: lower-case keys of letters, digits, `-`, `_` and `.` (S3 lower-cases keys, so an
/// upper-case key would not come back as given); values of printable ASCII; 2 KiB in all.
pub(crate) fn attributes(
    content_type: Option<&str>,
    metadata: &BTreeMap<String, String>,
) -> Result<Attributes> {
    let mut out = Attributes::with_capacity(metadata.len() + 1);
    if let Some(t) = content_type {
        if t.is_empty() || !printable(t) {
            return Err(Error::invalid(
                "content type",
                format!("'{t}' must be non-empty printable ASCII, e.g. application/pdf"),
            ));
        }
        out.insert(Attribute::ContentType, t.to_owned().into());
    }
    let mut total = 0;
    for (k, v) in metadata {
        let key_ok = !k.is_empty()
            && k.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        if !key_ok {
            return Err(Error::invalid(
                "metadata key",
                format!(
                    "'{k}': use lower-case letters, digits, '-', '_' and '.' (S3 lower-cases \
                     metadata keys)"
                ),
            ));
        }
        if !printable(v) {
            return Err(Error::invalid(
                "metadata value",
                format!("the value of '{k}' must be printable ASCII"),
            ));
        }
        total += k.len() + v.len();
        out.insert(Attribute::Metadata(k.clone().into()), v.clone().into());
    }
    if total > MAX_METADATA_BYTES {
        return Err(Error::invalid(
            "metadata",
            format!("{total} bytes; S3 keeps at most {MAX_METADATA_BYTES} bytes of user metadata"),
        ));
    }
    Ok(out)
}

fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn attributes_take_what_s3_keeps_intact() {
        let a = attributes(
            Some("application/dicom"),
            &meta(&[("study", "ct-1"), ("x.y_z-1", "a b")]),
        )
        .unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(
            a.get(&Attribute::ContentType).map(|v| v.as_ref()),
            Some("application/dicom")
        );
        for bad in [
            meta(&[("Study", "x")]),
            meta(&[("", "x")]),
            meta(&[("a b", "x")]),
            meta(&[("k", "caf\u{e9}")]),
            meta(&[("k", "line\nbreak")]),
            meta(&[("k", &"v".repeat(2048))]),
        ] {
            assert!(attributes(None, &bad).is_err(), "{bad:?}");
        }
        assert!(attributes(Some(""), &BTreeMap::new()).is_err());
    }

    #[test]
    fn info_reads_content_type_and_metadata_back() {
        let a = attributes(Some("text/plain"), &meta(&[("k", "v")])).unwrap();
        let m = ObjectMeta {
            location: "x".into(),
            last_modified: Default::default(),
            size: 42,
            e_tag: Some("\"e\"".into()),
            version: None,
        };
        let info = ObjectInfo::new(&m, &a);
        assert_eq!(info.size, 42);
        assert_eq!(info.content_type.as_deref(), Some("text/plain"));
        assert_eq!(info.metadata, meta(&[("k", "v")]));
    }
}

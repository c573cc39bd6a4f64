//! A backup's manifest and the encryption contexts of its messages.
//!
//! A backup is a directory `<backup-id>/` of messages in the AWS Encryption SDK format:
//! `part-000001.cfr`, `part-000002.cfr`… (each a complete message holding the next `--part-size`
//! bytes of the dump, or of one file of a directory-format dump) and `manifest.cfr`, written last,
//! whose plaintext is the JSON [`Manifest`] listing every part with its plaintext length and the
//! SHA-256 of its ciphertext. Every message's encryption context names the backup and its role,
//! so a part moved to another position or another backup does not pass (docs/OPERATIONS.md §6).

use std::fmt::Write as _;

use coffer_core::stream::EncryptionContext;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The manifest's file name.
pub(crate) const MANIFEST: &str = "manifest.cfr";
/// The `coffer:backup` version this code writes and reads.
pub(crate) const VERSION: u64 = 1;
/// Largest manifest plaintext accepted (about 4 million parts).
pub(crate) const MAX_MANIFEST: u64 = 1 << 30;

/// Encryption-context keys (all values are ids, numbers or dump file names: never data).
pub(crate) const CTX_BACKUP_ID: &str = "coffer:backup-id";
pub(crate) const CTX_KIND: &str = "coffer:kind";
pub(crate) const CTX_PART: &str = "coffer:part";
pub(crate) const CTX_FILE: &str = "coffer:file";
pub(crate) const CTX_FORMAT: &str = "coffer:format";
pub(crate) const CTX_PARTS: &str = "coffer:parts";
pub(crate) const CTX_TOTAL: &str = "coffer:total-length";

/// The layout of a backup's plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One stream (`pg_dump -Fc`, or any bytes) cut into parts.
    Custom,
    /// A directory of files (`pg_dump -Fd`), each file its own part(s); allows `pg_restore -j N`.
    Directory,
}

impl Format {
    /// `custom` or `directory`, as the manifest and the encryption contexts name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Custom => "custom",
            Format::Directory => "directory",
        }
    }
}

/// One part as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Part {
    /// 1, 2, 3…: the order the plaintext is concatenated in.
    pub index: u32,
    /// The dump file it belongs to (directory format only).
    pub file: Option<String>,
    /// Plaintext bytes.
    pub plaintext_len: u64,
    /// Bytes of the `.cfr` file.
    pub ciphertext_len: u64,
    /// SHA-256 of the `.cfr` file.
    pub sha256: [u8; 32],
}

impl Part {
    /// The part's file name in the backup directory.
    pub fn name(&self) -> String {
        part_name(self.index)
    }
}

/// `part-000042.cfr`.
pub(crate) fn part_name(index: u32) -> String {
    format!("part-{index:06}.cfr")
}

/// What the manifest message holds: authenticated, and checked against the parts, before a
/// restore uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Manifest {
    /// `20261123T020000Z-3f9a1c2b5d7e9f01`: the UTC time it was started and 64 random bits.
    pub backup_id: String,
    /// The layout of the plaintext.
    pub format: Format,
    /// What was backed up (the database name or connection string; a label).
    pub database: String,
    /// The program that produced the dump (`pg_dump (PostgreSQL) 15.20`; a label).
    pub pg_dump_version: String,
    /// When the backup started (RFC 3339, UTC).
    pub started_at: String,
    /// When the backup finished (RFC 3339, UTC).
    pub finished_at: String,
    /// Plaintext bytes per part (at most).
    pub part_size: u64,
    /// Plaintext bytes per frame.
    pub frame_size: u32,
    /// Plaintext bytes in all.
    pub total_len: u64,
    /// Every part, in order.
    pub parts: Vec<Part>,
}

impl Manifest {
    /// The JSON plaintext.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let parts: Vec<Value> = self
            .parts
            .iter()
            .map(|p| {
                json!({
                    "index": p.index,
                    "name": p.name(),
                    "file": p.file,
                    "plaintext_bytes": p.plaintext_len,
                    "ciphertext_bytes": p.ciphertext_len,
                    "sha256": hex::encode(p.sha256),
                })
            })
            .collect();
        let doc = json!({
            "coffer_backup": VERSION,
            "backup_id": self.backup_id,
            "format": self.format.as_str(),
            "database": self.database,
            "pg_dump_version": self.pg_dump_version,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "part_size": self.part_size,
            "frame_size": self.frame_size,
            "total_plaintext_bytes": self.total_len,
            "parts": parts,
        });
        let mut text = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        text.push(b'\n');
        text
    }

    /// Parses and checks an authenticated manifest plaintext.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| {
            refused(format!(
                "manifest.cfr is not a Coffer backup manifest ({e})"
            ))
        })?;
        let version = u64_of(&doc, "coffer_backup")?;
        if version != VERSION {
            return Err(refused(format!(
                "the manifest is version {version}; this coffer reads version {VERSION}"
            )));
        }
        let format = match str_of(&doc, "format")? {
            "custom" => Format::Custom,
            "directory" => Format::Directory,
            other => return Err(refused(format!("unknown backup format '{other}'"))),
        };
        let list = doc
            .get("parts")
            .and_then(Value::as_array)
            .ok_or_else(|| refused("the manifest has no parts list".into()))?;
        let mut parts = Vec::with_capacity(list.len());
        for p in list {
            let index = u32::try_from(u64_of(p, "index")?)
                .map_err(|_| refused("a part index is out of range".into()))?;
            let sha = hex::decode(str_of(p, "sha256")?)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| refused(format!("part {index}: bad sha256")))?;
            let part = Part {
                index,
                file: match p.get("file") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => return Err(refused(format!("part {index}: bad file name"))),
                },
                plaintext_len: u64_of(p, "plaintext_bytes")?,
                ciphertext_len: u64_of(p, "ciphertext_bytes")?,
                sha256: sha,
            };
            if str_of(p, "name")? != part.name() {
                return Err(refused(format!(
                    "part {index} is listed as {}",
                    str_of(p, "name")?
                )));
            }
            parts.push(part);
        }
        let m = Manifest {
            backup_id: str_of(&doc, "backup_id")?.to_owned(),
            format,
            database: str_of(&doc, "database")?.to_owned(),
            pg_dump_version: str_of(&doc, "pg_dump_version")?.to_owned(),
            started_at: str_of(&doc, "started_at")?.to_owned(),
            finished_at: str_of(&doc, "finished_at")?.to_owned(),
            part_size: u64_of(&doc, "part_size")?,
            frame_size: u32::try_from(u64_of(&doc, "frame_size")?)
                .map_err(|_| refused("bad frame_size".into()))?,
            total_len: u64_of(&doc, "total_plaintext_bytes")?,
            parts,
        };
        m.check()?;
        Ok(m)
    }

    /// The rules every manifest keeps: parts numbered 1…n in order, lengths adding up to the
    /// total, a safe file name on every directory-format part (and on none otherwise), each
    /// file's parts contiguous.
    pub(crate) fn check(&self) -> Result<()> {
        if !valid_id(&self.backup_id) {
            return Err(refused(format!("bad backup id '{}'", self.backup_id)));
        }
        if self.parts.is_empty() {
            return Err(refused("the manifest lists no parts".into()));
        }
        let mut total = 0u64;
        let mut seen_files: Vec<&str> = Vec::new();
        for (i, p) in self.parts.iter().enumerate() {
            if usize::try_from(p.index).ok() != Some(i + 1) {
                return Err(refused(format!(
                    "the manifest lists part {} in position {}",
                    p.index,
                    i + 1
                )));
            }
            total = total
                .checked_add(p.plaintext_len)
                .ok_or_else(|| refused("part lengths overflow".into()))?;
            match (self.format, p.file.as_deref()) {
                (Format::Custom, None) => {}
                (Format::Directory, Some(f)) if safe_file_name(f) => {
                    if seen_files.last() != Some(&f) {
                        if seen_files.contains(&f) {
                            return Err(refused(format!("file {f} is split around other files")));
                        }
                        seen_files.push(f);
                    }
                }
                _ => {
                    return Err(refused(format!(
                        "part {}: bad or missing file name",
                        p.index
                    )));
                }
            }
        }
        if total != self.total_len {
            return Err(refused(format!(
                "the parts hold {total} bytes but the manifest says {}",
                self.total_len
            )));
        }
        Ok(())
    }

    /// A one-line description, for a summary after a restore or a verification.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "backup {} ({} format, {}), {} parts, {} bytes of dump, taken {} to {} by {}",
            self.backup_id,
            self.format.as_str(),
            self.database,
            self.parts.len(),
            self.total_len,
            self.started_at,
            self.finished_at,
            self.pg_dump_version
        );
        s
    }
}

/// The context of part `index` of backup `id`.
pub(crate) fn part_context(
    id: &str,
    format: Format,
    index: u32,
    file: Option<&str>,
) -> Result<EncryptionContext> {
    let build = || -> coffer_core::Result<EncryptionContext> {
        let mut c = EncryptionContext::new();
        c.insert(CTX_BACKUP_ID, id)?;
        c.insert(CTX_KIND, "part")?;
        c.insert(CTX_FORMAT, format.as_str())?;
        c.insert(CTX_PART, index.to_string())?;
        if let Some(f) = file {
            c.insert(CTX_FILE, f)?;
        }
        Ok(c)
    };
    build().map_err(Error::crypto(format!(
        "the context of {}",
        part_name(index)
    )))
}

/// The context of the manifest of backup `id`.
pub(crate) fn manifest_context(m: &Manifest) -> Result<EncryptionContext> {
    let build = || -> coffer_core::Result<EncryptionContext> {
        let mut c = EncryptionContext::new();
        c.insert(CTX_BACKUP_ID, m.backup_id.as_str())?;
        c.insert(CTX_KIND, "manifest")?;
        c.insert(CTX_FORMAT, m.format.as_str())?;
        c.insert(CTX_PARTS, m.parts.len().to_string())?;
        c.insert(CTX_TOTAL, m.total_len.to_string())?;
        Ok(c)
    };
    build().map_err(Error::crypto("the context of manifest.cfr"))
}

/// Whether `id` has the shape of a backup id: `YYYYMMDDTHHMMSSZ-` and 16 lower-case hex digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == 33
        && id.is_char_boundary(16)
        && id.as_bytes()[16] == b'-'
        && id[..16]
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'T' || b == b'Z')
        && id[17..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A pg_dump directory-format file name: no path separators, not hidden, printable ASCII.
pub(crate) fn safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn refused(msg: String) -> Error {
    Error::Refused(msg)
}

fn u64_of(v: &Value, key: &str) -> Result<u64> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| refused(format!("the manifest lacks a number '{key}'")))
}

fn str_of<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| refused(format!("the manifest lacks a string '{key}'")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn manifest(format: Format, files: &[Option<&str>]) -> Manifest {
        let parts: Vec<Part> = files
            .iter()
            .enumerate()
            .map(|(i, f)| Part {
                index: u32::try_from(i + 1).unwrap(),
                file: f.map(str::to_owned),
                plaintext_len: 10,
                ciphertext_len: 200,
                sha256: [i as u8; 32],
            })
            .collect();
        Manifest {
            backup_id: "20261123T020000Z-0123456789abcdef".into(),
            format,
            database: "app".into(),
            pg_dump_version: "pg_dump (PostgreSQL) 15.20".into(),
            started_at: "2026-11-23T02:00:00Z".into(),
            finished_at: "2026-11-23T02:10:00Z".into(),
            part_size: 10,
            frame_size: 65536,
            total_len: 10 * parts.len() as u64,
            parts,
        }
    }

    #[test]
    fn manifests_round_trip_through_json() {
        for m in [
            manifest(Format::Custom, &[None, None, None]),
            manifest(
                Format::Directory,
                &[Some("toc.dat"), Some("3001.dat.gz"), Some("3001.dat.gz")],
            ),
        ] {
            assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
        }
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let mut m = manifest(Format::Custom, &[None, None, None]);
        m.parts.swap(0, 1);
        assert!(m.check().is_err());
        let mut m = manifest(Format::Custom, &[None, None]);
        m.total_len += 1;
        assert!(m.check().is_err());
        let m = manifest(Format::Custom, &[None, Some("toc.dat")]);
        assert!(m.check().is_err());
        let m = manifest(Format::Directory, &[Some("../etc/passwd")]);
        assert!(m.check().is_err());
        let m = manifest(
            Format::Directory,
            &[Some("a.dat"), Some("b.dat"), Some("a.dat")],
        );
        assert!(m.check().is_err());
        let mut m = manifest(Format::Custom, &[None]);
        m.parts.clear();
        m.total_len = 0;
        assert!(m.check().is_err());
    }

    #[test]
    fn backup_ids_have_one_shape() {
        assert!(valid_id("20261123T020000Z-0123456789abcdef"));
        assert!(!valid_id("20261123T020000Z-0123456789abcdeg"));
        assert!(!valid_id("../20261123T020000Z-0123456789abc"));
        assert!(!valid_id(""));
    }
}

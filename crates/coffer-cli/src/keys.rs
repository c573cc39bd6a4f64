//! Key material at the command line's edge: key references (`env:VAR`, `file:PATH`) that name a
//! key to read, and `coffer keygen`, which writes a new one.
//!
//! A key never appears in an argument, an error message or a path: references name where it is,
//! and messages name the reference.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use coffer_core::Dek;
use zeroize::Zeroizing;

use crate::input;

/// The mode `coffer keygen --out` creates key files with.
const KEY_FILE_MODE: u32 = 0o600;

/// Permission bits a key file must not have: any access by group or others.
const GROUP_OTHER_BITS: u32 = 0o077;

/// Longest key file read. A base64 key and a newline take 45 bytes; anything much longer is not
/// a key file, and the limit keeps a mistaken `file:/dev/zero` from reading forever.
const MAX_KEY_FILE_LEN: u64 = 1024;

/// Where a key is: the parsed form of `--key REF`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// `env:VAR`: standard base64 in an environment variable.
    Env(String),
    /// `file:PATH`: standard base64 in a file only its owner can access.
    File(PathBuf),
}

impl KeyRef {
    /// Parses `env:VAR` or `file:PATH`.
    ///
    /// A malformed reference is never echoed whole: it may be a key pasted into `--key`.
    pub fn parse(reference: &str) -> Result<Self> {
        if let Some(var) = reference.strip_prefix("env:") {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                bail!("--key env:VAR needs an environment variable name, e.g. env:COFFER_KEY");
            }
            return Ok(KeyRef::Env(var.to_owned()));
        }
        if let Some(path) = reference.strip_prefix("file:") {
            if path.is_empty() {
                bail!("--key file:PATH needs a path, e.g. file:coffer.key");
            }
            return Ok(KeyRef::File(PathBuf::from(path)));
        }
        // Standard base64 has no ':', so a short word before one is a mistyped kind, not a key.
        let kind = reference.split_once(':').map(|(kind, _)| kind).filter(|k| {
            !k.is_empty() && k.len() <= 16 && k.chars().all(|c| c.is_ascii_alphanumeric())
        });
        match kind {
            Some(kind) => {
                bail!("unknown key reference kind '{kind}:'; --key takes env:VAR or file:PATH")
            }
            None => bail!(
                "--key takes a key reference, env:VAR or file:PATH, not a key; \
                 put the key in an environment variable or a file (chmod 600)"
            ),
        }
    }

    /// Reads and decodes the key the reference names.
    pub fn load(&self) -> Result<Dek> {
        match self {
            KeyRef::Env(var) => load_env(var),
            KeyRef::File(path) => load_file(path),
        }
    }
}

/// Parses a reference and reads its key.
pub fn load(reference: &str) -> Result<Dek> {
    KeyRef::parse(reference)?.load()
}

fn load_env(var: &str) -> Result<Dek> {
    let value = std::env::var_os(var).ok_or_else(|| {
        anyhow!(
            "environment variable {var} is not set (named by --key env:{var}); \
             create a key with `export {var}=$(coffer keygen)`"
        )
    })?;
    let text = Zeroizing::new(
        value
            .into_string()
            .map_err(|_| anyhow!("environment variable {var} does not hold a base64 key"))?,
    );
    Dek::from_base64(&text).with_context(|| format!("the key in environment variable {var}"))
}

fn load_file(path: &Path) -> Result<Dek> {
    let shown = path.display();
    let file = File::open(path).with_context(|| format!("cannot open key file {shown}"))?;
    // Checked on the open file, so the file read is the file checked.
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read key file {shown}"))?;
    if !meta.is_file() {
        bail!("key file {shown} is not a regular file");
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & GROUP_OTHER_BITS != 0 {
        bail!(
            "key file {shown} is accessible by group or others (mode {mode:04o}); \
             restrict it with `chmod 600 {shown}`"
        );
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE_LEN)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read key file {shown} as base64 text"))?;
    Dek::from_base64(&text).with_context(|| format!("the key in file {shown}"))
}

/// `coffer keygen`: a new 256-bit key as standard base64 and a newline, on stdout or in a new
/// file with mode 0600.
pub fn keygen(out: Option<&Path>) -> Result<()> {
    let key = Dek::generate()?;
    let mut line = key.to_base64();
    line.push('\n');
    match out {
        None => input::write_stdout(line.as_bytes()),
        Some(path) => write_new_key_file(path, line.as_bytes()),
    }
}

/// Creates `path` with mode 0600 and writes `contents`; an existing file is never touched.
fn write_new_key_file(path: &Path, contents: &[u8]) -> Result<()> {
    let shown = path.display();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(KEY_FILE_MODE)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => anyhow!(
                "{shown} already exists; coffer keygen never overwrites a file \
                 (choose another path, or remove the old key if it is really unused)"
            ),
            _ => anyhow!(e).context(format!("cannot create key file {shown}")),
        })?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(e) = written {
        // Do not leave a truncated key behind; the write error is the one worth reporting.
        let _ = std::fs::remove_file(path);
        return Err(anyhow!(e).context(format!("cannot write key file {shown}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn parses_references() {
        assert_eq!(
            KeyRef::parse("env:COFFER_KEY").unwrap(),
            KeyRef::Env("COFFER_KEY".into())
        );
        assert_eq!(
            KeyRef::parse("file:/etc/coffer/key:1").unwrap(),
            KeyRef::File("/etc/coffer/key:1".into())
        );
        for bad in ["env:", "file:", "env:A=B", ""] {
            assert!(KeyRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pasted_key_is_not_echoed() {
        let key = Dek::generate().unwrap().to_base64();
        let msg = format!("{:#}", KeyRef::parse(&key).unwrap_err());
        assert!(!msg.contains(key.as_str()), "{msg}");
        assert!(msg.contains("not a key"), "{msg}");
    }

    #[test]
    fn a_mistyped_kind_is_named() {
        let msg = format!("{:#}", KeyRef::parse("envv:COFFER_KEY").unwrap_err());
        assert!(msg.contains("'envv:'"), "{msg}");
    }
}

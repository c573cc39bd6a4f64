//! Key material at the command line's edge: key references (`env:VAR`, `file:PATH`) that name a
//! key to read, and `coffer keygen`, which writes a new one.
//!
//! A key never appears in an argument, an error message or a path: references name where it is,
//! and messages name the reference.

use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::{Result, anyhow};
use coffer_core::Dek;
use coffer_keys::SecretRef;

use crate::input;

/// The mode `coffer keygen --out` creates key files with.
const KEY_FILE_MODE: u32 = 0o600;

/// Parses a key reference (`env:VAR`, `file:PATH`; coffer-keys' [`SecretRef`]) and reads its
/// key. Files accessible by group or others are refused; messages name the reference, never
/// the key.
pub fn load(reference: &str) -> Result<Dek> {
    let plain = |e: coffer_keys::Error| match e {
        coffer_keys::Error::Config(m) => anyhow!("{m}"),
        other => anyhow!(other),
    };
    let r = SecretRef::parse(reference).map_err(|e| plain(e).context("--key"))?;
    Ok(Dek::from_bytes(*r.load_key().map_err(plain)?))
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
    fn a_pasted_key_is_not_echoed() {
        let key = Dek::generate().unwrap().to_base64();
        let msg = format!("{:#}", load(&key).unwrap_err());
        assert!(!msg.contains(key.as_str()), "{msg}");
        assert!(msg.contains("not a secret"), "{msg}");
    }
}

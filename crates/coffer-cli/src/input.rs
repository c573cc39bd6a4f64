//! Reading values from arguments or stdin, and writing results to stdout.
//!
//! Plaintext read here lives in [`Zeroizing`] buffers. What the user passes with `--value` has
//! already been copied by the OS and clap and cannot be wiped; the help says so.

use std::io::{self, IsTerminal as _, Read as _, Write as _};

use anyhow::{Context as _, Result};
use zeroize::Zeroizing;

/// What to do with the last byte of a value read from stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Newline {
    /// Remove exactly one trailing `\n`, as `echo value |` and `$(...)` habits expect.
    StripOne,
    /// Keep stdin byte for byte (`--raw-stdin`).
    Keep,
}

impl Newline {
    /// `StripOne` unless `--raw-stdin` was given.
    pub fn from_raw_flag(raw_stdin: bool) -> Self {
        if raw_stdin {
            Newline::Keep
        } else {
            Newline::StripOne
        }
    }
}

/// A plaintext value: `value` if given, else all of stdin with the newline policy applied.
pub fn plaintext(value: Option<&str>, newline: Newline) -> Result<Zeroizing<Vec<u8>>> {
    match value {
        Some(v) => Ok(Zeroizing::new(v.as_bytes().to_vec())),
        None => {
            let mut buf = read_stdin("the value")?;
            if newline == Newline::StripOne {
                strip_one_newline(&mut buf);
            }
            Ok(buf)
        }
    }
}

/// A ciphertext: `value` if given, else all of stdin, with surrounding white space removed.
///
/// Bytes that are not UTF-8 come back as `None`: they cannot be either encoding of a ciphertext.
pub fn ciphertext(value: Option<&str>) -> Result<Option<String>> {
    let bytes = match value {
        Some(v) => v.as_bytes().to_vec(),
        None => read_stdin("the ciphertext")?.to_vec(),
    };
    Ok(String::from_utf8(bytes).ok().map(|s| s.trim().to_owned()))
}

/// Reads all of stdin. On a terminal, first tells the user how to end the input.
fn read_stdin(what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let mut stdin = io::stdin().lock();
    if stdin.is_terminal() {
        eprintln!("coffer: reading {what} from stdin; end it with Ctrl-D (or pass --value)");
    }
    let mut buf = Zeroizing::new(Vec::new());
    stdin
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {what} from stdin"))?;
    Ok(buf)
}

/// Removes one trailing `\n`, if there is one (and only that: `\r` and a second `\n` stay).
pub fn strip_one_newline(buf: &mut Vec<u8>) {
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
}

/// Writes `bytes` to stdout and flushes.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Writes a decrypted value as is, plus a newline when stdout is a terminal so that the shell
/// prompt does not run into it. Pipes and files get the exact bytes.
pub fn write_plaintext(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    let terminal = out.is_terminal();
    out.write_all(bytes)
        .and_then(|()| {
            if terminal {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_exactly_one_newline() {
        for (input, expected) in [
            (&b"x\n"[..], &b"x"[..]),
            (b"x\n\n", b"x\n"),
            (b"x\r\n", b"x\r"),
            (b"x", b"x"),
            (b"\n", b""),
            (b"", b""),
        ] {
            let mut buf = input.to_vec();
            strip_one_newline(&mut buf);
            assert_eq!(buf, expected);
        }
    }

    #[test]
    fn arguments_are_taken_as_given() {
        let p = plaintext(Some("a\n"), Newline::StripOne).ok();
        assert_eq!(p.as_deref().map(|v| &v[..]), Some(&b"a\n"[..]));
        let c = ciphertext(Some("  cf1:AA \n")).ok().flatten();
        assert_eq!(c.as_deref(), Some("cf1:AA"));
    }
}

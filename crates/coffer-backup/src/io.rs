//! Small pieces both directions use: hashing streams, private scratch directories, backup ids,
//! and the runtime that drives the keyrings' async calls.

use std::fs;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use coffer_core::digest::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result};

/// A directory only its owner can enter, removed with everything in it when dropped unless
/// [`Scratch::commit`] moved it into place.
pub(crate) struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    pub(crate) fn create(path: PathBuf) -> Result<Self> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(Error::io(format!("cannot create {}", path.display())))?;
        Ok(Scratch { path, keep: false })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the directory to `to` and keeps it.
    pub(crate) fn commit(mut self, to: &Path) -> Result<()> {
        fs::rename(&self.path, to).map_err(Error::io(format!(
            "cannot move the backup into place at {}",
            to.display()
        )))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A reader or writer that hashes (SHA-256) and counts the bytes passing through it.
pub(crate) struct Hashing<T> {
    inner: T,
    digest: Sha256,
    len: u64,
}

impl<T> Hashing<T> {
    pub(crate) fn new(inner: T) -> Self {
        Hashing {
            inner,
            digest: Sha256::new(),
            len: 0,
        }
    }

    /// The inner reader or writer, the SHA-256 and the byte count.
    pub(crate) fn finish(self) -> (T, [u8; 32], u64) {
        (self.inner, self.digest.finish(), self.len)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// A reader that reports the bytes it passes to a [`Progress`](crate::Progress).
pub(crate) struct Counting<'a, R> {
    pub(crate) inner: R,
    pub(crate) progress: &'a dyn crate::Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// A new backup id: the UTC time and 64 random bits, `20261123T020000Z-3f9a1c2b5d7e9f01`, so
/// backups list in the order they were taken.
pub(crate) fn new_id(now: OffsetDateTime) -> Result<String> {
    let random: [u8; 8] =
        coffer_core::digest::random_array().map_err(Error::crypto("making a backup id"))?;
    Ok(format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        hex::encode(random)
    ))
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Runs the keyrings' async calls: on the caller's runtime when given one (keyrings made in it,
/// such as KMS clients, stay on it), else on a small runtime of its own.
pub(crate) enum Runner {
    Handle(tokio::runtime::Handle),
    Own(tokio::runtime::Runtime),
}

impl Runner {
    pub(crate) fn new(handle: Option<&tokio::runtime::Handle>) -> Result<Self> {
        Ok(match handle {
            Some(h) => Runner::Handle(h.clone()),
            None => Runner::Own(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(Error::io("starting an async runtime for the keyrings"))?,
            ),
        })
    }

    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        match self {
            Runner::Handle(h) => h.block_on(f),
            Runner::Own(rt) => rt.block_on(f),
        }
    }
}

/// The number of encryption threads: `n`, or every core for 0.
pub(crate) fn threads(n: usize) -> usize {
    if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_are_well_formed() {
        let id = new_id(OffsetDateTime::now_utc()).unwrap();
        assert!(crate::manifest::valid_id(&id), "{id}");
    }

    #[test]
    fn hashing_counts_and_hashes_what_passes() {
        let mut w = Hashing::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (inner, sha, len) = w.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(len, 3);
        assert_eq!(sha, coffer_core::digest::sha256(b"abc"));
        let mut r = Hashing::new(&b"abc"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(r.finish().1, sha);
    }
}

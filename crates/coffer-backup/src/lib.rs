//! Coffer's encrypted backups as a library: a stream (or a directory of files) sealed into
//! numbered parts, each a complete message in the AWS Encryption SDK format, plus an encrypted
//! manifest listing every part with its length and SHA-256; restores that authenticate the
//! manifest, check the set of parts against it, then authenticate every part as it is decrypted.
//!
//! A backup is written as `DIR/.<id>.partial/` and renamed to `DIR/<id>/` only once every part
//! and the manifest are on disk (fsynced); any failure removes it. Every message's encryption
//! context names the backup and the message's role and position, so a part moved to another
//! position or another backup does not pass. The layout is described in docs/OPERATIONS.md;
//! the AWS Encryption SDKs decrypt each part on their own.
//!
//! The keys are [`FileKeyring`]s (coffer-keys): a raw AES KEK, an HSM key, an AWS KMS key. The
//! data key of every message is wrapped by each keyring given, so any one of them restores.
//!
//! ```
//! use coffer_backup::{BackupOptions, RestoreOptions, backup, restore};
//! use coffer_core::Kek;
//! use coffer_core::stream::RawAesKeyring;
//! use coffer_keys::files::{FileKeyring, NAMESPACE};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let primary = RawAesKeyring::new(NAMESPACE, "default/v1", Kek::generate()?)?;
//! let recovery = RawAesKeyring::new(NAMESPACE, "recovery/v1", Kek::generate()?)?;
//! let keyrings: [&dyn FileKeyring; 2] = [&primary, &recovery];
//! let dir = tempfile::tempdir()?;
//!
//! // Back up any reader (here 3 MiB cut into 1 MiB parts) into dir/<backup-id>/.
//! let dump = vec![7u8; 3 << 20];
//! let options = BackupOptions {
//!     part_size: 1 << 20,
//!     ..BackupOptions::default()
//! };
//! let done = backup(dump.as_slice(), dir.path(), &keyrings, &options)?;
//! assert_eq!(done.manifest.parts.len(), 3);
//!
//! // Restore with either key into any writer: the manifest and every part are authenticated.
//! let only_recovery: [&dyn FileKeyring; 1] = [&recovery];
//! let mut restored = Vec::new();
//! restore(&done.path, &only_recovery, &mut restored, &RestoreOptions::default())?;
//! assert_eq!(restored, dump);
//! # Ok(())
//! # }
//! ```
//!
//! For PostgreSQL, [`postgres::dump`] runs `pg_dump` into a backup and
//! [`postgres::restore_into`] streams one into `pg_restore`; [`BackupWriter`] and
//! [`BackupReader`] give the steps one at a time (several files, progress, verification only).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod io;
mod manifest;
mod open;
mod pg;
pub mod postgres;
mod seal;

use std::io::{BufReader, Read, Write};
use std::path::Path;

pub use coffer_keys::files::FileKeyring;
pub use error::{Error, Result};
pub use manifest::{Format, Manifest, Part, valid_id};
pub use open::BackupReader;
pub use seal::{BackupSummary, BackupWriter};

/// How a backup is cut and sealed.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Plaintext bytes per part (default 1 GiB).
    pub part_size: u64,
    /// Plaintext bytes per frame (default 64 KiB).
    pub frame_size: u32,
    /// Encryption threads per part; 0 (the default) uses every core.
    pub threads: usize,
    /// What is backed up, recorded in the manifest (a label: a database name).
    pub database: String,
    /// The program that produced the plaintext, recorded in the manifest (a label).
    pub source_version: String,
    /// The runtime the keyrings' async calls run on: give the one the keyrings were made in when
    /// they hold network clients (KMS). Without it a small runtime of the backup's own is used.
    pub runtime: Option<tokio::runtime::Handle>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            part_size: 1 << 30,
            frame_size: 64 * 1024,
            threads: 0,
            database: String::new(),
            source_version: String::new(),
            runtime: None,
        }
    }
}

/// How a backup is read.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Decryption threads per part; 0 (the default) uses every core.
    pub threads: usize,
    /// As [`BackupOptions::runtime`].
    pub runtime: Option<tokio::runtime::Handle>,
}

/// Progress of a backup or a restore, for a progress bar. Both methods do nothing by default.
pub trait Progress: Sync {
    /// A new stage begins (`"pg_dump (directory format)"`, `"encrypting"`).
    fn stage(&self, what: &str) {
        let _ = what;
    }

    /// `bytes` more plaintext bytes were sealed or restored.
    fn advance(&self, bytes: u64) {
        let _ = bytes;
    }
}

/// No progress reporting.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Backs up everything `source` yields into a new backup in `dir` (`dir/<backup-id>/`, `dir`
/// created if missing), sealed for every keyring given.
///
/// # Errors
///
/// As [`BackupWriter`]: [`Error::InvalidInput`], [`Error::Keys`], [`Error::Io`]. Nothing is
/// left in `dir` on failure.
pub fn backup(
    source: impl Read,
    dir: &Path,
    keyrings: &[&dyn FileKeyring],
    options: &BackupOptions,
) -> Result<BackupSummary> {
    let mut writer = BackupWriter::create(dir, keyrings, options, &NoProgress)?;
    writer.add_stream(&mut BufReader::with_capacity(1 << 20, source))?;
    writer.finish()
}

/// Restores the custom-format (single-stream) backup in `dir` into `sink` with any one of the
/// keys it was made for, and returns its manifest. Bytes reach `sink` before the last part is
/// authenticated: use them only if this returns `Ok`.
///
/// # Errors
///
/// As [`BackupReader::open`] and [`BackupReader::write_to`]; [`Error::InvalidInput`] for a
/// directory-format backup (use [`BackupReader::extract_to`]).
pub fn restore(
    dir: &Path,
    keyrings: &[&dyn FileKeyring],
    mut sink: impl Write,
    options: &RestoreOptions,
) -> Result<Manifest> {
    let reader = BackupReader::open(dir, keyrings, options)?;
    if reader.manifest().format != Format::Custom {
        return Err(Error::InvalidInput(format!(
            "{} is a directory-format backup: extract it to a directory",
            dir.display()
        )));
    }
    reader.write_to(&mut sink, &NoProgress)?;
    Ok(reader.manifest().clone())
}

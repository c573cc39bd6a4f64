//! PostgreSQL backups: `pg_dump` sealed into a backup, a backup streamed into `pg_restore`.
//!
//! The programs run with a cleared environment (`PATH`, `HOME`, the locale and the `PG*`
//! variables only), so a KEK held in an environment variable never reaches them; connection
//! strings carrying a password are refused (they would show in the process list).
//!
//! ```no_run
//! use coffer_backup::postgres::{self, PgDump, PgRestore};
//! use coffer_backup::{BackupOptions, BackupReader, Format, NoProgress, RestoreOptions};
//! use coffer_core::Kek;
//! use coffer_core::stream::RawAesKeyring;
//! use coffer_keys::files::{FileKeyring, NAMESPACE};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kek = RawAesKeyring::new(NAMESPACE, "default/v1", Kek::generate()?)?;
//! let keyrings: [&dyn FileKeyring; 1] = [&kek];
//! let dump = PgDump {
//!     dbname: "app".into(),
//!     format: Format::Custom,
//!     jobs: 1,
//!     args: vec!["--exclude-table=audit_log".into()],
//! };
//! let done = postgres::dump(
//!     &dump,
//!     "/backups".as_ref(),
//!     &keyrings,
//!     &BackupOptions::default(),
//!     &NoProgress,
//! )?;
//!
//! let reader = BackupReader::open(&done.summary.path, &keyrings, &RestoreOptions::default())?;
//! let into = PgRestore {
//!     dbname: "app_restored".into(),
//!     jobs: 1,
//!     single_transaction: true,
//!     args: Vec::new(),
//!     tmp_dir: None,
//! };
//! postgres::restore_into(&reader, &into, &NoProgress)?;
//! # Ok(())
//! # }
//! ```

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use coffer_keys::files::FileKeyring;

use crate::error::{Error, Result};
use crate::io::Scratch;
use crate::manifest::{self, Format};
use crate::open::BackupReader;
use crate::pg::{self, ReadAhead, Running};
use crate::seal::{BackupSummary, BackupWriter};
use crate::{BackupOptions, Progress};

pub use crate::pg::{check_conninfo, version};

/// What `pg_dump` is asked for.
#[derive(Clone, Debug)]
pub struct PgDump {
    /// The database: a name or a libpq connection string, without a password.
    pub dbname: String,
    /// `Custom` (`pg_dump -Fc`, streamed) or `Directory` (`pg_dump -Fd`, into a private
    /// directory beside the backup, each file sealed then removed).
    pub format: Format,
    /// pg_dump worker processes (directory format only).
    pub jobs: u32,
    /// Extra pg_dump arguments (`--exclude-table=audit_log`).
    pub args: Vec<String>,
}

/// A finished PostgreSQL backup.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PgBackup {
    /// The backup.
    pub summary: BackupSummary,
    /// What pg_dump printed on stderr although it succeeded (warnings), possibly empty.
    pub warnings: String,
}

/// Runs `pg_dump` and seals its output into a new backup in `dir` (see [`BackupWriter`]);
/// `options.database` and `options.source_version` are set from `pg` and pg_dump.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a password in the connection string or `jobs` on a custom-format
/// dump; [`Error::Tool`] when pg_dump cannot run or fails (its messages included); as
/// [`BackupWriter`] otherwise. Nothing is left in `dir` on failure.
pub fn dump(
    pg: &PgDump,
    dir: &Path,
    keyrings: &[&dyn FileKeyring],
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<PgBackup> {
    pg::check_conninfo(&pg.dbname)?;
    if pg.jobs > 1 && pg.format != Format::Directory {
        return Err(Error::InvalidInput(
            "--jobs needs --format directory (a custom-format dump is one stream)".into(),
        ));
    }
    let mut options = options.clone();
    options.source_version = pg::version("pg_dump")?;
    options.database = pg.dbname.clone();
    let mut writer = BackupWriter::create(dir, keyrings, &options, progress)?;
    progress.stage("pg_dump → encrypted parts");
    let warnings = match pg.format {
        Format::Custom => {
            let mut cmd = pg::command("pg_dump");
            cmd.arg("--format=custom")
                .arg(format!("--dbname={}", pg.dbname))
                .args(&pg.args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped());
            let mut child = Running::spawn("pg_dump", cmd)?;
            let stdout = child.stdout()?;
            // Up to 32 MiB read ahead of the encryptor.
            let mut src = ReadAhead::new(stdout, 1 << 20, 32);
            let sealed = writer.add_stream(&mut src);
            drop(src);
            // pg_dump's own failure explains a short or broken stream best: report it first.
            let finished = child.finish();
            sealed?;
            finished?
        }
        Format::Directory => dump_directory(pg, &mut writer, progress)?,
    };
    Ok(PgBackup {
        summary: writer.finish()?,
        warnings,
    })
}

/// `pg_dump -Fd -j N` into a private directory beside the backup, then every file (sorted by
/// name) sealed into parts of its own; the plaintext directory is removed however this ends.
fn dump_directory(
    pg: &PgDump,
    writer: &mut BackupWriter<'_>,
    progress: &dyn Progress,
) -> Result<String> {
    let work = Scratch::create(writer.scratch_path())?;
    let dump = work.path().join("dump");
    let mut cmd = pg::command("pg_dump");
    cmd.arg("--format=directory")
        .arg(format!("--jobs={}", pg.jobs))
        .arg(format!("--dbname={}", pg.dbname))
        .arg("--file")
        .arg(&dump)
        .args(&pg.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    progress.stage("pg_dump (directory format)");
    let warnings = Running::spawn("pg_dump", cmd)?.finish()?;
    progress.stage("encrypting");
    let reading = || Error::io(format!("reading {}", dump.display()));
    let mut names = Vec::new();
    for entry in fs::read_dir(&dump).map_err(reading())? {
        let entry = entry.map_err(reading())?;
        let name = entry.file_name().into_string().map_err(|n| {
            Error::InvalidInput(format!(
                "pg_dump wrote a file with a name that is not UTF-8: {n:?}"
            ))
        })?;
        if !entry.file_type().map_err(reading())?.is_file() || !manifest::safe_file_name(&name) {
            return Err(Error::InvalidInput(format!(
                "pg_dump wrote {name}, which is not a plain file coffer can back up"
            )));
        }
        names.push(name);
    }
    names.sort();
    for name in names {
        let path = dump.join(&name);
        let f = File::open(&path).map_err(Error::io(format!("cannot open {}", path.display())))?;
        writer.add_file(&name, &mut BufReader::with_capacity(1 << 20, f))?;
        // The plaintext goes as soon as it is sealed.
        fs::remove_file(&path).map_err(Error::io(format!("removing {}", path.display())))?;
    }
    Ok(warnings)
}

/// What `pg_restore` is asked for.
#[derive(Clone, Debug)]
pub struct PgRestore {
    /// The existing database to restore into: a name or a connection string, without a password.
    pub dbname: String,
    /// pg_restore worker processes (directory-format backups only).
    pub jobs: u32,
    /// `--single-transaction` for a custom-format backup: a failure part-way (a part that does
    /// not authenticate) rolls everything back. Off only for `--create`.
    pub single_transaction: bool,
    /// Extra pg_restore arguments (`--no-owner`).
    pub args: Vec<String>,
    /// Where a directory-format backup is decrypted first (default: the system's temporary
    /// directory); it needs room for the whole dump.
    pub tmp_dir: Option<PathBuf>,
}

/// Checks that `pg_restore` can run and the connection string holds no password, before any
/// key is used.
///
/// # Errors
///
/// As [`dump`] for the same checks.
pub fn check_restore(pg: &PgRestore) -> Result<()> {
    pg::check_conninfo(&pg.dbname)?;
    pg::version("pg_restore").map(|_| ())
}

/// Restores an opened backup with `pg_restore`: a custom-format one streamed into its stdin
/// (killed, so its transaction rolls back, if a part fails to authenticate part-way), a
/// directory-format one decrypted into a private temporary directory first, then restored with
/// `pg_restore -j N`. Returns what pg_restore printed on stderr although it succeeded.
///
/// # Errors
///
/// [`Error::Tool`] when pg_restore fails; [`Error::Stopped`] around the backup's error when a
/// part failed part-way; as [`BackupReader::copy_part`] otherwise.
pub fn restore_into(
    reader: &BackupReader<'_>,
    pg: &PgRestore,
    progress: &dyn Progress,
) -> Result<String> {
    pg::check_conninfo(&pg.dbname)?;
    let m = reader.manifest();
    match m.format {
        Format::Custom => {
            if pg.jobs > 1 {
                return Err(Error::InvalidInput(
                    "--jobs applies to pg_restore of a directory-format backup".into(),
                ));
            }
            restore_stream(reader, pg, progress)
        }
        Format::Directory => {
            let base = pg.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
            let tmp = Scratch::create(base.join(format!(
                "coffer-restore-{}-{}",
                m.backup_id,
                std::process::id()
            )))?;
            reader.write_files(tmp.path(), progress)?;
            let mut cmd = pg::command("pg_restore");
            cmd.arg(format!("--dbname={}", pg.dbname))
                .arg("--exit-on-error")
                .arg(format!("--jobs={}", pg.jobs))
                .args(&pg.args)
                .arg(tmp.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            Running::spawn("pg_restore", cmd)?.finish()
        }
    }
}

fn restore_stream(
    reader: &BackupReader<'_>,
    pg: &PgRestore,
    progress: &dyn Progress,
) -> Result<String> {
    let mut cmd = pg::command("pg_restore");
    cmd.arg(format!("--dbname={}", pg.dbname))
        .arg("--exit-on-error");
    if pg.single_transaction {
        cmd.arg("--single-transaction");
    }
    cmd.args(&pg.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = Running::spawn("pg_restore", cmd)?;
    let mut w = BufWriter::with_capacity(1 << 20, child.stdin()?);
    let mut streamed = Ok(());
    for p in &reader.manifest().parts {
        streamed = reader.copy_part(p, &mut w, progress);
        if streamed.is_err() {
            break;
        }
    }
    if streamed.is_ok() {
        streamed = w.flush().map_err(Error::Sink);
    }
    match streamed {
        Ok(()) => {
            // Closing stdin tells pg_restore the archive is complete.
            drop(w);
            child.finish()
        }
        Err(e @ Error::Sink(_)) => {
            // pg_restore stopped reading: its own error says why.
            drop(w);
            child.finish()?;
            Err(e)
        }
        Err(e) => {
            // Killed while its stdin is still open, so pg_restore never sees an end of input
            // that could pass for the end of a (shorter) archive.
            drop(child);
            drop(w);
            Err(Error::Stopped {
                what: if pg.single_transaction {
                    "restore stopped: pg_restore was killed and its transaction rolled back"
                } else {
                    "restore stopped part-way: the database holds part of the backup"
                },
                source: Box::new(e),
            })
        }
    }
}

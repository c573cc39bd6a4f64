//! `coffer backup` and `coffer restore`: encrypted PostgreSQL backups, parsed here, made and
//! checked by coffer-backup (the format, its verification and the pg_dump/pg_restore runs), and
//! rendered here. docs/OPERATIONS.md is the runbook.

use std::io::{self, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::{ArgGroup, Args, ValueEnum};
use coffer_backup::postgres::{self, PgDump, PgRestore};
use coffer_backup::{BackupOptions, BackupReader, RestoreOptions};

use crate::file::{output, progress};
use crate::filekeys;

/// `coffer backup --help`, after the options.
pub const BACKUP_AFTER_HELP: &str =
    "The backup goes to DIR/<backup-id>/: part-000001.cfr, part-000002.cfr… (each a complete AWS
Encryption SDK message of at most --part-size dump bytes) and manifest.cfr, an encrypted list of
every part with its length and SHA-256. It is written as DIR/.<backup-id>.partial and renamed only
when pg_dump exited with 0 and everything is on disk; on any failure it is removed.

pg_dump runs with a cleared environment: PATH, HOME, LANG/LC_ALL/LC_MESSAGES and the PG* variables
(PGPASSWORD, PGHOST, PGSSLMODE…) only. Passwords go in PGPASSWORD or ~/.pgpass, never in --dbname.

Exit status: 0 success; 2 pg_dump failed (its messages are shown), a usage or I/O error.

Examples:
  export COFFER_KEK=$(coffer keygen)
  coffer backup --dbname app -o /backups --kek env:COFFER_KEK --recovery-kek file:recovery.key
  coffer backup --dbname 'host=db user=backup dbname=app' -o /backups --kek env:COFFER_KEK \\
      --format directory --jobs 4 --part-size 4GiB --pg-dump-arg=--exclude-table=audit_log
  coffer restore /backups/<backup-id> --kek env:COFFER_KEK --verify-only";

/// `coffer restore --help`, after the options.
pub const RESTORE_AFTER_HELP: &str = "Before anything is restored, the manifest is decrypted and authenticated and the part files are
checked against it: a missing, extra, reordered, truncated or foreign part (or a changed manifest)
stops the restore. Each part is then authenticated as it is decrypted, and its length and SHA-256
compared with the manifest. A custom-format backup streams into `pg_restore --single-transaction
--exit-on-error` (a failure part-way rolls everything back); a directory-format backup is decrypted
into a private temporary directory first, then restored with `pg_restore -j N`.

Exit status: 0 success; 1 the backup does not authenticate or does not match its manifest (wrong
key, tampering, missing parts); 2 pg_restore failed (its messages are shown), a usage or I/O error.

Examples:
  B=/backups/20261123T020000Z-3f9a1c2b5d7e9f01
  createdb app_restored && coffer restore $B --kek env:COFFER_KEK --dbname app_restored
  coffer restore $B --kek env:COFFER_KEK -o app.dump
  coffer restore $B --kek file:/mnt/offline/recovery.key --verify-only";

/// `coffer backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The database: a name or a libpq connection string (without a password)
    #[arg(long, value_name = "CONNSTR")]
    pub dbname: String,
    /// The directory backups are kept in (created if missing); this one goes to DIR/BACKUP-ID/
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// The keys the data key is wrapped for.
    #[command(flatten)]
    pub keys: crate::cli::WrapKeys,
    /// Dump bytes per part, e.g. 64MiB, 1GiB, 4GiB
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub part_size: u64,
    /// pg_dump archive format
    #[arg(long, value_enum, default_value_t = Format::Custom)]
    pub format: Format,
    /// pg_dump worker processes (directory format only)
    #[arg(short, long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: u32,
    /// Plaintext bytes per frame
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub frame_size: u32,
    /// An extra pg_dump argument, e.g. --pg-dump-arg=--exclude-table=audit_log (repeatable)
    #[arg(long = "pg-dump-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub pg_dump_args: Vec<String>,
}

/// The pg_dump archive format of a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `pg_dump -Fc`, streamed: one dump cut into parts
    Custom,
    /// `pg_dump -Fd -j N` into a private temporary directory, each file its own part(s); allows
    /// `pg_restore -j N`
    Directory,
}

impl From<Format> for coffer_backup::Format {
    fn from(f: Format) -> Self {
        match f {
            Format::Custom => coffer_backup::Format::Custom,
            Format::Directory => coffer_backup::Format::Directory,
        }
    }
}

/// `coffer restore`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["dbname", "output", "verify_only"])))]
pub struct RestoreArgs {
    /// The backup: DIR/BACKUP-ID
    #[arg(value_name = "BACKUP")]
    pub backup: PathBuf,
    /// The key (env:VAR, file:PATH, pkcs11:…, aws-kms:…): the primary or the recovery key
    #[arg(long, value_name = "REF")]
    pub kek: String,
    /// Restore into this existing database with pg_restore (a name or a connection string,
    /// without a password)
    #[arg(long, value_name = "CONNSTR")]
    pub dbname: Option<String>,
    /// Write the plain dump instead: a new file for a custom-format backup ("-": stdout), a new
    /// directory for a directory-format one
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Authenticate the manifest and every part, and restore nothing
    #[arg(long)]
    pub verify_only: bool,
    /// pg_restore worker processes (directory-format backups only)
    #[arg(short, long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: u32,
    /// Run pg_restore without --single-transaction (custom format; needed with
    /// --pg-restore-arg=--create). A failure part-way then leaves part of the data restored
    #[arg(long)]
    pub no_single_transaction: bool,
    /// Where a directory-format backup is decrypted for pg_restore (default: the system's
    /// temporary directory); it needs room for the whole dump
    #[arg(long, value_name = "DIR")]
    pub tmp_dir: Option<PathBuf>,
    /// An extra pg_restore argument, e.g. --pg-restore-arg=--no-owner (repeatable)
    #[arg(
        long = "pg-restore-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    pub pg_restore_args: Vec<String>,
}

/// Parses `65536`, `64KiB`, `64MiB`, `1GiB`, `2TiB` (also `K`, `M`, `G`, `T`, binary).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        other => return Err(format!("unknown unit '{other}' (use KiB, MiB, GiB or TiB)")),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a size like 64MiB or 1GiB"))?;
    let size = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))?;
    if size == 0 {
        return Err("the part size must be above zero".into());
    }
    Ok(size)
}

/// A progress bar (or nothing, off a terminal) as coffer-backup reports progress.
struct Bar(Option<indicatif::ProgressBar>);

impl coffer_backup::Progress for Bar {
    fn stage(&self, what: &str) {
        if let Some(b) = &self.0 {
            b.set_message(what.to_owned());
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(bytes);
        }
    }
}

impl Bar {
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// A spinner with the byte count, on a terminal.
fn spinner(what: &str) -> Option<indicatif::ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} {bytes} ({bytes_per_sec}, {elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(bar)
}

/// Bytes as "212.4 MiB".
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Runs `coffer backup`.
pub fn backup(a: &BackupArgs) -> Result<()> {
    // The checks that need no key come first, as they always did.
    postgres::check_conninfo(&a.dbname)?;
    if a.jobs > 1 && a.format != Format::Directory {
        bail!("--jobs needs --format directory (a custom-format dump is one stream)");
    }
    postgres::version("pg_dump")?;

    let rt = filekeys::runtime()?;
    let keyrings = rt.block_on(filekeys::for_keys(&a.keys))?;
    let options = BackupOptions {
        part_size: a.part_size,
        frame_size: a.frame_size,
        runtime: Some(rt.handle().clone()),
        ..BackupOptions::default()
    };
    let pg = PgDump {
        dbname: a.dbname.clone(),
        format: a.format.into(),
        jobs: a.jobs,
        args: a.pg_dump_args.clone(),
    };
    let bar = Bar(spinner("pg_dump → encrypted parts"));
    let done = postgres::dump(
        &pg,
        &a.output,
        &coffer_assembly::refs(&keyrings),
        &options,
        &bar,
    )?;
    bar.finish();
    if !done.warnings.is_empty() {
        eprintln!("{}", done.warnings);
    }

    let s = &done.summary;
    let m = &s.manifest;
    let text = format!(
        "backup-id: {}\npath: {}\nformat: {}, {} part(s) of at most {}\ndump: {} ({} bytes)\nencrypted: {} ({} bytes)\ntime: {:.1} s ({}/s)\n",
        m.backup_id,
        s.path.display(),
        m.format.as_str(),
        m.parts.len(),
        human(a.part_size),
        human(m.total_len),
        m.total_len,
        human(s.encrypted_len),
        s.encrypted_len,
        s.seconds,
        human((m.total_len as f64 / s.seconds.max(1e-9)) as u64),
    );
    io::stdout()
        .write_all(text.as_bytes())
        .context("writing to stdout")?;
    Ok(())
}

/// Runs `coffer restore`.
pub fn restore(a: &RestoreArgs) -> Result<()> {
    let pg = a.dbname.as_ref().map(|db| PgRestore {
        dbname: db.clone(),
        jobs: a.jobs,
        single_transaction: !a.no_single_transaction,
        args: a.pg_restore_args.clone(),
        tmp_dir: a.tmp_dir.clone(),
    });
    if let Some(pg) = &pg {
        postgres::check_restore(pg)?;
    }
    let rt = filekeys::runtime()?;
    let keyrings = rt.block_on(coffer_assembly::file_keyrings_for_decrypt(&[a
        .kek
        .as_str()]))?;
    let refs = coffer_assembly::refs(&keyrings);
    let options = RestoreOptions {
        runtime: Some(rt.handle().clone()),
        ..RestoreOptions::default()
    };
    let reader = BackupReader::open(&a.backup, &refs, &options)?;
    let m = reader.manifest();
    let directory = m.format == coffer_backup::Format::Directory;
    if a.jobs > 1 && (!directory || a.dbname.is_none()) {
        bail!("--jobs applies to pg_restore of a directory-format backup");
    }
    let clock = Instant::now();
    let bar = Bar(progress(Some(m.total_len), "restoring"));
    let to_stdout = a.output.as_deref() == Some(Path::new("-"));

    if a.verify_only {
        reader.verify(&bar)?;
    } else if let Some(out) = &a.output {
        if directory {
            if to_stdout || out.exists() {
                bail!(
                    "a directory-format backup is written to a new directory (-o DIR); {} \
                     exists or is stdout",
                    out.display()
                );
            }
            reader.extract_to(out, &bar)?;
        } else {
            let (mut w, partial) = output((!to_stdout).then_some(out.as_path()))?;
            reader.write_to(&mut w, &bar)?;
            drop(w);
            partial.commit()?;
        }
    } else if let Some(pg) = &pg {
        warn(&postgres::restore_into(&reader, pg, &bar)?);
    }
    bar.finish();
    if !to_stdout {
        let what = if a.verify_only {
            "verified"
        } else {
            "restored"
        };
        println!(
            "{what}: {}\n{} of dump in {:.1} s",
            m.describe(),
            human(m.total_len),
            clock.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn warn(stderr: &str) {
    if !stderr.is_empty() {
        eprintln!("{stderr}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert!(parse_size("1GB").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}

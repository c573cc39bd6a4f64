//! `coffer backup` and `coffer restore`: encrypted PostgreSQL backups.
//!
//! `backup` runs `pg_dump` and encrypts what it writes, in constant memory, into a directory of
//! messages in the AWS Encryption SDK format (layout in [`manifest`]); `restore` authenticates
//! the manifest, checks the set of parts against it, then decrypts the parts in order into
//! `pg_restore`, a plain dump, or nowhere (`--verify-only`). docs/OPERATIONS.md is the runbook.
//!
//! A backup is written as `DIR/.<id>.partial/` and renamed to `DIR/<id>/` only once pg_dump has
//! exited with 0 and every part and the manifest are on disk (fsynced); any failure removes it.
//! A run killed by a signal leaves the `.partial` directory, which `restore` refuses (it has no
//! manifest) and which may be deleted.

mod manifest;
mod pg;
mod restore;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal as _, Read, Write};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use coffer_core::stream::{EncryptionContext, Encryptor};
use coffer_keys::files::{self, FileKeyring};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::file::{stream_error, threads};
use crate::filekeys;
pub use manifest::Format;
use manifest::{MANIFEST, Manifest, Part};
pub use restore::{RestoreArgs, restore};

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

/// A backup that does not match its manifest (a part missing, extra, moved, truncated, from
/// another backup…): exit status 1, like any failure to authenticate.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

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

/// A new backup id: the UTC time and 64 random bits, `20261123T020000Z-3f9a1c2b5d7e9f01`, so
/// backups list in the order they were taken.
fn new_id(now: OffsetDateTime) -> Result<String> {
    let mut random = [0u8; 8];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| anyhow!("the random generator failed"))?;
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

fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// A directory only its owner can enter, removed with everything in it when dropped unless
/// [`Scratch::keep`] was called.
pub(crate) struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    pub(crate) fn create(path: PathBuf) -> Result<Self> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Scratch { path, keep: false })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the directory to `to` and keeps it.
    pub(crate) fn commit(mut self, to: &Path) -> Result<()> {
        fs::rename(&self.path, to)
            .with_context(|| format!("cannot move the backup into place at {}", to.display()))?;
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
    digest: aws_lc_rs::digest::Context,
    len: u64,
}

impl<T> Hashing<T> {
    pub(crate) fn new(inner: T) -> Self {
        Hashing {
            inner,
            digest: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            len: 0,
        }
    }

    /// The inner reader or writer, the SHA-256 and the byte count.
    pub(crate) fn finish(self) -> (T, [u8; 32], u64) {
        let mut sha = [0u8; 32];
        sha.copy_from_slice(self.digest.finish().as_ref());
        (self.inner, sha, self.len)
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

/// Encrypts streams into numbered parts of one backup.
struct Sealer<'a> {
    rt: tokio::runtime::Runtime,
    keyrings: Vec<Box<dyn FileKeyring>>,
    id: &'a str,
    format: Format,
    dir: &'a Path,
    part_size: u64,
    frame_size: u32,
    threads: usize,
    parts: Vec<Part>,
}

impl Sealer<'_> {
    /// Seals one message (a fresh data key wrapped by every keyring) of `src` into `name`,
    /// fsynced; returns its plaintext length, SHA-256 and length.
    fn seal(
        &self,
        name: &str,
        context: &EncryptionContext,
        mut src: &mut dyn Read,
    ) -> Result<(u64, [u8; 32], u64)> {
        let (data_key, edks) = self
            .rt
            .block_on(files::seal(&coffer_assembly::refs(&self.keyrings), context))?;
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        // Small, so the encryptor's batch-sized writes go straight to the file.
        let out = Hashing::new(BufWriter::with_capacity(64 * 1024, file));
        let mut enc = Encryptor::with_data_key(out, &data_key, edks, context, self.frame_size)
            .map_err(stream_error)?
            .with_threads(self.threads);
        drop(data_key);
        let plain = enc
            .write_from(&mut src)
            .with_context(|| format!("encrypting into {}", path.display()))?;
        let out = enc
            .finish()
            .with_context(|| format!("writing {}", path.display()))?;
        let (buf, sha, len) = out.finish();
        let file = buf
            .into_inner()
            .map_err(|e| anyhow!(e.into_error()))
            .with_context(|| format!("writing {}", path.display()))?;
        file.sync_all()
            .with_context(|| format!("writing {}", path.display()))?;
        Ok((plain, sha, len))
    }

    /// Cuts `src` into parts of `part_size` plaintext bytes (at least one part, even for an
    /// empty stream); returns the bytes read.
    fn seal_stream(&mut self, src: &mut dyn BufRead, file: Option<&str>) -> Result<u64> {
        let mut total = 0;
        loop {
            let index = u32::try_from(self.parts.len() + 1)
                .map_err(|_| anyhow!("more than 2^32 parts: raise --part-size"))?;
            let context = manifest::part_context(self.id, self.format, index, file)?;
            let mut chunk = Read::take(&mut *src, self.part_size);
            let (plain, sha, len) = self.seal(&manifest::part_name(index), &context, &mut chunk)?;
            self.parts.push(Part {
                index,
                file: file.map(str::to_owned),
                plaintext_len: plain,
                ciphertext_len: len,
                sha256: sha,
            });
            total += plain;
            if plain < self.part_size || src.fill_buf().context("reading the dump")?.is_empty() {
                return Ok(total);
            }
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
    pg::check_conninfo(&a.dbname)?;
    if a.jobs > 1 && a.format != Format::Directory {
        bail!("--jobs needs --format directory (a custom-format dump is one stream)");
    }
    let pg_dump_version = pg::version("pg_dump")?;
    let clock = Instant::now();
    let started = OffsetDateTime::now_utc();
    let id = new_id(started)?;
    fs::create_dir_all(&a.output)
        .with_context(|| format!("cannot create {}", a.output.display()))?;
    let target = a.output.join(&id);
    let partial = Scratch::create(a.output.join(format!(".{id}.partial")))?;

    let rt = filekeys::runtime()?;
    let keyrings = rt.block_on(filekeys::for_keys(&a.keys))?;
    let mut sealer = Sealer {
        rt,
        keyrings,
        id: &id,
        format: a.format,
        dir: partial.path(),
        part_size: a.part_size,
        frame_size: a.frame_size,
        threads: threads(0),
        parts: Vec::new(),
    };

    let bar = spinner("pg_dump → encrypted parts");
    let warnings = match a.format {
        Format::Custom => {
            let mut cmd = pg::command("pg_dump");
            cmd.arg("--format=custom")
                .arg(format!("--dbname={}", a.dbname))
                .args(&a.pg_dump_args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped());
            let mut child = pg::Running::spawn("pg_dump", cmd)?;
            let stdout = child.stdout()?;
            let src: Box<dyn Read + Send> = match &bar {
                Some(b) => Box::new(b.wrap_read(stdout)),
                None => Box::new(stdout),
            };
            // Up to 32 MiB read ahead of the encryptor.
            let mut src = pg::ReadAhead::new(src, 1 << 20, 32);
            let sealed = sealer.seal_stream(&mut src, None);
            drop(src);
            // pg_dump's own failure explains a short or broken stream best: report it first.
            let finished = child.finish();
            sealed?;
            finished?
        }
        Format::Directory => dump_directory(a, &id, &mut sealer, bar.as_ref())?,
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if !warnings.is_empty() {
        eprintln!("{warnings}");
    }

    let finished = OffsetDateTime::now_utc();
    let m = Manifest {
        backup_id: id.clone(),
        format: a.format,
        database: a.dbname.clone(),
        pg_dump_version,
        started_at: rfc3339(started),
        finished_at: rfc3339(finished),
        part_size: a.part_size,
        frame_size: a.frame_size,
        total_len: sealer.parts.iter().map(|p| p.plaintext_len).sum(),
        parts: std::mem::take(&mut sealer.parts),
    };
    m.check()?;
    let json = m.to_json();
    let (_, _, manifest_len) = sealer.seal(
        MANIFEST,
        &manifest::manifest_context(&m)?,
        &mut json.as_slice(),
    )?;
    File::open(partial.path())
        .and_then(|d| d.sync_all())
        .context("syncing the backup directory")?;
    if target.exists() {
        bail!("{} already exists", target.display());
    }
    partial.commit(&target)?;
    File::open(&a.output)
        .and_then(|d| d.sync_all())
        .context("syncing the backup directory")?;

    let encrypted: u64 = m.parts.iter().map(|p| p.ciphertext_len).sum::<u64>() + manifest_len;
    let secs = clock.elapsed().as_secs_f64();
    let text = format!(
        "backup-id: {id}\npath: {}\nformat: {}, {} part(s) of at most {}\ndump: {} ({} bytes)\nencrypted: {} ({} bytes)\ntime: {secs:.1} s ({}/s)\n",
        target.display(),
        a.format.as_str(),
        m.parts.len(),
        human(a.part_size),
        human(m.total_len),
        m.total_len,
        human(encrypted),
        encrypted,
        human((m.total_len as f64 / secs.max(1e-9)) as u64),
    );
    io::stdout()
        .write_all(text.as_bytes())
        .context("writing to stdout")?;
    Ok(())
}

/// `pg_dump -Fd -j N` into a private directory beside the backup, then every file (sorted by
/// name) sealed into parts of its own; the plaintext directory is removed however this ends.
fn dump_directory(
    a: &BackupArgs,
    id: &str,
    sealer: &mut Sealer<'_>,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<String> {
    let work = Scratch::create(a.output.join(format!(".{id}.plain")))?;
    let dump = work.path().join("dump");
    let mut cmd = pg::command("pg_dump");
    cmd.arg("--format=directory")
        .arg(format!("--jobs={}", a.jobs))
        .arg(format!("--dbname={}", a.dbname))
        .arg("--file")
        .arg(&dump)
        .args(&a.pg_dump_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(b) = bar {
        b.set_message("pg_dump (directory format)");
    }
    let warnings = pg::Running::spawn("pg_dump", cmd)?.finish()?;
    if let Some(b) = bar {
        b.set_message("encrypting");
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(&dump).with_context(|| format!("reading {}", dump.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dump.display()))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| anyhow!("pg_dump wrote a file with a name that is not UTF-8: {n:?}"))?;
        if !entry.file_type()?.is_file() || !manifest::safe_file_name(&name) {
            bail!("pg_dump wrote {name}, which is not a plain file coffer can back up");
        }
        names.push(name);
    }
    names.sort();
    for name in names {
        let path = dump.join(&name);
        let f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let src: Box<dyn Read> = match bar {
            Some(b) => Box::new(b.wrap_read(f)),
            None => Box::new(f),
        };
        sealer.seal_stream(&mut BufReader::with_capacity(1 << 20, src), Some(&name))?;
        // The plaintext goes as soon as it is sealed.
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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

    #[test]
    fn ids_are_well_formed() {
        let id = new_id(OffsetDateTime::now_utc()).unwrap();
        assert!(manifest::valid_id(&id), "{id}");
    }
}

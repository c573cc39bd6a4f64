//! `coffer restore`: the manifest authenticated first, the part files checked against it, then
//! every part authenticated as it is decrypted into `pg_restore`, a plain dump, or nowhere.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{ArgGroup, Args};
use coffer_core::Dek;
use coffer_core::stream::{Decryptor, EncryptionContext, Limits, MessageHeader};
use coffer_keys::files::{self, FileKeyring};

use super::manifest::{self, MANIFEST, MAX_MANIFEST, Manifest, Part};
use super::{Format, Hashing, Refused, Scratch, human, pg};
use crate::file::{key_error, output, progress, stream_error, threads};
use crate::filekeys;

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

/// A write to the restore's destination failed (pg_restore gone, disk full): not the backup's
/// fault, so pg_restore's own error is the one to show.
#[derive(Debug)]
struct SinkFailed(io::Error);

impl std::fmt::Display for SinkFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing the restored data: {}", self.0)
    }
}

impl std::error::Error for SinkFailed {}

fn refused(msg: String) -> anyhow::Error {
    Refused(msg).into()
}

/// Opens messages with the `--kek` given.
struct Opener {
    rt: tokio::runtime::Runtime,
    keyrings: Vec<Box<dyn FileKeyring>>,
    threads: usize,
}

impl Opener {
    /// Reads a header and opens its data key (not yet authenticating the header).
    fn open<R: Read>(&self, r: &mut R) -> Result<(MessageHeader, Dek)> {
        let header = MessageHeader::read_from(r, &Limits::default()).map_err(stream_error)?;
        let data_key = self
            .rt
            .block_on(files::open(&header, &coffer_assembly::refs(&self.keyrings)))
            .map_err(key_error)?;
        Ok((header, data_key))
    }

    /// Decrypts, authenticates and checks the manifest of the backup in `dir`.
    fn manifest(&self, dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        if !path.is_file() {
            return Err(refused(format!(
                "{} has no {MANIFEST}: not a Coffer backup, or one that never finished",
                dir.display()
            )));
        }
        let f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut r = BufReader::new(f);
        let (header, data_key) = self.open(&mut r).context("opening manifest.cfr")?;
        let dec = Decryptor::with_data_key(r, header, &data_key)
            .map_err(stream_error)
            .context("authenticating manifest.cfr")?;
        drop(data_key);
        let context = dec.context().clone();
        if context.get(manifest::CTX_KIND) != Some("manifest") {
            return Err(refused(format!(
                "{} is not a backup manifest",
                path.display()
            )));
        }
        let mut bytes = Vec::new();
        dec.take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(stream_error)
            .context("authenticating manifest.cfr")?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(refused("the manifest is too large".into()));
        }
        let m = Manifest::parse(&bytes)?;
        let expect = manifest::manifest_context(&m)?;
        if context != expect {
            return Err(refused(
                "the manifest's encryption context does not match its contents".into(),
            ));
        }
        Ok(m)
    }

    /// Decrypts part `p` into `out`, authenticating it, then compares its context, length and
    /// SHA-256 with the manifest.
    fn copy_part(
        &self,
        dir: &Path,
        m: &Manifest,
        p: &Part,
        out: &mut dyn Write,
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<()> {
        let name = p.name();
        let path = dir.join(&name);
        let f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut r = Hashing::new(BufReader::with_capacity(1 << 20, f));
        let (header, data_key) = self
            .open(&mut r)
            .with_context(|| format!("opening {name}"))?;
        let mut dec = Decryptor::with_data_key(&mut r, header, &data_key)
            .map_err(stream_error)
            .with_context(|| format!("authenticating {name}"))?
            .with_threads(self.threads);
        drop(data_key);
        check_context(dec.context(), m, p)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut plain = 0u64;
        loop {
            let n = dec
                .read(&mut buf)
                .map_err(stream_error)
                .with_context(|| format!("decrypting {name}"))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(|e| anyhow!(SinkFailed(e)))?;
            plain += n as u64;
            if let Some(b) = bar {
                b.inc(n as u64);
            }
        }
        drop(dec);
        let (_, sha, len) = r.finish();
        if plain != p.plaintext_len {
            return Err(refused(format!(
                "{name} holds {plain} bytes, the manifest says {}",
                p.plaintext_len
            )));
        }
        if len != p.ciphertext_len || sha != p.sha256 {
            return Err(refused(format!(
                "{name} does not match the SHA-256 the manifest lists for it"
            )));
        }
        Ok(())
    }
}

/// A part's encryption context names its backup, position and file exactly as the manifest does.
fn check_context(c: &EncryptionContext, m: &Manifest, p: &Part) -> Result<()> {
    let name = p.name();
    match c.get(manifest::CTX_BACKUP_ID) {
        Some(id) if id == m.backup_id => {}
        other => {
            return Err(refused(format!(
                "{name} belongs to backup {}, not {}: a part from another backup",
                other.unwrap_or("(none)"),
                m.backup_id
            )));
        }
    }
    if c.get(manifest::CTX_KIND) != Some("part") {
        return Err(refused(format!("{name} is not a backup part")));
    }
    let index = p.index.to_string();
    if c.get(manifest::CTX_PART) != Some(index.as_str()) {
        return Err(refused(format!(
            "{name} holds part {} of the backup, not part {index}: parts were swapped or renamed",
            c.get(manifest::CTX_PART).unwrap_or("(none)")
        )));
    }
    if c.get(manifest::CTX_FORMAT) != Some(m.format.as_str())
        || c.get(manifest::CTX_FILE) != p.file.as_deref()
    {
        return Err(refused(format!(
            "{name} does not hold what the manifest lists for it"
        )));
    }
    Ok(())
}

/// Checks the directory against the manifest before anything is restored: every part present
/// with the listed length, no part the manifest does not list, and each part's header naming
/// the backup and position it should (re-checked once authenticated, while decrypting).
fn check_set(dir: &Path, m: &Manifest) -> Result<()> {
    let listed: std::collections::HashSet<String> = m.parts.iter().map(Part::name).collect();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != MANIFEST && name.ends_with(".cfr") && !listed.contains(&name) {
            return Err(refused(format!(
                "{name} is in the backup directory but not in its manifest (an extra or \
                 duplicated part)"
            )));
        }
    }
    for p in &m.parts {
        let name = p.name();
        let path = dir.join(&name);
        let meta = std::fs::metadata(&path).map_err(|_| {
            refused(format!(
                "{name} is missing (the manifest lists {} parts)",
                m.parts.len()
            ))
        })?;
        if meta.len() != p.ciphertext_len {
            return Err(refused(format!(
                "{name} is {} bytes, the manifest says {}: truncated or replaced",
                meta.len(),
                p.ciphertext_len
            )));
        }
        let mut f = BufReader::new(
            File::open(&path).with_context(|| format!("cannot open {}", path.display()))?,
        );
        let header = MessageHeader::read_from(&mut f, &Limits::default())
            .map_err(stream_error)
            .with_context(|| format!("reading {name}"))?;
        check_context(&header.context, m, p)?;
    }
    Ok(())
}

/// Decrypts a directory-format backup's files into `dir` (which exists, empty, mode 0700).
fn decrypt_files(
    opener: &Opener,
    backup: &Path,
    m: &Manifest,
    dir: &Path,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<()> {
    let mut current: Option<(&str, BufWriter<File>)> = None;
    for p in &m.parts {
        let file = p.file.as_deref().unwrap_or_default();
        if current.as_ref().map(|(f, _)| *f) != Some(file) {
            if let Some((_, w)) = current.take() {
                close(w)?;
            }
            let path = dir.join(file);
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            current = Some((file, BufWriter::with_capacity(1 << 20, f)));
        }
        if let Some((_, w)) = current.as_mut() {
            opener.copy_part(backup, m, p, w, bar)?;
        }
    }
    if let Some((_, w)) = current.take() {
        close(w)?;
    }
    Ok(())
}

fn close(w: BufWriter<File>) -> Result<()> {
    let f = w
        .into_inner()
        .map_err(|e| anyhow!(SinkFailed(e.into_error())))?;
    f.sync_all().map_err(|e| anyhow!(SinkFailed(e)))
}

/// Runs `coffer restore`.
pub fn restore(a: &RestoreArgs) -> Result<()> {
    if let Some(db) = &a.dbname {
        pg::check_conninfo(db)?;
        pg::version("pg_restore")?;
    }
    let rt = filekeys::runtime()?;
    let keyrings = rt.block_on(coffer_assembly::file_keyrings_for_decrypt(&[a
        .kek
        .as_str()]))?;
    let opener = Opener {
        rt,
        keyrings,
        threads: threads(0),
    };
    let m = opener.manifest(&a.backup)?;
    check_set(&a.backup, &m)?;
    if a.jobs > 1 && (m.format != Format::Directory || a.dbname.is_none()) {
        bail!("--jobs applies to pg_restore of a directory-format backup");
    }
    let clock = Instant::now();
    let bar = progress(Some(m.total_len), "restoring");
    let bar = bar.as_ref();
    let to_stdout = a.output.as_deref() == Some(Path::new("-"));

    if a.verify_only {
        for p in &m.parts {
            opener.copy_part(&a.backup, &m, p, &mut io::sink(), bar)?;
        }
    } else if let Some(out) = &a.output {
        match m.format {
            Format::Custom => {
                let (mut w, partial) = output((!to_stdout).then_some(out.as_path()))?;
                for p in &m.parts {
                    opener.copy_part(&a.backup, &m, p, &mut w, bar)?;
                }
                w.flush().map_err(|e| anyhow!(SinkFailed(e)))?;
                drop(w);
                partial.commit()?;
            }
            Format::Directory => {
                if to_stdout || out.exists() {
                    bail!(
                        "a directory-format backup is written to a new directory (-o DIR); {} \
                         exists or is stdout",
                        out.display()
                    );
                }
                let name = out
                    .file_name()
                    .ok_or_else(|| anyhow!("{} is not a directory path", out.display()))?;
                let tmp = Scratch::create(
                    out.with_file_name(format!(".{}.coffer-partial", name.to_string_lossy())),
                )?;
                decrypt_files(&opener, &a.backup, &m, tmp.path(), bar)?;
                tmp.commit(out)?;
            }
        }
    } else if let Some(db) = &a.dbname {
        match m.format {
            Format::Custom => restore_stream(a, db, &opener, &m, bar)?,
            Format::Directory => {
                let base = a.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
                let tmp = Scratch::create(base.join(format!(
                    "coffer-restore-{}-{}",
                    m.backup_id,
                    std::process::id()
                )))?;
                decrypt_files(&opener, &a.backup, &m, tmp.path(), bar)?;
                let mut cmd = pg::command("pg_restore");
                cmd.arg(format!("--dbname={db}"))
                    .arg("--exit-on-error")
                    .arg(format!("--jobs={}", a.jobs))
                    .args(&a.pg_restore_args)
                    .arg(tmp.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null());
                warn(&pg::Running::spawn("pg_restore", cmd)?.finish()?);
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
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

/// A custom-format backup streamed into `pg_restore` on its stdin, in one transaction unless
/// `--no-single-transaction`. If a part fails to authenticate part-way, pg_restore is killed:
/// its transaction is rolled back and nothing stays restored.
fn restore_stream(
    a: &RestoreArgs,
    db: &str,
    opener: &Opener,
    m: &Manifest,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<()> {
    let mut cmd = pg::command("pg_restore");
    cmd.arg(format!("--dbname={db}")).arg("--exit-on-error");
    if !a.no_single_transaction {
        cmd.arg("--single-transaction");
    }
    cmd.args(&a.pg_restore_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = pg::Running::spawn("pg_restore", cmd)?;
    let mut w = BufWriter::with_capacity(1 << 20, child.stdin()?);
    let mut streamed = Ok(());
    for p in &m.parts {
        streamed = opener.copy_part(&a.backup, m, p, &mut w, bar);
        if streamed.is_err() {
            break;
        }
    }
    if streamed.is_ok() {
        streamed = w.flush().map_err(|e| anyhow!(SinkFailed(e)));
    }
    match streamed {
        Ok(()) => {
            // Closing stdin tells pg_restore the archive is complete.
            drop(w);
            warn(&child.finish()?);
            Ok(())
        }
        Err(e) if e.chain().any(|c| c.is::<SinkFailed>()) => {
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
            Err(e.context(if a.no_single_transaction {
                "restore stopped part-way: the database holds part of the backup"
            } else {
                "restore stopped: pg_restore was killed and its transaction rolled back"
            }))
        }
    }
}

fn warn(stderr: &str) {
    if !stderr.is_empty() {
        eprintln!("{stderr}");
    }
}

//! Reading a backup: the manifest authenticated first, the part files checked against it, then
//! every part authenticated as it is decrypted.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use coffer_core::Dek;
use coffer_core::stream::{Decryptor, EncryptionContext, Limits, MessageHeader};
use coffer_keys::files::{self, FileKeyring};

use crate::error::{Error, Result};
use crate::io::{Hashing, Runner, Scratch, threads};
use crate::manifest::{self, Format, MANIFEST, MAX_MANIFEST, Manifest, Part};
use crate::{Progress, RestoreOptions};

fn refused(msg: String) -> Error {
    Error::Refused(msg)
}

/// A backup whose manifest authenticated and whose part files match it (present, none extra,
/// the listed lengths, each header naming this backup and its position). Each part is
/// authenticated again, in full, as it is decrypted.
pub struct BackupReader<'a> {
    runner: Runner,
    keyrings: &'a [&'a dyn FileKeyring],
    threads: usize,
    dir: PathBuf,
    manifest: Manifest,
}

impl<'a> BackupReader<'a> {
    /// Opens the backup in `dir` (`DIR/<backup-id>`) with any one of the keys it was made for.
    ///
    /// # Errors
    ///
    /// [`Error::NoManifest`] or [`Error::MissingPart`] (kind NotFound); [`Error::NoKey`],
    /// [`Error::Refused`] or [`Error::Crypto`] when the manifest does not authenticate or the
    /// parts do not match it (kind Decrypt); [`Error::Keys`] when a keyring fails.
    pub fn open(
        dir: &Path,
        keyrings: &'a [&'a dyn FileKeyring],
        options: &RestoreOptions,
    ) -> Result<Self> {
        let mut reader = BackupReader {
            runner: Runner::new(options.runtime.as_ref())?,
            keyrings,
            threads: threads(options.threads),
            dir: dir.to_owned(),
            manifest: Manifest {
                backup_id: String::new(),
                format: Format::Custom,
                database: String::new(),
                pg_dump_version: String::new(),
                started_at: String::new(),
                finished_at: String::new(),
                part_size: 0,
                frame_size: 0,
                total_len: 0,
                parts: Vec::new(),
            },
        };
        reader.manifest = reader.read_manifest()?;
        check_set(dir, &reader.manifest)?;
        Ok(reader)
    }

    /// The authenticated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The backup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads a header and opens its data key (not yet authenticating the header).
    fn open_message<R: Read>(&self, r: &mut R, name: &str) -> Result<(MessageHeader, Dek)> {
        let header = MessageHeader::read_from(r, &Limits::default())
            .map_err(Error::stream(format!("reading {name}")))?;
        let data_key = self
            .runner
            .block_on(files::open(&header, self.keyrings))
            .map_err(Error::keys(format!("opening {name}")))?;
        Ok((header, data_key))
    }

    /// Decrypts, authenticates and checks the manifest.
    fn read_manifest(&self) -> Result<Manifest> {
        let path = self.dir.join(MANIFEST);
        if !path.is_file() {
            return Err(Error::NoManifest {
                dir: self.dir.clone(),
            });
        }
        let f = File::open(&path).map_err(Error::io(format!("cannot open {}", path.display())))?;
        let mut r = BufReader::new(f);
        let (header, data_key) = self.open_message(&mut r, MANIFEST)?;
        let dec = Decryptor::with_data_key(r, header, &data_key)
            .map_err(Error::stream("authenticating manifest.cfr"))?;
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
            .map_err(Error::stream("authenticating manifest.cfr"))?;
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
    ///
    /// # Errors
    ///
    /// [`Error::Sink`] when writing to `out` fails; as [`BackupReader::open`] otherwise.
    pub fn copy_part(&self, p: &Part, out: &mut dyn Write, progress: &dyn Progress) -> Result<()> {
        let m = &self.manifest;
        let name = p.name();
        let path = self.dir.join(&name);
        let f = File::open(&path).map_err(Error::io(format!("cannot open {}", path.display())))?;
        let mut r = Hashing::new(BufReader::with_capacity(1 << 20, f));
        let (header, data_key) = self.open_message(&mut r, &name)?;
        let mut dec = Decryptor::with_data_key(&mut r, header, &data_key)
            .map_err(Error::stream(format!("authenticating {name}")))?
            .with_threads(self.threads);
        drop(data_key);
        check_context(dec.context(), m, p)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut plain = 0u64;
        loop {
            let n = dec
                .read(&mut buf)
                .map_err(Error::stream(format!("decrypting {name}")))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(Error::Sink)?;
            plain += n as u64;
            progress.advance(n as u64);
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

    /// Decrypts every part in order into `out`: for a custom-format backup, the dump. Bytes
    /// reach `out` before the last part is authenticated: a consumer must not act on them
    /// unless this returns `Ok` (pg_restore in one transaction, a temporary file renamed after).
    ///
    /// # Errors
    ///
    /// As [`BackupReader::copy_part`].
    pub fn write_to(&self, out: &mut dyn Write, progress: &dyn Progress) -> Result<u64> {
        for p in &self.manifest.parts {
            self.copy_part(p, out, progress)?;
        }
        out.flush().map_err(Error::Sink)?;
        Ok(self.manifest.total_len)
    }

    /// Authenticates every part and writes nothing.
    ///
    /// # Errors
    ///
    /// As [`BackupReader::copy_part`].
    pub fn verify(&self, progress: &dyn Progress) -> Result<()> {
        self.write_to(&mut std::io::sink(), progress).map(|_| ())
    }

    /// Decrypts a directory-format backup's files into `dir`, which exists and is empty (files
    /// are created with mode 0600).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a custom-format backup; as [`BackupReader::copy_part`].
    pub fn write_files(&self, dir: &Path, progress: &dyn Progress) -> Result<()> {
        if self.manifest.format != Format::Directory {
            return Err(Error::InvalidInput(
                "a custom-format backup is one stream: use write_to".into(),
            ));
        }
        let mut current: Option<(&str, BufWriter<File>)> = None;
        for p in &self.manifest.parts {
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
                    .map_err(Error::io(format!("cannot create {}", path.display())))?;
                current = Some((file, BufWriter::with_capacity(1 << 20, f)));
            }
            if let Some((_, w)) = current.as_mut() {
                self.copy_part(p, w, progress)?;
            }
        }
        if let Some((_, w)) = current.take() {
            close(w)?;
        }
        Ok(())
    }

    /// [`BackupReader::write_files`] into a new directory `out`, made as a private
    /// `.<name>.coffer-partial` beside it and renamed only once every file is authenticated.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `out` exists; as [`BackupReader::write_files`].
    pub fn extract_to(&self, out: &Path, progress: &dyn Progress) -> Result<()> {
        if out.exists() {
            return Err(Error::InvalidInput(format!(
                "a directory-format backup is written to a new directory; {} exists",
                out.display()
            )));
        }
        let name = out.file_name().ok_or_else(|| {
            Error::InvalidInput(format!("{} is not a directory path", out.display()))
        })?;
        let tmp = Scratch::create(
            out.with_file_name(format!(".{}.coffer-partial", name.to_string_lossy())),
        )?;
        self.write_files(tmp.path(), progress)?;
        tmp.commit(out)
    }
}

fn close(w: BufWriter<File>) -> Result<()> {
    let f = w.into_inner().map_err(|e| Error::Sink(e.into_error()))?;
    f.sync_all().map_err(Error::Sink)
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
    let reading = || Error::io(format!("reading {}", dir.display()));
    for entry in std::fs::read_dir(dir).map_err(reading())? {
        let name = entry
            .map_err(reading())?
            .file_name()
            .to_string_lossy()
            .into_owned();
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
        let meta = std::fs::metadata(&path).map_err(|_| Error::MissingPart {
            name: name.clone(),
            parts: m.parts.len(),
        })?;
        if meta.len() != p.ciphertext_len {
            return Err(refused(format!(
                "{name} is {} bytes, the manifest says {}: truncated or replaced",
                meta.len(),
                p.ciphertext_len
            )));
        }
        let mut f = BufReader::new(
            File::open(&path).map_err(Error::io(format!("cannot open {}", path.display())))?,
        );
        let header = MessageHeader::read_from(&mut f, &Limits::default())
            .map_err(Error::stream(format!("reading {name}")))?;
        check_context(&header.context, m, p)?;
    }
    Ok(())
}

//! Writing a backup: streams cut into parts, each a complete message, then the manifest, then
//! the directory moved into place.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use coffer_core::stream::{EncryptionContext, Encryptor};
use coffer_keys::files::{self, FileKeyring};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::io::{Counting, Hashing, Runner, Scratch, new_id, rfc3339, threads};
use crate::manifest::{self, Format, MANIFEST, Manifest, Part};
use crate::{BackupOptions, Progress};

/// What a finished backup is: where it went and what its manifest lists.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BackupSummary {
    /// `DIR/<backup-id>`.
    pub path: PathBuf,
    /// The manifest written (its `backup_id`, parts, lengths).
    pub manifest: Manifest,
    /// Bytes of every `.cfr` file, the manifest included.
    pub encrypted_len: u64,
    /// How long the backup took, in seconds.
    pub seconds: f64,
}

/// A backup being written: `DIR/.<id>.partial/` until [`BackupWriter::finish`] moves it to
/// `DIR/<id>/`; dropped unfinished (any failure), the partial directory is removed.
///
/// Add one stream ([`BackupWriter::add_stream`], a custom-format backup) or any number of files
/// ([`BackupWriter::add_file`], a directory-format backup), not both.
pub struct BackupWriter<'a> {
    runner: Runner,
    keyrings: &'a [&'a dyn FileKeyring],
    progress: &'a dyn Progress,
    options: BackupOptions,
    id: String,
    dir: PathBuf,
    partial: Scratch,
    format: Option<Format>,
    parts: Vec<Part>,
    started: OffsetDateTime,
    clock: Instant,
}

impl<'a> BackupWriter<'a> {
    /// Starts a backup in `dir` (created if missing), sealed for every keyring given (the first
    /// is the primary, the others recovery keys: any one of them restores it).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for no keyring or a zero part or frame size; [`Error::Io`] when
    /// the directory cannot be made.
    pub fn create(
        dir: &Path,
        keyrings: &'a [&'a dyn FileKeyring],
        options: &BackupOptions,
        progress: &'a dyn Progress,
    ) -> Result<Self> {
        if keyrings.is_empty() {
            return Err(Error::InvalidInput(
                "a backup needs at least one wrapping key".into(),
            ));
        }
        if options.part_size == 0 || options.frame_size == 0 {
            return Err(Error::InvalidInput(
                "the part size and the frame size must be above zero".into(),
            ));
        }
        let started = OffsetDateTime::now_utc();
        let id = new_id(started)?;
        fs::create_dir_all(dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
        let partial = Scratch::create(dir.join(format!(".{id}.partial")))?;
        Ok(BackupWriter {
            runner: Runner::new(options.runtime.as_ref())?,
            keyrings,
            progress,
            options: options.clone(),
            id,
            dir: dir.to_owned(),
            partial,
            format: None,
            parts: Vec::new(),
            started,
            clock: Instant::now(),
        })
    }

    /// The new backup's id (its directory's name once finished).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where a directory-format dump may be written in plaintext beside the backup while it is
    /// sealed: `DIR/.<id>.plain` (the caller creates and removes it).
    pub fn scratch_path(&self) -> PathBuf {
        self.dir.join(format!(".{}.plain", self.id))
    }

    /// Seals the whole of `src` (a custom-format dump, or any bytes) as the backup's plaintext,
    /// cut into parts; returns the bytes read.
    ///
    /// # Errors
    ///
    /// As [`BackupWriter::add_file`]; also [`Error::InvalidInput`] when called twice.
    pub fn add_stream(&mut self, src: &mut dyn BufRead) -> Result<u64> {
        if self.format.is_some() {
            return Err(Error::InvalidInput(
                "a custom-format backup holds one stream".into(),
            ));
        }
        self.format = Some(Format::Custom);
        self.seal_stream(src, None)
    }

    /// Seals one file of a directory-format dump (files are restored in the order added, each
    /// under its name); returns the bytes read.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a name that is not a plain file name or a stream already
    /// added; [`Error::Keys`] when a keyring fails; [`Error::Io`] when reading `src` or writing
    /// a part fails.
    pub fn add_file(&mut self, name: &str, src: &mut dyn BufRead) -> Result<u64> {
        if self.format == Some(Format::Custom) {
            return Err(Error::InvalidInput(
                "a custom-format backup holds one stream, not files".into(),
            ));
        }
        if !manifest::safe_file_name(name) {
            return Err(Error::InvalidInput(format!(
                "{name} is not a plain file name coffer can back up (letters, digits, _ - . only)"
            )));
        }
        if self.parts.iter().any(|p| p.file.as_deref() == Some(name)) {
            return Err(Error::InvalidInput(format!("{name} was added twice")));
        }
        self.format = Some(Format::Directory);
        self.seal_stream(src, Some(name))
    }

    /// Writes the manifest and moves the backup into place (everything fsynced).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when nothing was added; as [`BackupWriter::add_file`] otherwise.
    pub fn finish(mut self) -> Result<BackupSummary> {
        let format = self
            .format
            .ok_or_else(|| Error::InvalidInput("nothing was added to the backup".into()))?;
        let finished = OffsetDateTime::now_utc();
        let m = Manifest {
            backup_id: self.id.clone(),
            format,
            database: self.options.database.clone(),
            pg_dump_version: self.options.source_version.clone(),
            started_at: rfc3339(self.started),
            finished_at: rfc3339(finished),
            part_size: self.options.part_size,
            frame_size: self.options.frame_size,
            total_len: self.parts.iter().map(|p| p.plaintext_len).sum(),
            parts: std::mem::take(&mut self.parts),
        };
        m.check()?;
        let json = m.to_json();
        let (_, _, manifest_len) = self.seal(
            MANIFEST,
            &manifest::manifest_context(&m)?,
            &mut json.as_slice(),
        )?;
        sync_dir(self.partial.path())?;
        let target = self.dir.join(&self.id);
        if target.exists() {
            return Err(Error::InvalidInput(format!(
                "{} already exists",
                target.display()
            )));
        }
        self.partial.commit(&target)?;
        sync_dir(&self.dir)?;
        let encrypted_len = m.parts.iter().map(|p| p.ciphertext_len).sum::<u64>() + manifest_len;
        Ok(BackupSummary {
            path: target,
            manifest: m,
            encrypted_len,
            seconds: self.clock.elapsed().as_secs_f64(),
        })
    }

    /// Seals one message (a fresh data key wrapped by every keyring) of `src` into `name`,
    /// fsynced; returns its plaintext length, SHA-256 and length.
    fn seal(
        &self,
        name: &str,
        context: &EncryptionContext,
        mut src: &mut dyn Read,
    ) -> Result<(u64, [u8; 32], u64)> {
        let (data_key, edks) = self
            .runner
            .block_on(files::seal(self.keyrings, context))
            .map_err(Error::keys(format!("sealing {name}")))?;
        let path = self.partial.path().join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io(format!("cannot create {}", path.display())))?;
        // Small, so the encryptor's batch-sized writes go straight to the file.
        let out = Hashing::new(BufWriter::with_capacity(64 * 1024, file));
        let mut enc =
            Encryptor::with_data_key(out, &data_key, edks, context, self.options.frame_size)
                .map_err(Error::stream(format!("encrypting into {}", path.display())))?
                .with_threads(threads(self.options.threads));
        drop(data_key);
        let plain = enc
            .write_from(&mut src)
            .map_err(Error::stream(format!("encrypting into {}", path.display())))?;
        let out = enc
            .finish()
            .map_err(Error::stream(format!("writing {}", path.display())))?;
        let (buf, sha, len) = out.finish();
        let file = buf
            .into_inner()
            .map_err(|e| Error::io(format!("writing {}", path.display()))(e.into_error()))?;
        file.sync_all()
            .map_err(Error::io(format!("writing {}", path.display())))?;
        Ok((plain, sha, len))
    }

    /// Cuts `src` into parts of `part_size` plaintext bytes (at least one part, even for an
    /// empty stream); returns the bytes read.
    fn seal_stream(&mut self, src: &mut dyn BufRead, file: Option<&str>) -> Result<u64> {
        let format = self.format.unwrap_or(Format::Custom);
        let part_size = self.options.part_size;
        let mut total = 0;
        loop {
            let index = u32::try_from(self.parts.len() + 1).map_err(|_| {
                Error::InvalidInput("more than 2^32 parts: raise the part size".into())
            })?;
            let context = manifest::part_context(&self.id, format, index, file)?;
            let mut chunk = Counting {
                inner: Read::take(&mut *src, part_size),
                progress: self.progress,
            };
            let (plain, sha, len) = self.seal(&manifest::part_name(index), &context, &mut chunk)?;
            self.parts.push(Part {
                index,
                file: file.map(str::to_owned),
                plaintext_len: plain,
                ciphertext_len: len,
                sha256: sha,
            });
            total += plain;
            if plain < part_size
                || src
                    .fill_buf()
                    .map_err(Error::io("reading the dump"))?
                    .is_empty()
            {
                return Ok(total);
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("syncing the backup directory"))
}

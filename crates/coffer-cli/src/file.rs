//! `coffer file encrypt|decrypt|inspect`: whole files and streams in the AWS Encryption SDK
//! message format (coffer-core's `stream`). Outputs go to a temporary file beside the target,
//! renamed into place only when complete; any failure removes it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, IsTerminal as _, Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use coffer_core::Error as CoreError;
use coffer_core::stream::{
    Decryptor, EncryptionContext, Encryptor, Limits, MessageHeader, ReadAt, SeekableDecryptor,
    decrypt_at, rewrap_header,
};
use coffer_keys::files;
use serde_json::json;

use crate::Hinted;
use crate::cli::{
    Compression, FileCommand, FileDecryptArgs, FileEncryptArgs, FileInspectArgs, FileRewrapArgs,
};
use crate::filekeys;

/// Runs one `coffer file` subcommand.
pub fn run(cmd: &FileCommand) -> Result<()> {
    match cmd {
        FileCommand::Encrypt(a) => encrypt(a),
        FileCommand::Decrypt(a) => decrypt(a),
        FileCommand::Inspect(a) => inspect(a),
        FileCommand::Rewrap(a) => rewrap(a),
    }
}

/// Turns a stream error into one the exit status understands: authentication failures exit 1.
pub(crate) fn stream_error(e: io::Error) -> anyhow::Error {
    if let Some(core) = e.get_ref().and_then(|i| i.downcast_ref::<CoreError>()) {
        return anyhow!(core.clone());
    }
    if e.kind() == io::ErrorKind::PermissionDenied {
        return Hinted::new(CoreError::Decrypt, e.to_string()).into();
    }
    anyhow!(e)
}

/// A file read at offsets (`pread`), for the encryptor's and decryptor's workers.
struct FileAt<'a>(&'a File);

impl ReadAt for FileAt<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self.0, buf, offset)
    }
}

/// Buffer size of file input and output: large reads and writes go straight through.
const IO_BUFFER: usize = 64 * 1024;

/// A temporary output file beside its target, renamed into place by `commit`; dropped without
/// `commit` (any failure), it is removed, so no partial file is ever left looking complete.
pub(crate) struct Partial {
    paths: Option<(PathBuf, PathBuf)>,
}

impl Partial {
    pub(crate) fn commit(mut self) -> Result<()> {
        if let Some((tmp, path)) = self.paths.take() {
            std::fs::rename(&tmp, &path).with_context(|| {
                format!("cannot move the output into place at {}", path.display())
            })?;
        }
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some((tmp, _)) = &self.paths {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Opens the output: stdout, or a new temporary file beside `path`.
pub(crate) fn output(path: Option<&Path>) -> Result<(Box<dyn Write>, Partial)> {
    let Some(path) = path else {
        return Ok((
            Box::new(BufWriter::new(io::stdout().lock())),
            Partial { paths: None },
        ));
    };
    if path.exists() {
        bail!(
            "{} exists; coffer never overwrites an output file",
            path.display()
        );
    }
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.coffer-partial", name.to_string_lossy()));
    // Owner-only, like `coffer keygen -o`: a decrypted file or restored dump is plaintext.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    Ok((
        // Small enough that the encryptor's and decryptor's batch-sized writes bypass it.
        Box::new(BufWriter::with_capacity(IO_BUFFER, file)),
        Partial {
            paths: Some((tmp, path.to_owned())),
        },
    ))
}

fn input(path: Option<&Path>) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
    match path {
        None => Ok((Box::new(io::stdin()), None)),
        Some(p) => {
            let f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            let len = f.metadata().ok().map(|m| m.len());
            // Small enough that batch-sized and frame-sized reads bypass it.
            Ok((Box::new(BufReader::with_capacity(IO_BUFFER, f)), len))
        }
    }
}

/// A progress bar on a terminal for inputs of known size above 8 MiB.
pub(crate) fn progress(len: Option<u64>, what: &str) -> Option<indicatif::ProgressBar> {
    let len = len.filter(|&l| l > 8 << 20)?;
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    Some(bar)
}

fn encrypt(a: &FileEncryptArgs) -> Result<()> {
    let pairs = a
        .context
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .ok_or_else(|| anyhow!("--context takes KEY=VALUE, got '{kv}'"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut context = EncryptionContext::user_context(pairs).context("--context")?;
    if a.compress == Some(Compression::Zstd) {
        context.insert(COMPRESSION, "zstd")?;
    }
    let rt = filekeys::runtime()?;
    let (data_key, edks) = rt.block_on(async {
        let keyrings = match (&a.kek, &a.scope) {
            (Some(kek), _) => {
                coffer_assembly::file_keyrings_for_encrypt(
                    kek,
                    &a.key_name,
                    a.recovery_kek.as_deref(),
                    &a.recovery_name,
                )
                .await?
            }
            (None, Some(scope)) => {
                vec![coffer_assembly::scope_file_keyring(&a.config, scope).await?]
            }
            (None, None) => bail!("give --kek REF or --scope SCOPE"),
        };
        anyhow::Ok(files::seal(&coffer_assembly::refs(&keyrings), &context).await?)
    })?;
    // A regular file, not compressed: every worker reads its own frames (positional reads).
    if let (Some(path), None) = (a.input.as_deref(), a.compress) {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let meta = file.metadata().context("reading the input's metadata")?;
        if meta.is_file() {
            let bar = progress(Some(meta.len()), "encrypting");
            let (writer, partial) = output(a.output.as_deref())?;
            let writer = match &bar {
                Some(b) => Box::new(b.wrap_write(writer)) as Box<dyn Write>,
                None => writer,
            };
            let enc = Encryptor::with_data_key(writer, &data_key, edks, &context, a.frame_size)
                .map_err(stream_error)?
                .with_threads(threads(a.threads));
            drop(data_key);
            let writer = enc
                .write_at(&FileAt(&file), meta.len())
                .map_err(|e| anyhow!(e).context("encrypting"))?;
            drop(writer);
            // A file that grew while it was read would be encrypted only in part.
            let now = file
                .metadata()
                .context("reading the input's metadata")?
                .len();
            if now != meta.len() {
                bail!(
                    "{} changed size while it was being encrypted ({} → {now} bytes); \
                     nothing was written: encrypt it again once it is complete",
                    path.display(),
                    meta.len()
                );
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return partial.commit();
        }
    }
    let (src, len) = input(a.input.as_deref())?;
    let bar = progress(len, "encrypting");
    let src = match &bar {
        Some(b) => Box::new(b.wrap_read(src)) as Box<dyn Read + Send>,
        None => src,
    };
    let src = match a.compress {
        Some(Compression::Zstd) => {
            Box::new(zstd::stream::read::Encoder::new(src, ZSTD_LEVEL).context("starting zstd")?)
                as Box<dyn Read + Send>
        }
        None => src,
    };
    let (writer, partial) = output(a.output.as_deref())?;
    let mut enc = Encryptor::with_data_key(writer, &data_key, edks, &context, a.frame_size)
        .map_err(stream_error)?
        .with_threads(threads(a.threads));
    drop(data_key);
    enc.write_from_threaded(src)
        .map_err(|e| anyhow!(e).context("encrypting"))?;
    let mut writer = enc.finish().context("writing the output")?;
    writer.flush().context("writing the output")?;
    drop(writer);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    partial.commit()
}

/// The context entry that records compression before encryption.
const COMPRESSION: &str = "coffer:compression";
const ZSTD_LEVEL: i32 = 3;

/// What the authenticated context says about compression: `Ok(true)` for zstd.
fn compressed(context: &EncryptionContext) -> Result<bool> {
    match context.get(COMPRESSION) {
        None => Ok(false),
        Some("zstd") => Ok(true),
        Some(other) => bail!(
            "this file was compressed with '{other}' before encryption, which this coffer does not know"
        ),
    }
}

/// `--threads`: 0 (the default) means every core.
pub(crate) fn threads(n: usize) -> usize {
    if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    }
}

/// Reads the header at the front of `src` and opens its data key with the `--kek` given.
fn open_message<R: Read>(src: &mut R, kek: &str) -> Result<(MessageHeader, coffer_core::Dek)> {
    let header = MessageHeader::read_from(src, &Limits::default()).map_err(stream_error)?;
    let rt = filekeys::runtime()?;
    let data_key = rt.block_on(async {
        let keyrings = coffer_assembly::file_keyrings_for_decrypt(&[kek]).await?;
        files::open(&header, &coffer_assembly::refs(&keyrings))
            .await
            .map_err(key_error)
    })?;
    Ok((header, data_key))
}

/// As [`open_message`], with `--kek` or with `--scope` (the key store of `config`).
fn open_with(
    src: &mut impl Read,
    kek: Option<&str>,
    scope: Option<&str>,
    config: &Path,
) -> Result<(MessageHeader, coffer_core::Dek)> {
    match (kek, scope) {
        (Some(kek), _) => open_message(src, kek),
        (None, Some(scope)) => {
            let header = MessageHeader::read_from(src, &Limits::default()).map_err(stream_error)?;
            let rt = filekeys::runtime()?;
            let data_key = rt
                .block_on(coffer_assembly::open_scope_file(config, scope, &header))
                .map_err(assembly_key_error)?;
            Ok((header, data_key))
        }
        (None, None) => bail!("give --kek REF or --scope SCOPE"),
    }
}

/// A message none of the keys opens exits 1, like any other authentication failure.
pub(crate) fn key_error(e: coffer_keys::Error) -> anyhow::Error {
    match e {
        coffer_keys::Error::NoMatchingKey { .. } | coffer_keys::Error::WrongKek { .. } => {
            Hinted::new(CoreError::Decrypt, e.to_string()).into()
        }
        other => anyhow!(other),
    }
}

/// [`key_error`] for an error of coffer-assembly.
fn assembly_key_error(e: coffer_assembly::Error) -> anyhow::Error {
    match e {
        coffer_assembly::Error::Keys(k) => key_error(k),
        other => anyhow!(other),
    }
}

pub(crate) fn parse_range(text: &str) -> Result<(u64, u64)> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| anyhow!("--range takes START-END (inclusive byte offsets), e.g. 0-1023"))?;
    let (a, b): (u64, u64) = (
        a.trim()
            .parse()
            .map_err(|_| anyhow!("--range: '{a}' is not a byte offset"))?,
        b.trim()
            .parse()
            .map_err(|_| anyhow!("--range: '{b}' is not a byte offset"))?,
    );
    if b < a {
        bail!("--range: END is before START");
    }
    Ok((a, b))
}

fn decrypt(a: &FileDecryptArgs) -> Result<()> {
    if let Some(range) = &a.range {
        let (start, end) = parse_range(range)?;
        let path = a
            .input
            .as_deref()
            .ok_or_else(|| anyhow!("--range needs an input file (stdin cannot seek)"))?;
        let mut f = BufReader::new(
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        );
        let (header, data_key) =
            open_with(&mut f, a.kek.as_deref(), a.scope.as_deref(), &a.config)?;
        let mut d = SeekableDecryptor::with_data_key(f, header, &data_key).map_err(stream_error)?;
        if compressed(&d.header().context)? {
            bail!(
                "--range reads plaintext offsets, but this file was compressed before encryption; \
                 decrypt it whole"
            );
        }
        let total = d.layout().plaintext_len();
        if end >= total {
            bail!("--range {start}-{end} goes past the end of the plaintext ({total} bytes)");
        }
        let bytes = d.read_range(start..end + 1).map_err(stream_error)?;
        let (mut writer, partial) = output(a.output.as_deref())?;
        writer.write_all(&bytes).context("writing the output")?;
        writer.flush().context("writing the output")?;
        drop(writer);
        return partial.commit();
    }
    // A regular file: every worker reads, checks and opens its own frames (positional reads).
    if let Some(path) = a.input.as_deref() {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let meta = file.metadata().context("reading the input's metadata")?;
        if meta.is_file() {
            let (header, data_key) = open_with(
                &mut BufReader::with_capacity(IO_BUFFER, &file),
                a.kek.as_deref(),
                a.scope.as_deref(),
                &a.config,
            )?;
            let bar = progress(Some(meta.len()), "decrypting");
            let (writer, partial) = output(a.output.as_deref())?;
            let writer = match &bar {
                Some(b) => Box::new(b.wrap_write(writer)) as Box<dyn Write>,
                None => writer,
            };
            let mut writer = if compressed(&header.context)? {
                Box::new(zstd::stream::write::Decoder::new(writer).context("starting zstd")?)
                    as Box<dyn Write>
            } else {
                writer
            };
            decrypt_at(
                &FileAt(&file),
                meta.len(),
                &header,
                &data_key,
                &mut writer,
                threads(a.threads),
            )
            .map_err(stream_error)?;
            drop(data_key);
            writer.flush().context("writing the output")?;
            drop(writer);
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return partial.commit();
        }
    }
    let (src, len) = input(a.input.as_deref())?;
    let bar = progress(len, "decrypting");
    let mut src = match &bar {
        Some(b) => Box::new(b.wrap_read(src)) as Box<dyn Read + Send>,
        None => src,
    };
    let (header, data_key) = open_with(&mut src, a.kek.as_deref(), a.scope.as_deref(), &a.config)?;
    let dec = Decryptor::with_data_key(src, header, &data_key)
        .map_err(stream_error)?
        .with_threads(threads(a.threads));
    drop(data_key);
    let (writer, partial) = output(a.output.as_deref())?;
    let mut writer = if compressed(dec.context())? {
        Box::new(zstd::stream::write::Decoder::new(writer).context("starting zstd")?)
            as Box<dyn Write>
    } else {
        writer
    };
    dec.copy_to(&mut writer).map_err(stream_error)?;
    writer.flush().context("writing the output")?;
    drop(writer);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    partial.commit()
}

fn inspect(a: &FileInspectArgs) -> Result<()> {
    let f = File::open(&a.input).with_context(|| format!("cannot open {}", a.input.display()))?;
    let h = MessageHeader::read_from(&mut BufReader::new(f), &Limits::default())
        .map_err(stream_error)?;
    let edks: Vec<_> = h
        .edks
        .iter()
        .map(|e| {
            json!({
                "provider_id": e.provider_id,
                "key_name": files::key_name(e),
            })
        })
        .collect();
    let context: serde_json::Map<String, serde_json::Value> = h
        .context
        .iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    let text = if a.json {
        serde_json::to_string_pretty(&json!({
            "format": "aws-encryption-sdk-v2",
            "suite": "0x0478 AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
            "message_id": hex::encode(h.message_id),
            "frame_size": h.frame_len,
            "header_bytes": h.len(),
            "encrypted_data_keys": edks,
            "encryption_context": context,
        }))? + "\n"
    } else {
        let mut t = format!(
            "format: AWS Encryption SDK message v2, suite 0x0478 (AES-256-GCM, HKDF-SHA-512, key commitment)\nframe size: {} bytes\nheader: {} bytes (not authenticated by inspect: it has no key)\nencrypted data keys:\n",
            h.frame_len,
            h.len()
        );
        for e in &h.edks {
            t.push_str(&format!(
                "  {} / {}\n",
                e.provider_id,
                files::key_name(e).unwrap_or("?")
            ));
        }
        t.push_str("encryption context:\n");
        for (k, v) in h.context.iter() {
            t.push_str(&format!("  {k} = {v}\n"));
        }
        t
    };
    io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

/// `coffer file rewrap`: opens the data key with `--kek`, wraps it for `--new-kek` (and the
/// recovery key), writes the new header and copies the frames unchanged.
fn rewrap(a: &FileRewrapArgs) -> Result<()> {
    let path = &a.input;
    let mut f = BufReader::new(
        File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
    );
    let (header, data_key) = open_message(&mut f, &a.kek)?;
    let rt = filekeys::runtime()?;
    let edks = rt.block_on(async {
        let keyrings = coffer_assembly::file_keyrings_for_encrypt(
            &a.new_kek,
            &a.key_name,
            a.recovery_kek.as_deref(),
            &a.recovery_name,
        )
        .await?;
        anyhow::Ok(
            files::wrap(
                &data_key,
                &coffer_assembly::refs(&keyrings),
                &header.context,
            )
            .await?,
        )
    })?;
    let new_header = rewrap_header(&header, &data_key, &edks)?;
    drop(data_key);
    let (mut writer, partial) = output(a.output.as_deref())?;
    writer
        .write_all(&new_header)
        .context("writing the output")?;
    io::copy(&mut f, &mut writer).context("copying the frames")?;
    writer.flush().context("writing the output")?;
    drop(writer);
    partial.commit()
}

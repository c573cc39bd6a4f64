//! `coffer s3 put|get`: S3 objects encrypted on this machine before upload (coffer-s3). The
//! arguments live here; with the `s3` cargo feature off, the commands say how to get them.

// Without the feature the arguments are parsed but never read.
#![cfg_attr(not(feature = "s3"), allow(dead_code))]

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

/// Help shown after `coffer s3 --help`.
pub const S3_AFTER_HELP: &str = "Objects are AWS Encryption SDK messages, exactly as `coffer file encrypt` writes them, encrypted
before they leave this machine: S3 only ever stores ciphertext. A download with any S3 client
decrypts with `coffer file decrypt` or the official AWS Encryption SDKs.

In plaintext beside the ciphertext, readable by whoever can read the bucket: the object key, its
size (plaintext size plus a small overhead), --content-type and --meta (not authenticated: anyone
who can write to the bucket can change them) and --context (authenticated, not encrypted). Keep
names and personal data out of all of them. --content-type is also written to the encryption
context as content-type, where it is authenticated.

Credentials, region and endpoint come from the usual environment variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL); --endpoint and
--region override them. An http:// endpoint (MinIO, moto) is allowed when named.

Exit status: 0 success; 1 the object does not authenticate (wrong key, tampered, truncated);
2 usage, input or S3 error (no such bucket or object, access denied, network). A failed upload is
aborted: no object appears. A failed download removes the output file (-o).

Examples:
  export COFFER_KEK=$(coffer keygen)
  coffer s3 put scans/2024/ct-17.dcm ct-17.dcm --kek env:COFFER_KEK --content-type application/dicom \\
      --meta study=ct-17 --context patient=hmac:3f9a...
  pg_dump mydb | coffer s3 put backups/mydb.dump --kek env:COFFER_KEK --recovery-kek file:offline.key
  coffer s3 get scans/2024/ct-17.dcm -o ct-17.dcm --kek env:COFFER_KEK
  coffer s3 get scans/2024/ct-17.dcm --kek env:COFFER_KEK --range 0-131071 > head.bin";

/// The `coffer s3` subcommands.
#[derive(Debug, Subcommand)]
pub enum S3Command {
    /// Encrypt a file or stdin and upload it (streaming multipart upload)
    Put(S3PutArgs),
    /// Download and decrypt an object, or only a byte range of it
    Get(S3GetArgs),
}

/// Where S3 is.
#[derive(Debug, Args)]
pub struct S3Endpoint {
    /// S3-compatible endpoint URL (default: AWS_ENDPOINT_URL, else AWS S3)
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
}

/// `coffer s3 put`.
#[derive(Debug, Args)]
pub struct S3PutArgs {
    /// The object: BUCKET/KEY (or s3://BUCKET/KEY)
    #[arg(value_name = "BUCKET/KEY")]
    pub target: String,
    /// Input file (stdin when omitted)
    #[arg(value_name = "IN")]
    pub input: Option<PathBuf>,
    /// The keys the data key is wrapped for.
    #[command(flatten)]
    pub keys: crate::cli::WrapKeys,
    /// Authenticated metadata in the header, KEY=VALUE (repeatable); plaintext: no secrets or PII
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub context: Vec<String>,
    /// The S3 Content-Type (also written to the encryption context as content-type)
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// S3 user metadata, KEY=VALUE (repeatable); plaintext and unauthenticated
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Plaintext bytes per frame (the unit of ranged reads)
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub frame_size: u32,
    /// Bytes per multipart part (5 MiB to 5 GiB; S3 allows 10 000 parts)
    #[arg(long, value_name = "BYTES", default_value_t = 8 * 1024 * 1024)]
    pub part_size: usize,
    /// Threads sealing frames (0: every core)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Where S3 is.
    #[command(flatten)]
    pub s3: S3Endpoint,
}

/// `coffer s3 get`.
#[derive(Debug, Args)]
pub struct S3GetArgs {
    /// The object: BUCKET/KEY (or s3://BUCKET/KEY)
    #[arg(value_name = "BUCKET/KEY")]
    pub target: String,
    /// Output file (stdout when omitted); written beside it first, renamed when complete
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// The key (env:VAR, file:PATH, pkcs11:…, aws-kms:…); tried on every data key the header names
    #[arg(long, value_name = "REF")]
    pub kek: String,
    /// Only plaintext bytes START-END (inclusive), fetching only the frames they touch
    #[arg(long, value_name = "START-END")]
    pub range: Option<String>,
    /// Where S3 is.
    #[command(flatten)]
    pub s3: S3Endpoint,
}

/// Runs one `coffer s3` subcommand.
#[cfg(feature = "s3")]
pub fn run(cmd: &S3Command) -> Result<()> {
    match cmd {
        S3Command::Put(a) => imp::put(a),
        S3Command::Get(a) => imp::get(a),
    }
}

/// Without the `s3` feature: says how to get it.
#[cfg(not(feature = "s3"))]
pub fn run(_cmd: &S3Command) -> Result<()> {
    anyhow::bail!("this coffer was built without S3 support (rebuild with --features s3)")
}

#[cfg(feature = "s3")]
mod imp {
    use std::collections::BTreeMap;
    use std::fs::File;
    use std::io::{self, BufReader, Read, Write as _};
    use std::path::Path as FsPath;

    use anyhow::{Context as _, Result, anyhow};
    use coffer_core::stream::EncryptionContext;
    use coffer_s3::{Bucket, ConnectOptions, Error as S3Error, Path, PutOptions};

    use super::{S3Endpoint, S3GetArgs, S3PutArgs};
    use crate::file::{key_error, output, parse_range, progress, threads};
    use crate::filekeys;

    /// `BUCKET/KEY` or `s3://BUCKET/KEY`.
    fn target(text: &str) -> Result<(String, Path)> {
        let rest = text.strip_prefix("s3://").unwrap_or(text);
        let (bucket, key) = rest
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            .ok_or_else(|| anyhow!("'{text}': name the object as BUCKET/KEY"))?;
        let key = Path::parse(key).map_err(|e| anyhow!("'{text}': not an object key: {e}"))?;
        Ok((bucket.to_owned(), key))
    }

    fn connect(bucket: &str, s3: &S3Endpoint) -> Result<Bucket> {
        let options = ConnectOptions {
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
        };
        Bucket::connect(bucket, &options).map_err(s3_error)
    }

    /// Classifies a coffer-s3 error for the exit status: authentication failures exit 1.
    fn s3_error(e: S3Error) -> anyhow::Error {
        match e {
            S3Error::Crypto(core) => anyhow!(core),
            S3Error::Keys(k) => key_error(k),
            other => anyhow!(other),
        }
    }

    fn pairs(items: &[String], option: &str) -> Result<Vec<(String, String)>> {
        items
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| anyhow!("{option} takes KEY=VALUE, got '{kv}'"))
            })
            .collect()
    }

    /// The input as a `Send` reader (it is read on a blocking thread) and its size if known.
    fn input(path: Option<&FsPath>) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
        match path {
            None => Ok((Box::new(io::stdin()), None)),
            Some(p) => {
                let f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
                let len = f.metadata().ok().map(|m| m.len());
                Ok((Box::new(BufReader::with_capacity(1 << 20, f)), len))
            }
        }
    }

    pub(super) fn put(a: &S3PutArgs) -> Result<()> {
        let (name, key) = target(&a.target)?;
        let mut context = EncryptionContext::new();
        for (k, v) in pairs(&a.context, "--context")? {
            context.insert(k, v)?;
        }
        let metadata: BTreeMap<String, String> = pairs(&a.meta, "--meta")?.into_iter().collect();
        let opts = PutOptions {
            frame_len: a.frame_size,
            content_type: a.content_type.clone(),
            metadata,
            part_size: a.part_size,
            threads: threads(a.threads),
            ..PutOptions::default()
        };
        let bucket = connect(&name, &a.s3)?;
        let (src, len) = input(a.input.as_deref())?;
        let bar = progress(len, "encrypting and uploading");
        let src: Box<dyn Read + Send> = match &bar {
            Some(b) => Box::new(b.wrap_read(src)),
            None => src,
        };
        let rt = filekeys::runtime()?;
        rt.block_on(async {
            let keyrings = filekeys::for_keys(&a.keys).await?;
            let refs = coffer_assembly::refs(&keyrings);
            bucket
                .put(&key, src, &refs, &context, &opts)
                .await
                .map_err(s3_error)
        })?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(())
    }

    pub(super) fn get(a: &S3GetArgs) -> Result<()> {
        let (name, key) = target(&a.target)?;
        let bucket = connect(&name, &a.s3)?;
        let rt = filekeys::runtime()?;
        let keyrings = rt.block_on(coffer_assembly::file_keyrings_for_decrypt(&[a
            .kek
            .as_str()]))?;
        let refs = coffer_assembly::refs(&keyrings);
        if let Some(range) = &a.range {
            let (start, end) = parse_range(range)?;
            let out = rt
                .block_on(bucket.get_range(&key, &refs, start..end.saturating_add(1)))
                .map_err(|e| match e {
                    S3Error::Range { len, .. } => anyhow!(
                        "--range {start}-{end} goes past the end of the plaintext ({len} bytes)"
                    ),
                    e => s3_error(e),
                })?;
            let (mut writer, partial) = output(a.output.as_deref())?;
            writer
                .write_all(&out.plaintext)
                .context("writing the output")?;
            writer.flush().context("writing the output")?;
            drop(writer);
            return partial.commit();
        }
        // The download runs on the runtime's threads; the plaintext is read here.
        let mut reader = rt.block_on(bucket.open(&key, &refs)).map_err(s3_error)?;
        let (writer, partial) = output(a.output.as_deref())?;
        let bar = progress(Some(reader.info().size), "downloading and decrypting");
        let mut writer = match &bar {
            Some(b) => Box::new(b.wrap_write(writer)),
            None => writer,
        };
        reader.copy_to(&mut writer).map_err(|e| match e {
            S3Error::Output(io) => anyhow!(io).context("writing the output"),
            e => s3_error(e),
        })?;
        writer.flush().context("writing the output")?;
        drop(writer);
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        partial.commit()
    }
}

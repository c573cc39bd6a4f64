//! The command line: clap definitions, and the help text that teaches the tool.
//!
//! Nothing here touches keys or data; `main` dispatches the parsed [`Cli`] to the command modules.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use coffer_core::Normalizer;
use coffer_core::blind_index::{MAX_BITS, MIN_BITS};

/// The exit-status table, shared by the top-level help and each `field` subcommand's help.
macro_rules! exit_status {
    () => {
        "Exit status:
  0  success
  1  decryption failed: wrong key, key version, mode, scope, column, context or domain; a
     tampered or truncated value; or input that is not a Coffer ciphertext
  2  usage or input error: bad options, key reference, key file or key; an algorithm this
     build refuses (FIPS); an authenticated NULL read without --null-ok"
    };
}

/// How `--key` names a key, shared by the top-level help and the `field` help.
macro_rules! key_refs {
    () => {
        "Key references (--key REF, or the COFFER_KEY_REF environment variable):
  env:VAR    a standard-base64 key in environment variable VAR
  file:PATH  a standard-base64 key in a file only its owner can access (chmod 600)
A key itself is never accepted on the command line, where other users can see it."
    };
}

const TOP_AFTER_HELP: &str = concat!(
    key_refs!(),
    "\n\n",
    exit_status!(),
    "

Examples:
  export COFFER_KEY=$(coffer keygen)
  echo -n 123-45-6789 | coffer field encrypt --key env:COFFER_KEY --column ssn --context patient-42
  coffer field decrypt --key env:COFFER_KEY --column ssn --context patient-42 --value cf1:...
  coffer field blind-index --key env:COFFER_KEY --column ssn --normalize digits --value 123-45-6789
  coffer keygen --out coffer.key && coffer field encrypt --key file:coffer.key --value x"
);

const ENCRYPT_AFTER_HELP: &str = concat!(
    "The value comes from --value or else from stdin. From stdin exactly one trailing newline is
removed, so `echo 123 | coffer field encrypt` seals \"123\"; pass --raw-stdin to keep it.

The output is the text form (cf1:...) and a newline, or with --hex the binary form in hex.
Decrypt with the same key, --key-version, --mode, --tag-bits, --scope, --column, --context and
--domain values: every one of them is bound into the ciphertext.

",
    exit_status!(),
    "

Examples:
  export COFFER_KEY=$(coffer keygen)
  echo -n 123-45-6789 | coffer field encrypt --key env:COFFER_KEY --column ssn --context patient-42
  coffer field encrypt --key env:COFFER_KEY --mode deterministic --column email --domain tenant-1 \\
      --value ann@example.org
  coffer field encrypt --key env:COFFER_KEY --column notes --context patient-42 --null"
);

const DECRYPT_AFTER_HELP: &str = concat!(
    "The ciphertext comes from --value or else from stdin; surrounding white space is ignored.
The plaintext is written to stdout exactly as it was sealed; a newline is added only when
stdout is a terminal. An authenticated NULL prints nothing: with --null-ok the exit status is
0, without it coffer says the value is NULL and exits with 2, so a NULL is never silently
taken for an empty value.

",
    exit_status!(),
    "

Examples:
  coffer field decrypt --key env:COFFER_KEY --column ssn --context patient-42 --value cf1:...
  psql -Atc 'select ssn from patients where id = 42' \\
      | coffer field decrypt --key file:coffer.key --column ssn --context patient-42"
);

const BLIND_INDEX_AFTER_HELP: &str = concat!(
    "Several --value options make a compound index (their order matters); without --value one
value is read from stdin, with exactly one trailing newline removed (--raw-stdin keeps it).
The index is printed as lowercase hex: ceil(bits / 8) bytes, unused low bits zero.

Normalizers, applied in order to every value: trim, casefold, nfc, digits (keep ASCII digits),
last:N (keep the last N characters). Give them comma-separated or repeat --normalize.

",
    exit_status!(),
    "

Examples:
  coffer field blind-index --key env:COFFER_KEY --column ssn --normalize digits --value 123-45-6789
  coffer field blind-index --key env:COFFER_KEY --column ssn --name last4 --bits 16 \\
      --normalize digits,last:4 --value 123-45-6789
  coffer field blind-index --key env:COFFER_KEY --column name --name name_dob \\
      --normalize casefold --value Ann --value 1980-02-29"
);

/// Application-layer encryption for database fields, from the shell.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, after_help = TOP_AFTER_HELP)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new random 256-bit key as standard base64
    Keygen(KeygenArgs),
    /// Encrypt, decrypt or blind-index one field value
    #[command(subcommand, after_help = concat!(key_refs!(), "\n\n", exit_status!()))]
    Field(FieldCommand),
    /// Show the cryptographic module this binary links and whether it runs in FIPS mode
    FipsStatus(FipsStatusArgs),
    /// Encrypt, decrypt or inspect whole files and streams (AWS Encryption SDK format)
    #[command(subcommand, after_help = FILE_AFTER_HELP)]
    File(FileCommand),
    /// Manage the key store: scopes, DEK versions, KEKs, rotation, crypto-shredding, audit
    #[command(subcommand, after_help = KEYS_AFTER_HELP)]
    Keys(KeysCommand),
    /// Put and get S3 objects encrypted on this machine (client-side encryption)
    #[command(subcommand, after_help = crate::s3::S3_AFTER_HELP)]
    S3(crate::s3::S3Command),
    /// Back up a PostgreSQL database: pg_dump, encrypted into parts, with an encrypted manifest
    #[command(after_help = crate::backup::BACKUP_AFTER_HELP)]
    Backup(crate::backup::BackupArgs),
    /// Check a backup against its manifest and restore it (pg_restore, a plain dump, or verify only)
    #[command(after_help = crate::backup::RESTORE_AFTER_HELP)]
    Restore(crate::backup::RestoreArgs),
    /// Move encrypted columns to the active key version, or plaintext columns into encrypted ones (PostgreSQL)
    #[command(after_help = crate::reencrypt::REENCRYPT_AFTER_HELP)]
    Reencrypt(crate::reencrypt::ReencryptArgs),
    /// Plan blind-index widths: what an index leaks against what a query costs
    #[command(subcommand)]
    Index(crate::index::IndexCommand),
    /// Run the encryption service: HTTP/JSON batch encryption for tenants, with metrics and audit
    #[command(after_help = crate::serve::SERVE_AFTER_HELP)]
    Serve(crate::serve::ServeArgs),
    /// Create, list and revoke the service's API tokens
    #[command(subcommand, after_help = crate::serve::TOKENS_AFTER_HELP)]
    Tokens(crate::serve::TokensCommand),
}

const KEYS_AFTER_HELP: &str =
    "Every `coffer keys` command reads coffer.toml (--config, or COFFER_CONFIG, or ./coffer.toml),
written by `coffer keys init`; COFFER_STORE_URL and COFFER_REDIS_URL override it. The options are
documented in docs/KEYS.md.

KEK sources (--kek, and `source` in coffer.toml):
  env:VAR               a standard-base64 256-bit key in environment variable VAR
  file:PATH             the same in a file only its owner can access (chmod 600)
  passphrase:env:VAR    a passphrase, stretched with PBKDF2 (or --kdf argon2id)
  pkcs11:module=…;token=…;key=…;pin-env=VAR   a key generated on an HSM token
  aws-kms:KEY[;region=…][;endpoint=…]        an AWS KMS key (builds with --features aws-kms)

Exit status: 0 success; 1 a key or value failed to authenticate (wrong KEK, tampering);
2 usage, configuration or state error (unknown or destroyed scope, …); 3 the key store or a
KEK provider is unreachable.

Examples:
  export COFFER_KEK=$(coffer keygen)
  coffer keys init --store sqlite:keys.db --kek env:COFFER_KEK
  coffer keys create-scope tenant:acme
  coffer keys rotate tenant:acme
  coffer keys list
  coffer keys audit --scope tenant:acme --since 7d --verify";

const FILE_AFTER_HELP: &str = "Files are AWS Encryption SDK messages (format v2, suite 0x0478: AES-256-GCM, HKDF-SHA-512,
key commitment), framed (64 KiB by default): the official AWS Encryption SDKs decrypt them with a raw
AES keyring holding the same key (namespace \"coffer\", the key name given here).

Keys (--kek, --recovery-kek, --new-kek):
  env:VAR, file:PATH   a standard-base64 256-bit key (raw AES keyring, namespace \"coffer\")
  pkcs11:module=...;token=...;key=...;pin-env=...   an AES key on an HSM (same raw AES layout)
  aws-kms:KEY[;region=R][;endpoint=URL]   an AWS KMS key (the SDKs' KMS keyring layout; needs a
                       coffer built with --features aws-kms)
A file can carry several keys (--recovery-kek: an offline recovery key); any one decrypts it.
--scope SCOPE keys a file by a key-store scope instead (coffer.toml, `coffer keys`): the wrapping
key derives from the scope's DEK, so rotation, tenant isolation and crypto-shredding apply to the
file; such files have no recovery key by design.
`coffer file rewrap` replaces the keys of an encrypted file without decrypting its contents.

--compress zstd compresses before encrypting and records it in the authenticated encryption
context (coffer:compression=zstd); decrypt undoes it. The ciphertext length then reveals how well
the plaintext compresses: leave it off for data an attacker can partly choose.

Exit status: 0 success; 1 the file does not authenticate (wrong key, tampered, truncated);
2 usage or input error. On any failure the output file (-o) is removed; on stdout, frames that had
already verified have been written, so check the exit status before using the output.

Examples:
  export COFFER_KEK=$(coffer keygen)
  pg_dump mydb | coffer file encrypt --kek env:COFFER_KEK --context db=mydb -o mydb.dump.cfr
  coffer file decrypt --kek env:COFFER_KEK mydb.dump.cfr | psql restored
  coffer file decrypt --kek env:COFFER_KEK --range 0-1023 scan.dcm.cfr -o head.bin
  coffer file inspect --json scan.dcm.cfr
  coffer file rewrap --kek env:OLD_KEK --new-kek env:NEW_KEK --key-name main/v2 scan.dcm.cfr -o scan.v2.cfr";

/// The `coffer file` subcommands.
#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Encrypt a file or stdin
    Encrypt(FileEncryptArgs),
    /// Decrypt a file or stdin (or a byte range of a file)
    Decrypt(FileDecryptArgs),
    /// Show a file's header: suite, frame size, encrypted data keys, encryption context
    Inspect(FileInspectArgs),
    /// Replace a file's keys (re-wrap its data key) without touching its encrypted frames
    Rewrap(FileRewrapArgs),
}

/// Compression applied before encryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// zstd (level 3)
    Zstd,
}

/// `coffer file encrypt`.
#[derive(Debug, Args)]
pub struct FileEncryptArgs {
    /// Input file (stdin when omitted)
    pub input: Option<PathBuf>,
    /// Output file (stdout when omitted); written beside it first, renamed when complete
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// The key: env:VAR or file:PATH (a 256-bit key), pkcs11:…, aws-kms:…
    #[arg(long, value_name = "REF", required_unless_present = "scope")]
    pub kek: Option<String>,
    /// Key the file by a key-store scope instead (coffer.toml): destroying the scope shreds it
    #[arg(long, value_name = "SCOPE", conflicts_with_all = ["kek", "recovery_kek"])]
    pub scope: Option<String>,
    /// With --scope: the configuration file
    #[arg(
        long,
        value_name = "FILE",
        env = "COFFER_CONFIG",
        default_value = "coffer.toml"
    )]
    pub config: PathBuf,
    /// The key's name in the file header
    #[arg(long, value_name = "NAME", default_value = "default/v1")]
    pub key_name: String,
    /// A second key that can also decrypt (an offline recovery key)
    #[arg(long, value_name = "REF")]
    pub recovery_kek: Option<String>,
    /// The recovery key's name in the header
    #[arg(long, value_name = "NAME", default_value = "recovery/v1")]
    pub recovery_name: String,
    /// Authenticated metadata, KEY=VALUE (repeatable); stored in plaintext: no secrets or PII
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub context: Vec<String>,
    /// Plaintext bytes per frame
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub frame_size: u32,
    /// Compress before encrypting (recorded in the encryption context)
    #[arg(long, value_name = "ALGORITHM")]
    pub compress: Option<Compression>,
    /// Threads sealing or opening frames (0: every core)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
}

/// The keys a new message's data key is wrapped for: a primary KEK and an optional offline
/// recovery key, each under a name in the header.
#[derive(Debug, Args)]
pub struct WrapKeys {
    /// The key: env:VAR or file:PATH (a 256-bit key), pkcs11:…, aws-kms:…
    #[arg(long, value_name = "REF")]
    pub kek: String,
    /// The key's name in the header
    #[arg(long, value_name = "NAME", default_value = "default/v1")]
    pub key_name: String,
    /// A second key that can also decrypt (an offline recovery key)
    #[arg(long, value_name = "REF")]
    pub recovery_kek: Option<String>,
    /// The recovery key's name in the header
    #[arg(long, value_name = "NAME", default_value = "recovery/v1")]
    pub recovery_name: String,
}

/// `coffer file decrypt`.
#[derive(Debug, Args)]
pub struct FileDecryptArgs {
    /// Input file (stdin when omitted; --range needs a file)
    pub input: Option<PathBuf>,
    /// Output file (stdout when omitted); written beside it first, renamed when complete
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// The key (env:VAR, file:PATH, pkcs11:…, aws-kms:…); tried on every data key the header names
    #[arg(long, value_name = "REF", required_unless_present = "scope")]
    pub kek: Option<String>,
    /// The key-store scope the file is keyed by (coffer.toml)
    #[arg(long, value_name = "SCOPE", conflicts_with = "kek")]
    pub scope: Option<String>,
    /// With --scope: the configuration file
    #[arg(
        long,
        value_name = "FILE",
        env = "COFFER_CONFIG",
        default_value = "coffer.toml"
    )]
    pub config: PathBuf,
    /// Only plaintext bytes START-END (inclusive), reading only the frames they touch
    #[arg(long, value_name = "START-END")]
    pub range: Option<String>,
    /// Threads sealing or opening frames (0: every core)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
}

/// `coffer file rewrap`.
#[derive(Debug, Args)]
pub struct FileRewrapArgs {
    /// The encrypted file
    pub input: PathBuf,
    /// The re-keyed file (stdout when omitted); written beside it first, renamed when complete
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// A key that opens the file now
    #[arg(long, value_name = "REF")]
    pub kek: String,
    /// The key the file is wrapped for from now on
    #[arg(long, value_name = "REF")]
    pub new_kek: String,
    /// The new key's name in the header
    #[arg(long, value_name = "NAME", default_value = "default/v1")]
    pub key_name: String,
    /// An offline recovery key to add beside the new key
    #[arg(long, value_name = "REF")]
    pub recovery_kek: Option<String>,
    /// The recovery key's name in the header
    #[arg(long, value_name = "NAME", default_value = "recovery/v1")]
    pub recovery_name: String,
}

/// `coffer file inspect`.
#[derive(Debug, Args)]
pub struct FileInspectArgs {
    /// The encrypted file
    pub input: PathBuf,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// Where `coffer keys` reads its configuration.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The configuration file
    #[arg(
        long,
        value_name = "FILE",
        env = "COFFER_CONFIG",
        default_value = "coffer.toml"
    )]
    pub config: PathBuf,
    /// Who runs this, for the audit trail (default: the OS user, as user@host; `[audit] actor`
    /// names the service, not the people who run commands beside it)
    #[arg(long, value_name = "NAME", env = "COFFER_ACTOR")]
    pub actor: Option<String>,
}

/// The `coffer keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the key store, register the first KEK and write coffer.toml
    #[command(after_help = "Examples:
  export COFFER_KEK=$(coffer keygen)
  coffer keys init --store sqlite:/var/lib/coffer/keys.db --kek env:COFFER_KEK
  coffer keys init --store postgres://coffer@db/keys --kek passphrase:env:COFFER_PASSPHRASE
  coffer keys init --store sqlite:keys.db --kek env:COFFER_KEK \\
      --redis redis://127.0.0.1:6379 --cache-key env:COFFER_CACHE_KEY")]
    Init(InitArgs),
    /// Create scopes (a DEK chain each: a tenant, table, column, ballot or row)
    #[command(after_help = "Examples:
  coffer keys create-scope tenant:acme table:patients
  coffer keys create-scope --from-file patients.txt     # one scope a line, in bulk
  seq 1 1000000 | sed 's/^/patient:/' | coffer keys create-scope --from-file -

With --from-file, scopes are created in batches (one transaction per 5 000); a scope that
exists already is left as it is and counted, so an interrupted run can be repeated with the same
file. A destroyed scope's name is never reused: such lines are listed and the exit status is 2.")]
    CreateScope(CreateScopeArgs),
    /// Make a new DEK version of a scope active now (the old one becomes decrypt-only)
    Rotate(ScopesArgs),
    /// Add a KEK version to coffer.toml (generating it on an HSM token if needed) and register it
    #[command(after_help = "Examples:
  coffer keys add-kek --source env:COFFER_KEK_V2 --primary && coffer keys rotate-kek
  coffer keys add-kek --source 'pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=prod;key=coffer-kek-2;pin-env=HSM_PIN' --primary")]
    AddKek(AddKekArgs),
    /// Re-wrap every DEK under the primary KEK (online, resumable, touches no data)
    #[command(
        after_help = "To rotate the KEK: add the new version to coffer.toml as a second [[kek]] entry,
move `primary = true` to it, run `coffer keys rotate-kek`, and remove the old entry once it
reports nothing left to do. Interrupted runs resume where they stopped."
    )]
    RotateKek(RotateKekArgs),
    /// Crypto-shred scopes: erase their DEKs so their data can never be decrypted
    Destroy(DestroyArgs),
    /// Erase a data subject: crypto-shred SUBJECT and every scope under SUBJECT/
    #[command(after_help = "Examples:
  coffer keys erase-subject patient:1234          # patient:1234, patient:1234/visits, …
  coffer keys erase-subject patient:1234 --yes    # in scripts

Each scope is destroyed as `coffer keys destroy` does (tombstone ledger line, caches dropped in
every process) and audited as `erase`, naming the subject. A subject with no scope at all exits 2;
one whose scopes were all destroyed before says so and exits 0.")]
    EraseSubject(EraseSubjectArgs),
    /// Emergency rotation: new active version now, caches flushed, an alerting audit event
    Compromise(CompromiseArgs),
    /// Declare the key store restored from a backup: bump its epoch, skip version numbers
    #[command(
        after_help = "Run it once, right after restoring the key store and before any process serves
from it; then restart every process. See docs/KEYS.md §7.7 for the whole runbook."
    )]
    Restored(RestoredArgs),
    /// List scopes and their DEK versions, states and encryption counters, a page at a time
    #[command(after_help = "Examples:
  coffer keys list                                   # the first 100 scopes
  coffer keys list --prefix patient:12 --limit 20
  coffer keys list --prefix patient: --after patient:1234 --json
  coffer keys list tenant:acme table:patients        # these scopes only

Scopes come in code point order of their names. A full page ends with the command that shows
the next one (--after the last scope listed).")]
    List(ListArgs),
    /// Show (and verify) the audit trail
    Audit(AuditArgs),
    /// Check that every configured KEK opens the key store's canaries and its active DEKs
    Check(CheckArgs),
}

/// `coffer keys check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Unwrap the active DEK of every scope (by default, of at most --sample scopes drawn at random)
    #[arg(long)]
    pub all: bool,
    /// How many scopes' active DEKs to unwrap without --all
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub sample: usize,
}

/// `coffer keys init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The key store: sqlite:PATH (created if missing) or postgres://…
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// The first KEK's source (see `coffer keys --help`)
    #[arg(long, value_name = "REF")]
    pub kek: String,
    /// The KEK's name in coffer.toml and the key store
    #[arg(long, value_name = "NAME", default_value = "main")]
    pub kek_name: String,
    /// Passphrase KDF for passphrase: sources
    #[arg(long, value_enum, default_value = "pbkdf2")]
    pub kdf: KdfChoice,
    /// Redis URL for the shared L2 cache (needs --cache-key)
    #[arg(long, value_name = "URL", requires = "cache_key")]
    pub redis: Option<String>,
    /// The L2 cache key (env:VAR or file:PATH; its own secret, not a KEK)
    #[arg(long, value_name = "REF", requires = "redis")]
    pub cache_key: Option<String>,
}

/// Passphrase KDFs.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KdfChoice {
    /// PBKDF2-HMAC-SHA-256, 600 000 iterations (FIPS-approved)
    Pbkdf2,
    /// Argon2id, 64 MiB, 2 passes (not in FIPS builds)
    Argon2id,
}

/// Commands that take scopes.
#[derive(Debug, Args)]
pub struct ScopesArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Scopes, e.g. tenant:acme table:patients ballot:2026-11
    #[arg(required = true, value_name = "SCOPE")]
    pub scopes: Vec<String>,
}

/// `coffer keys create-scope`.
#[derive(Debug, Args)]
pub struct CreateScopeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Scopes, e.g. tenant:acme table:patients ballot:2026-11
    #[arg(value_name = "SCOPE", required_unless_present = "from_file")]
    pub scopes: Vec<String>,
    /// Read the scopes from FILE, one a line (`-` for standard input); blank lines and lines
    /// starting with # are skipped
    #[arg(long, value_name = "FILE", conflicts_with = "scopes")]
    pub from_file: Option<PathBuf>,
}

/// `coffer keys erase-subject`.
#[derive(Debug, Args)]
pub struct EraseSubjectArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The data subject's scope, e.g. patient:1234 (its sub-scopes are patient:1234/…)
    #[arg(value_name = "SUBJECT")]
    pub subject: String,
    /// Do not ask for confirmation (for scripts)
    #[arg(long)]
    pub yes: bool,
}

/// `coffer keys add-kek`.
#[derive(Debug, Args)]
pub struct AddKekArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The new KEK's source (see `coffer keys --help`)
    #[arg(long, value_name = "REF")]
    pub source: String,
    /// Its name (default: the primary KEK's name)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Its version (default: one above the highest version of that name)
    #[arg(long, value_name = "N")]
    pub version: Option<u32>,
    /// Make it the primary KEK (new DEKs, and `rotate-kek`, use it)
    #[arg(long)]
    pub primary: bool,
    /// Passphrase KDF for passphrase: sources
    #[arg(long, value_enum, default_value = "pbkdf2")]
    pub kdf: KdfChoice,
}

/// `coffer keys rotate-kek`.
#[derive(Debug, Args)]
pub struct RotateKekArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// DEKs re-wrapped per batch (one transaction each)
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
}

/// `coffer keys destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Scopes to crypto-shred
    #[arg(required = true, value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Do not ask for confirmation (for scripts)
    #[arg(long)]
    pub yes: bool,
}

/// `coffer keys compromise`.
#[derive(Debug, Args)]
pub struct CompromiseArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Scopes whose keys are compromised
    #[arg(required = true, value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Why (kept in the audit trail)
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "declared compromised by an operator"
    )]
    pub reason: String,
}

/// `coffer keys restored`.
#[derive(Debug, Args)]
pub struct RestoredArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Version numbers to skip in every scope (covering versions made after the backup)
    #[arg(long, default_value_t = 100)]
    pub gap: u32,
    /// Do not ask for confirmation (for scripts)
    #[arg(long)]
    pub yes: bool,
}

/// `coffer keys list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only these scopes
    #[arg(value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Only scopes whose name starts with this
    #[arg(long, value_name = "P", conflicts_with = "scopes")]
    pub prefix: Option<String>,
    /// Only scopes after this one (the last scope of the previous page)
    #[arg(long, value_name = "SCOPE", conflicts_with = "scopes")]
    pub after: Option<String>,
    /// At most this many scopes
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// `coffer keys audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only events of this scope
    #[arg(long, value_name = "SCOPE")]
    pub scope: Option<String>,
    /// Only events since: a date (2026-11-01), a time (2026-11-01T08:00:00Z) or an age (24h, 7d)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// At most this many events (the oldest first)
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Check the keyed hash chain over the whole trail (needs the KEKs of coffer.toml); exit 1
    /// if it is broken or does not meet the anchor, 2 if the keyed records cannot be checked
    #[arg(long)]
    pub verify: bool,
    /// With --verify: the anchor file written by `[audit] anchor_file` (`ID HASH`); the
    /// store must still hold that record with that hash (later records are fine)
    #[arg(
        long,
        value_name = "FILE",
        requires = "verify",
        conflicts_with = "expect_head"
    )]
    pub anchor: Option<std::path::PathBuf>,
    /// With --verify: the head as `ID:HASH` (from the anchor, the gauge or the log line)
    #[arg(long, value_name = "ID:HASH", requires = "verify")]
    pub expect_head: Option<String>,
    /// Print JSON lines
    #[arg(long)]
    pub json: bool,
}

/// `coffer keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the key to a new file with mode 0600 instead of stdout (never overwrites)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `coffer fips-status`.
#[derive(Debug, Args)]
pub struct FipsStatusArgs {
    /// Print a JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// The `coffer field` subcommands.
#[derive(Debug, Subcommand)]
pub enum FieldCommand {
    /// Encrypt one value (or an authenticated NULL)
    #[command(after_help = ENCRYPT_AFTER_HELP)]
    Encrypt(EncryptArgs),
    /// Decrypt one value
    #[command(after_help = DECRYPT_AFTER_HELP)]
    Decrypt(DecryptArgs),
    /// Compute the blind index of one value, or of several for a compound index
    #[command(after_help = BLIND_INDEX_AFTER_HELP)]
    BlindIndex(BlindIndexArgs),
}

/// `--key`, shared by every command that reads a key.
#[derive(Debug, Args)]
pub struct KeyArg {
    /// The key: env:VAR (a base64 key in an environment variable) or file:PATH (a base64 key in
    /// a file only its owner can access)
    #[arg(
        long,
        value_name = "REF",
        env = "COFFER_KEY_REF",
        hide_env_values = true
    )]
    pub key: String,
}

/// Field encryption modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// AES-256-GCM with a fresh random IV: equal values give different ciphertexts
    Randomized,
    /// AES-256-SIV: equal values give equal ciphertexts (searchable; not in the FIPS build)
    Deterministic,
}

/// GCM tag lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TagBits {
    /// 96-bit tag (the default; 25 bytes of overhead)
    #[value(name = "96")]
    Bits96,
    /// 128-bit tag (29 bytes of overhead)
    #[value(name = "128")]
    Bits128,
}

/// The key and context options of `field encrypt` and `field decrypt`.
#[derive(Debug, Args)]
pub struct CipherOpts {
    #[command(flatten)]
    pub key: KeyArg,

    /// Encryption mode
    #[arg(long, value_enum, default_value_t = Mode::Randomized)]
    pub mode: Mode,

    /// GCM tag length; randomized mode only [default: 96]
    #[arg(long, value_enum, value_name = "BITS")]
    pub tag_bits: Option<TagBits>,

    /// Key scope (e.g. the tenant the key belongs to)
    #[arg(long, value_name = "S", default_value = "default")]
    pub scope: String,

    /// Logical column id (stable across SQL renames)
    #[arg(long, value_name = "C", default_value = "default")]
    pub column: String,

    /// Row context component, e.g. the primary key; repeat for several, order matters.
    /// Randomized mode only
    #[arg(long = "context", value_name = "CTX")]
    pub context: Vec<String>,

    /// Search-domain component, e.g. the tenant; repeat for several, order matters
    #[arg(long = "domain", value_name = "D")]
    pub domain: Vec<String>,

    /// Version of the key, written into the ciphertext header
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub key_version: u32,

    /// Value type, bound into the ciphertext: a value sealed as text opens only as text
    #[arg(long = "type", value_enum, value_name = "TYPE", default_value_t = ValueKind::Bytes)]
    pub value_type: ValueKind,
}

/// The value types the CLI handles (docs/FORMAT.md table 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ValueKind {
    /// Raw bytes (BYTEA columns)
    Bytes,
    /// UTF-8 text (TEXT/VARCHAR columns); encrypt refuses input that is not UTF-8
    Text,
}

/// `coffer field encrypt`.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    #[command(flatten)]
    pub opts: CipherOpts,

    /// The plaintext. Other users can see it in the process list: prefer stdin for secrets
    #[arg(long, value_name = "V")]
    pub value: Option<String>,

    /// Keep a trailing newline read from stdin (by default exactly one "\n" is removed)
    #[arg(long, conflicts_with = "value")]
    pub raw_stdin: bool,

    /// Encrypt an authenticated NULL, distinct from every value including the empty one
    #[arg(long, conflicts_with_all = ["value", "raw_stdin"])]
    pub null: bool,

    /// Print the binary ciphertext as lowercase hex instead of the text form (cf1:...)
    #[arg(long)]
    pub hex: bool,
}

/// `coffer field decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    #[command(flatten)]
    pub opts: CipherOpts,

    /// The ciphertext (default: read from stdin)
    #[arg(long, value_name = "V")]
    pub value: Option<String>,

    /// Accept an authenticated NULL: print nothing and exit 0
    #[arg(long)]
    pub null_ok: bool,

    /// The ciphertext is the binary form in hex, not the text form (cf1:...)
    #[arg(long)]
    pub hex: bool,
}

/// `coffer field blind-index`.
#[derive(Debug, Args)]
pub struct BlindIndexArgs {
    #[command(flatten)]
    pub key: KeyArg,

    /// Logical column id
    #[arg(long, value_name = "C")]
    pub column: String,

    /// Index name: each name on a column has its own key
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub name: String,

    /// Index width in bits: fewer bits leak less and match more false positives (`coffer index
    /// plan` chooses one)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 32,
        value_parser = clap::value_parser!(u16).range(i64::from(MIN_BITS)..=i64::from(MAX_BITS))
    )]
    pub bits: u16,

    /// Normalizers, applied in order: trim, casefold, nfc, digits, last:N
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub normalize: Vec<Normalizer>,

    /// Search-domain component, e.g. the tenant; repeat for several, order matters
    #[arg(long = "domain", value_name = "D")]
    pub domain: Vec<String>,

    /// A value; repeat for a compound index (default: one value from stdin). Other users can see
    /// it in the process list
    #[arg(long = "value", value_name = "V")]
    pub value: Vec<String>,

    /// Keep a trailing newline read from stdin (by default exactly one "\n" is removed)
    #[arg(long, conflicts_with = "value")]
    pub raw_stdin: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}

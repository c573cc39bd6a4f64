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

    /// Index width in bits: fewer bits leak less and match more false positives
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

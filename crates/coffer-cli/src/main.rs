//! `coffer`: Coffer from the shell. Its commands:
//!
//! - `keygen`: a new random 256-bit key;
//! - `field encrypt | decrypt | blind-index`: one field value;
//! - `fips-status`: the linked cryptographic module and whether it runs in FIPS mode;
//! - `file encrypt | decrypt | inspect | rewrap`: whole files and streams (AWS Encryption SDK format);
//! - `keys init | create-scope | rotate | add-kek | rotate-kek | destroy | compromise | restored |
//!   list | audit | check`: the key store (scopes, DEK versions, KEKs, crypto-shredding, audit);
//! - `s3 put | get`: S3 objects encrypted on this machine;
//! - `backup`, `restore`: encrypted PostgreSQL backups, checked against their manifest on restore;
//! - `reencrypt`: encrypted PostgreSQL columns moved to the active key version, or plaintext
//!   columns into encrypted ones;
//! - `index plan`: blind-index widths, what an index leaks against what a query costs;
//! - `serve`: the encryption service (coffer-server);
//! - `tokens create | list | revoke`: the service's API tokens.
//!
//! The binary parses arguments, calls the library crates and renders the result; it holds no
//! cryptography of its own. Exit status: 0 success, 1 decryption or authentication failure, 2
//! usage, input or configuration error, 3 a key store, KEK provider or object store is
//! unreachable (each command's `--help` has the details).

mod backup;
mod cli;
mod field;
mod file;
mod filekeys;
mod index;
mod input;
mod keygen;
mod keys;
mod reencrypt;
mod report;
mod s3;
mod serve;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser as _;

use crate::cli::{Cli, Command, FieldCommand};
pub use crate::report::Hinted;

fn main() -> ExitCode {
    // Usage errors print clap's message and exit with 2; --help and --version exit with 0.
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report::print(&err);
            ExitCode::from(report::exit_code(&err))
        }
    }
}

/// Runs one parsed command.
fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Keygen(args) => keygen::keygen(args.out.as_deref()),
        Command::Field(FieldCommand::Encrypt(args)) => field::encrypt(args),
        Command::Field(FieldCommand::Decrypt(args)) => field::decrypt(args),
        Command::Field(FieldCommand::BlindIndex(args)) => field::blind_index(args),
        Command::FipsStatus(args) => fips_status(args.json),
        Command::Keys(cmd) => keys::run(cmd),
        Command::File(cmd) => file::run(cmd),
        Command::S3(cmd) => s3::run(cmd),
        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
        Command::Reencrypt(args) => reencrypt::run(args),
        Command::Index(cmd) => index::run(cmd),
        Command::Serve(args) => serve::serve(args),
        Command::Tokens(cmd) => serve::tokens(cmd),
    }
}

/// `coffer fips-status`: coffer-core's report on the linked module, as text or JSON.
fn fips_status(json: bool) -> Result<()> {
    let status = coffer_core::fips::status();
    let text = if json {
        let value = serde_json::json!({
            "provider": status.provider,
            "module_crate": status.module_crate,
            "module_version": status.module_version,
            "fips_build": status.fips_build,
            "fips_mode": status.fips_mode,
            "refused": status.refused,
        });
        serde_json::to_string_pretty(&value)?
    } else {
        status.to_string()
    };
    input::write_stdout(format!("{text}\n").as_bytes())
}

//! `coffer reencrypt`: moves encrypted columns to the active key version and plaintext
//! columns into encrypted ones, by the schema in coffer-columns.toml. The job itself is
//! coffer-postgres' [`Reencryptor`]; this renders progress and the retirement offer.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use coffer_keys::config::Config;
use coffer_postgres::reencrypt::retirable;
use coffer_postgres::{Columns, ReencryptOptions, Reencryptor, Schema, Table};
use sqlx::postgres::PgPoolOptions;

use crate::cli::ConfigArg;
use crate::input;

pub const REENCRYPT_AFTER_HELP: &str = "\
The job works table by table in batches: each batch locks up to --batch-size rows that are
pending (version column NULL or below the active version) with FOR UPDATE SKIP LOCKED,
decrypts them (or reads their plaintext source column), seals them under the active version,
recomputes every blind index and commits. Applications keep reading and writing meanwhile.
It is idempotent and resumable: stop it, kill it or let it crash, and the next run does
exactly what is left. Run it on several machines at once, or with --workers, to go faster.
When no value is left under an old version (checked twice from the ciphertext headers) it
offers to retire that version (--retire does so without asking).

The schema file (--schema, COFFER_COLUMNS, default coffer-columns.toml) declares the
encrypted columns; docs/COLUMNS.md describes it. Keys come from coffer.toml (--config).

Examples:
  coffer keys rotate table:patients
  DATABASE_URL=postgres://app@db/clinic coffer reencrypt --table patients
  coffer reencrypt --status                  # where each table stands, changes nothing
  coffer reencrypt --rate 5000 --workers 2   # at most 5 000 rows/s per worker
  coffer reencrypt --clear-plaintext         # migration: NULL the plaintext columns as it goes

Exit status: 0 done; 1 a value failed to authenticate or is not a ciphertext (the row is
named, its batch rolled back); 2 usage, schema or key-state error; 3 the database, key store
or a KEK provider is unreachable, or pending rows stayed locked by other transactions.";

/// `coffer reencrypt` arguments.
#[derive(Debug, Args)]
pub struct ReencryptArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The column schema
    #[arg(
        long,
        value_name = "FILE",
        env = "COFFER_COLUMNS",
        default_value = "coffer-columns.toml"
    )]
    pub schema: PathBuf,
    /// The application database (a postgres:// URL; prefer the DATABASE_URL variable, so no
    /// password shows in the process list)
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    pub database: String,
    /// Only these tables (repeatable; default: every table of the schema)
    #[arg(long = "table", value_name = "NAME")]
    pub tables: Vec<String>,
    /// Rows per batch (one transaction each)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// At most this many rows per second, per worker
    #[arg(long, value_name = "ROWS_PER_S")]
    pub rate: Option<f64>,
    /// Concurrent workers in this process
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Stop after this many rows per table (a canary run)
    #[arg(long, value_name = "N")]
    pub max_rows: Option<u64>,
    /// Set each migrated plaintext column to NULL in the same UPDATE
    #[arg(long)]
    pub clear_plaintext: bool,
    /// Show where each table stands (values per key version, rows pending) and change nothing
    #[arg(long, conflicts_with_all = ["retire", "max_rows", "clear_plaintext"])]
    pub status: bool,
    /// Retire old versions that hold no value any more, without asking
    #[arg(long)]
    pub retire: bool,
}

pub fn run(a: &ReencryptArgs) -> Result<()> {
    if a.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number of rows per second");
    }
    let schema = Schema::load(&a.schema)?;
    let config = Config::load(&a.config.config)?;
    let tables: Vec<Table> = if a.tables.is_empty() {
        schema.tables()?
    } else {
        a.tables
            .iter()
            .map(|t| schema.table(t))
            .collect::<Result<_, _>>()?
    };
    let rt = crate::filekeys::runtime()?;
    rt.block_on(async {
        let keyring = coffer_assembly::open_keyring(&config).await?;
        let pool = PgPoolOptions::new()
            .max_connections(u32::from(a.workers) + 2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&a.database)
            .await
            .map_err(coffer_postgres::Error::Db)
            .context("connecting to the application database (--database / DATABASE_URL)")?;
        let opts = ReencryptOptions {
            batch_size: a.batch_size,
            rate: a.rate,
            clear_plaintext: a.clear_plaintext,
            max_rows: a.max_rows,
            ..ReencryptOptions::default()
        };
        let jobs: Vec<Reencryptor> = tables
            .into_iter()
            .map(|t| Reencryptor::new(Columns::new(keyring.clone(), t), pool.clone(), opts.clone()))
            .collect();
        if a.status {
            return status(&jobs).await;
        }
        for job in &jobs {
            reencrypt(job, a.workers).await?;
        }
        if a.max_rows.is_none() {
            offer_retirement(&schema, &jobs, a.retire).await?;
        }
        Ok(())
    })
}

async fn status(jobs: &[Reencryptor]) -> Result<()> {
    let mut out = String::new();
    for job in jobs {
        let t = job.columns().table();
        let (active, pending) = job.pending().await?;
        let c = job.census().await?;
        let values: Vec<String> = c
            .values_by_version
            .iter()
            .map(|(v, n)| format!("v{v}: {n}"))
            .collect();
        out.push_str(&format!(
            "{}: scope {}, active {active}; {pending} rows pending; values by version: {}; plaintext left: {}{}\n",
            t.name(),
            t.scope_template(),
            if values.is_empty() { "none".to_owned() } else { values.join(", ") },
            c.plaintext_left,
            if c.not_ciphertext > 0 {
                format!("; NOT CIPHERTEXT: {} values", c.not_ciphertext)
            } else {
                String::new()
            }
        ));
    }
    input::write_stdout(out.as_bytes())
}

async fn reencrypt(job: &Reencryptor, workers: u16) -> Result<()> {
    let name = job.columns().table().name().to_owned();
    let (active, pending) = job.pending().await?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(pending);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:40} {pos}/{len} rows ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("{name} → {active}"));
        Some(bar)
    } else {
        None
    };
    let progress_bar = bar.clone();
    let report = job
        .run_workers(usize::from(workers), move |done| {
            if let Some(b) = &progress_bar {
                b.set_position(done);
            }
        })
        .await
        .with_context(|| format!("re-encrypting table {name}"))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = report.elapsed.as_secs_f64();
    let active = report.active.unwrap_or(active);
    println!(
        "{name}: {} rows moved to {active} ({} from plaintext) in {secs:.1} s ({:.0} rows/s, {} batches)",
        report.rows,
        report.migrated,
        if secs > 0.0 {
            report.rows as f64 / secs
        } else {
            0.0
        },
        report.batches
    );
    if report.remaining > 0 {
        println!(
            "{name}: {} rows still pending (below {active} or not migrated); run again to finish",
            report.remaining
        );
    }
    Ok(())
}

/// Groups the tables by scope; for each scope whose every table in the schema was just
/// processed, finds decrypt-only versions with no value left and retires them (with
/// --retire or a yes on a terminal).
async fn offer_retirement(schema: &Schema, jobs: &[Reencryptor], retire: bool) -> Result<()> {
    let all = schema.tables()?;
    let mut scopes: Vec<_> = jobs
        .iter()
        .filter_map(|j| j.columns().table().scope_template().fixed().cloned())
        .collect();
    scopes.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    scopes.dedup();
    for scope in scopes {
        let group: Vec<Reencryptor> = jobs
            .iter()
            .filter(|j| j.columns().table().scope_template().fixed() == Some(&scope))
            .cloned()
            .collect();
        let in_schema = all
            .iter()
            .filter(|t| t.scope_template().fixed() == Some(&scope))
            .count();
        if group.len() < in_schema {
            println!(
                "scope {scope}: other tables of the schema use it; run without --table to check whether old versions can be retired"
            );
            continue;
        }
        let empty = retirable(&group, false).await?;
        if empty.is_empty() {
            continue;
        }
        let listed: Vec<String> = empty.iter().map(ToString::to_string).collect();
        let listed = listed.join(", ");
        let go = retire
            || ask(&format!(
                "scope {scope}: {listed} hold no value any more. Retire now? [y/N] "
            ))?;
        if !go {
            println!(
                "scope {scope}: {listed} hold no value any more; retire with `coffer reencrypt --retire`"
            );
            continue;
        }
        let done = retirable(&group, true).await?;
        let done: Vec<String> = done.iter().map(ToString::to_string).collect();
        println!("scope {scope}: retired {}", done.join(", "));
    }
    Ok(())
}

fn ask(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(false);
    }
    eprint!("{question}");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

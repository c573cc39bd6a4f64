//! `coffer reencrypt`: moves encrypted columns to the active key version and plaintext
//! columns into encrypted ones, by the schema in coffer-columns.toml. The job itself is
//! coffer-postgres' [`Reencryptor`]; this renders progress and the retirement offer.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use coffer_core::ScopeId;
use coffer_keys::config::Config;
use coffer_postgres::reencrypt::retirable;
use coffer_postgres::{Columns, ReencryptOptions, Reencryptor, Schema, Standing, Table};
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

A table whose scope is a template (scope = \"tenant:{tenant_id}/patients\") is walked scope by
scope: each tenant's rows move to that tenant's active version, destroyed scopes are counted
and left as they are, scopes missing from the key store are reported. --scope restricts the
job to one scope; old versions of a templated table are retired scope by scope, with --scope.
With keys = \"row\", a rotation re-wraps each row's key and leaves every value as it is.

The schema file (--schema, COFFER_COLUMNS, default coffer-columns.toml) declares the
encrypted columns; docs/COLUMNS.md describes it. Keys come from coffer.toml (--config).

Examples:
  coffer keys rotate table:patients
  DATABASE_URL=postgres://app@db/clinic coffer reencrypt --table patients
  coffer reencrypt --status                  # where each table stands, changes nothing
  coffer reencrypt --rate 5000 --workers 2   # at most 5 000 rows/s per worker
  coffer reencrypt --clear-plaintext         # migration: NULL the plaintext columns as it goes
  coffer reencrypt --table patients --scope tenant:acme/patients --retire   # one tenant

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
    /// Only the rows of this scope (e.g. tenant:acme/patients), in the tables whose scope
    /// template it fits
    #[arg(long, value_name = "SCOPE")]
    pub scope: Option<String>,
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
        let mut jobs: Vec<Reencryptor> = Vec::new();
        for t in tables {
            let cols = Columns::new(keyring.clone(), t);
            let cols = match &a.scope {
                None => cols,
                Some(scope) => match restrict(&cols, scope)? {
                    Some(c) => c,
                    None => continue,
                },
            };
            jobs.push(Reencryptor::new(cols, pool.clone(), opts.clone()));
        }
        if let Some(scope) = &a.scope
            && jobs.is_empty()
        {
            bail!(
                "--scope {scope}: no table{} has that scope or a scope template it fits",
                if a.tables.is_empty() {
                    " of the schema"
                } else {
                    " named by --table"
                }
            );
        }
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

/// The table's columns restricted to `scope` if its scope (or scope template) fits it; `None`
/// if it does not.
fn restrict(cols: &Columns, scope: &str) -> Result<Option<Columns>> {
    let template = cols.table().scope_template();
    if let Some(fixed) = template.fixed() {
        return Ok((fixed.as_str() == scope).then(|| cols.clone()));
    }
    let Some(values) = template.match_scope(scope) else {
        return Ok(None);
    };
    Ok(Some(cols.for_scope(&values)?))
}

/// Scopes with pending rows listed one per line in --status (the rest are counted).
const LISTED: usize = 20;

async fn status(jobs: &[Reencryptor]) -> Result<()> {
    let mut out = String::new();
    for job in jobs {
        let t = job.columns().table();
        let s = job.standing(LISTED).await?;
        let c = job.census().await?;
        let values: Vec<String> = c
            .values_by_version
            .iter()
            .map(|(v, n)| format!("v{v}: {n}"))
            .collect();
        let values = if values.is_empty() {
            "none".to_owned()
        } else {
            values.join(", ")
        };
        let scope = match job.columns().scope() {
            Ok(sc) => sc.to_string(),
            Err(_) => format!("template {}", t.scope_template()),
        };
        let head = if job.walks_scopes() {
            format!(
                "{}: scope {scope}, {} scopes; {} rows pending in {} scopes",
                t.name(),
                s.scopes,
                s.pending,
                s.pending_scopes
            )
        } else {
            format!(
                "{}: scope {scope}, active {}; {} rows pending",
                t.name(),
                s.active
                    .map_or_else(|| "none".to_owned(), |v| v.to_string()),
                s.pending
            )
        };
        out.push_str(&format!(
            "{head}; values by version: {values}; plaintext left: {}",
            c.plaintext_left
        ));
        if t.row_key_column().is_some() {
            let keys: Vec<String> = c
                .row_keys_by_version
                .iter()
                .map(|(v, n)| format!("v{v}: {n}"))
                .collect();
            out.push_str(&format!(
                "; row keys by version: {}; values under row keys: {}",
                if keys.is_empty() {
                    "none".to_owned()
                } else {
                    keys.join(", ")
                },
                c.values_under_row_keys
            ));
        }
        if c.not_ciphertext > 0 {
            out.push_str(&format!("; NOT CIPHERTEXT: {} values", c.not_ciphertext));
        }
        out.push('\n');
        out.push_str(&left_alone(t.name(), &s));
        if job.walks_scopes() {
            for l in &s.listed {
                out.push_str(&format!(
                    "  {}: {}; {} of {} rows pending\n",
                    l.scope,
                    l.active.map_or_else(
                        || "new scope (made by the job)".to_owned(),
                        |v| format!("active {v}")
                    ),
                    l.pending,
                    l.rows
                ));
            }
            let rest = s.pending_scopes.saturating_sub(s.listed.len() as u64);
            if rest > 0 {
                out.push_str(&format!("  … and {rest} more scopes with pending rows\n"));
            }
        }
    }
    input::write_stdout(out.as_bytes())
}

/// The lines about rows the job leaves as they are (none when there are none).
fn left_alone(name: &str, s: &Standing) -> String {
    let mut out = String::new();
    if s.destroyed_rows > 0 || s.destroyed_scopes > 0 {
        out.push_str(&format!(
            "{name}: destroyed: {} scopes, {} rows left as they are (shredded)\n",
            s.destroyed_scopes, s.destroyed_rows
        ));
    }
    if s.missing_scopes > 0 {
        let more = s.missing_scopes.saturating_sub(s.missing.len() as u64);
        out.push_str(&format!(
            "{name}: missing from the key store: {} scopes, {} rows left as they are ({}{}); \
             restore the key store, or create the scopes if the rows were never encrypted\n",
            s.missing_scopes,
            s.missing_rows,
            s.missing.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    if s.unresolvable_rows > 0 {
        out.push_str(&format!(
            "{name}: {} rows have scope values that are NULL or cannot form a scope id; left as they are\n",
            s.unresolvable_rows
        ));
    }
    if s.erased_rows > 0 {
        out.push_str(&format!(
            "{name}: {} rows have an erased row key (shredded); left as they are\n",
            s.erased_rows
        ));
    }
    out
}

async fn reencrypt(job: &Reencryptor, workers: u16) -> Result<()> {
    let name = job.columns().table().name().to_owned();
    let before = job.standing(0).await?;
    let target = match (job.walks_scopes(), before.active) {
        (true, _) => format!("{} scopes", before.pending_scopes),
        (false, Some(v)) => v.to_string(),
        (false, None) => "the active version".to_owned(),
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(before.pending);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:40} {pos}/{len} rows ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("{name} → {target}"));
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
    let to = if job.walks_scopes() {
        format!("the active version of each of {} scopes", report.scopes)
    } else {
        report
            .active
            .map_or_else(|| "the active version".to_owned(), |v| v.to_string())
    };
    let rewrapped = if job.columns().table().row_key_column().is_some() {
        format!(
            ", {} row keys re-wrapped with values untouched",
            report.rewrapped
        )
    } else {
        String::new()
    };
    println!(
        "{name}: {} rows moved to {to} ({} from plaintext{rewrapped}) in {secs:.1} s ({:.0} rows/s, {} batches)",
        report.rows,
        report.migrated,
        if secs > 0.0 {
            report.rows as f64 / secs
        } else {
            0.0
        },
        report.batches
    );
    let after = Standing {
        destroyed_scopes: report.destroyed_scopes,
        destroyed_rows: report.destroyed_rows,
        missing_scopes: report.missing_scopes,
        missing_rows: report.missing_rows,
        missing: before.missing.clone(),
        unresolvable_rows: report.unresolvable_rows,
        erased_rows: report.erased_rows,
        ..Standing::default()
    };
    print!("{}", left_alone(&name, &after));
    if report.remaining > 0 {
        println!(
            "{name}: {} rows still pending (below their scope's active version or not migrated); run again to finish",
            report.remaining
        );
    }
    Ok(())
}

/// Groups the jobs by scope (a fixed scope, or the one --scope named); for each scope whose
/// every table in the schema was just processed, finds decrypt-only versions with no value
/// left and retires them (with --retire or a yes on a terminal). Jobs that walk a scope
/// template are retired scope by scope: the output says how.
async fn offer_retirement(schema: &Schema, jobs: &[Reencryptor], retire: bool) -> Result<()> {
    let all = schema.tables()?;
    for job in jobs.iter().filter(|j| j.walks_scopes()) {
        let t = job.columns().table();
        println!(
            "{}: old versions of a scope template are retired scope by scope: \
             coffer reencrypt --table {} --scope {} --retire (checks that scope's rows twice, then retires)",
            t.name(),
            t.name(),
            t.scope_template()
        );
    }
    let mut scopes: Vec<ScopeId> = jobs
        .iter()
        .filter(|j| !j.walks_scopes())
        .filter_map(|j| j.columns().scope().ok().cloned())
        .collect();
    scopes.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    scopes.dedup();
    for scope in scopes {
        let group: Vec<Reencryptor> = jobs
            .iter()
            .filter(|j| !j.walks_scopes() && j.columns().scope().ok() == Some(&scope))
            .cloned()
            .collect();
        let in_schema = all
            .iter()
            .filter(|t| {
                let tpl = t.scope_template();
                tpl.fixed() == Some(&scope) || tpl.match_scope(scope.as_str()).is_some()
            })
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

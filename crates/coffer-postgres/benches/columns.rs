//! Encrypted PostgreSQL columns against the same table in plaintext, on the local server
//! (`COFFER_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`), in a fresh
//! database that is dropped at the end. Both sides of every comparison run in the same process,
//! interleaved in rounds so that load from other processes hits both alike.
//!
//! 1. single-row INSERTs (4 tasks on a pool of 4 connections), encrypted vs plaintext;
//! 2. SELECT by random id and decrypt every encrypted column, vs the plaintext SELECT, on the
//!    rows just inserted (both tables in shared_buffers);
//! 3. a bulk plaintext load, then the migration job fills the encrypted columns from it;
//! 4. the SELECTs of 2 at the full row count;
//! 5. blind-index equality and prefix search latency vs `ssn = $1` / `email LIKE 'abcd%'`;
//! 6. re-encryption after a rotation with 1 worker, and after another rotation with 2 workers;
//! 7. the searches of 5 again, now with three live key versions (one search term each);
//! 8. many tenants in one table: inserts and selects by id through a scope template (a scope
//!    per tenant) and through one fixed scope, both vs plaintext, and a new tenant's first
//!    write beside a warm one (`columns/tenants.rs`).
//!
//! ```text
//! cargo bench -p coffer-postgres --bench columns
//! COFFER_BENCH_QUICK=1 cargo bench -p coffer-postgres --bench columns   # smoke run
//! COFFER_BENCH_ONLY=tenants cargo bench -p coffer-postgres --bench columns   # group 8 alone
//! ```
//!
//! Sizes: `COFFER_BENCH_ROWS` (rows loaded for 3–7, default 1 000 000), `COFFER_BENCH_OPS`
//! (inserts and selects per side, default 20 000), `COFFER_BENCH_QUERIES` (searches per kind
//! and side, default 1 000), `COFFER_BENCH_CONCURRENCY` (default 4), `COFFER_BENCH_BIDX_BITS`
//! (blind-index width; default: what `coffer index plan` recommends for that many distinct
//! SSNs, 18 bits for 1 000 000: the widest that keeps >= 2 distinct values per bucket).
//! `COFFER_BENCH_QUICK=1` makes the defaults 20 000 rows, 2 000 ops and 200 queries.

#![allow(missing_docs)]

#[path = "columns/tenants.rs"]
mod tenants;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use coffer_core::Kek;
use coffer_keys::{KekId, KekRing, Keyring, KeyringConfig, LocalKek};
use coffer_postgres::{Columns, Encrypted, ReencryptOptions, Reencryptor, Schema};
use coffer_store::SqlStore;
use rand::{Rng as _, SeedableRng as _};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// How long the keyring trusts its cached active version: a rotation is seen after this.
const ACTIVE_TTL: Duration = Duration::from_millis(100);

/// The table the application writes through Coffer. The plaintext source columns the migration
/// reads (`*_src`) are added only after the insert and select comparisons, so those compare
/// exactly `patients` below with `patients_plain`.
const TABLES_SQL: &str = "
CREATE TABLE patients (
    id           uuid PRIMARY KEY,
    ssn          bytea,
    ssn_bidx     bytea,
    email        bytea,
    email_prefix bytea[],
    dob          bytea,
    key_version  int
);
CREATE INDEX patients_ssn_bidx ON patients (ssn_bidx);
CREATE INDEX patients_email_prefix ON patients USING gin (email_prefix);

CREATE TABLE patients_plain (
    id    uuid PRIMARY KEY,
    ssn   text,
    email text,
    dob   date
);
CREATE INDEX patients_plain_ssn ON patients_plain (ssn);
CREATE INDEX patients_plain_email ON patients_plain (email text_pattern_ops);
";

/// The schema; `migrate` adds the plaintext source columns the migration reads.
fn schema_toml(bits: u16, migrate: bool) -> String {
    let from = |src: &'static str| {
        if migrate {
            vec![("migrate_from", src)]
        } else {
            Vec::new()
        }
    };
    coffer_testkit::columns_schema::table("patients", "table:patients")
        .column("ssn", "text", &from("ssn_src"))
        .column("email", "text", &from("email_src"))
        .column("dob", "date", &from("dob_src"))
        .index("ssn_bidx", &["ssn"], bits, &["digits"])
        .prefix_index("email_prefix", "email", bits, &["trim", "casefold"], (3, 8))
        .toml()
}

/// Emails are 10 letters from this 16-letter alphabet, so a 4-letter prefix matches about
/// rows / 65 536 rows. The load uses the same alphabet (md5 hex digits mapped to g..p).
const EMAIL_ALPHABET: &[u8] = b"abcdefghijklmnop";

/// Each comparison runs in this many rounds, alternating which side goes first.
const ROUNDS: usize = 4;

/// The length of the prefixes searched.
const PREFIX_LEN: usize = 4;

struct Config {
    rows: u64,
    ops: usize,
    queries: usize,
    concurrency: usize,
    bits: u16,
    quick: bool,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.replace('_', "");
            v.parse()
                .map_err(|_| anyhow::anyhow!("{name}={v}: not a number"))
        }
        Err(_) => Ok(default),
    }
}

impl Config {
    fn from_env() -> Result<Config> {
        let quick = std::env::var("COFFER_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let (rows, ops, queries) = if quick {
            (20_000, 2_000, 200)
        } else {
            (1_000_000, 20_000, 1_000)
        };
        let rows: u64 = env_num("COFFER_BENCH_ROWS", rows)?;
        let ops = env_num("COFFER_BENCH_OPS", ops)?;
        let queries = env_num("COFFER_BENCH_QUERIES", queries)?;
        let concurrency = env_num("COFFER_BENCH_CONCURRENCY", 4usize)?.max(1);
        // What `coffer index plan` recommends for `rows` distinct SSNs (default limits: the
        // widest index that keeps at least two distinct values per bucket on average).
        let planned =
            coffer_core::planner::plan(&coffer_core::planner::PlanInput::new(rows, [rows]))?
                .recommended_bits()
                .context("the planner recommends no width for this row count")?;
        let bits = env_num("COFFER_BENCH_BIDX_BITS", planned)?;
        if rows < 1000 || ops < 100 || queries < 10 {
            bail!(
                "need COFFER_BENCH_ROWS >= 1000, COFFER_BENCH_OPS >= 100, COFFER_BENCH_QUERIES >= 10"
            );
        }
        Ok(Config {
            rows,
            ops,
            queries,
            concurrency,
            bits,
            quick,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Database and keyring (as in tests/common/mod.rs).

/// A keyring whose key store lives in the bench database, under a fresh local KEK.
async fn keyring(url: &str) -> Result<Keyring> {
    keyring_with_ttl(url, ACTIVE_TTL).await
}

/// As [`keyring`], trusting its cached active versions for `active_ttl`.
async fn keyring_with_ttl(url: &str, active_ttl: Duration) -> Result<Keyring> {
    sqlx::any::install_default_drivers();
    let id = KekId::new("bench", 1)?;
    let ring = KekRing::new(
        [(
            id.clone(),
            Arc::new(LocalKek::new(id.clone(), Kek::generate()?))
                as Arc<dyn coffer_keys::KekProvider>,
        )],
        id,
    )?;
    let store = Arc::new(SqlStore::connect(url).await?);
    let config = KeyringConfig {
        active_ttl,
        audit_unwraps: false,
        ..KeyringConfig::default()
    };
    let keyring = Keyring::new(store, ring, config).await?;
    keyring.register_keks().await?;
    Ok(keyring)
}

// ---------------------------------------------------------------------------------------------
// Figures.

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// (plain / encrypted − 1) · 100: how much slower the encrypted side is.
fn overhead(plain_rate: f64, enc_rate: f64) -> f64 {
    (plain_rate / enc_rate - 1.0) * 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Throughput of one side, over all its rounds.
#[derive(Default)]
struct Throughput {
    ops: u64,
    wall: Duration,
    /// Summed per-operation latency as seen by the task.
    latency: Duration,
    /// Summed time in Coffer (sealing or opening), encrypted side only.
    crypto: Duration,
}

impl Throughput {
    fn add(&mut self, o: Throughput) {
        self.ops += o.ops;
        self.wall += o.wall;
        self.latency += o.latency;
        self.crypto += o.crypto;
    }

    fn rate(&self) -> f64 {
        per_sec(self.ops, self.wall)
    }

    fn mean_us(&self) -> f64 {
        us(self.latency) / self.ops.max(1) as f64
    }

    fn crypto_us(&self) -> f64 {
        us(self.crypto) / self.ops.max(1) as f64
    }
}

// ---------------------------------------------------------------------------------------------
// Data.

#[derive(Clone)]
struct Person {
    id: Uuid,
    ssn: String,
    email: String,
    dob: time::Date,
}

fn person(rng: &mut impl rand::Rng) -> Result<Person> {
    let n: u32 = rng.random_range(0..1_000_000_000);
    let ssn = format!(
        "{:03}-{:02}-{:04}",
        n / 1_000_000,
        n / 10_000 % 100,
        n % 10_000
    );
    let local: String = (0..10)
        .map(|_| char::from(EMAIL_ALPHABET[rng.random_range(0..EMAIL_ALPHABET.len())]))
        .collect();
    let dob = time::Date::from_julian_day(2_420_000 + rng.random_range(0..36_500))?;
    Ok(Person {
        id: Uuid::from_bytes(rng.random()),
        ssn,
        email: format!("{local}@example.org"),
        dob,
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Inserts.

async fn insert_encrypted(cols: &Columns, pool: &PgPool, p: &Person) -> Result<Duration> {
    let t = Instant::now();
    let row = cols
        .row(&p.id)
        .set("ssn", p.ssn.as_str())?
        .set("email", p.email.as_str())?
        .set("dob", &p.dob)?
        .seal()
        .await?;
    let sealed = t.elapsed();
    sqlx::query(
        "INSERT INTO patients (id, ssn, ssn_bidx, email, email_prefix, dob, key_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(p.id)
    .bind(row.value("ssn")?)
    .bind(row.index("ssn_bidx")?)
    .bind(row.value("email")?)
    .bind(row.index("email_prefix")?)
    .bind(row.value("dob")?)
    .bind(row.version())
    .execute(pool)
    .await?;
    Ok(sealed)
}

async fn insert_plain(pool: &PgPool, p: &Person) -> Result<()> {
    sqlx::query("INSERT INTO patients_plain (id, ssn, email, dob) VALUES ($1, $2, $3, $4)")
        .bind(p.id)
        .bind(&p.ssn)
        .bind(&p.email)
        .bind(p.dob)
        .execute(pool)
        .await?;
    Ok(())
}

/// Inserts `rows` with `tasks` concurrent tasks, one statement per row.
async fn insert_round(
    cols: Option<&Columns>,
    pool: &PgPool,
    rows: &[Person],
    tasks: usize,
) -> Result<Throughput> {
    let chunk = rows.len().div_ceil(tasks).max(1);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for part in rows.chunks(chunk) {
        let part = part.to_vec();
        let cols = cols.cloned();
        let pool = pool.clone();
        set.spawn(async move {
            let mut r = Throughput::default();
            for p in &part {
                let t = Instant::now();
                match &cols {
                    Some(c) => r.crypto += insert_encrypted(c, &pool, p).await?,
                    None => insert_plain(&pool, p).await?,
                }
                r.latency += t.elapsed();
                r.ops += 1;
            }
            Ok::<_, anyhow::Error>(r)
        });
    }
    let mut total = Throughput::default();
    while let Some(r) = set.join_next().await {
        total.add(r??);
    }
    total.wall = started.elapsed();
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// 2. Selects by id.

async fn select_round(
    cols: Option<&Columns>,
    pool: &PgPool,
    ids: &[Uuid],
    tasks: usize,
) -> Result<Throughput> {
    let chunk = ids.len().div_ceil(tasks).max(1);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for part in ids.chunks(chunk) {
        let part = part.to_vec();
        let cols = cols.cloned();
        let pool = pool.clone();
        set.spawn(async move {
            let mut r = Throughput::default();
            for id in &part {
                let t = Instant::now();
                match &cols {
                    Some(c) => {
                        let (ssn, email, dob): (
                            Encrypted<String>,
                            Encrypted<String>,
                            Encrypted<time::Date>,
                        ) = sqlx::query_as("SELECT ssn, email, dob FROM patients WHERE id = $1")
                            .bind(id)
                            .fetch_one(&pool)
                            .await?;
                        let o = Instant::now();
                        let ssn = c.open("ssn", id, &ssn).await?;
                        let email = c.open("email", id, &email).await?;
                        let dob = c.open("dob", id, &dob).await?;
                        r.crypto += o.elapsed();
                        std::hint::black_box((ssn, email, dob));
                    }
                    None => {
                        let row: (String, String, time::Date) = sqlx::query_as(
                            "SELECT ssn, email, dob FROM patients_plain WHERE id = $1",
                        )
                        .bind(id)
                        .fetch_one(&pool)
                        .await?;
                        std::hint::black_box(row);
                    }
                }
                r.latency += t.elapsed();
                r.ops += 1;
            }
            Ok::<_, anyhow::Error>(r)
        });
    }
    let mut total = Throughput::default();
    while let Some(r) = set.join_next().await {
        total.add(r??);
    }
    total.wall = started.elapsed();
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// 4. Searches.

/// Latencies of one kind of search on one side, and what the searches returned.
#[derive(Default)]
struct Latencies {
    times: Vec<Duration>,
    /// Rows the index returned (encrypted: candidates before confirmation).
    candidates: u64,
    /// Rows that matched.
    matches: u64,
    /// Search terms bound per query (one per live key version).
    terms: u64,
    /// Time to compute the terms (encrypted side).
    term_times: Vec<Duration>,
}

impl Latencies {
    fn line(&mut self, label: &str) -> String {
        self.times.sort();
        let n = self.times.len().max(1) as f64;
        let mean = us(self.times.iter().sum::<Duration>()) / n;
        format!(
            "{label:<44} median {:>8.1} µs   p99 {:>8.1} µs   mean {:>8.1} µs   {:>7.2} rows/query",
            us(percentile(&self.times, 50.0)),
            us(percentile(&self.times, 99.0)),
            mean,
            self.matches as f64 / n,
        )
    }

    fn median(&self) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        percentile(&t, 50.0)
    }

    fn term_median(&self) -> Duration {
        let mut t = self.term_times.clone();
        t.sort();
        percentile(&t, 50.0)
    }
}

/// One encrypted equality search: terms for every live version, index lookup, decrypt and
/// confirm every candidate. Returns the confirmed ids.
async fn search_ssn_encrypted(
    cols: &Columns,
    pool: &PgPool,
    ssn: &str,
    out: &mut Latencies,
) -> Result<Vec<Uuid>> {
    let t = Instant::now();
    let q = cols.search_eq("ssn_bidx", &[ssn]).await?;
    out.term_times.push(t.elapsed());
    let rows: Vec<(Uuid, Encrypted<String>)> =
        sqlx::query_as("SELECT id, ssn FROM patients WHERE ssn_bidx = ANY($1)")
            .bind(q.terms())
            .fetch_all(pool)
            .await?;
    let mut hits = Vec::new();
    for (id, v) in &rows {
        let plain = cols.open("ssn", id, v).await?;
        if q.matches(&[plain.as_str()]) {
            hits.push(*id);
        }
    }
    out.times.push(t.elapsed());
    out.candidates += rows.len() as u64;
    out.matches += hits.len() as u64;
    out.terms += q.versioned_terms().len() as u64;
    Ok(hits)
}

async fn search_ssn_plain(pool: &PgPool, ssn: &str, out: &mut Latencies) -> Result<Vec<Uuid>> {
    let t = Instant::now();
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, ssn FROM patients_plain WHERE ssn = $1")
            .bind(ssn)
            .fetch_all(pool)
            .await?;
    out.times.push(t.elapsed());
    out.candidates += rows.len() as u64;
    out.matches += rows.len() as u64;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

async fn search_prefix_encrypted(
    cols: &Columns,
    pool: &PgPool,
    prefix: &str,
    out: &mut Latencies,
) -> Result<Vec<Uuid>> {
    let t = Instant::now();
    let q = cols.search_prefix("email_prefix", prefix).await?;
    out.term_times.push(t.elapsed());
    let rows: Vec<(Uuid, Encrypted<String>)> =
        sqlx::query_as("SELECT id, email FROM patients WHERE email_prefix && $1")
            .bind(q.terms())
            .fetch_all(pool)
            .await?;
    let mut hits = Vec::new();
    for (id, v) in &rows {
        let plain = cols.open("email", id, v).await?;
        if q.matches(&[plain.as_str()]) {
            hits.push(*id);
        }
    }
    out.times.push(t.elapsed());
    out.candidates += rows.len() as u64;
    out.matches += hits.len() as u64;
    out.terms += q.versioned_terms().len() as u64;
    Ok(hits)
}

async fn search_prefix_plain(
    pool: &PgPool,
    prefix: &str,
    out: &mut Latencies,
) -> Result<Vec<Uuid>> {
    let t = Instant::now();
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, email FROM patients_plain WHERE email LIKE $1")
            .bind(format!("{prefix}%"))
            .fetch_all(pool)
            .await?;
    out.times.push(t.elapsed());
    out.candidates += rows.len() as u64;
    out.matches += rows.len() as u64;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

fn same_ids(mut a: Vec<Uuid>, mut b: Vec<Uuid>, what: &str) -> Result<()> {
    a.sort();
    b.sort();
    if a != b {
        bail!(
            "{what}: the encrypted search found {} rows, the plaintext one {}",
            a.len(),
            b.len()
        );
    }
    Ok(())
}

struct Probes {
    ssns: Vec<String>,
    prefixes: Vec<String>,
}

/// Equality and prefix searches, one query at a time, alternating encrypted and plaintext;
/// every encrypted result is checked against the plaintext one.
async fn searches(cols: &Columns, pool: &PgPool, probes: &Probes, warm: usize) -> Result<()> {
    let mut eq = [Latencies::default(), Latencies::default()];
    let mut px = [Latencies::default(), Latencies::default()];
    let mut scratch = Latencies::default();
    for (i, ssn) in probes.ssns.iter().enumerate() {
        let (e, p) = if i < warm {
            let e = search_ssn_encrypted(cols, pool, ssn, &mut scratch).await?;
            (e, search_ssn_plain(pool, ssn, &mut scratch).await?)
        } else {
            let [enc, plain] = &mut eq;
            (
                search_ssn_encrypted(cols, pool, ssn, enc).await?,
                search_ssn_plain(pool, ssn, plain).await?,
            )
        };
        same_ids(e, p, &format!("ssn {ssn}"))?;
    }
    for (i, prefix) in probes.prefixes.iter().enumerate() {
        let (e, p) = if i < warm {
            let e = search_prefix_encrypted(cols, pool, prefix, &mut scratch).await?;
            (e, search_prefix_plain(pool, prefix, &mut scratch).await?)
        } else {
            let [enc, plain] = &mut px;
            (
                search_prefix_encrypted(cols, pool, prefix, enc).await?,
                search_prefix_plain(pool, prefix, plain).await?,
            )
        };
        same_ids(e, p, &format!("prefix {prefix}"))?;
    }
    let [eq_enc, eq_plain] = &mut eq;
    let n = eq_enc.times.len().max(1) as f64;
    println!("{}", eq_plain.line("  equality, plaintext  (ssn = $1)"));
    println!(
        "{}",
        eq_enc.line("  equality, encrypted  (ssn_bidx = ANY($1))")
    );
    println!(
        "    encrypted: {:.2} terms/query (median {:.1} µs to compute them), {:.2} candidates/query, {:.2} false positives/query; median {:.2}× plaintext",
        eq_enc.terms as f64 / n,
        us(eq_enc.term_median()),
        eq_enc.candidates as f64 / n,
        (eq_enc.candidates - eq_enc.matches) as f64 / n,
        eq_enc.median().as_secs_f64() / eq_plain.median().as_secs_f64().max(1e-9),
    );
    let [px_enc, px_plain] = &mut px;
    let n = px_enc.times.len().max(1) as f64;
    println!(
        "{}",
        px_plain.line(&format!(
            "  prefix {PREFIX_LEN}, plaintext  (email LIKE 'abcd%')"
        ))
    );
    println!(
        "{}",
        px_enc.line(&format!(
            "  prefix {PREFIX_LEN}, encrypted  (email_prefix && $1)"
        ))
    );
    println!(
        "    encrypted: {:.2} terms/query (median {:.1} µs to compute them), {:.2} candidates/query, {:.2} false positives/query; median {:.2}× plaintext",
        px_enc.terms as f64 / n,
        us(px_enc.term_median()),
        px_enc.candidates as f64 / n,
        (px_enc.candidates - px_enc.matches) as f64 / n,
        px_enc.median().as_secs_f64() / px_plain.median().as_secs_f64().max(1e-9),
    );
    Ok(())
}

/// Selects by random id from `ids`, `warm` per side first, then `ops` per side in alternating
/// rounds, and prints the figures.
async fn selects(
    cols: &Columns,
    pool: &PgPool,
    ids: &[Uuid],
    ops: usize,
    warm: usize,
    rng: &mut rand::rngs::StdRng,
    tasks: usize,
) -> Result<()> {
    let pick = |rng: &mut rand::rngs::StdRng, n: usize| -> Vec<Uuid> {
        (0..n)
            .map(|_| ids[rng.random_range(0..ids.len())])
            .collect()
    };
    let warm_ids = pick(rng, warm);
    for part in warm_ids.chunks(warm_ids.len().div_ceil(ROUNDS)) {
        select_round(None, pool, part, tasks).await?;
        select_round(Some(cols), pool, part, tasks).await?;
    }
    let ids = pick(rng, ops);
    let mut sel = [Throughput::default(), Throughput::default()];
    for (i, part) in ids.chunks(ids.len().div_ceil(ROUNDS)).enumerate() {
        for enc in [i % 2 == 1, i % 2 == 0] {
            let c = enc.then_some(cols);
            sel[usize::from(enc)].add(select_round(c, pool, part, tasks).await?);
        }
    }
    let [plain, enc] = &sel;
    println!(
        "  {tasks} tasks, {ops} selects per side in {ROUNDS} alternating rounds, after {warm} warm-up selects per side"
    );
    println!(
        "  plaintext  {:>9.0} rows/s   {:>7.1} µs/select",
        plain.rate(),
        plain.mean_us()
    );
    println!(
        "  encrypted  {:>9.0} rows/s   {:>7.1} µs/select (of which opening 3 values: {:.1} µs)",
        enc.rate(),
        enc.mean_us(),
        enc.crypto_us()
    );
    println!(
        "  select overhead: {:+.1} % (target <= 10 %)",
        overhead(plain.rate(), enc.rate())
    );
    Ok(())
}

/// Reads both tables and their indexes into the OS page cache (not shared_buffers, which holds
/// neither whole), so that neither side of a comparison reads from disk.
async fn prewarm(pool: &PgPool) -> Result<()> {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .execute(pool)
        .await?;
    let rels: Vec<String> = sqlx::query_scalar(
        "SELECT c.oid::regclass::text FROM pg_class c \
         WHERE c.relname LIKE 'patients%' AND c.relkind IN ('r', 'i') ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    for r in rels {
        sqlx::query("SELECT pg_prewarm($1::regclass, 'read')")
            .bind(r)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Heap and index sizes of both tables.
async fn sizes(pool: &PgPool) -> Result<String> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, pg_relation_size(oid), pg_indexes_size(oid) FROM pg_class \
         WHERE relname IN ('patients', 'patients_plain') ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    let mb = |b: i64| b as f64 / (1024.0 * 1024.0);
    Ok(format!(
        "sizes: {}",
        rows.iter()
            .map(|(n, h, i)| format!("{n} heap {:.0} MB + indexes {:.0} MB", mb(*h), mb(*i)))
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

// ---------------------------------------------------------------------------------------------
// The run.

async fn rotate(cols: &Columns) -> Result<u32> {
    let rec = cols.keyring().rotate(cols.table().scope()?).await?;
    // Let every cached "active version" pointer expire.
    tokio::time::sleep(ACTIVE_TTL * 3).await;
    Ok(rec.version.0)
}

async fn vacuum(pool: &PgPool, tables: &[&str]) -> Result<()> {
    for t in tables {
        sqlx::query(&format!("VACUUM ANALYZE {t}"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

async fn versions(pool: &PgPool) -> Result<String> {
    let v: Vec<(Option<i32>, i64)> =
        sqlx::query_as("SELECT key_version, count(*) FROM patients GROUP BY 1 ORDER BY 1")
            .fetch_all(pool)
            .await?;
    Ok(v.iter()
        .map(|(v, n)| match v {
            Some(v) => format!("v{v}: {n}"),
            None => format!("NULL: {n}"),
        })
        .collect::<Vec<_>>()
        .join(", "))
}

fn job_line(label: &str, r: &coffer_postgres::RunReport) {
    println!(
        "{label:<72} {:>8} rows in {:>6.1} s = {:>7.0} rows/s ({} batches, {:.0} ms of wall time per batch)",
        r.rows,
        r.elapsed.as_secs_f64(),
        per_sec(r.rows, r.elapsed),
        r.batches,
        r.elapsed.as_secs_f64() * 1000.0 / r.batches.max(1) as f64
    );
}

/// Progress on stderr every quarter of a large run.
fn reencrypt_progress(label: &'static str, total: u64) -> impl Fn(u64) + Send + Sync + 'static {
    let step = if total >= 200_000 {
        total / 4
    } else {
        u64::MAX
    };
    let next = std::sync::atomic::AtomicU64::new(step);
    move |done| {
        if done >= next.load(std::sync::atomic::Ordering::Relaxed) {
            next.fetch_add(step, std::sync::atomic::Ordering::Relaxed);
            eprintln!("  [{label}] {done} rows");
        }
    }
}

async fn run(cfg: &Config, url: &str) -> Result<()> {
    let tasks = cfg.concurrency;
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(tasks).unwrap_or(4).max(2))
        .connect(url)
        .await?;
    let server: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting || coalesce(unit, '') FROM pg_settings \
         WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync') ORDER BY name",
    )
    .fetch_all(&pool)
    .await?;
    sqlx::raw_sql(TABLES_SQL).execute(&pool).await?;
    let keyring = keyring(url).await?;
    let table = Schema::from_toml(&schema_toml(cfg.bits, false))?.table("patients")?;
    keyring.ensure_scope(table.scope()?).await?;
    let cols = Columns::new(keyring.clone(), table);
    // The same columns and keys, with the plaintext sources the migration reads.
    let migrating = Columns::new(
        keyring,
        Schema::from_toml(&schema_toml(cfg.bits, true))?.table("patients")?,
    );

    println!(
        "coffer-postgres columns benchmark{}",
        if cfg.quick { " (quick mode)" } else { "" }
    );
    println!(
        "  PostgreSQL {server} on 127.0.0.1 ({}); {} cores; release build",
        settings
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "  rows={} ops={} queries={} concurrency={} (pool of {} connections)",
        cfg.rows,
        cfg.ops,
        cfg.queries,
        tasks,
        pool.options().get_max_connections()
    );
    let fp = cfg.rows as f64 / 2f64.powi(i32::from(cfg.bits));
    println!(
        "  blind indexes: ssn_bidx {} bits (the planner's width for {} distinct SSNs: \
         expect ~{fp:.1} false positives per term); email_prefix {} bits, prefix lengths 3..=8 \
         (6 tokens per row in one array, each tagged with its length: a term meets only the \
         rows' tokens of its own length, so again ~{fp:.1} per term, plus rows sharing the \
         prefix's bucket)",
        cfg.bits, cfg.rows, cfg.bits,
    );
    println!(
        "  encrypted: ssn, email, dob AES-256-GCM (BYTEA), key_version int; btree on ssn_bidx, GIN on email_prefix"
    );
    println!(
        "  plaintext: ssn text, email text, dob date; btree on ssn, btree text_pattern_ops on email"
    );

    // ---- 1. Inserts ------------------------------------------------------------------------
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC0FFE5);
    let warm_n = (cfg.ops / 10).max(100);
    let people: Vec<Person> = (0..warm_n + cfg.ops)
        .map(|_| person(&mut rng))
        .collect::<Result<_>>()?;
    let (warm, measured) = people.split_at(warm_n);
    insert_round(None, &pool, warm, tasks).await?;
    insert_round(Some(&cols), &pool, warm, tasks).await?;
    let mut ins = [Throughput::default(), Throughput::default()];
    // Alternate which side goes first, so drift in the machine's load hits both alike.
    for (i, part) in measured.chunks(measured.len().div_ceil(ROUNDS)).enumerate() {
        for enc in [i % 2 == 1, i % 2 == 0] {
            let c = enc.then_some(&cols);
            ins[usize::from(enc)].add(insert_round(c, &pool, part, tasks).await?);
        }
    }
    let [plain, enc] = &ins;
    println!();
    println!(
        "1. INSERT, one row per statement, {tasks} tasks, {} rows per side in {ROUNDS} alternating rounds (after {warm_n} warm-up rows)",
        cfg.ops
    );
    println!(
        "  plaintext  patients_plain  {:>9.0} rows/s   {:>7.1} µs/insert",
        plain.rate(),
        plain.mean_us()
    );
    println!(
        "  encrypted  patients        {:>9.0} rows/s   {:>7.1} µs/insert (of which sealing 3 values + 1 + 6 index tokens: {:.1} µs)",
        enc.rate(),
        enc.mean_us(),
        enc.crypto_us()
    );
    println!(
        "  insert overhead: {:+.1} % (target <= 15 %)",
        overhead(plain.rate(), enc.rate())
    );

    // ---- 2. Selects while both tables are small ------------------------------------------
    let small_ids: Vec<Uuid> = people.iter().map(|p| p.id).collect();
    println!();
    println!(
        "2. SELECT ssn, email, dob WHERE id = $1 and open all three, random ids over the {} rows just inserted (both tables fit in shared_buffers)",
        small_ids.len()
    );
    selects(&cols, &pool, &small_ids, cfg.ops, warm_n, &mut rng, tasks).await?;

    // ---- 3. Load and migrate -------------------------------------------------------
    println!();
    println!(
        "3. Load {} rows in plaintext, then migrate them into the encrypted columns",
        cfg.rows
    );
    sqlx::raw_sql(
        "ALTER TABLE patients ADD COLUMN ssn_src text, ADD COLUMN email_src text, ADD COLUMN dob_src date",
    )
    .execute(&pool)
    .await?;
    // The same rows in both tables: distinct SSNs (g · 7919 mod 10^9 is one-to-one), 10-letter
    // emails, dates of birth over 100 years.
    let gen_rows = "SELECT md5('p' || g)::uuid AS id,
                substr(s, 1, 3) || '-' || substr(s, 4, 2) || '-' || substr(s, 6, 4) AS ssn,
                translate(substr(md5('e' || g), 1, 10), '0123456789', 'ghijklmnop') || '@example.org' AS email,
                DATE '1920-01-01' + (g * 37 % 36500)::int AS dob
            FROM (SELECT g, lpad((g * 7919 % 1000000000)::text, 9, '0') AS s
                  FROM generate_series(1, $1::bigint) g) x";
    let t = Instant::now();
    sqlx::query(&format!(
        "INSERT INTO patients_plain (id, ssn, email, dob) SELECT id, ssn, email, dob FROM ({gen_rows}) r"
    ))
    .bind(i64::try_from(cfg.rows)?)
    .execute(&pool)
    .await?;
    let plain_load = t.elapsed();
    let t = Instant::now();
    sqlx::query(&format!(
        "INSERT INTO patients (id, ssn_src, email_src, dob_src) SELECT id, ssn, email, dob FROM ({gen_rows}) r"
    ))
    .bind(i64::try_from(cfg.rows)?)
    .execute(&pool)
    .await?;
    let src_load = t.elapsed();
    println!(
        "  load (INSERT ... SELECT generate_series, one statement): plaintext table {:.1} s, plaintext source columns of the encrypted table {:.1} s",
        plain_load.as_secs_f64(),
        src_load.as_secs_f64()
    );
    vacuum(&pool, &["patients", "patients_plain"]).await?;

    let migrate = Reencryptor::new(
        migrating,
        pool.clone(),
        ReencryptOptions {
            clear_plaintext: true,
            ..ReencryptOptions::default()
        },
    );
    let r = migrate.run(reencrypt_progress("migrate", cfg.rows)).await?;
    job_line(
        "  migration (migrate_from, clear_plaintext), 1 worker (Reencryptor::run)",
        &r,
    );
    if r.migrated != cfg.rows {
        bail!("the migration moved {} rows of {}", r.migrated, cfg.rows);
    }
    sqlx::raw_sql(
        "ALTER TABLE patients DROP COLUMN ssn_src, DROP COLUMN email_src, DROP COLUMN dob_src",
    )
    .execute(&pool)
    .await?;
    vacuum(&pool, &["patients"]).await?;
    println!(
        "  key_version column after migration: {}",
        versions(&pool).await?
    );

    // ---- 4. Selects at the full row count --------------------------------------------------
    let all_ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM patients_plain")
        .fetch_all(&pool)
        .await?;
    println!();
    println!("  {}", sizes(&pool).await?);
    let prewarmed = prewarm(&pool).await;
    println!();
    println!(
        "4. SELECT ssn, email, dob WHERE id = $1 and open all three, random ids over {} rows ({})",
        all_ids.len(),
        match &prewarmed {
            Ok(()) =>
                "both tables and their indexes read into the OS page cache with pg_prewarm first"
                    .to_owned(),
            Err(e) => format!("pg_prewarm unavailable ({e})"),
        }
    );
    selects(&cols, &pool, &all_ids, cfg.ops, cfg.ops, &mut rng, tasks).await?;

    // ---- 5. Searches -----------------------------------------------------------------------
    let warm_q = (cfg.queries / 10).max(10);
    let probes = Probes {
        ssns: sqlx::query_scalar("SELECT ssn FROM patients_plain ORDER BY random() LIMIT $1")
            .bind(i64::try_from(cfg.queries + warm_q)?)
            .fetch_all(&pool)
            .await?,
        prefixes: sqlx::query_scalar::<_, String>(
            "SELECT email FROM patients_plain ORDER BY random() LIMIT $1",
        )
        .bind(i64::try_from(cfg.queries + warm_q)?)
        .fetch_all(&pool)
        .await?
        .into_iter()
        .map(|e| e.chars().take(PREFIX_LEN).collect())
        .collect(),
    };
    println!();
    println!(
        "5. Search latency over {} rows, one query at a time, {} queries per kind and side (after {warm_q} warm-up), tables VACUUM ANALYZEd; encrypted = terms + query + decrypt and confirm every candidate",
        all_ids.len(),
        cfg.queries
    );
    searches(&cols, &pool, &probes, warm_q).await?;

    // ---- 6. Re-encryption ---------------------------------------------------------
    println!();
    let v = rotate(&cols).await?;
    vacuum(&pool, &["patients"]).await?;
    let job = Reencryptor::new(cols.clone(), pool.clone(), ReencryptOptions::default());
    let r = job
        .run(reencrypt_progress("re-encrypt, 1 worker", cfg.rows))
        .await?;
    println!("6. Re-encryption of every row after a rotation (batches of 1000 rows)");
    job_line(&format!("  to v{v}, 1 worker (Reencryptor::run)"), &r);
    let v = rotate(&cols).await?;
    vacuum(&pool, &["patients"]).await?;
    let r = job
        .run_workers(2, reencrypt_progress("re-encrypt, 2 workers", cfg.rows))
        .await?;
    job_line(
        &format!("  to v{v}, 2 workers (Reencryptor::run_workers(2))"),
        &r,
    );
    let (_, pending) = job.pending().await?;
    println!(
        "  key_version column after: {}; pending: {pending}",
        versions(&pool).await?
    );

    // ---- 7. Searches with three live key versions ------------------------------------
    vacuum(&pool, &["patients"]).await?;
    println!();
    println!(
        "7. The same searches after both rotations (v1 and v2 decrypt-only, not retired: one term per live version)"
    );
    searches(&cols, &pool, &probes, warm_q).await?;
    pool.close().await;
    Ok(())
}

fn main() -> Result<()> {
    let cfg = Config::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Dropped (with the database) when the run ends, however it ends.
        let db = coffer_testkit::pg::TestDb::try_new("coffer_bench").map_err(anyhow::Error::msg)?;
        if std::env::var("COFFER_BENCH_ONLY").as_deref() != Ok("tenants") {
            run(&cfg, db.url()).await?;
        }
        tenants::run(&cfg, db.url()).await
    })
}

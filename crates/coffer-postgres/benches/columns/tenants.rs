//! Group 8, many tenants in one table (docs/COLUMNS.md §7): the same rows inserted and
//! selected by id through a scope template (`tenant:{tenant_id}/patients`, one scope per tenant) and through
//! one fixed scope, both against the plaintext table, interleaved in rounds in the same run;
//! and the first write of a tenant whose scope does not exist yet (created on that write, L1
//! miss, local KEK) beside a warm write of the same tenant.
//!
//! Sizes: `COFFER_BENCH_TENANTS` (default 1 000) × `COFFER_BENCH_TENANT_ROWS` (rows per tenant,
//! default 100; quick mode 10). `COFFER_BENCH_ONLY=tenants` runs this group alone;
//! `COFFER_BENCH_TENANT_TTL_S` sets the keyring's active-pointer lifetime (default 5 s).

use std::time::{Duration, Instant};

use anyhow::Result;
use coffer_keys::KeyringConfig;
use coffer_postgres::{Columns, Encrypted, Schema};
use rand::{Rng as _, SeedableRng as _};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use super::{
    Config, Person, ROUNDS, Throughput, env_num, keyring_with_ttl, overhead, percentile, person, us,
};

const SQL: &str = "
CREATE TABLE t_template (id uuid PRIMARY KEY, tenant_id text NOT NULL, ssn bytea, ssn_bidx bytea,
    email bytea, email_prefix bytea[], dob bytea, key_version int);
CREATE TABLE t_fixed (id uuid PRIMARY KEY, tenant_id text NOT NULL, ssn bytea, ssn_bidx bytea,
    email bytea, email_prefix bytea[], dob bytea, key_version int);
CREATE TABLE t_plain (id uuid PRIMARY KEY, tenant_id text NOT NULL, ssn text, email text, dob date);
CREATE INDEX ON t_template (tenant_id);
CREATE INDEX ON t_fixed (tenant_id);
CREATE INDEX ON t_plain (tenant_id);
CREATE INDEX ON t_template (ssn_bidx);
CREATE INDEX ON t_fixed (ssn_bidx);
CREATE INDEX ON t_plain (ssn);
";

fn schema(name: &str, scope: &str, bits: u16) -> String {
    coffer_testkit::columns_schema::table(name, scope)
        .column("ssn", "text", &[])
        .column("email", "text", &[])
        .column("dob", "date", &[])
        .index("ssn_bidx", &["ssn"], bits, &["digits"])
        .prefix_index("email_prefix", "email", bits, &["trim", "casefold"], (3, 8))
        .toml()
}

/// One side of the comparison.
#[derive(Clone)]
enum Side {
    Plain,
    /// The fixed-scope table.
    Fixed(Columns),
    /// The templated table: each row through `for_scope` of its tenant, as an application does.
    Template(Columns),
}

impl Side {
    fn table(&self) -> &'static str {
        match self {
            Side::Plain => "t_plain",
            Side::Fixed(_) => "t_fixed",
            Side::Template(_) => "t_template",
        }
    }

    fn cols(&self, tenant: &str) -> Result<Option<Columns>> {
        Ok(match self {
            Side::Plain => None,
            Side::Fixed(c) => Some(c.clone()),
            Side::Template(c) => Some(c.for_scope(&[("tenant_id", tenant)])?),
        })
    }
}

/// Seals (if encrypted) and inserts one row; returns the time spent in Coffer.
async fn insert(side: &Side, pool: &PgPool, tenant: &str, p: &Person) -> Result<Duration> {
    let Some(cols) = side.cols(tenant)? else {
        sqlx::query(
            "INSERT INTO t_plain (id, tenant_id, ssn, email, dob) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(p.id)
        .bind(tenant)
        .bind(&p.ssn)
        .bind(&p.email)
        .bind(p.dob)
        .execute(pool)
        .await?;
        return Ok(Duration::ZERO);
    };
    let t = Instant::now();
    let row = cols
        .row(&p.id)
        .set("ssn", p.ssn.as_str())?
        .set("email", p.email.as_str())?
        .set("dob", &p.dob)?
        .seal()
        .await?;
    let sealed = t.elapsed();
    sqlx::query(&format!(
        "INSERT INTO {} (id, tenant_id, ssn, ssn_bidx, email, email_prefix, dob, key_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        side.table()
    ))
    .bind(p.id)
    .bind(tenant)
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

/// Selects one row by id and opens its values (the templated side opens under the row's
/// tenant, read with the row).
async fn select(side: &Side, pool: &PgPool, id: Uuid) -> Result<Duration> {
    if let Side::Plain = side {
        let row: (String, String, String, time::Date) =
            sqlx::query_as("SELECT tenant_id, ssn, email, dob FROM t_plain WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await?;
        std::hint::black_box(row);
        return Ok(Duration::ZERO);
    }
    let (tenant, ssn, email, dob): (
        String,
        Encrypted<String>,
        Encrypted<String>,
        Encrypted<time::Date>,
    ) = sqlx::query_as(&format!(
        "SELECT tenant_id, ssn, email, dob FROM {} WHERE id = $1",
        side.table()
    ))
    .bind(id)
    .fetch_one(pool)
    .await?;
    let o = Instant::now();
    let Some(c) = side.cols(&tenant)? else {
        return Ok(Duration::ZERO);
    };
    let v = (
        c.open("ssn", &id, &ssn).await?,
        c.open("email", &id, &email).await?,
        c.open("dob", &id, &dob).await?,
    );
    std::hint::black_box(v);
    Ok(o.elapsed())
}

/// `ops` (tenant, person) inserts or ids to select, spread over `tasks` tasks.
async fn round(
    side: &Side,
    pool: &PgPool,
    inserts: &[(String, Person)],
    selects: &[Uuid],
    tasks: usize,
) -> Result<Throughput> {
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let ins_chunk = inserts.len().div_ceil(tasks).max(1);
    let sel_chunk = selects.len().div_ceil(tasks).max(1);
    let ins: Vec<Vec<(String, Person)>> = inserts.chunks(ins_chunk).map(<[_]>::to_vec).collect();
    let sel: Vec<Vec<Uuid>> = selects.chunks(sel_chunk).map(<[_]>::to_vec).collect();
    for k in 0..ins.len().max(sel.len()) {
        let side = side.clone();
        let pool = pool.clone();
        let ins = ins.get(k).cloned().unwrap_or_default();
        let sel = sel.get(k).cloned().unwrap_or_default();
        set.spawn(async move {
            let mut r = Throughput::default();
            for (tenant, p) in &ins {
                let t = Instant::now();
                r.crypto += insert(&side, &pool, tenant, p).await?;
                r.latency += t.elapsed();
                r.ops += 1;
            }
            for id in &sel {
                let t = Instant::now();
                r.crypto += select(&side, &pool, *id).await?;
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

fn line(label: &str, t: &Throughput, what: &str) {
    println!(
        "  {label:<22} {:>9.0} rows/s   {:>7.1} µs/{what}   (in Coffer: {:.1} µs)",
        t.rate(),
        t.mean_us(),
        t.crypto_us()
    );
}

/// Three sides, `ROUNDS` rounds, rotating which goes first.
async fn compare(
    sides: &[Side; 3],
    pool: &PgPool,
    inserts: &[(String, Person)],
    selects: &[Uuid],
    tasks: usize,
) -> Result<[Throughput; 3]> {
    let mut out = [
        Throughput::default(),
        Throughput::default(),
        Throughput::default(),
    ];
    let ins_chunk = inserts.len().div_ceil(ROUNDS).max(1);
    let sel_chunk = selects.len().div_ceil(ROUNDS).max(1);
    for r in 0..ROUNDS {
        let ins = inserts.chunks(ins_chunk).nth(r).unwrap_or_default();
        let sel = selects.chunks(sel_chunk).nth(r).unwrap_or_default();
        for k in 0..3 {
            let s = (r + k) % 3;
            out[s].add(round(&sides[s], pool, ins, sel, tasks).await?);
        }
    }
    Ok(out)
}

pub(super) async fn run(cfg: &Config, url: &str) -> Result<()> {
    let tenants: usize = env_num("COFFER_BENCH_TENANTS", 1000)?;
    let per: usize = env_num("COFFER_BENCH_TENANT_ROWS", if cfg.quick { 10 } else { 100 })?;
    let tasks = cfg.concurrency;
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(tasks).unwrap_or(4).max(2))
        .connect(url)
        .await?;
    sqlx::raw_sql(SQL).execute(&pool).await?;
    // The default active-pointer lifetime (5 s), as an application runs: with the 100 ms the
    // other groups use (to see rotations quickly), a tenant written less often than every
    // 100 ms would read its active version from the key store on nearly every write.
    // `COFFER_BENCH_TENANT_TTL_S` sets another lifetime (seconds).
    let ttl = match env_num("COFFER_BENCH_TENANT_TTL_S", 0u64)? {
        0 => KeyringConfig::default().active_ttl,
        s => Duration::from_secs(s),
    };
    let keyring = keyring_with_ttl(url, ttl).await?;
    let bits = 16;
    let template = Columns::new(
        keyring.clone(),
        Schema::from_toml(&schema("t_template", "tenant:{tenant_id}/patients", bits))?
            .table("t_template")?,
    );
    let fixed = Columns::new(
        keyring.clone(),
        Schema::from_toml(&schema("t_fixed", "table:t_fixed", bits))?.table("t_fixed")?,
    );
    keyring.ensure_scope(fixed.scope()?).await?;
    let names: Vec<String> = (0..tenants).map(|i| format!("t{i:05}")).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7E4A47);
    println!();
    println!(
        "8. Many tenants in one table: {tenants} tenants × {per} rows per side, a scope per tenant \
         (template tenant:{{tenant_id}}/patients) vs one fixed scope, both vs plaintext; \
         {tasks} tasks, {ROUNDS} rounds rotating which side goes first; active_ttl {ttl:?}"
    );

    // Cold: the first write of each tenant creates its scope (one per tenant, so each is an
    // L1 miss and a new DEK wrapped under the local KEK); then a warm write of the same tenant.
    let template_side = Side::Template(template.clone());
    let mut cold = Vec::with_capacity(tenants);
    let mut warm = Vec::with_capacity(tenants);
    let mut cold_seal = Vec::with_capacity(tenants);
    let mut warm_seal = Vec::with_capacity(tenants);
    for name in &names {
        let p = person(&mut rng)?;
        let t = Instant::now();
        cold_seal.push(insert(&template_side, &pool, name, &p).await?);
        cold.push(t.elapsed());
        let p = person(&mut rng)?;
        let t = Instant::now();
        warm_seal.push(insert(&template_side, &pool, name, &p).await?);
        warm.push(t.elapsed());
    }
    for v in [&mut cold, &mut warm, &mut cold_seal, &mut warm_seal] {
        v.sort();
    }
    let med = |v: &[Duration], p: f64| us(percentile(v, p)) / 1000.0;
    println!(
        "  first write of a new tenant (scope created, seal + INSERT), one at a time: median {:.2} ms, p99 {:.2} ms",
        med(&cold, 50.0),
        med(&cold, 99.0)
    );
    println!(
        "  the next write of the same tenant (warm):                                  median {:.2} ms, p99 {:.2} ms (target <= 1 ms)",
        med(&warm, 50.0),
        med(&warm, 99.0)
    );
    println!(
        "  of which in Coffer (seal; the cold one creates the scope): cold median {:.2} ms, p99 {:.2} ms; warm median {:.3} ms, p99 {:.3} ms",
        med(&cold_seal, 50.0),
        med(&cold_seal, 99.0),
        med(&warm_seal, 50.0),
        med(&warm_seal, 99.0)
    );
    // The cold pass wrote two rows per tenant into the templated table; give the other sides
    // the same rows so the tables stay alike.
    let pre: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM t_template")
        .fetch_all(&pool)
        .await?;
    sqlx::raw_sql(
        "INSERT INTO t_fixed (id, tenant_id) SELECT id, tenant_id FROM t_template; \
         INSERT INTO t_plain (id, tenant_id) SELECT id, tenant_id FROM t_template;",
    )
    .execute(&pool)
    .await?;
    drop(pre);

    // Inserts: the same (tenant, person) rows on each side, tenants in random order.
    let total = tenants * per.saturating_sub(2).max(1);
    let rows: Vec<(String, Person)> = (0..total)
        .map(|_| {
            let t = names[rng.random_range(0..tenants)].clone();
            person(&mut rng).map(|p| (t, p))
        })
        .collect::<Result<_>>()?;
    let sides = [
        Side::Plain,
        Side::Fixed(fixed.clone()),
        Side::Template(template.clone()),
    ];
    // Warm-up: 1 % of the rows (at least 1 000) on each side, not measured.
    let warm_n = (total / 100).max(1000).min(total / 2);
    let (warm_rows, measured) = rows.split_at(warm_n);
    compare(&sides, &pool, warm_rows, &[], tasks).await?;
    let ins = compare(&sides, &pool, measured, &[], tasks).await?;
    println!("  inserts ({} per side, seal + INSERT):", measured.len());
    line("plaintext", &ins[0], "insert");
    line("one fixed scope", &ins[1], "insert");
    line("scope per tenant", &ins[2], "insert");
    let (of, ot) = (
        overhead(ins[0].rate(), ins[1].rate()),
        overhead(ins[0].rate(), ins[2].rate()),
    );
    println!(
        "  insert overhead vs plaintext: one scope {of:+.1} %, scope per tenant {ot:+.1} %; \
         template vs one scope {:+.1} % (target <= 10 %)",
        overhead(ins[1].rate(), ins[2].rate())
    );

    // Selects by id, every row opened: ids drawn from the inserted rows.
    let ids: Vec<Uuid> = rows.iter().map(|(_, p)| p.id).collect();
    let ops = cfg.ops.min(ids.len());
    let pick: Vec<Uuid> = (0..ops + ops / 10)
        .map(|_| ids[rng.random_range(0..ids.len())])
        .collect();
    let (warm_ids, measured_ids) = pick.split_at(ops / 10);
    compare(&sides, &pool, &[], warm_ids, tasks).await?;
    let sel = compare(&sides, &pool, &[], measured_ids, tasks).await?;
    println!(
        "  selects by id ({} per side, SELECT + open 3 values):",
        measured_ids.len()
    );
    line("plaintext", &sel[0], "select");
    line("one fixed scope", &sel[1], "select");
    line("scope per tenant", &sel[2], "select");
    println!(
        "  select overhead vs plaintext: one scope {:+.1} %, scope per tenant {:+.1} %; \
         template vs one scope {:+.1} % (target <= 10 %)",
        overhead(sel[0].rate(), sel[1].rate()),
        overhead(sel[0].rate(), sel[2].rate()),
        overhead(sel[1].rate(), sel[2].rate())
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t_template")
        .fetch_one(&pool)
        .await?;
    println!("  rows in each table at the end: {n}");
    pool.close().await;
    Ok(())
}

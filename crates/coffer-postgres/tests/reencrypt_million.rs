//! The scale test: a 1 000 000-row table (COFFER_REENCRYPT_ROWS to change it) is
//! migrated from plaintext, its key rotated, and re-encrypted by two workers while readers
//! and writers keep working. Zero failed reads, zero lost or duplicated writes, every row on
//! the new version at the end, searches exact throughout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_core::Kek;
use coffer_postgres::{Columns, Encrypted, ReencryptOptions, Reencryptor, Schema};
use rand::Rng as _;

/// The records table: two columns migrated from plaintext, an equality and a prefix index.
fn schema() -> Schema {
    let toml = coffer_testkit::columns_schema::table("records", "table:records")
        .column("ssn", "text", &[("migrate_from", "ssn_plain")])
        .column(
            "email",
            "text",
            &[("storage", "text"), ("migrate_from", "email_plain")],
        )
        .index("ssn_bidx", &["ssn"], 24, &[])
        .prefix_index("email_prefix", "email", 32, &[], (3, 6))
        .toml();
    Schema::from_toml(&toml).unwrap()
}
fn ssn(id: i64, generation: u32) -> String {
    format!("{:09}-{generation}", id * 7919 % 1_000_000_000)
}

fn email(id: i64) -> String {
    format!("u{id}@example.org")
}

/// Parses a value written by `ssn`: its id part and generation.
fn parse(s: &str) -> Option<(i64, u32)> {
    let (n, g) = s.split_once('-')?;
    Some((n.parse().ok()?, g.parse().ok()?))
}

async fn write(cols: &Columns, pool: &sqlx::PgPool, id: i64, generation: u32, insert: bool) {
    let row = cols
        .row(&id)
        .set("ssn", &ssn(id, generation))
        .unwrap()
        .set("email", &email(id))
        .unwrap()
        .seal()
        .await
        .unwrap();
    let sql = if insert {
        "INSERT INTO records (id, ssn, ssn_bidx, email, email_prefix, key_version) VALUES ($1, $2, $3, $4, $5, $6)"
    } else {
        "UPDATE records SET ssn = $2, ssn_bidx = $3, email = $4, email_prefix = $5, key_version = $6 WHERE id = $1"
    };
    let done = sqlx::query(sql)
        .bind(id)
        .bind(row.value("ssn").unwrap())
        .bind(row.index("ssn_bidx").unwrap())
        .bind(row.value("email").unwrap())
        .bind(row.index("email_prefix").unwrap())
        .bind(row.version())
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_rows_reencrypted_under_live_traffic() {
    let n: i64 = std::env::var("COFFER_REENCRYPT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let db = common::database().await;
    let pool = db.pool.clone();
    sqlx::raw_sql(&format!(
        "CREATE TABLE records (id bigint PRIMARY KEY, ssn bytea, ssn_bidx bytea, email text,
            email_prefix bytea[], ssn_plain text, email_plain text, key_version int);
         INSERT INTO records (id, ssn_plain, email_plain)
         SELECT g, lpad((g::bigint * 7919 % 1000000000)::text, 9, '0') || '-0', 'u' || g || '@example.org'
         FROM generate_series(1, {n}) g;
         CREATE INDEX records_ssn_bidx ON records (ssn_bidx);
         CREATE INDEX records_email_prefix ON records USING gin (email_prefix);"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let kek = Kek::generate().unwrap();
    let table = schema().table("records").unwrap();
    // The job and the application each have their own keyring, as separate processes would;
    // the application trusts its cached active version for 1 s.
    let job_keyring = db.keyring(&kek, Duration::from_millis(100)).await;
    job_keyring
        .ensure_scope(table.scope().unwrap())
        .await
        .unwrap();
    let app = Columns::new(
        db.keyring(&kek, Duration::from_secs(1)).await,
        table.clone(),
    );
    let job_cols = Columns::new(job_keyring.clone(), table);

    // 1. Migrate the plaintext columns (two workers).
    let opts = ReencryptOptions {
        batch_size: 2000,
        clear_plaintext: true,
        ..ReencryptOptions::default()
    };
    let job = Reencryptor::new(job_cols.clone(), pool.clone(), opts);
    let r = job.run_workers(2, |_| {}).await.unwrap();
    assert_eq!(r.rows, n as u64);
    sqlx::query("ANALYZE records").execute(&pool).await.unwrap();

    // 2. Rotate, then re-encrypt while readers and writers run.
    job_keyring
        .rotate(job_cols.table().scope().unwrap())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let generations: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
    let inserted = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let searches = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..2i64 {
        let (app, pool, stop, generations, inserted) = (
            app.clone(),
            pool.clone(),
            stop.clone(),
            generations.clone(),
            inserted.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut next_new = n + 1 + w;
            let mut writes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if writes % 10 == 9 {
                    // Each writer inserts its own ids (odd or even past n).
                    write(&app, &pool, next_new, 0, true).await;
                    next_new += 2;
                    inserted.fetch_add(1, Ordering::Relaxed);
                } else {
                    // Each writer updates only ids of its own parity: last write wins is known.
                    let id = rand::rng().random_range(0..n / 2) * 2 + 1 + w;
                    let id = id.min(n);
                    if id % 2 != (1 + w) % 2 {
                        continue;
                    }
                    let generation = generations.lock().unwrap().get(&id).copied().unwrap_or(0) + 1;
                    write(&app, &pool, id, generation, false).await;
                    generations.lock().unwrap().insert(id, generation);
                }
                writes += 1;
            }
            writes
        }));
    }
    for _ in 0..2 {
        let (app, pool, stop, reads, searches) = (
            app.clone(),
            pool.clone(),
            stop.clone(),
            reads.clone(),
            searches.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = rand::rng().random_range(1..=n);
                let (s, e): (Encrypted<String>, Encrypted<String>) =
                    sqlx::query_as("SELECT ssn, email FROM records WHERE id = $1")
                        .bind(id)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                let s = app.open("ssn", &id, &s).await.unwrap();
                let (num, _) = parse(&s).unwrap();
                assert_eq!(
                    num,
                    id * 7919 % 1_000_000_000,
                    "row {id} holds another row's value"
                );
                assert_eq!(app.open("email", &id, &e).await.unwrap(), email(id));
                reads.fetch_add(1, Ordering::Relaxed);
                i += 1;
                if i % 20 == 0 {
                    // Equality search on this row's current value finds it (and only rows
                    // holding that value once confirmed).
                    let q = app.search_eq("ssn_bidx", &[s.as_str()]).await.unwrap();
                    let hits: Vec<(i64, Encrypted<String>)> =
                        sqlx::query_as("SELECT id, ssn FROM records WHERE ssn_bidx = ANY($1)")
                            .bind(q.terms())
                            .fetch_all(&pool)
                            .await
                            .unwrap();
                    let mut found = Vec::new();
                    for (hid, hs) in hits {
                        if q.matches(&[app.open("ssn", &hid, &hs).await.unwrap().as_str()]) {
                            found.push(hid);
                        }
                    }
                    // A writer may have replaced the value since it was read.
                    assert!(
                        found.len() <= 1 && found.iter().all(|f| *f == id),
                        "{found:?}"
                    );
                    let q = app
                        .search_prefix("email_prefix", &format!("u{id}@"))
                        .await
                        .unwrap();
                    let c: i64 =
                        sqlx::query_scalar("SELECT count(*) FROM records WHERE email_prefix && $1")
                            .bind(q.terms())
                            .fetch_one(&pool)
                            .await
                            .unwrap();
                    assert!(c >= 1);
                    searches.fetch_add(1, Ordering::Relaxed);
                }
            }
            i
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = Reencryptor::new(
        job_cols.clone(),
        pool.clone(),
        ReencryptOptions {
            batch_size: 1000,
            ..ReencryptOptions::default()
        },
    );
    let r = job.run_workers(2, |_| {}).await.unwrap();
    // Let traffic run on the finished table a moment, then stop it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for t in tasks {
        writes += t.await.unwrap();
    }
    assert!(r.rows >= n as u64 - writes, "{} rows moved", r.rows);
    assert!(reads.load(Ordering::Relaxed) > 100, "readers ran");
    assert!(searches.load(Ordering::Relaxed) > 5, "searches ran");

    // 3. The end state: every row on v2 by its version column and by every header; no row
    //    lost or duplicated; every write's last value is there.
    let inserted = inserted.load(Ordering::Relaxed) as i64;
    let (count, on_v2): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE key_version = 2) FROM records")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(count, n + inserted);
    assert_eq!(on_v2, count);
    let census = job.census().await.unwrap();
    assert_eq!(
        census.values_by_version.into_iter().collect::<Vec<_>>(),
        vec![(2, 2 * (n + inserted) as u64)]
    );
    let generations = generations.lock().unwrap().clone();
    assert!(!generations.is_empty());
    let ids: Vec<i64> = generations.keys().copied().collect();
    let rows: Vec<(i64, Encrypted<String>)> =
        sqlx::query_as("SELECT id, ssn FROM records WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), ids.len());
    for (id, s) in rows {
        assert_eq!(
            app.open("ssn", &id, &s).await.unwrap(),
            ssn(id, generations[&id])
        );
    }
    // A sample of the untouched rows.
    let rows: Vec<(i64, Encrypted<String>)> =
        sqlx::query_as("SELECT id, ssn FROM records WHERE id % 997 = 0")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (id, s) in rows {
        let want = ssn(id, generations.get(&id).copied().unwrap_or(0));
        assert_eq!(app.open("ssn", &id, &s).await.unwrap(), want);
    }
    eprintln!(
        "{n} rows: migrated, then re-encrypted {} rows in {:?} under {writes} writes, {} reads, {} searches",
        r.rows,
        r.elapsed,
        reads.load(Ordering::Relaxed),
        searches.load(Ordering::Relaxed)
    );
    db.drop().await;
}

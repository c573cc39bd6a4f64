//! Encrypted columns against a real PostgreSQL: typed round trips, fail-closed reads,
//! search before, during and after a rotation, plaintext migration and retirement.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use coffer_core::Kek;
use coffer_postgres::{Columns, Encrypted, Plain, ReencryptOptions, Reencryptor, Schema};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use common::{PATIENTS_SQL, TestDb, patients_toml};

struct Patient {
    id: Uuid,
    ssn: String,
    mrn: String,
    email: String,
    dob: time::Date,
    visits: i64,
    notes: Option<String>,
}

fn patient(i: u32) -> Patient {
    let dob = time::Date::from_julian_day(2_440_000 + (i as i32 * 37) % 20_000).unwrap();
    Patient {
        id: Uuid::from_u128(0x1000 + u128::from(i)),
        // Some SSNs repeat (i % 700), written with and without dashes.
        ssn: if i % 2 == 0 {
            format!(
                "{:03}-{:02}-{:04}",
                100 + i % 700,
                10 + i % 7,
                1000 + i % 700
            )
        } else {
            format!("{:03}{:02}{:04}", 100 + i % 700, 10 + i % 7, 1000 + i % 700)
        },
        mrn: format!("MRN-{:06}", i % 900),
        email: format!(
            " {}{}@Example.org",
            ["ann", "anna", "bob", "bea", "zoë"][i as usize % 5],
            i
        ),
        dob,
        visits: i64::from(i) * 3 - 50,
        notes: (i % 3 != 0).then(|| format!("note {i}")),
    }
}

async fn insert(cols: &Columns, pool: &PgPool, p: &Patient) {
    let profile = json!({"i": p.visits, "tags": ["a", "b"]});
    let row = cols
        .row(&p.id)
        .set("ssn", &p.ssn)
        .unwrap()
        .set("mrn", &p.mrn)
        .unwrap()
        .set("email", &p.email)
        .unwrap()
        .set("dob", &p.dob)
        .unwrap()
        .set("visits", &p.visits)
        .unwrap()
        .set("profile", &profile)
        .unwrap()
        .set_opt("notes", p.notes.as_ref())
        .unwrap()
        .seal()
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO patients (id, ssn, ssn_bidx, mrn, email, email_prefix, dob, visits, profile, \
         notes, ssn_dob, key_version) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
    )
    .bind(p.id)
    .bind(row.value("ssn").unwrap())
    .bind(row.index("ssn_bidx").unwrap())
    .bind(row.value("mrn").unwrap())
    .bind(row.value("email").unwrap())
    .bind(row.index("email_prefix").unwrap())
    .bind(row.value("dob").unwrap())
    .bind(row.value("visits").unwrap())
    .bind(row.value("profile").unwrap())
    .bind(row.value("notes").unwrap())
    .bind(row.index("ssn_dob").unwrap())
    .bind(row.version())
    .execute(pool)
    .await
    .unwrap();
}

async fn setup(n: u32) -> (TestDb, Columns, Vec<Patient>) {
    let db = common::database().await;
    sqlx::raw_sql(PATIENTS_SQL).execute(&db.pool).await.unwrap();
    let keyring = db
        .keyring(&Kek::generate().unwrap(), Duration::from_millis(100))
        .await;
    let table = Schema::from_toml(&patients_toml())
        .unwrap()
        .table("patients")
        .unwrap();
    keyring.ensure_scope(table.scope().unwrap()).await.unwrap();
    let cols = Columns::new(keyring, table);
    let patients: Vec<Patient> = (0..n).map(patient).collect();
    for p in &patients {
        insert(&cols, &db.pool, p).await;
    }
    (db, cols, patients)
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Every search kind returns exactly the expected rows (index candidates confirmed by
/// decryption).
async fn check_searches(cols: &Columns, pool: &PgPool, patients: &[Patient]) {
    // Equality on a normalized SSN (8-bit index: many false positives to weed out).
    let (mut candidates, mut matches) = (0, 0);
    for probe in [0usize, 1, 7, 350, 501, 699] {
        let want: BTreeSet<Uuid> = patients
            .iter()
            .filter(|p| digits(&p.ssn) == digits(&patients[probe].ssn))
            .map(|p| p.id)
            .collect();
        let q = cols
            .search_eq("ssn_bidx", &[patients[probe].ssn.as_str()])
            .await
            .unwrap();
        let rows: Vec<(Uuid, Encrypted<String>)> =
            sqlx::query_as("SELECT id, ssn FROM patients WHERE ssn_bidx = ANY($1)")
                .bind(q.terms())
                .fetch_all(pool)
                .await
                .unwrap();
        candidates += rows.len();
        matches += want.len();
        let mut got = BTreeSet::new();
        for (id, ssn) in rows {
            let ssn = cols.open("ssn", &id, &ssn).await.unwrap();
            if q.matches(&[ssn.as_str()]) {
                got.insert(id);
            }
        }
        assert_eq!(got, want, "ssn search for patient {probe}");
    }
    // About rows/256 false positives per query: the confirmation step did real work.
    assert!(
        candidates > matches,
        "an 8-bit index must give false positives: {candidates} candidates, {matches} matches"
    );
    // Deterministic equality on the ciphertext itself, under every live version (not in
    // FIPS builds).
    if !cfg!(feature = "fips") {
        for mrn in ["MRN-000042", "MRN-000899"] {
            let q = cols.search_deterministic("mrn", mrn).await.unwrap();
            let ids: BTreeSet<Uuid> =
                sqlx::query_scalar("SELECT id FROM patients WHERE mrn = ANY($1)")
                    .bind(q.terms())
                    .fetch_all(pool)
                    .await
                    .unwrap()
                    .into_iter()
                    .collect();
            let want: BTreeSet<Uuid> = patients
                .iter()
                .filter(|p| p.mrn == mrn)
                .map(|p| p.id)
                .collect();
            assert!(!want.is_empty());
            assert_eq!(ids, want, "mrn {mrn}");
        }
        let e = cols.search_deterministic("ssn", "x").await.unwrap_err();
        assert!(e.to_string().contains("is randomized"), "{e}");
    }
    // Prefix search, case- and space-insensitive.
    for prefix in ["ann", "ANNA", "zoë1", "bob12", "bea1234567"] {
        let norm = prefix.to_lowercase();
        let want: BTreeSet<Uuid> = patients
            .iter()
            .filter(|p| p.email.trim().to_lowercase().starts_with(&norm))
            .map(|p| p.id)
            .collect();
        let q = cols.search_prefix("email_prefix", prefix).await.unwrap();
        let rows: Vec<(Uuid, Encrypted<String>)> =
            sqlx::query_as("SELECT id, email FROM patients WHERE email_prefix && $1")
                .bind(q.terms())
                .fetch_all(pool)
                .await
                .unwrap();
        let mut got = BTreeSet::new();
        for (id, email) in rows {
            let email = cols.open("email", &id, &email).await.unwrap();
            if q.matches(&[email.as_str()]) {
                got.insert(id);
            }
        }
        assert_eq!(got, want, "prefix {prefix}");
        assert!(!want.is_empty() || prefix == "bea1234567");
    }
    // Compound: SSN and date of birth together.
    let p = &patients[10];
    let q = cols
        .search_eq_plain(
            "ssn_dob",
            &[Plain::of(&p.ssn).unwrap(), Plain::of(&p.dob).unwrap()],
        )
        .await
        .unwrap();
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM patients WHERE ssn_dob = ANY($1)")
        .bind(q.terms())
        .fetch_all(pool)
        .await
        .unwrap();
    assert!(ids.contains(&p.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_values_round_trip_and_search_through_rotation() {
    let (db, cols, mut patients) = setup(1400).await;
    let pool = &db.pool;

    // Typed reads.
    for p in patients.iter().step_by(97) {
        type Row = (
            Encrypted<String>,
            Encrypted<String>,
            Encrypted<time::Date>,
            Encrypted<i64>,
            Encrypted<serde_json::Value>,
            Option<Encrypted<String>>,
        );
        let (ssn, email, dob, visits, profile, notes): Row = sqlx::query_as(
            "SELECT ssn, email, dob, visits, profile, notes FROM patients WHERE id = $1",
        )
        .bind(p.id)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(cols.open("ssn", &p.id, &ssn).await.unwrap(), p.ssn);
        assert_eq!(cols.open("email", &p.id, &email).await.unwrap(), p.email);
        assert_eq!(cols.open("dob", &p.id, &dob).await.unwrap(), p.dob);
        assert_eq!(cols.open("visits", &p.id, &visits).await.unwrap(), p.visits);
        assert_eq!(
            cols.open("profile", &p.id, &profile).await.unwrap(),
            json!({"tags": ["a", "b"], "i": p.visits})
        );
        // Authenticated NULLs are sealed; nothing is SQL NULL.
        let notes = notes.expect("authenticated NULLs are stored sealed");
        assert_eq!(
            cols.open_opt("notes", &p.id, Some(&notes)).await.unwrap(),
            p.notes
        );
    }
    // TEXT storage holds the cf1: form.
    let email: String = sqlx::query_scalar("SELECT email FROM patients LIMIT 1")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(email.starts_with("cf1:"));

    check_searches(&cols, pool, &patients).await;

    // Rotate; new rows go under v2 while old ones stay on v1: search spans both.
    let scope = cols.table().scope().unwrap().clone();
    cols.keyring().rotate(&scope).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    for i in 1400..1700 {
        let p = patient(i);
        insert(&cols, pool, &p).await;
        patients.push(p);
    }
    let versions: Vec<(i32, i64)> =
        sqlx::query_as("SELECT key_version, count(*) FROM patients GROUP BY 1 ORDER BY 1")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(versions, vec![(1, 1400), (2, 300)]);
    check_searches(&cols, pool, &patients).await;

    // Half-way through a re-encryption.
    let job = Reencryptor::new(
        cols.clone(),
        pool.clone(),
        ReencryptOptions {
            batch_size: 100,
            max_rows: Some(700),
            ..ReencryptOptions::default()
        },
    );
    let r = job.run(|_| {}).await.unwrap();
    assert_eq!(r.rows, 700);
    check_searches(&cols, pool, &patients).await;
    let (_, pending) = job.pending().await.unwrap();
    assert_eq!(pending, 700);

    // Finished: every value under v2 (header census), nothing left to do, searches exact.
    let job = Reencryptor::new(cols.clone(), pool.clone(), ReencryptOptions::default());
    let r = job.run(|_| {}).await.unwrap();
    assert_eq!(r.rows, 700);
    let census = job.census().await.unwrap();
    assert_eq!(
        census.values_by_version.keys().copied().collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(census.rows_by_version_column.get(&Some(2)), Some(&1700));
    check_searches(&cols, pool, &patients).await;
    // A rerun finds nothing to do.
    assert_eq!(job.run(|_| {}).await.unwrap().rows, 0);

    // v1 holds nothing now: it can be retired (after the writers' grace period).
    tokio::time::sleep(cols.keyring().retire_grace()).await;
    let retired = coffer_postgres::reencrypt::retirable(std::slice::from_ref(&job), true)
        .await
        .unwrap();
    assert_eq!(retired, vec![coffer_core::KeyVersion(1)]);
    check_searches(&cols, pool, &patients).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_closed_with_clear_errors() {
    let (db, cols, patients) = setup(3).await;
    let pool = &db.pool;
    let (a, b) = (&patients[1], &patients[2]);

    // A plaintext written into an encrypted TEXT column: decoding refuses it.
    sqlx::query("UPDATE patients SET email = 'ann@example.org' WHERE id = $1")
        .bind(a.id)
        .execute(pool)
        .await
        .unwrap();
    let err = sqlx::query_as::<_, (Encrypted<String>,)>("SELECT email FROM patients WHERE id = $1")
        .bind(a.id)
        .fetch_one(pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a Coffer ciphertext"), "{err}");

    // A plaintext in a BYTEA column: refused or unauthenticated, never returned.
    sqlx::query("UPDATE patients SET ssn = convert_to('123-45-6789', 'UTF8') WHERE id = $1")
        .bind(a.id)
        .execute(pool)
        .await
        .unwrap();
    let r = sqlx::query_as::<_, (Encrypted<String>,)>("SELECT ssn FROM patients WHERE id = $1")
        .bind(a.id)
        .fetch_one(pool)
        .await;
    match r {
        Err(e) => assert!(e.to_string().contains("not a Coffer ciphertext"), "{e}"),
        Ok((v,)) => {
            let e = cols.open("ssn", &a.id, &v).await.unwrap_err();
            assert!(
                e.is_authentication() || e.to_string().contains("no key"),
                "{e}"
            );
        }
    }

    // A ciphertext pasted from another row fails authentication.
    let (ssn_b,): (Encrypted<String>,) = sqlx::query_as("SELECT ssn FROM patients WHERE id = $1")
        .bind(b.id)
        .fetch_one(pool)
        .await
        .unwrap();
    let e = cols.open("ssn", &a.id, &ssn_b).await.unwrap_err();
    assert!(e.is_authentication(), "{e}");
    // ... and so does one moved to another column of the same row.
    let (visits_b,): (Encrypted<String>,) =
        sqlx::query_as("SELECT visits FROM patients WHERE id = $1")
            .bind(b.id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(cols.open("ssn", &b.id, &visits_b).await.is_err());

    // The wrong Rust type for a column.
    let (visits,): (Encrypted<i64>,) = sqlx::query_as("SELECT visits FROM patients WHERE id = $1")
        .bind(b.id)
        .fetch_one(pool)
        .await
        .unwrap();
    let e = cols.open("ssn", &b.id, &visits).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("holds text values; this is a int value"),
        "{e}"
    );
    assert!(cols.row(&b.id).set("visits", "12").is_ok());
    let e = cols
        .row(&b.id)
        .set("visits", "12")
        .unwrap()
        .seal()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("holds int values"), "{e}");

    // An unknown key version (header rewritten to v9).
    let mut forged = ssn_b.as_bytes().to_vec();
    forged[0] = (forged[0] & !31) | 9;
    let forged = Encrypted::<String>::from_bytes(forged, coffer_postgres::Storage::Bytea).unwrap();
    let e = cols.open("ssn", &b.id, &forged).await.unwrap_err();
    assert!(e.to_string().contains("has no key v9"), "{e}");

    // SQL NULL written into a column with authenticated NULLs.
    sqlx::query("UPDATE patients SET notes = NULL WHERE id = $1")
        .bind(b.id)
        .execute(pool)
        .await
        .unwrap();
    let (notes,): (Option<Encrypted<String>>,) =
        sqlx::query_as("SELECT notes FROM patients WHERE id = $1")
            .bind(b.id)
            .fetch_one(pool)
            .await
            .unwrap();
    let e = cols
        .open_opt("notes", &b.id, notes.as_ref())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("authenticated NULLs"), "{e}");

    // The re-encryption job stops at a bad row, names it, and changes nothing.
    cols.keyring()
        .rotate(cols.table().scope().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before: Vec<(Uuid, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT id, ssn FROM patients ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    let job = Reencryptor::new(cols.clone(), pool.clone(), ReencryptOptions::default());
    let e = job.run(|_| {}).await.unwrap_err();
    assert!(e.to_string().contains(&a.id.to_string()), "{e}");
    let after: Vec<(Uuid, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT id, ssn FROM patients ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(before, after);

    // Schema errors are named.
    for (toml, want) in [
        (
            "[[table]]\nname = \"t\"\nscope = \"s\"\n",
            "no [[table.column]]",
        ),
        (
            "[[table]]\nname = \"t; drop\"\nscope = \"s\"\n[[table.column]]\nname = \"a\"\ntype = \"text\"\n",
            "not a plain SQL identifier",
        ),
        (
            "[[table]]\nname = \"t\"\nscope = \"s\"\n[[table.column]]\nname = \"a\"\ntype = \"txt\"\n",
            "type 'txt'",
        ),
        (
            "[[table]]\nname = \"t\"\nscope = \"s\"\n[[table.column]]\nname = \"a\"\ntype = \"int\"\n[[table.index]]\nname = \"i\"\ncolumns = [\"a\"]\nbits = 32\nnormalize = [\"trim\"]\n",
            "text columns only",
        ),
        (
            "[[table]]\nname = \"t\"\nscope = \"s\"\n[[table.column]]\nname = \"a\"\ntype = \"text\"\n[[table.index]]\nname = \"i\"\ncolumns = [\"a\"]\nbits = 4\n",
            "choose 8–256",
        ),
        (
            "[[table]]\nname = \"t\"\nscope = \"s\"\nextra = 1\n",
            "unknown field",
        ),
        (
            "[[table]]\nname = \"t\"\nscope = \"s\"\n[[table.column]]\nname = \"a\"\nid = \"t.a,b\"\ntype = \"text\"\n[[table.index]]\nname = \"i\"\ncolumns = [\"a\"]\nbits = 32\n",
            "may not contain",
        ),
    ] {
        let e = Schema::from_toml(toml)
            .and_then(|s| s.tables())
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{toml}: {e}");
    }
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_columns_migrate_and_two_workers_split_the_rows() {
    let db = common::database().await;
    let pool = &db.pool;
    sqlx::raw_sql(
        "CREATE TABLE people (id bigint PRIMARY KEY, ssn_plain text, born date, seen timestamptz,
            doc jsonb, ssn bytea, ssn_bidx bytea, dob bytea, seen_at text, doc_enc bytea,
            key_version int);
         INSERT INTO people (id, ssn_plain, born, seen, doc)
         SELECT g, lpad((g * 7919 % 1000000000)::text, 9, '0'),
                DATE '1950-01-01' + (g % 20000),
                TIMESTAMPTZ '2020-01-01 00:00:00+00' + g * interval '1 second' + interval '0.000123 second',
                CASE WHEN g % 5 = 0 THEN NULL ELSE jsonb_build_object('b', g, 'a', 'x') END
         FROM generate_series(1, 5000) g;",
    )
    .execute(pool)
    .await
    .unwrap();
    let keyring = db
        .keyring(&Kek::generate().unwrap(), Duration::from_millis(100))
        .await;
    let schema = Schema::from_toml(
        &coffer_testkit::columns_schema::table("people", "table:people")
            .column("ssn", "text", &[("migrate_from", "ssn_plain")])
            .column("dob", "date", &[("migrate_from", "born")])
            .column(
                "seen_at",
                "timestamp",
                &[("storage", "text"), ("migrate_from", "seen")],
            )
            .column("doc_enc", "json", &[("migrate_from", "doc")])
            .index("ssn_bidx", &["ssn"], 24, &[])
            .toml(),
    )
    .unwrap();
    let table = schema.table("people").unwrap();
    keyring.ensure_scope(table.scope().unwrap()).await.unwrap();
    let cols = Columns::new(keyring, table);
    let job = Reencryptor::new(
        cols.clone(),
        pool.clone(),
        ReencryptOptions {
            batch_size: 97,
            clear_plaintext: true,
            ..ReencryptOptions::default()
        },
    );
    assert_eq!(job.census().await.unwrap().plaintext_left, 5000 * 3 + 4000);
    let report = job.run_workers(2, |_| {}).await.unwrap();
    // Two workers: every row exactly once.
    assert_eq!(report.rows, 5000);
    assert_eq!(report.migrated, 5000);
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM people WHERE ssn_plain IS NOT NULL OR born IS NOT NULL OR key_version IS DISTINCT FROM 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
    type Row = (
        i64,
        Encrypted<String>,
        Encrypted<time::Date>,
        Encrypted<time::OffsetDateTime>,
        Option<Encrypted<serde_json::Value>>,
    );
    let rows: Vec<Row> =
        sqlx::query_as("SELECT id, ssn, dob, seen_at, doc_enc FROM people ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 5000);
    let day0 = time::Date::from_calendar_date(1950, time::Month::January, 1).unwrap();
    let t0 = time::OffsetDateTime::from_unix_timestamp(1_577_836_800).unwrap();
    for (id, ssn, dob, seen, doc) in rows.iter().step_by(13) {
        assert_eq!(
            cols.open("ssn", id, ssn).await.unwrap(),
            format!("{:09}", id * 7919 % 1_000_000_000)
        );
        assert_eq!(
            cols.open("dob", id, dob).await.unwrap(),
            day0 + time::Duration::days(id % 20000)
        );
        assert_eq!(
            cols.open("seen_at", id, seen).await.unwrap(),
            t0 + time::Duration::seconds(*id) + time::Duration::microseconds(123)
        );
        let doc = cols.open_opt("doc_enc", id, doc.as_ref()).await.unwrap();
        if id % 5 == 0 {
            assert_eq!(doc, None);
        } else {
            assert_eq!(doc, Some(json!({"a": "x", "b": id})));
        }
    }
    // Search the migrated column.
    let q = cols.search_eq("ssn_bidx", &["000039595"]).await.unwrap();
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM people WHERE ssn_bidx = ANY($1)")
        .bind(q.terms())
        .fetch_all(pool)
        .await
        .unwrap();
    assert!(ids.contains(&5));
    db.drop().await;
}

#[test]
fn the_job_exports_its_progress_as_metrics() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let (db, cols, _) = setup(250).await;
            cols.keyring()
                .rotate(cols.table().scope().unwrap())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            let job = Reencryptor::new(
                cols.clone(),
                db.pool.clone(),
                ReencryptOptions {
                    batch_size: 100,
                    ..ReencryptOptions::default()
                },
            );
            assert_eq!(job.run(|_| {}).await.unwrap().rows, 250);
            db.drop().await;
        })
    });
    let mut counters = std::collections::HashMap::new();
    let mut gauges = std::collections::HashMap::new();
    let mut histograms = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if !key.key().name().starts_with("coffer_reencrypt_") {
            continue; // the keyring's own metrics (docs/KEYS.md)
        }
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        assert_eq!(labels, vec!["table=patients".to_owned()], "{key:?}");
        let name = key.key().name().to_owned();
        match value {
            metrics_util::debugging::DebugValue::Counter(n) => {
                counters.insert(name, n);
            }
            metrics_util::debugging::DebugValue::Gauge(g) => {
                gauges.insert(name, g.into_inner());
            }
            metrics_util::debugging::DebugValue::Histogram(h) => {
                histograms.insert(name, h.len());
            }
        }
    }
    assert_eq!(counters.get("coffer_reencrypt_rows_total"), Some(&250));
    assert_eq!(counters.get("coffer_reencrypt_batches_total"), Some(&3));
    assert_eq!(
        counters.get("coffer_reencrypt_migrated_rows_total"),
        Some(&0)
    );
    assert_eq!(histograms.get("coffer_reencrypt_batch_seconds"), Some(&3));
    // The last pending count the job saw: none left.
    assert_eq!(gauges.get("coffer_reencrypt_pending_rows"), Some(&0.0));
}

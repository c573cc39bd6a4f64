//! `coffer reencrypt` end to end on PostgreSQL: a plaintext migration killed with SIGKILL
//! part-way and resumed, two processes re-encrypting one table at once, retirement of the
//! emptied version, and the errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_core::Kek;
use coffer_keys::{KekId, KekRing, Keyring, KeyringConfig, LocalKek};
use coffer_postgres::{Columns, Encrypted, Schema};
use coffer_store::SqlStore;

use coffer_testkit::pg::TestDb;
use coffer_testkit::psql::psql;
use common::{coffer, keys, ok, output};

const ROWS: i64 = 30_000;

/// coffer-columns.toml: the SSN column, migrated from `ssn_plain`, and its blind index.
fn schema() -> String {
    coffer_testkit::columns_schema::table("patients", "table:patients")
        .column("ssn", "text", &[("migrate_from", "ssn_plain")])
        .index("ssn_bidx", &["ssn"], 20, &["digits"])
        .toml()
}
fn count(url: &str, sql: &str) -> i64 {
    psql(url, sql).parse().unwrap()
}

fn reencrypt(d: &Path, url: &str, key: &str, args: &[&str]) -> Command {
    let mut cmd = coffer();
    cmd.current_dir(d)
        .arg("reencrypt")
        .args(args)
        .env("DATABASE_URL", url)
        .env("COFFER_KEK", key)
        .env_remove("COFFER_CONFIG")
        .env_remove("COFFER_COLUMNS")
        .env_remove("COFFER_STORE_URL")
        .env_remove("COFFER_REDIS_URL")
        .stdin(Stdio::null());
    cmd
}

fn moved(stderr: &str) -> u64 {
    let at = stderr.find(" rows moved").expect(stderr);
    stderr[..at].rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_survives_kill_9_then_two_processes_reencrypt_and_v1_retires() {
    let db = TestDb::new("coffer_reenc");
    let url = db.url().to_owned();
    psql(
        &url,
        &format!(
            "CREATE TABLE patients (id bigint PRIMARY KEY, ssn_plain text, ssn bytea, ssn_bidx bytea, key_version int);
             INSERT INTO patients (id, ssn_plain)
             SELECT g, lpad((g * 7919 % 1000000000)::text, 9, '0') FROM generate_series(1, {ROWS}) g;"
        ),
    );
    let store = common::KeyStoreDir::init();
    let (d, env, key) = (store.path(), store.env(), store.kek.as_str());
    let kek = Kek::from_base64(key).unwrap();
    let toml = std::fs::read_to_string(d.join("coffer.toml")).unwrap();
    std::fs::write(
        d.join("coffer.toml"),
        toml.replace("active_ttl = \"5s\"", "active_ttl = \"500ms\""),
    )
    .unwrap();
    ok(&keys(d, &["create-scope", "table:patients"], &env));
    std::fs::write(d.join("coffer-columns.toml"), schema()).unwrap();

    // Before anything: the status names what is left.
    let st = output(reencrypt(d, &url, key, &["--status"]), None);
    st.success();
    assert!(
        st.stdout_str().contains(&format!("{ROWS} rows pending"))
            && st.stdout_str().contains(&format!("plaintext left: {ROWS}")),
        "{}",
        st.stdout_str()
    );

    // 1. A slow migration, killed with SIGKILL part-way through.
    let mut child = reencrypt(d, &url, key, &["--batch-size", "100", "--rate", "2000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let done = count(
            &url,
            "SELECT count(*) FROM patients WHERE key_version IS NOT NULL",
        );
        if done >= 2000 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the job ended early");
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // A COMMIT the killed process had already sent still completes on the server: read the
    // count once it has stopped changing.
    let done_sql = "SELECT count(*) FROM patients WHERE key_version IS NOT NULL";
    let mut done = count(&url, done_sql);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = count(&url, done_sql);
        if now == done {
            break;
        }
        done = now;
    }
    assert!(done < ROWS, "the kill came too late to test anything");
    // Every row is either wholly migrated or untouched: no half-written batch.
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM patients WHERE (key_version IS NULL) <> (ssn IS NULL) \
             OR (key_version IS NULL) <> (ssn_bidx IS NULL)"
        ),
        0
    );

    // 2. The rerun does exactly the rest.
    let out = output(reencrypt(d, &url, key, &[]), None);
    out.success();
    assert_eq!(
        moved(out.stdout_str()) as i64,
        ROWS - done,
        "{}",
        out.stdout_str()
    );
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM patients WHERE key_version = 1 AND ssn IS NOT NULL"
        ),
        ROWS
    );
    let st = output(reencrypt(d, &url, key, &["--status"]), None);
    assert!(
        st.stdout_str().contains("0 rows pending")
            && st.stdout_str().contains(&format!("v1: {ROWS}"))
            && st.stdout_str().contains("plaintext left: 0"),
        "{}",
        st.stdout_str()
    );

    // 3. Rotate, then two processes at once: every row moved exactly once between them.
    ok(&keys(d, &["rotate", "table:patients"], &env));
    let spawn = || {
        reencrypt(d, &url, key, &["--batch-size", "50"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (ea, eb) = (
        String::from_utf8_lossy(&a.stdout).into_owned(),
        String::from_utf8_lossy(&b.stdout).into_owned(),
    );
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    assert_eq!(moved(&ea) + moved(&eb), ROWS as u64, "{ea}\n{eb}");
    assert!(
        moved(&ea) > 0 && moved(&eb) > 0,
        "both workers took rows: {ea}\n{eb}"
    );
    // Without --retire and without a terminal, v1 is only reported.
    assert!(
        ea.contains("v1 hold no value any more") || eb.contains("v1 hold no value any more"),
        "{ea}\n{eb}"
    );

    // The values are intact and searchable under v2 (checked through the library).
    let store = Arc::new(
        SqlStore::connect(&format!("sqlite:{}", d.join("keys.db").display()))
            .await
            .unwrap(),
    );
    let id = KekId::new("main", 1).unwrap();
    let ring = KekRing::new(
        [(
            id.clone(),
            Arc::new(LocalKek::new(id.clone(), kek.clone())) as Arc<dyn coffer_keys::KekProvider>,
        )],
        id,
    )
    .unwrap();
    let keyring = Keyring::new(store, ring, KeyringConfig::default())
        .await
        .unwrap();
    let table = Schema::from_toml(&schema())
        .unwrap()
        .table("patients")
        .unwrap();
    let cols = Columns::new(keyring, table);
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let rows: Vec<(i64, Encrypted<String>, i32)> =
        sqlx::query_as("SELECT id, ssn, key_version FROM patients WHERE id % 101 = 0")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (id, ssn, v) in rows {
        assert_eq!(v, 2);
        assert_eq!(ssn.version().0, 2);
        assert_eq!(
            cols.open("ssn", &id, &ssn).await.unwrap(),
            format!("{:09}", id * 7919 % 1_000_000_000)
        );
    }
    let q = cols.search_eq("ssn_bidx", &["000-079-190"]).await.unwrap();
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM patients WHERE ssn_bidx = ANY($1)")
        .bind(q.terms())
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(ids.contains(&10), "{ids:?}");

    // 4. Retire v1 (after the writers' grace period: 2 × active_ttl).
    std::thread::sleep(Duration::from_millis(1100));
    let out = output(reencrypt(d, &url, key, &["--retire"]), None);
    out.success();
    assert!(
        out.stdout_str().contains("retired v1"),
        "{}",
        out.stdout_str()
    );
    let list = ok(&keys(d, &["list"], &env));
    assert!(list.contains("retired"), "{list}");

    // 5. Errors: a plaintext pasted into the column stops the job at that row (exit 1),
    //    nothing changes; an unreachable database is exit 3; a bad schema exit 2.
    ok(&keys(d, &["rotate", "table:patients"], &env));
    psql(
        &url,
        "UPDATE patients SET ssn = convert_to('123-45-6789', 'UTF8') WHERE id = 77",
    );
    let before = psql(
        &url,
        "SELECT md5(string_agg(ssn::text, ',' ORDER BY id)) FROM patients",
    );
    let out = output(reencrypt(d, &url, key, &["--batch-size", "1000"]), None);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("row 77"), "{}", out.stderr);
    let after = psql(
        &url,
        "SELECT md5(string_agg(ssn::text, ',' ORDER BY id)) FROM patients",
    );
    assert_eq!(
        before,
        after,
        "{} rows moved to v3; {}",
        count(&url, "SELECT count(*) FROM patients WHERE key_version = 3"),
        out.stderr
    );
    let out = output(
        reencrypt(d, "postgres://postgres@127.0.0.1:1/none", key, &[]),
        None,
    );
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    std::fs::write(d.join("bad.toml"), "[[table]]\nname = \"x\"\n").unwrap();
    let out = output(reencrypt(d, &url, key, &["--schema", "bad.toml"]), None);
    out.fails(2, "missing field `scope`");

    pool.close().await;
}

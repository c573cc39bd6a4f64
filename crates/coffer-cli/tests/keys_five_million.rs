//! The key store at a hospital's scale (issue #19): 5 000 000 scopes on PostgreSQL and
//! 1 000 000 on SQLite (COFFER_SCALE_SCOPES to change both) created in bulk by `coffer keys
//! create-scope --from-file`, a page listed by prefix, every DEK re-wrapped by `coffer keys
//! rotate-kek` with the first run SIGKILLed half-way and a second run finishing it, then every
//! DEK opened by `coffer keys check --all`. `make test` runs both with 20 000 scopes on the
//! debug build; the figures come from a release run (`--release ... -- --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use coffer_core::Kek;
use coffer_keys::{KekId, KeyStore as _};
use coffer_store::SqlStore;
use common::{coffer_in, keys, ok};

fn rate(n: u64, d: Duration) -> String {
    format!(
        "{n} in {:.1} s ({:.0}/s)",
        d.as_secs_f64(),
        n as f64 / d.as_secs_f64()
    )
}

/// The scope count: `COFFER_SCALE_SCOPES`, or `default`.
fn scopes(default: u64) -> u64 {
    let n = std::env::var("COFFER_SCALE_SCOPES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    assert!(n >= 1_000, "COFFER_SCALE_SCOPES must be at least 1000");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_million_scopes_created_listed_and_kek_rotated_through_a_kill() {
    let db = coffer_testkit::pg::TestDb::create("coffer_scale").await;
    let dir = tempfile::tempdir().unwrap();
    at_scale(db.url(), dir.path(), scopes(5_000_000)).await;
}

/// The same on SQLite, at the 1 000 000 by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_million_scopes_on_sqlite_created_listed_and_kek_rotated_through_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("keys.db").display());
    at_scale(&url, dir.path(), scopes(1_000_000)).await;
}

/// Creates `n` scopes in the store at `url` (configured in `d`), lists a page, rotates the KEK
/// through a SIGKILL and checks every DEK.
async fn at_scale(url: &str, d: &std::path::Path, n: u64) {
    let (k1, k2) = (
        Kek::generate().unwrap().to_base64().to_string(),
        Kek::generate().unwrap().to_base64().to_string(),
    );
    let env = [("K1", k1.as_str()), ("K2", k2.as_str())];
    ok(&keys(d, &["init", "--store", url, "--kek", "env:K1"], &env));

    // One scope per patient.
    {
        let f = std::fs::File::create(d.join("patients.txt")).unwrap();
        let mut w = std::io::BufWriter::new(f);
        for i in 0..n {
            writeln!(w, "patient:{i:07}").unwrap();
        }
        w.flush().unwrap();
    }
    let t = Instant::now();
    let out = ok(&keys(
        d,
        &["create-scope", "--from-file", "patients.txt"],
        &env,
    ));
    let created = t.elapsed();
    assert!(
        out.contains(&format!(
            "created {n} scopes from patients.txt; 0 existed already"
        )),
        "{out}"
    );
    println!("create-scope --from-file: {}", rate(n, created));

    // A page by prefix, at the far end of the store.
    let last = n - 1;
    let prefix = format!("patient:{:06}", last / 10);
    let t = Instant::now();
    let page = ok(&keys(
        d,
        &["list", "--prefix", &prefix, "--limit", "5", "--json"],
        &env,
    ));
    let listed = t.elapsed();
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&page)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scope"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..5)
        .map(|j| format!("patient:{:07}", last / 10 * 10 + j))
        .collect();
    assert_eq!(names, expected);
    println!(
        "list --prefix {prefix} --limit 5: {:.0} ms (the whole command)",
        listed.as_secs_f64() * 1e3
    );

    // A new primary KEK; the re-wrap is SIGKILLed half-way, then run again to the end.
    ok(&keys(
        d,
        &["add-kek", "--source", "env:K2", "--primary"],
        &env,
    ));
    let store = SqlStore::connect(url).await.unwrap();
    let target = KekId::new("main", 2).unwrap();
    let total = store.count_deks_not_under(&target).await.unwrap();
    assert_eq!(total, n + 1, "every scope's DEK and the audit chain key");
    let t = Instant::now();
    let mut child = coffer_in(d, &env)
        .args(["keys", "rotate-kek"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut left = total;
    while left > total / 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "rotate-kek ended before it was killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = store.count_deks_not_under(&target).await.unwrap();
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let first_run = t.elapsed();
    // A COMMIT the killed process had sent still completes: wait until the count is still.
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = store.count_deks_not_under(&target).await.unwrap();
        if now == left {
            break;
        }
        left = now;
    }
    assert!(
        left > 0 && left < total,
        "killed part-way: {left} of {total} left"
    );
    println!(
        "rotate-kek, first run (SIGKILLed): {}",
        rate(total - left, first_run)
    );
    let t = Instant::now();
    let out = ok(&keys(d, &["rotate-kek"], &env));
    let second = t.elapsed();
    assert!(out.contains(&format!("{left} DEKs re-wrapped")), "{out}");
    assert_eq!(store.count_deks_not_under(&target).await.unwrap(), 0);
    println!("rotate-kek, second run: {}", rate(left, second));

    // Every active DEK opens, through the KEKs alone.
    let t = Instant::now();
    let out = ok(&keys(d, &["check", "--all"], &env));
    let checked = t.elapsed();
    // The patients' scopes and the audit chain key's.
    assert!(
        out.contains(&format!(
            "{} active DEK(s) of {} scope(s) open",
            n + 1,
            n + 1
        )),
        "{out}"
    );
    println!("check --all: {}", rate(n, checked));
    drop(store);
}

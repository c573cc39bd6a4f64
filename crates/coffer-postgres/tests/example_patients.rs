//! Runs examples/patients.rs (the docs/COLUMNS.md walk-through) against a fresh database, so
//! the documented program keeps working: twice, as a user runs it again, on the KEK file and
//! key store the first run left.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[allow(dead_code, clippy::unwrap_used)]
#[path = "../examples/patients.rs"]
mod example;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patients_example_runs() {
    let db = common::database().await;
    let dir = tempfile::tempdir().unwrap();
    example::run(&db.url, dir.path()).await.unwrap();
    let key = std::fs::read(dir.path().join("example.key")).unwrap();
    example::run(&db.url, dir.path()).await.unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("example.key")).unwrap(),
        key,
        "the second run reuses the KEK file"
    );
    db.drop().await;
}

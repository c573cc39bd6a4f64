//! Runs examples/tenants.rs (docs/COLUMNS.md §7) against a fresh database, twice, as a user
//! runs it again on the KEK file and key store the first run left.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[allow(dead_code, clippy::unwrap_used)]
#[path = "../examples/tenants.rs"]
mod example;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenants_example_runs() {
    let db = common::database().await;
    let dir = tempfile::tempdir().unwrap();
    example::run(&db.url, dir.path()).await.unwrap();
    example::run(&db.url, dir.path()).await.unwrap();
    db.drop().await;
}

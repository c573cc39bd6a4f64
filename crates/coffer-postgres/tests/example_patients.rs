//! Runs examples/patients.rs (the docs/COLUMNS.md walk-through) against a fresh database, so
//! the documented program keeps working.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[allow(dead_code, clippy::unwrap_used)]
#[path = "../examples/patients.rs"]
mod example;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patients_example_runs() {
    let db = common::database().await;
    example::run(&db.url).await.unwrap();
    db.drop().await;
}

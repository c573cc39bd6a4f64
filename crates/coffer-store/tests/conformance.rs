//! The store conformance suite (`coffer_testkit::conformance`) on SQLite and PostgreSQL, each
//! check on a fresh database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};

use coffer_keys::KeyStore;
use coffer_store::SqlStore;
use coffer_testkit::conformance;

async fn run(postgres: bool) {
    let dbs = Arc::new(Mutex::new(Vec::new()));
    conformance::run(|| {
        let dbs = Arc::clone(&dbs);
        async move {
            let db = if postgres {
                common::postgres().await
            } else {
                common::sqlite().await
            };
            let store = SqlStore::connect(&db.url).await.unwrap();
            dbs.lock().unwrap().push(db);
            Arc::new(store) as Arc<dyn KeyStore>
        }
    })
    .await;
    let dbs = std::mem::take(&mut *dbs.lock().unwrap());
    for db in dbs {
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_passes_the_conformance_suite() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_the_conformance_suite() {
    run(true).await;
}

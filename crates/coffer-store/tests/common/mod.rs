//! Test stores: a fresh SQLite file, or a fresh PostgreSQL database on the local server
//! (coffer-testkit's `pg`; the test command starts the server if it is down).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::sync::Arc;

use coffer_core::Kek;
use coffer_keys::{Keyring, KeyringConfig};
use coffer_store::SqlStore;
use coffer_testkit::keyring_fixtures::KeyringSetup;
use coffer_testkit::pg;

/// A test database; a PostgreSQL one is dropped with it.
pub struct TestDb {
    pub url: String,
    _pg: Option<pg::TestDb>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("keys.db").display());
    TestDb {
        url,
        _pg: None,
        _dir: Some(dir),
    }
}

pub async fn postgres() -> TestDb {
    let db = pg::TestDb::create("coffer_test").await;
    TestDb {
        url: db.url().to_owned(),
        _pg: Some(db),
        _dir: None,
    }
}

impl TestDb {
    /// Drops the database now (it is dropped with the value anyway).
    pub async fn drop_pg(self) {}
}

/// A keyring on its own connection pool to `url`, as a process would open it: one local KEK,
/// `main/v1` over `kek`, and `config`.
pub async fn keyring(url: &str, kek: &Kek, config: KeyringConfig) -> Keyring {
    let store = Arc::new(SqlStore::connect(url).await.unwrap());
    KeyringSetup::new(store, kek).config(config).build().await
}

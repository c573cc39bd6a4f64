//! Test stores: a fresh SQLite file, or a fresh PostgreSQL database on the local server
//! (`COFFER_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`; the test
//! command starts the server if it is down).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::sync::Arc;

use coffer_core::Kek;
use coffer_keys::{KekId, KekRing, Keyring, KeyringConfig, LocalKek};
use coffer_store::SqlStore;
use sqlx::Connection as _;

pub fn pg_admin_url() -> String {
    std::env::var("COFFER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A test database; PostgreSQL ones are dropped by [`TestDb::drop_pg`] (best effort).
pub struct TestDb {
    pub url: String,
    pub pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("keys.db").display());
    TestDb {
        url,
        pg_name: None,
        _dir: Some(dir),
    }
}

pub async fn postgres() -> TestDb {
    sqlx::any::install_default_drivers();
    let admin = pg_admin_url();
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin} is not reachable ({e}); `make test` starts it")
        });
    let rnd: [u8; 6] = coffer_core::digest::random_array().unwrap();
    let name = format!("coffer_test_{}", hex::encode(rnd));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    TestDb {
        url: format!("{base}/{name}"),
        pg_name: Some(name),
        _dir: None,
    }
}

impl TestDb {
    pub async fn drop_pg(self) {
        if let Some(name) = &self.pg_name {
            if let Ok(mut conn) = sqlx::AnyConnection::connect(&pg_admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}

pub fn local(name: &str, version: u32, kek: &Kek) -> (KekId, Arc<dyn coffer_keys::KekProvider>) {
    let id = KekId::new(name, version).unwrap();
    (id.clone(), Arc::new(LocalKek::new(id, kek.clone())))
}

pub fn ring(keks: &[(&str, u32, &Kek)], primary: (&str, u32)) -> KekRing {
    KekRing::new(
        keks.iter().map(|(n, v, k)| local(n, *v, k)),
        KekId::new(primary.0, primary.1).unwrap(),
    )
    .unwrap()
}

pub async fn keyring(url: &str, ring: KekRing, config: KeyringConfig) -> Keyring {
    let store = Arc::new(SqlStore::connect(url).await.unwrap());
    Keyring::new(store, ring, config).await.unwrap()
}

//! Test databases and keyrings: a fresh PostgreSQL database per test on the local server
//! (coffer-testkit's `pg`; `make test` starts the server if it is down). The database holds both the key store and the data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use coffer_core::Kek;
use coffer_keys::{KekId, KekRing, Keyring, KeyringConfig, LocalKek};
use coffer_store::SqlStore;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// A fresh database (coffer-testkit's `pg`) with a pool on it, dropped by [`TestDb::drop`].
pub struct TestDb {
    pub url: String,
    pub name: String,
    pub pool: PgPool,
    db: coffer_testkit::pg::TestDb,
}

pub async fn database() -> TestDb {
    let db = coffer_testkit::pg::TestDb::create("coffer_cols").await;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect(db.url())
        .await
        .unwrap();
    TestDb {
        url: db.url().to_owned(),
        name: db.name().to_owned(),
        pool,
        db,
    }
}

impl TestDb {
    /// Closes the pool, then drops the database.
    pub async fn drop(self) {
        self.pool.close().await;
        drop(self.db);
    }

    /// A keyring whose key store lives in this database, under a fresh local KEK.
    pub async fn keyring(&self, kek: &Kek, active_ttl: Duration) -> Keyring {
        let config = KeyringConfig {
            active_ttl,
            audit_unwraps: false,
            ..KeyringConfig::default()
        };
        self.keyring_with(kek, config).await
    }

    /// As [`TestDb::keyring`], with the keyring's settings given.
    pub async fn keyring_with(&self, kek: &Kek, config: KeyringConfig) -> Keyring {
        sqlx::any::install_default_drivers();
        let id = KekId::new("test", 1).unwrap();
        let ring = KekRing::new(
            [(
                id.clone(),
                Arc::new(LocalKek::new(id.clone(), kek.clone()))
                    as Arc<dyn coffer_keys::KekProvider>,
            )],
            id,
        )
        .unwrap();
        let store = Arc::new(SqlStore::connect(&self.url).await.unwrap());
        let keyring = Keyring::new(store, ring, config).await.unwrap();
        keyring.register_keks().await.unwrap();
        keyring
    }
}

/// The patients table of docs/COLUMNS.md, in a smaller form for tests.
pub const PATIENTS_SQL: &str = "
CREATE TABLE patients (
    id           uuid PRIMARY KEY,
    clinic       int NOT NULL DEFAULT 1,
    ssn          bytea,
    ssn_bidx     bytea,
    mrn          bytea,
    email        text,
    email_prefix bytea[],
    dob          bytea,
    visits       bytea,
    profile      bytea,
    notes        text,
    ssn_dob      bytea,
    key_version  int
);
CREATE INDEX patients_ssn_bidx ON patients (ssn_bidx);
CREATE INDEX patients_mrn ON patients (mrn);
CREATE INDEX patients_email_prefix ON patients USING gin (email_prefix);
CREATE INDEX patients_ssn_dob ON patients (ssn_dob);
";

/// The patients schema of docs/COLUMNS.md for [`PATIENTS_SQL`], with the deterministic column
/// made randomized in FIPS builds (which refuse AES-SIV).
pub fn patients_toml() -> String {
    let mrn_mode = if cfg!(feature = "fips") {
        "randomized"
    } else {
        "deterministic"
    };
    coffer_testkit::columns_schema::table("patients", "table:patients")
        .column("ssn", "text", &[])
        .column("mrn", "text", &[("mode", mrn_mode)])
        .column("email", "text", &[("storage", "text")])
        .column("dob", "date", &[])
        .column("visits", "int", &[])
        .column("profile", "json", &[])
        .column(
            "notes",
            "text",
            &[("storage", "text"), ("nulls", "authenticated")],
        )
        .index("ssn_bidx", &["ssn"], 8, &["digits"])
        .prefix_index("email_prefix", "email", 32, &["trim", "casefold"], (3, 8))
        .index("ssn_dob", &["ssn", "dob"], 32, &[])
        .toml()
}

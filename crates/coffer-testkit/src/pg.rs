//! A throw-away PostgreSQL database: created with a random name on the local server, dropped
//! (with `FORCE`, so open connections do not keep it) when the [`TestDb`] is dropped.
//!
//! The server is `COFFER_TEST_PG_URL` (or `COFFER_TEST_PG`), by default
//! `postgres://postgres@127.0.0.1:5432/postgres`; `make test` starts it when it is down. The
//! database is created and dropped through the `psql` client, so no Rust driver is needed.

use crate::psql::{psql, try_psql};

/// The default administrative URL: the local server, trust authentication.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The URL databases are created through: `COFFER_TEST_PG_URL`, else `COFFER_TEST_PG`, else
/// [`DEFAULT_ADMIN_URL`].
pub fn admin_url() -> String {
    ["COFFER_TEST_PG_URL", "COFFER_TEST_PG"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_owned())
}

/// `url` with its database part replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, rest) = url
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("the PostgreSQL URL {url:?} has no database part"));
    match rest.split_once('?') {
        Some((_, query)) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// A fresh database on the test server, dropped on `Drop`.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    admin: String,
}

impl TestDb {
    /// Creates `prefix_` plus 12 random hex digits (blocking: runs `psql`). `prefix` must be a
    /// plain lower-case SQL identifier. Panics, saying what to start, when the server is down.
    #[track_caller]
    pub fn new(prefix: &str) -> TestDb {
        Self::try_new(prefix).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`TestDb::new`], with the failure as an error (for benchmarks that skip without a
    /// server).
    pub fn try_new(prefix: &str) -> Result<TestDb, String> {
        let admin = admin_url();
        let name = crate::random::name(prefix);
        try_psql(&admin, &format!("CREATE DATABASE {name}")).map_err(|e| {
            format!(
                "cannot create a test database through {admin} ({}); start PostgreSQL \
                 (`make test` or scripts/services-up.sh) or set COFFER_TEST_PG_URL",
                e.trim()
            )
        })?;
        Ok(TestDb {
            url: with_database(&admin, &name),
            name,
            admin,
        })
    }

    /// [`TestDb::new`] for async tests: `psql` runs on tokio's blocking pool.
    pub async fn create(prefix: &str) -> TestDb {
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || TestDb::new(&prefix))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its URL (`postgres://…/NAME`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `sql` in this database through `psql`; its output, trimmed.
    #[track_caller]
    pub fn sql(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }

    /// `pg_dump --no-owner` of the whole database (schema and data), as text.
    pub fn dump(&self) -> String {
        let out = std::process::Command::new("pg_dump")
            .args(["--no-owner", "-d", &self.url])
            .output()
            .expect("cannot run pg_dump; install the PostgreSQL client");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort: a leftover database has a random name and harms no later run.
        let _ = try_psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }

    #[test]
    fn a_database_exists_until_dropped() {
        let db = TestDb::new("coffer_testkit");
        assert_eq!(db.sql("SELECT current_database()"), db.name());
        db.sql("CREATE TABLE t (v int); INSERT INTO t VALUES (42)");
        assert_eq!(db.sql("SELECT v FROM t"), "42");
        let name = db.name().to_owned();
        drop(db);
        let left = psql(
            &admin_url(),
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
        );
        assert_eq!(left, "0");
    }

    #[tokio::test]
    async fn the_async_constructor_makes_a_database_too() {
        let db = TestDb::create("coffer_testkit").await;
        assert_eq!(db.sql("SELECT 1"), "1");
    }
}

//! SQL through the `psql` client (for tests that look at what is stored, and for setting
//! databases up without a Rust driver).

use std::process::Command;

/// Runs `sql` on `url` with `psql -qAtc` (quiet, unaligned, tuples only); stdout, trimmed.
/// Panics with psql's message when it fails.
#[track_caller]
pub fn psql(url: &str, sql: &str) -> String {
    try_psql(url, sql).unwrap_or_else(|e| panic!("psql {sql}: {e}"))
}

/// [`psql`], with the failure as an error (psql's stderr, or why it did not run).
pub fn try_psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .map_err(|e| format!("cannot run psql ({e}); install the PostgreSQL client"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8(out.stdout)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("psql printed non-UTF-8 output: {e}"))
}

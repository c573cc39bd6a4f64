//! The embedded defaults beside an existing key store: a missing master key is not answered
//! with "make a new one" (a new key cannot open the ballots' keys), and `--dev` does not write a
//! development key the store was not made with.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::*;

fn serve(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env_remove("COFFER_MASTER_KEY")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_existing_key_store_asks_for_its_own_key_not_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ballots-keys.db"), b"").unwrap();
    let (code, err) = serve(dir.path(), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("COFFER_MASTER_KEY") && err.contains("same") && !err.contains("keygen"),
        "{err}"
    );
    let (code, err) = serve(dir.path(), &["--dev"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("ballots-dev.key") && err.contains("another master key"),
        "{err}"
    );
    assert!(
        !dir.path().join("ballots-dev.key").exists(),
        "--dev wrote a key the store was not made with"
    );
}

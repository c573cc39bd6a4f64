//! The tombstone ledger (`[audit] tombstone_file`, docs/KEYS.md §7.7): restoring a key-store
//! backup taken before a destroy does not bring the destroyed scope back. `coffer keys
//! restored` destroys it again, and so does any start-up that proves the KEKs; a ledger line
//! that does not verify is never acted on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use coffer_core::Kek;
use common::{keys, ok};

/// The states of a scope's versions, from `keys list --json`.
fn states(d: &Path, env: &[(&str, &str)], scope: &str) -> Vec<String> {
    let list: serde_json::Value =
        serde_json::from_str(&ok(&keys(d, &["list", "--json"], env))).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["scope"] == scope)
        .map(|s| {
            s["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["state"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Copies the SQLite store's files (`keys.db` and any `-wal`/`-shm`) from `from` to `to`.
fn copy_store(from: &Path, to: &Path) {
    for f in ["keys.db", "keys.db-wal", "keys.db-shm"] {
        let _ = std::fs::remove_file(to.join(f));
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
}

#[test]
fn a_restored_store_cannot_bring_a_destroyed_scope_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kek = Kek::generate().unwrap().to_base64().to_string();
    let env = [("COFFER_KEK", kek.as_str())];
    ok(&keys(
        d,
        &[
            "init",
            "--store",
            "sqlite:keys.db",
            "--kek",
            "env:COFFER_KEK",
        ],
        &env,
    ));
    // The ledger lives beside the config here; in production, somewhere a restore of the key
    // store does not reach.
    let toml = std::fs::read_to_string(d.join("coffer.toml")).unwrap();
    let toml = if toml.contains("[audit]") {
        toml.replace("[audit]", "[audit]\ntombstone_file = \"tombstones\"")
    } else {
        format!("{toml}\n[audit]\ntombstone_file = \"tombstones\"\n")
    };
    std::fs::write(d.join("coffer.toml"), toml).unwrap();
    ok(&keys(
        d,
        &["create-scope", "patient:17", "patient:18"],
        &env,
    ));

    // A backup, then patient 17 is erased.
    let backup = tempfile::tempdir().unwrap();
    copy_store(d, backup.path());
    ok(&keys(d, &["destroy", "patient:17", "--yes"], &env));
    let ledger = std::fs::read_to_string(d.join("tombstones")).unwrap();
    assert_eq!(ledger.lines().count(), 1, "{ledger}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(d.join("tombstones"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the ledger is private");

    // The backup is restored: patient 17's key is back in the store...
    copy_store(backup.path(), d);
    assert_eq!(states(d, &env, "patient:17"), ["active"]);
    // ...until `keys restored` reads the ledger.
    let out = ok(&keys(d, &["restored", "--yes"], &env));
    assert!(
        out.contains("1 scopes destroyed again (patient:17)"),
        "{out}"
    );
    assert_eq!(states(d, &env, "patient:17"), ["destroyed"]);
    assert_eq!(
        states(d, &env, "patient:18"),
        ["active"],
        "others untouched"
    );
    let audit = ok(&keys(d, &["audit", "--scope", "patient:17"], &env));
    assert!(audit.contains("tombstone ledger"), "{audit}");

    // Restored again, and this time a start-up (the KEK proof that `coffer serve`,
    // `keyring_from_file` and `keys rotate-kek` run) finds it on its own.
    copy_store(backup.path(), d);
    assert_eq!(states(d, &env, "patient:17"), ["active"]);
    ok(&keys(d, &["rotate-kek"], &env));
    assert_eq!(states(d, &env, "patient:17"), ["destroyed"]);

    // A forged line (no KEK, so no valid MAC) naming patient 18 is skipped, never acted on.
    let forged = format!(
        "v1 1 {} {}\n",
        coffer_testkit::hex::encode(b"patient:18"),
        "00".repeat(32)
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.join("tombstones"))
        .unwrap();
    std::io::Write::write_all(&mut f, forged.as_bytes()).unwrap();
    let out = ok(&keys(d, &["restored", "--yes"], &env));
    assert!(out.contains("1 lines did not verify"), "{out}");
    assert_eq!(states(d, &env, "patient:18"), ["active"]);
}

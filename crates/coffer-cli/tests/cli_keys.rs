//! `coffer keys …` end to end: the real binary against SQLite files, a fresh PostgreSQL
//! database and a SoftHSM2 token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use coffer_core::{Kek, ScopeId};
use coffer_keys::config::Config;
use coffer_keys::{
    BlindIndexSpec, KekId, KekRing, KeyStore as _, Keyring, KeyringConfig, LocalKek,
};
use coffer_store::SqlStore;
use common::{INIT_SQLITE, KeyStoreDir, Out, coffer, keys, ok};

fn new_key() -> String {
    Kek::generate().unwrap().to_base64().to_string()
}

#[test]
fn a_whole_key_lifecycle_on_sqlite() {
    let store = KeyStoreDir::init();
    let (d, env, init) = (store.path(), store.env(), &store.init);

    assert!(init.contains("KEK main/v1 (local), registered"), "{init}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(d.join("keys.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the store file is private");
    let toml = std::fs::read_to_string(d.join("coffer.toml")).unwrap();
    assert!(!toml.contains(&store.kek), "no secret in the config");
    keys(d, &INIT_SQLITE, &env).fails(2, "never overwrites");

    ok(&keys(
        d,
        &["create-scope", "tenant:acme", "table:patients"],
        &env,
    ));
    keys(d, &["create-scope", "tenant:acme"], &env).fails(2, "already exists");
    let rotated = ok(&keys(d, &["rotate", "tenant:acme"], &env));
    assert!(rotated.contains("v2 is active"), "{rotated}");
    keys(d, &["rotate", "tenant:nobody"], &env).fails(2, "scope 'tenant:nobody' does not exist");

    let list: serde_json::Value =
        serde_json::from_str(&ok(&keys(d, &["list", "--json"], &env))).unwrap();
    let acme = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scope"] == "tenant:acme")
        .unwrap();
    let states: Vec<&str> = acme["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["decrypt-only", "active"]);

    // Destroying asks for confirmation; without a terminal and without --yes, nothing happens.
    keys(d, &["destroy", "tenant:acme"], &env).fails(2, "pass --yes");
    keys(d, &["destroy", "tenant:nobody", "--yes"], &env).fails(2, "does not exist");
    let text = ok(&keys(d, &["list"], &env));
    assert!(
        text.contains("tenant:acme") && !text.contains("destroyed"),
        "{text}"
    );
    let destroyed = ok(&keys(d, &["destroy", "tenant:acme", "--yes"], &env));
    assert!(destroyed.contains("2 key versions erased"), "{destroyed}");
    assert!(ok(&keys(d, &["list"], &env)).contains("destroyed"));

    // Emergency rotation and a declared restore.
    let c = ok(&keys(
        d,
        &[
            "compromise",
            "table:patients",
            "--reason",
            "backup tape lost",
        ],
        &env,
    ));
    assert!(c.contains("v2 is active"), "{c}");
    keys(d, &["restored"], &env).fails(2, "--yes");
    assert!(ok(&keys(d, &["restored", "--yes"], &env)).contains("store epoch is now 1"));
    let r = ok(&keys(d, &["rotate", "table:patients"], &env));
    assert!(r.contains("v103 is active"), "{r}");
    let alerts = ok(&keys(d, &["audit", "--scope", "table:patients"], &env));
    assert!(alerts.contains("ALERT: backup tape lost"), "{alerts}");

    // The audit trail: filtered, verified, and JSON.
    let audit = keys(d, &["audit", "--verify", "--scope", "tenant:acme"], &env);
    let text = ok(&audit);
    assert!(
        audit.stderr.contains("hash chain verified"),
        "{}",
        audit.stderr
    );
    for op in ["create", "rotate", "destroy"] {
        assert!(text.contains(op), "{op} in {text}");
    }
    assert!(!text.contains("table:patients"));
    let lines = ok(&keys(d, &["audit", "--json", "--since", "1h"], &env));
    assert!(lines.lines().count() >= 6);
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["hash"].as_str().unwrap().len(), 64);
    }
    keys(d, &["audit", "--since", "last tuesday"], &env).fails(2, "--since");

    // A different KEK under the same name: `check` and `rotate-kek` refuse, nothing changes.
    let before = ok(&keys(d, &["list", "--json"], &env));
    let wrong = new_key();
    let wrong_env = [("COFFER_KEK", wrong.as_str())];
    let check = keys(d, &["check"], &wrong_env);
    assert_eq!(check.code, Some(1), "{}", check.stderr);
    assert!(check.stdout_str().contains("FAILED   main/v1"));
    let out = keys(d, &["rotate-kek"], &wrong_env);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("does not match"), "{}", out.stderr);
    assert_eq!(ok(&keys(d, &["list", "--json"], &env)), before);
    assert!(ok(&keys(d, &["check"], &env)).contains("ok       main/v1"));

    // The KEK is missing from the environment: a clear message naming the variable.
    keys(d, &["list"], &[]).success_or_names("COFFER_KEK");
}

/// Every row of the key store as JSON (scopes and DEK versions) and the number of audit events:
/// what a refused command must leave unchanged.
fn store_rows(d: &std::path::Path, env: &[(&str, &str)]) -> (String, usize) {
    let list = ok(&keys(d, &["list", "--json"], env));
    let audit = ok(&keys(d, &["audit", "--json"], env)).lines().count();
    (list, audit)
}

#[test]
fn a_wrong_kek_is_refused_before_anything_is_written() {
    let store = KeyStoreDir::init();
    let (d, env) = (store.path(), store.env());
    ok(&keys(d, &["create-scope", "tenant:acme"], &env));

    let wrong = new_key();
    let wrong_env = [("COFFER_KEK", wrong.as_str())];
    let before = store_rows(d, &env);
    for args in [
        &["create-scope", "tenant:new"][..],
        &["rotate", "tenant:acme"],
        &["compromise", "tenant:acme", "--reason", "drill"],
    ] {
        let out = keys(d, args, &wrong_env);
        out.fails(1, "'main/v1' does not match the key store");
    }
    assert_eq!(store_rows(d, &env), before, "a refusal writes nothing");

    // The right key afterwards: both work, and `check` opens every active DEK.
    ok(&keys(d, &["create-scope", "tenant:new"], &env));
    let rotated = ok(&keys(d, &["rotate", "tenant:acme"], &env));
    assert!(rotated.contains("v2 is active"), "{rotated}");
    let check = ok(&keys(d, &["check"], &env));
    // Two scopes, and coffer:audit, whose DEK keys the audit chain.
    assert!(
        check.contains("3 active DEK(s) of 3 scope(s) open"),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_scopes_whose_deks_the_keks_cannot_open() {
    let store = KeyStoreDir::init();
    let (d, env) = (store.path(), store.env());
    ok(&keys(d, &["create-scope", "tenant:good"], &env));
    // A DEK row wrapped under other key material than main/v1's, beside a good canary (as a
    // wrong key wrote them before writes were proven).
    let url = format!("sqlite:{}", d.join("keys.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    let bad = ScopeId::new("tenant:bad").unwrap();
    let main = KekId::new("main", 1).unwrap();
    store
        .create_scope(&coffer_testkit::conformance::new_dek(&bad, 1, &main, 7))
        .await
        .unwrap();
    let out = keys(d, &["check"], &env);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let text = out.stdout_str();
    assert!(text.contains("ok       main/v1"), "{text}");
    assert!(text.contains("FAILED   tenant:bad v1"), "{text}");
    assert!(!text.contains("FAILED   tenant:good"), "{text}");
    assert!(out.stderr.contains("tenant:bad"), "{}", out.stderr);
    let all = keys(d, &["check", "--all"], &env);
    assert_eq!(all.code, Some(1), "{}", all.stderr);
}

#[test]
fn missing_keys_and_reused_names_get_advice_that_fits_the_store() {
    let store = KeyStoreDir::init();
    let (d, env) = (store.path(), store.env());
    ok(&keys(d, &["create-scope", "tenant:a"], &env));

    // The store has keys under main/v1: restore the key; a new one is not offered.
    let out = keys(d, &["create-scope", "tenant:b"], &[]);
    out.fails(2, "already holds keys wrapped under KEK main/v1");
    assert!(
        out.stderr.contains("set COFFER_KEK to the key"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("coffer keygen"), "{}", out.stderr);

    // A store with nothing under main/v1 yet: a new key is the answer.
    let fresh = tempfile::tempdir().unwrap();
    Config::from_toml(
        "[store]\nurl = \"sqlite:new.db\"\n[[kek]]\nname = \"main\"\nversion = 1\n\
         source = \"env:COFFER_KEK\"\nprimary = true\n",
    )
    .unwrap()
    .write_new(&fresh.path().join("coffer.toml"))
    .unwrap();
    keys(fresh.path(), &["create-scope", "x"], &[]).fails(2, "export COFFER_KEK=$(coffer keygen)");

    // A destroyed scope: said so, with when, and that the name stays taken.
    ok(&keys(d, &["destroy", "tenant:a", "--yes"], &env));
    let again = keys(d, &["create-scope", "tenant:a"], &env);
    again.fails(2, "scope 'tenant:a' was destroyed on 20");
    assert!(
        again.stderr.contains("cannot be reused"),
        "{}",
        again.stderr
    );

    // A wrong key: the refusal names the KEK id, not a count.
    let wrong = new_key();
    let check = keys(d, &["check"], &[("COFFER_KEK", wrong.as_str())]);
    assert_eq!(check.code, Some(1), "{}", check.stderr);
    assert!(
        check
            .stderr
            .contains("key-encryption key 'main/v1' does not match"),
        "{}",
        check.stderr
    );
}

#[test]
fn the_audit_trail_names_who_ran_a_command() {
    let store = KeyStoreDir::init();
    let (d, env) = (store.path(), store.env());
    // The file names the service's identity, as a shared coffer.toml does.
    let path = d.join("coffer.toml");
    let mut cfg = Config::load(&path).unwrap();
    cfg.audit.actor = Some("coffer-serve".into());
    std::fs::remove_file(&path).unwrap();
    cfg.write_new(&path).unwrap();

    let last_actor = |op: &str| -> String {
        let lines = ok(&keys(d, &["audit", "--json"], &env));
        let v: serde_json::Value = lines
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .rfind(|v| v["operation"] == op)
            .unwrap();
        v["actor"].as_str().unwrap().to_owned()
    };
    ok(&keys(
        d,
        &["create-scope", "tenant:a"],
        &[("COFFER_KEK", store.kek.as_str()), ("USER", "alice")],
    ));
    assert!(
        last_actor("create").starts_with("alice@"),
        "{}",
        last_actor("create")
    );
    ok(&keys(
        d,
        &["rotate", "tenant:a"],
        &[("COFFER_KEK", store.kek.as_str()), ("COFFER_ACTOR", "bob")],
    ));
    assert_eq!(last_actor("rotate"), "bob");
    ok(&keys(
        d,
        &[
            "compromise",
            "tenant:a",
            "--reason",
            "drill",
            "--actor",
            "carol",
        ],
        &env,
    ));
    assert_eq!(last_actor("compromise"), "carol");

    // Beside `coffer serve`'s embedded store, with no coffer.toml: not advised to make a store.
    let serve_dir = tempfile::tempdir().unwrap();
    std::fs::write(serve_dir.path().join("coffer-keys.db"), b"").unwrap();
    let out = keys(serve_dir.path(), &["audit"], &[]);
    out.fails(2, "coffer-keys.db beside it is a key store already");
    assert!(!out.stderr.contains("create one with"), "{}", out.stderr);
    // `coffer serve` there without its key: put the key back, not a new one.
    let serve = common::output(
        {
            let mut c = coffer();
            c.current_dir(serve_dir.path())
                .arg("serve")
                .env_remove("COFFER_CONFIG")
                .env_remove("COFFER_MASTER_KEY");
            c
        },
        None,
    );
    serve.fails(2, "coffer-keys.db here already holds keys");
    assert!(
        !serve.stderr.contains("=$(coffer keygen)"),
        "{}",
        serve.stderr
    );
}

trait NamesVar {
    fn success_or_names(&self, var: &str);
}

impl NamesVar for Out {
    /// `list` reads only the store, so it works without the KEK; commands that need it name it.
    fn success_or_names(&self, var: &str) {
        if self.code != Some(0) {
            assert!(self.stderr.contains(var), "{}", self.stderr);
        }
    }
}

#[test]
fn malformed_configs_are_clear_errors_and_change_nothing() {
    let store = KeyStoreDir::init();
    let (d, env) = (store.path(), store.env());
    let good = std::fs::read_to_string(d.join("coffer.toml")).unwrap();
    for (bad, needle) in [
        (good.replace("l1_ttl", "l1_tll"), "unknown field"),
        (good.replace("primary = true", "primary = false"), "primary"),
        (
            good.replace("env:COFFER_KEK", "env:NOT_SET_ANYWHERE"),
            "NOT_SET_ANYWHERE",
        ),
        (good.replace("[store]", "[store"), "bad.toml"),
    ] {
        std::fs::write(d.join("bad.toml"), bad).unwrap();
        keys(d, &["create-scope", "x", "--config", "bad.toml"], &env).fails(2, needle);
    }
    keys(d, &["list", "--config", "missing.toml"], &env).fails(2, "coffer keys init");
    // Nothing but the audit chain key `init` made for its first record.
    let list = ok(&keys(d, &["list", "--json"], &env));
    let scopes: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(scopes.len(), 1, "{list}");
    assert_eq!(scopes[0]["scope"], "coffer:audit", "{list}");
}

#[test]
fn passphrase_keks_store_their_kdf_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env = [("COFFER_PASSPHRASE", "correct horse battery staple")];
    ok(&keys(
        d,
        &[
            "init",
            "--store",
            "sqlite:keys.db",
            "--kek",
            "passphrase:env:COFFER_PASSPHRASE",
        ],
        &env,
    ));
    let cfg = Config::load(&d.join("coffer.toml")).unwrap();
    assert!(
        cfg.keks[0]
            .kdf
            .as_deref()
            .unwrap()
            .starts_with("$pbkdf2-sha256$i=600000$")
    );
    ok(&keys(d, &["create-scope", "tenant:a"], &env));
    let check = keys(d, &["check"], &[("COFFER_PASSPHRASE", "wrong")]);
    assert_eq!(check.code, Some(1), "{}", check.stderr);
    assert!(check.stdout_str().contains("FAILED   main/v1"));
}

#[cfg(feature = "pkcs11")]
#[test]
fn kek_rotation_from_a_local_key_to_an_hsm() {
    let hsm = common::softhsm("coffer-cli-softhsm");
    let get = |k: &str| hsm.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let module = get("COFFER_TEST_PKCS11_MODULE");
    let token = get("COFFER_TEST_PKCS11_TOKEN");
    let pin = std::fs::read_to_string(get("COFFER_TEST_PKCS11_PIN_FILE")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kek = new_key();
    let label = coffer_testkit::random::name_with("coffer-cli", '-');
    let mut env: Vec<(&str, &str)> = vec![
        ("COFFER_KEK", kek.as_str()),
        ("HSM_PIN", pin.trim()),
        (
            "SOFTHSM2_CONF",
            hsm.iter()
                .find(|(n, _)| n == "SOFTHSM2_CONF")
                .unwrap()
                .1
                .as_str(),
        ),
    ];
    ok(&keys(d, &INIT_SQLITE, &env));
    ok(&keys(
        d,
        &["create-scope", "tenant:a", "tenant:b", "tenant:c"],
        &env,
    ));
    ok(&keys(d, &["rotate", "tenant:b"], &env));

    // Add the HSM KEK as main/v2 (generated on the token), make it primary, re-wrap.
    let reference = format!("pkcs11:module={module};token={token};key={label};pin-env=HSM_PIN");
    let added = ok(&keys(
        d,
        &["add-kek", "--source", &reference, "--primary"],
        &env,
    ));
    assert!(added.contains("main/v2"), "{added}");
    let out = ok(&keys(d, &["rotate-kek"], &env));
    // Four DEKs of the scopes, and the audit chain key.
    assert!(out.contains("5 DEKs re-wrapped under main/v2"), "{out}");
    let list = ok(&keys(d, &["list"], &env));
    assert!(!list.contains("main/v1"), "{list}");
    assert!(ok(&keys(d, &["check"], &env)).contains("ok       main/v2"));

    // With only the HSM KEK left, every scope still works.
    let mut cfg = Config::load(&d.join("coffer.toml")).unwrap();
    cfg.keks.retain(|k| k.version == 2);
    std::fs::remove_file(d.join("coffer.toml")).unwrap();
    cfg.write_new(&d.join("coffer.toml")).unwrap();
    env.retain(|(k, _)| *k != "COFFER_KEK");
    ok(&keys(d, &["rotate", "tenant:a", "tenant:c"], &env));
    let list = ok(&keys(d, &["list"], &env));
    // Six versions of the scopes and the audit chain key, all under the HSM KEK.
    assert_eq!(list.matches("main/v2").count(), 7, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_kek_survives_kill_9_and_resumes() {
    let db = coffer_testkit::pg::TestDb::new("coffer_cli");
    let url = db.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k1 = new_key();
    let k2 = new_key();
    let env = [("K1", k1.as_str()), ("K2", k2.as_str())];
    ok(&keys(
        d,
        &[
            "init",
            "--store",
            &url,
            "--kek",
            "env:K1",
            "--kek-name",
            "main",
        ],
        &env,
    ));

    // 3 000 scopes, a tenth of them with a second version, made through the library.
    let ring1 = {
        let id = KekId::new("main", 1).unwrap();
        KekRing::single(
            id.clone(),
            Arc::new(LocalKek::new(id, Kek::from_base64(&k1).unwrap())),
        )
    };
    let config = KeyringConfig {
        audit_unwraps: false,
        ..KeyringConfig::default()
    };
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    let kr = Keyring::new(store.clone(), ring1, config.clone())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let kr = kr.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..3000).step_by(8) {
                let s = ScopeId::new(format!("row:{i}")).unwrap();
                kr.create_scope(&s).await.unwrap();
                if i % 10 == 0 {
                    kr.rotate(&s).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = 3300;

    // Make main/v2 primary and start the re-wrap; kill -9 it part-way.
    ok(&keys(
        d,
        &["add-kek", "--source", "env:K2", "--primary"],
        &env,
    ));
    let target = KekId::new("main", 2).unwrap();
    let mut child = coffer()
        .current_dir(d)
        .args(["keys", "rotate-kek", "--batch", "25"])
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut progressed = false;
    for _ in 0..6000 {
        let left = store.count_deks_not_under(&target).await.unwrap();
        if left < total - 200 {
            progressed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().unwrap(); // SIGKILL, part-way through
    child.wait().unwrap();
    assert!(progressed, "the re-wrap made progress");
    // A COMMIT the killed process had already sent still completes on the server: read the
    // count once it has stopped changing.
    let mut left = store.count_deks_not_under(&target).await.unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = store.count_deks_not_under(&target).await.unwrap();
        if now == left {
            break;
        }
        left = now;
    }
    assert!(
        left > 0 && left < total,
        "killed part-way: {left} of {total} left"
    );

    // Rerun: it finishes, nothing lost.
    let out = ok(&keys(d, &["rotate-kek"], &env));
    assert!(out.contains(&format!("{left} DEKs re-wrapped")), "{out}");
    assert_eq!(store.count_deks_not_under(&target).await.unwrap(), 0);

    // Every DEK version (active and decrypt-only) opens under main/v2 alone.
    let ring2 = {
        let id = KekId::new("main", 2).unwrap();
        KekRing::single(
            id.clone(),
            Arc::new(LocalKek::new(id, Kek::from_base64(&k2).unwrap())),
        )
    };
    let only2 = Keyring::new(store.clone(), ring2, config).await.unwrap();
    let spec = BlindIndexSpec {
        column: coffer_core::ColumnId::new("c").unwrap(),
        name: "i".into(),
        bits: 32,
        normalizers: vec![],
    };
    let mut versions = 0;
    for i in 0..3000 {
        let s = ScopeId::new(format!("row:{i}")).unwrap();
        versions += only2
            .blind_index_terms(&s, &spec, &[b"x"])
            .await
            .unwrap()
            .len();
    }
    assert_eq!(versions, total as usize);
    drop(store);
}

//! `coffer keys` at scale: scopes created in bulk from a file or standard input, listed a page
//! at a time by prefix, and a data subject erased with its sub-scopes (docs/KEYS.md, "Scale
//! and subject erasure").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use coffer_core::Kek;
use common::{KeyStoreDir, Out, coffer_in, keys, ok, output};

/// `coffer keys ARGS…` in `dir` with `stdin` as standard input.
fn keys_with_stdin(dir: &Path, args: &[&str], envs: &[(&str, &str)], stdin: &[u8]) -> Out {
    let mut cmd = coffer_in(dir, envs);
    cmd.arg("keys").args(args);
    output(cmd, Some(stdin))
}

/// The scope names of a `keys list --json` page.
fn names(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["scope"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn scopes_are_created_from_a_file_and_listed_a_page_at_a_time() {
    let ks = KeyStoreDir::init();
    let (d, env) = (ks.path(), ks.env());
    ok(&keys(
        d,
        &["create-scope", "patient:0007", "patient:gone"],
        &env,
    ));
    ok(&keys(d, &["destroy", "patient:gone", "--yes"], &env));

    // 250 scopes from a file, among them one that exists and a destroyed one.
    let mut list = String::from("# patients\n\n");
    for i in 0..250 {
        list.push_str(&format!("patient:{i:04}\n"));
    }
    list.push_str("patient:gone\n");
    std::fs::write(d.join("scopes.txt"), &list).unwrap();
    let out = keys(d, &["create-scope", "--from-file", "scopes.txt"], &env);
    assert_eq!(out.code, Some(2), "stderr: {}", out.stderr);
    assert!(
        out.stdout_str()
            .contains("created 249 scopes from scopes.txt; 1 existed already"),
        "{}",
        out.stdout_str()
    );
    assert!(
        out.stderr.contains("scope 'patient:gone' was destroyed on")
            && out.stderr.contains("cannot be reused"),
        "{}",
        out.stderr
    );
    // The same list again (an interrupted run repeated): nothing new, nothing broken.
    let again = ok(&keys_with_stdin(
        d,
        &["create-scope", "--from-file", "-"],
        &env,
        list.replace("patient:gone\n", "").as_bytes(),
    ));
    assert!(
        again.contains("created 0 scopes from standard input; 250 existed already"),
        "{again}"
    );
    // A bad line names its line number; what came before it is kept.
    let bad = keys_with_stdin(
        d,
        &["create-scope", "--from-file", "-"],
        &env,
        b"tenant:a\ncoffer:audit\n",
    );
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("reserved"), "{}", bad.stderr);
    let bad = keys_with_stdin(
        d,
        &["create-scope", "--from-file", "-"],
        &env,
        &[b"tenant:b\n".as_slice(), &[b'x'; 300], b"\n"].concat(),
    );
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("line 2") && bad.stderr.contains("run the same command again"),
        "{}",
        bad.stderr
    );
    // Its batch was refused whole: nothing of it is written.
    assert!(!ok(&keys(d, &["list", "tenant:b"], &env)).contains("tenant:b"));

    // A page by prefix, with the command for the next one.
    let page = ok(&keys(
        d,
        &["list", "--prefix", "patient:01", "--limit", "20"],
        &env,
    ));
    assert_eq!(
        page.lines().filter(|l| l.starts_with("patient:01")).count(),
        20,
        "{page}"
    );
    assert!(
        page.contains("patient:0100") && page.contains("patient:0119"),
        "{page}"
    );
    assert!(!page.contains("patient:0120 "), "{page}");
    assert!(
        page.contains(
            "20 scopes shown; more follow, next page: coffer keys list --prefix patient:01 \
             --after patient:0119 --limit 20"
        ),
        "{page}"
    );
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["list", "--prefix", "patient:01", "--limit", "30", "--json"];
        if let Some(a) = &after {
            args.extend(["--after", a.as_str()]);
        }
        let out = keys(d, &args, &env);
        let page = names(&ok(&out));
        assert_eq!(
            out.stderr.contains("next page"),
            page.len() == 30 && seen.len() + 30 < 100,
            "{}",
            out.stderr
        );
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        seen.extend(page);
    }
    let expected: Vec<String> = (100..200).map(|i| format!("patient:{i:04}")).collect();
    assert_eq!(seen, expected);
    // The default page is 100 scopes.
    let first = names(&ok(&keys(d, &["list", "--json"], &env)));
    assert_eq!(first.len(), 100);
    assert!(ok(&keys(d, &["list", "--prefix", "nobody:"], &env)).contains("(no scopes match)"));
}

#[test]
fn erase_subject_destroys_the_subject_and_its_sub_scopes_on_postgresql() {
    let db = coffer_testkit::pg::TestDb::new("coffer_cli");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kek = Kek::generate().unwrap().to_base64().to_string();
    let env = [("COFFER_KEK", kek.as_str())];
    ok(&keys(
        d,
        &["init", "--store", db.url(), "--kek", "env:COFFER_KEK"],
        &env,
    ));
    let toml = std::fs::read_to_string(d.join("coffer.toml")).unwrap();
    let toml = if toml.contains("[audit]") {
        toml.replace("[audit]", "[audit]\ntombstone_file = \"tombstones\"")
    } else {
        format!("{toml}\n[audit]\ntombstone_file = \"tombstones\"\n")
    };
    std::fs::write(d.join("coffer.toml"), toml).unwrap();
    let subject = ["patient:1234", "patient:1234/notes", "patient:1234/visits"];
    let others = ["patient:12345", "patient:1234x", "patient:123"];
    let all: Vec<&str> = subject.iter().chain(&others).copied().collect();
    ok(&keys_with_stdin(
        d,
        &["create-scope", "--from-file", "-"],
        &env,
        all.join("\n").as_bytes(),
    ));

    // Without --yes and without a terminal: refused, nothing destroyed.
    let out = keys(d, &["erase-subject", "patient:1234"], &env);
    out.fails(2, "pass --yes in scripts");
    assert_eq!(
        ok(&keys(d, &["list", "--prefix", "patient:"], &env))
            .matches(" active ")
            .count(),
        6
    );

    let out = ok(&keys(d, &["erase-subject", "patient:1234", "--yes"], &env));
    for s in subject {
        assert!(
            out.contains(&format!("destroyed {s}: 1 key versions erased")),
            "{out}"
        );
    }
    assert!(
        out.contains("erased data subject 'patient:1234': 3 scope(s) destroyed"),
        "{out}"
    );
    // Exactly the subject's scopes are destroyed.
    let list: serde_json::Value = serde_json::from_str(&ok(&keys(
        d,
        &["list", "--prefix", "patient:", "--json"],
        &env,
    )))
    .unwrap();
    for s in list.as_array().unwrap() {
        let name = s["scope"].as_str().unwrap();
        assert_eq!(
            s["destroyed"].is_string(),
            subject.contains(&name),
            "{name}: {s}"
        );
    }
    // One `erase` audit record per scope, naming the subject; a ledger line per scope.
    let trail = ok(&keys(d, &["audit", "--json"], &env));
    let erases: Vec<serde_json::Value> = trail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["operation"] == "erase")
        .collect();
    assert_eq!(erases.len(), 3, "{trail}");
    for (r, s) in erases.iter().zip(subject) {
        assert_eq!(r["scope"], s);
        assert!(
            r["detail"]
                .as_str()
                .unwrap()
                .starts_with("erasure of data subject 'patient:1234'"),
            "{r}"
        );
    }
    ok(&keys(d, &["audit", "--verify"], &env));
    let ledger = std::fs::read_to_string(d.join("tombstones")).unwrap();
    assert_eq!(ledger.lines().count(), 3, "{ledger}");

    // Again: nothing left, exit 0. An unknown subject: exit 2, with what to check.
    let again = ok(&keys(d, &["erase-subject", "patient:1234", "--yes"], &env));
    assert!(
        again.contains("nothing left to erase: data subject 'patient:1234' was erased before"),
        "{again}"
    );
    keys(d, &["erase-subject", "patient:999", "--yes"], &env).fails(
        2,
        "nothing to erase: the key store has no scope 'patient:999'",
    );
    // The erased names are never reused.
    let out = keys(d, &["create-scope", "patient:1234/visits"], &env);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("was destroyed on"), "{}", out.stderr);
}

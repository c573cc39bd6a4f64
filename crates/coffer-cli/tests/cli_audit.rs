//! `coffer keys audit --verify` end to end on a SQLite store that an attacker with write access
//! (and no KEK) rewrote: the real binary's exit status and message for each case.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use coffer_core::Kek;
use coffer_keys::audit::AuditRecord;
use coffer_keys::{AuditFilter, KeyStore as _};
use coffer_store::SqlStore;
use coffer_testkit::keyring_audit::rehash_unkeyed;
use common::{keys, ok};

async fn trail(url: &str) -> Vec<AuditRecord> {
    let store = SqlStore::connect(url).await.unwrap();
    store.audit(&AuditFilter::default()).await.unwrap()
}

/// Replaces the whole trail behind the store's back.
async fn rewrite(url: &str, records: &[AuditRecord]) {
    let store = SqlStore::connect(url).await.unwrap();
    coffer_testkit::store_audit::rewrite_audit(store.pool(), records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_rewritten_or_truncated_trail() {
    let store = common::KeyStoreDir::init();
    let (d, env) = (store.path(), store.env());
    // The anchor file, kept by every command that appends.
    let mut toml = std::fs::read_to_string(d.join("coffer.toml")).unwrap();
    if toml.contains("[audit]\n") {
        toml = toml.replace("[audit]\n", "[audit]\nanchor_file = \"audit.anchor\"\n");
    } else {
        toml.push_str("\n[audit]\nanchor_file = \"audit.anchor\"\n");
    }
    std::fs::write(d.join("coffer.toml"), toml).unwrap();
    for args in [
        &["create-scope", "tenant:a", "tenant:b"][..],
        &["rotate", "tenant:a"],
        &["rotate", "tenant:b"],
        &["destroy", "tenant:b", "--yes"],
    ] {
        ok(&keys(d, args, &env));
    }
    let url = store.store_url();
    let good = trail(&url).await;
    assert!(good.len() >= 5, "{good:?}");
    let last = good.last().unwrap();
    let head = format!("{}:{}", last.id, hex::encode(last.hash));
    let anchor = std::fs::read_to_string(d.join("audit.anchor")).unwrap();
    assert_eq!(anchor, format!("{} {}\n", last.id, hex::encode(last.hash)));

    let verify = keys(d, &["audit", "--verify", "--anchor", "audit.anchor"], &env);
    ok(&verify);
    assert!(
        verify.stderr.contains("audit trail intact")
            && verify.stderr.contains("keyed with the store's chain key")
            && verify.stderr.contains(&format!("anchor {} met", last.id)),
        "{}",
        verify.stderr
    );

    // A middle row deleted and the chain recomputed with SHA-256.
    let mut cut = good.clone();
    cut.remove(2);
    rewrite(&url, &rehash_unkeyed(cut, 2)).await;
    keys(d, &["audit", "--verify"], &env).fails(1, "audit trail broken at event 3");

    // The newest row rewritten unkeyed after keyed rows.
    let mut tail = good.clone();
    let n = tail.len();
    tail[n - 1].event.detail = "nothing happened".into();
    rewrite(&url, &rehash_unkeyed(tail, n - 1)).await;
    keys(d, &["audit", "--verify"], &env).fails(1, "without the chain key");

    // The newest row deleted: a valid shorter chain, but not the anchored head.
    rewrite(&url, &good[..n - 1]).await;
    ok(&keys(d, &["audit", "--verify"], &env));
    keys(d, &["audit", "--verify", "--anchor", "audit.anchor"], &env)
        .fails(1, "does not meet its anchor");
    keys(d, &["audit", "--verify", "--expect-head", &head], &env).fails(1, "is missing");
    keys(d, &["audit", "--verify", "--expect-head", "12:zz"], &env).fails(2, "ID:HASH");

    // A verifier without the KEK: the keyed part cannot be checked (status 2, not "intact").
    rewrite(&url, &good).await;
    let other = Kek::generate().unwrap().to_base64().to_string();
    keys(d, &["audit", "--verify"], &[("COFFER_KEK", other.as_str())])
        .fails(2, "cannot check the audit trail from event 1 on");
    keys(d, &["audit", "--verify"], &[]).fails(2, "cannot check the audit trail");
    // With the KEK, intact again.
    ok(&keys(
        d,
        &["audit", "--verify", "--expect-head", &head],
        &env,
    ));
}

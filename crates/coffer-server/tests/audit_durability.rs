//! What a crash can take from the data-access audit: never more than
//! `[service] audit_max_unrecorded` items of answered requests. Each test reads the key store
//! right after an answer, without any flush, which is what a kill -9 at that moment would leave
//! (the end-to-end kill is in coffer-cli's `cli_serve.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Service, expect_error};
use serde_json::{Value, json};

/// Items counted in the written data-access records of `scope` for `operation`
/// (`ok` plus `failed`).
async fn written(svc: &Service, scope: &str, operation: &str) -> u64 {
    svc.audit(scope)
        .await
        .iter()
        .filter(|r| r.event.operation == coffer_keys::Operation::DataAccess)
        .filter(|r| r.event.detail.contains(&format!("operation={operation} ")))
        .map(|r| {
            r.event
                .detail
                .split(' ')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    matches!(k, "ok" | "failed").then(|| v.parse::<u64>().unwrap())
                })
                .sum::<u64>()
        })
        .sum()
}

fn encrypt_one(value: &str) -> Value {
    json!({"encoding": "utf8", "items": [{"column": "c", "plaintext": value}]})
}

async fn with_scope(service: &str) -> (Service, String) {
    let svc = Service::start(service).await;
    let admin = svc.admin_token().await;
    let acme = svc.tenant_token("acme", "api").await;
    svc.create_scope(&admin, "acme:p", "acme").await;
    (svc, acme)
}

#[tokio::test]
async fn with_a_bound_of_zero_every_answer_is_recorded_before_it_leaves() {
    let (svc, acme) = with_scope("audit_interval = \"1h\"\naudit_max_unrecorded = 0\n").await;
    let c = svc.client();
    let mut cts = Vec::new();
    for i in 1..=5u64 {
        let r = c
            .post("/v1/scopes/acme:p/encrypt", &acme, encrypt_one("v"))
            .await;
        assert_eq!(r.0, 200, "{}", r.1);
        cts.push(r.1["items"][0]["ciphertext"].clone());
        assert_eq!(written(&svc, "acme:p", "encrypt").await, i);
    }
    let items: Vec<Value> = cts
        .iter()
        .map(|ct| json!({"column": "c", "ciphertext": ct}))
        .collect();
    let r = c
        .post(
            "/v1/scopes/acme:p/decrypt",
            &acme,
            json!({"encoding": "utf8", "items": items}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(written(&svc, "acme:p", "decrypt").await, 5);
    assert_eq!(svc.app.unrecorded_audit_items(), 0);
}

#[tokio::test]
async fn a_batch_past_the_bound_is_recorded_before_its_answer_and_small_ones_wait() {
    // The default bound (256 items).
    let (svc, acme) = with_scope("audit_interval = \"1h\"\n").await;
    let c = svc.client();
    // Small requests are counted in memory: these 10 are what a kill -9 now would lose.
    for _ in 0..10 {
        let r = c
            .post("/v1/scopes/acme:p/encrypt", &acme, encrypt_one("v"))
            .await;
        assert_eq!(r.0, 200, "{}", r.1);
    }
    assert_eq!(written(&svc, "acme:p", "encrypt").await, 0);
    assert_eq!(svc.app.unrecorded_audit_items(), 10);
    // A batch of 300 takes the count past the bound: everything pending is written before the
    // answer, the earlier 10 included.
    let items: Vec<Value> = (0..300)
        .map(|i| json!({"column": "c", "plaintext": format!("v{i}")}))
        .collect();
    let r = c
        .post(
            "/v1/scopes/acme:p/encrypt",
            &acme,
            json!({"encoding": "utf8", "items": items}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(written(&svc, "acme:p", "encrypt").await, 310);
    assert_eq!(svc.app.unrecorded_audit_items(), 0);
}

#[tokio::test]
async fn concurrent_requests_never_leave_more_than_the_bound_unrecorded() {
    let bound = 10;
    let (svc, acme) = with_scope(&format!(
        "audit_interval = \"1h\"\naudit_max_unrecorded = {bound}\n"
    ))
    .await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = svc.client();
            let acme = acme.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    let r = c
                        .post("/v1/scopes/acme:p/encrypt", &acme, encrypt_one("v"))
                        .await;
                    assert_eq!(r.0, 200, "{}", r.1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let unrecorded = svc.app.unrecorded_audit_items();
    assert!(unrecorded <= bound, "{unrecorded} items unrecorded");
    // Nothing was dropped: what is written and what is pending add up to what was answered.
    assert_eq!(written(&svc, "acme:p", "encrypt").await + unrecorded, 200);
}

#[tokio::test]
async fn an_answer_is_withheld_while_its_audit_record_cannot_be_written() {
    let (svc, acme) = with_scope("audit_interval = \"1h\"\naudit_max_unrecorded = 0\n").await;
    let c = svc.client();
    let r = c
        .post("/v1/scopes/acme:p/encrypt", &acme, encrypt_one("v"))
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let ct = r.1["items"][0]["ciphertext"].clone();
    let decrypt = json!({"encoding": "utf8", "items": [{"column": "c", "ciphertext": ct}]});
    // The audit table goes away (a failing disk, a revoked grant): the key is in L1, so the
    // decryption itself still works.
    let db = svc.dir.path().join("keys.db");
    let sql = |q: &str| {
        let out = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(q)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sql("ALTER TABLE coffer_audit RENAME TO coffer_audit_away");
    let r = c
        .post("/v1/scopes/acme:p/decrypt", &acme, decrypt.clone())
        .await;
    expect_error(&r, 503, "audit_unavailable");
    assert!(!r.1.to_string().contains("\"v\""), "{}", r.1);
    // Health checks and admin requests are not held back by the data-access audit.
    assert_eq!(c.get("/healthz", None).await.0, 200);
    sql("ALTER TABLE coffer_audit_away RENAME TO coffer_audit");
    // Once the store takes writes again, the withheld request's count is written with the next.
    let r = c.post("/v1/scopes/acme:p/decrypt", &acme, decrypt).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["items"][0]["plaintext"], "v");
    assert_eq!(written(&svc, "acme:p", "decrypt").await, 2);
    assert_eq!(svc.app.unrecorded_audit_items(), 0);
}

//! The service's log in process (a test process of its own: the subscriber is global): one JSON
//! line per request, and neither a plaintext nor a token in any line, whether the request
//! succeeds or fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{CARD, EMAIL, LogBuffer, MARKER, NATIONAL_ID, SSN, Service, expect_error, secrets};
use serde_json::{Value, json};

#[tokio::test]
async fn every_request_is_logged_and_no_plaintext_or_token_reaches_the_log() {
    let logs = LogBuffer::install();
    let svc = Service::start("max_batch = 50\n").await;
    let admin = svc.admin_token().await;
    let acme = svc.tenant_token("acme", "api").await;
    let globex = svc.tenant_token("globex", "").await;
    svc.create_scope(&admin, "acme:patients", "acme").await;
    svc.create_scope(&admin, "globex:users", "globex").await;
    let c = svc.client();
    let mut sent = 2;
    let enc = c
        .post(
            "/v1/scopes/acme:patients/encrypt",
            &acme,
            json!({"encoding": "utf8", "items": [
                {"column": "ssn", "context": "42", "plaintext": SSN},
                {"column": "email", "plaintext": EMAIL, "type": "text"},
                {"column": "nid", "plaintext": NATIONAL_ID},
                {"column": "card", "plaintext": CARD},
                {"column": "marker", "plaintext": MARKER},
            ]}),
        )
        .await;
    assert_eq!(enc.0, 200, "{}", enc.1);
    let dec = c
        .post(
            "/v1/scopes/acme:patients/decrypt",
            &acme,
            json!({"encoding": "utf8", "items": [
                {"column": "ssn", "context": "42", "ciphertext": enc.1["items"][0]["ciphertext"]},
                {"column": "marker", "ciphertext": enc.1["items"][4]["ciphertext"]},
            ]}),
        )
        .await;
    assert_eq!(dec.1["items"][1]["plaintext"], MARKER);
    let idx = c
        .post(
            "/v1/scopes/acme:patients/blind-index",
            &acme,
            json!({"encoding": "utf8", "items": [{"column": "ssn", "values": [SSN]}]}),
        )
        .await;
    assert_eq!(idx.0, 200, "{}", idx.1);
    sent += 3;
    // Failing requests that carry the plaintexts.
    let r = c
        .post(
            "/v1/scopes/globex:users/encrypt",
            &acme,
            json!({"encoding": "utf8", "items": [{"column": "ssn", "plaintext": SSN}, {"column": "m", "plaintext": MARKER}]}),
        )
        .await;
    expect_error(&r, 403, "wrong_tenant");
    let r = c
        .post(
            "/v1/scopes/acme:patients/decrypt",
            &acme,
            json!({"encoding": "utf8", "items": [{"column": "ssn", "context": "43", "ciphertext": enc.1["items"][0]["ciphertext"]}]}),
        )
        .await;
    expect_error(&r, 422, "decryption_failed");
    let r = c
        .post(
            "/v1/scopes/acme:patients/encrypt",
            &acme,
            json!({"items": [{"column": "ssn", "plaintext": MARKER}]}),
        )
        .await;
    expect_error(&r, 400, "bad_base64");
    let truncated = format!(
        "{{\"encoding\":\"utf8\",\"items\":[{{\"column\":\"m\",\"plaintext\":\"{MARKER} {SSN}\""
    );
    let r = c
        .post_raw("/v1/scopes/acme:patients/encrypt", &acme, &truncated)
        .await;
    expect_error(&r, 400, "bad_json");
    let r = c
        .post(
            "/v1/scopes/acme:patients/encrypt",
            &admin,
            json!({"encoding": "utf8", "items": [{"column": "m", "plaintext": EMAIL}]}),
        )
        .await;
    expect_error(&r, 403, "admin_token");
    let r = c
        .post(
            "/v1/scopes/acme:patients/encrypt",
            &globex,
            json!({"encoding": "utf8", "items": [{"column": "m", "plaintext": CARD}]}),
        )
        .await;
    expect_error(&r, 403, "wrong_tenant");
    sent += 6;
    svc.stop().await;

    let text = logs.text();
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
    let requests = lines
        .iter()
        .filter(|l| l.contains("\"message\":\"request\""))
        .count();
    assert_eq!(requests, sent, "a log line per request:\n{text}");
    for s in secrets() {
        assert!(!text.contains(&s), "{s} appears in the log:\n{text}");
    }
    for t in [&acme, &admin, &globex] {
        assert!(!text.contains(t.as_str()), "a token in the log:\n{text}");
    }
    assert!(
        text.contains("access denied"),
        "the refusal is not logged:\n{text}"
    );
}

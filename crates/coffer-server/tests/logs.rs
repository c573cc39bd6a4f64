//! The service's log in process (a test process of its own: the subscriber is global): one JSON
//! line per request, and neither a plaintext nor a token in any line, whether the request
//! succeeds or fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{CARD, EMAIL, LogBuffer, MARKER, NATIONAL_ID, SSN, Tenants, expect_error, secrets};
use serde_json::{Value, json};

#[tokio::test]
async fn every_request_is_logged_and_no_plaintext_or_token_reaches_the_log() {
    let logs = LogBuffer::install();
    let t = Tenants::start("max_batch = 50\n").await;
    let c = t.svc.client();
    let mut sent = 2;
    let enc = c
        .utf8(
            "encrypt",
            "acme:patients",
            &t.acme,
            json!([
                {"column": "ssn", "context": "42", "plaintext": SSN},
                {"column": "email", "plaintext": EMAIL, "type": "text"},
                {"column": "nid", "plaintext": NATIONAL_ID},
                {"column": "card", "plaintext": CARD},
                {"column": "marker", "plaintext": MARKER},
            ]),
        )
        .await;
    assert_eq!(enc.0, 200, "{}", enc.1);
    let dec = c
        .utf8(
            "decrypt",
            "acme:patients",
            &t.acme,
            json!([
                {"column": "ssn", "context": "42", "ciphertext": enc.1["items"][0]["ciphertext"]},
                {"column": "marker", "ciphertext": enc.1["items"][4]["ciphertext"]},
            ]),
        )
        .await;
    assert_eq!(dec.1["items"][1]["plaintext"], MARKER);
    let idx = c
        .utf8(
            "blind-index",
            "acme:patients",
            &t.acme,
            json!([{"column": "ssn", "values": [SSN]}]),
        )
        .await;
    assert_eq!(idx.0, 200, "{}", idx.1);
    sent += 3;
    // Failing requests that carry the plaintexts.
    sent += t.failing_requests(&enc.1["items"][0]["ciphertext"]).await;
    let r = c.encrypt_one(&t.globex, "acme:patients", CARD).await;
    expect_error(&r, 403, "wrong_tenant");
    sent += 1;
    t.svc.stop().await;

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
    for token in [&t.acme, &t.admin, &t.globex] {
        assert!(
            !text.contains(token.as_str()),
            "a token in the log:\n{text}"
        );
    }
    assert!(
        text.contains("access denied"),
        "the refusal is not logged:\n{text}"
    );
}

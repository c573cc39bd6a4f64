//! 400 answers name the field and the type expected, never the value that was sent: neither in
//! the body nor in the service's log (a test process of its own: the log subscriber is global).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{LogBuffer, Service, expect_error};

#[tokio::test]
async fn bad_request_bodies_and_logs_never_echo_the_values_sent() {
    let logs = LogBuffer::install();
    let (svc, admin, acme) = Service::start_with_scope("", "acme:a").await;
    let c = svc.client();
    // (path, body, the distinctive value, the field path the error must name)
    let cases = [
        (
            "/v1/scopes/acme:a/encrypt",
            r#"{"encoding":"utf8","items":[{"column":73914682,"plaintext":"x"}]}"#,
            "73914682",
            "items[0].column",
        ),
        (
            "/v1/scopes/acme:a/encrypt",
            r#"{"encoding":"utf8","items":[{"column":"c","null":"Quokka-Teal-5521"}]}"#,
            "Quokka-Teal-5521",
            "items[0].null",
        ),
        (
            "/v1/scopes/acme:a/encrypt",
            r#"{"encoding":"Quokka-Teal-5521","items":[]}"#,
            "Quokka-Teal-5521",
            "encoding",
        ),
        (
            "/v1/scopes/acme:a/encrypt",
            r#"{"items":[{"column":"c","plaintext":"x","Quokka-Teal-5521":1}]}"#,
            "Quokka-Teal-5521",
            "items[0]",
        ),
        (
            "/v1/scopes/acme:a/decrypt",
            r#"{"items":[{"column":"c","ciphertext":{"Quokka-Teal-5521":true}}]}"#,
            "Quokka-Teal-5521",
            "items[0].ciphertext",
        ),
        (
            "/v1/scopes/acme:a/datakeys",
            r#"{"count":-73914682}"#,
            "73914682",
            "count",
        ),
        (
            "/v1/scopes/acme:a/blind-index",
            r#"{"items":[{"column":"c","bits":"Quokka-Teal-5521","values":[]}]}"#,
            "Quokka-Teal-5521",
            "items[0].bits",
        ),
    ];
    for (path, body, value, field) in cases {
        let r = c.post_raw(path, &acme, body).await;
        expect_error(&r, 400, "bad_request");
        let text = r.1.to_string();
        assert!(
            !text.contains(value),
            "{path} {body}: the value is echoed: {text}"
        );
        assert!(
            text.contains(&format!("`{field}`")),
            "{path} {body}: the field is not named: {text}"
        );
    }
    // The admin endpoint decodes the same way.
    let r = c
        .post_raw(
            "/v1/admin/scopes",
            &admin,
            r#"{"scope":"acme:b","tenant":73914682}"#,
        )
        .await;
    expect_error(&r, 400, "bad_request");
    assert!(!r.1.to_string().contains("73914682"), "{}", r.1);
    assert!(r.1.to_string().contains("`tenant`"), "{}", r.1);
    svc.stop().await;
    let text = logs.text();
    assert!(text.contains("\"status\":400"), "no request lines:\n{text}");
    for v in ["73914682", "Quokka-Teal-5521"] {
        assert!(!text.contains(v), "{v} in the log:\n{text}");
    }
}

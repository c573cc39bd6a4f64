//! Request lines carry a request id (also returned as `x-request-id`) and the client address;
//! 401 lines name the refused token's id prefix, never its secret; access denials are logged
//! at most once per tenant per 10 s; token changes are audited and a zero lifetime refused.
//! (A test process of its own: the log subscriber is global.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use coffer_keys::KeyStore as _;
use coffer_server::tokens::Role;
use common::{LogBuffer, Service};
use serde_json::Value;

fn logs() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(LogBuffer::install)
}

fn request_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "request")
        .collect()
}

#[tokio::test]
async fn request_lines_have_a_request_id_and_the_client_address() {
    let logs = logs();
    let svc = Service::start("").await;
    let acme = svc.tenant_token("acme", "").await;
    let c = svc.client();
    let r = c.get_response("/v1/scopes/acme:none", &acme).await;
    assert_eq!(r.status().as_u16(), 404);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(id.len() >= 16, "{id}");
    // A client's own plain id is kept; one that is not plain is replaced.
    let r = c
        .http
        .get(format!("{}/healthz", svc.base))
        .header("x-request-id", "trace-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42.a_b");
    let long = "x".repeat(300);
    let r = c
        .http
        .get(format!("{}/healthz", svc.base))
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    let replaced = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(replaced, long);
    let text = logs.text();
    let line = request_lines(&text)
        .into_iter()
        .find(|l| l["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no request line with id {id}:\n{text}"));
    assert_eq!(line["client"], "127.0.0.1", "{line}");
    assert_eq!(line["status"], 404, "{line}");
    assert!(
        !text.contains(&long),
        "a long client request id reached the log"
    );
}

#[tokio::test]
async fn a_401_line_names_the_token_id_prefix_and_not_the_secret() {
    let logs = logs();
    let svc = Service::start("").await;
    let good = svc.tenant_token("acme", "").await;
    // The right id with a wrong secret.
    let id = &good[4..20];
    let forged = format!("cft_{id}_{}", "Q".repeat(43));
    let r = svc
        .client()
        .get_response("/v1/scopes/acme:none", &forged)
        .await;
    assert_eq!(r.status().as_u16(), 401);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let text = logs.text();
    let line = request_lines(&text)
        .into_iter()
        .find(|l| l["request_id"] == rid.as_str())
        .unwrap_or_else(|| panic!("no request line for the 401:\n{text}"));
    assert_eq!(line["status"], 401, "{line}");
    assert_eq!(line["token_id_prefix"], &id[..8], "{line}");
    assert_eq!(line["client"], "127.0.0.1", "{line}");
    assert!(
        !text.contains(&"Q".repeat(43)),
        "the presented secret is in the log"
    );
    assert!(!text.contains(&good[21..]), "a token secret is in the log");
}

#[tokio::test]
async fn access_denials_are_logged_once_per_tenant_at_most_every_10_s() {
    let logs = logs();
    let svc = Service::start("").await;
    let admin = svc.admin_token().await;
    let prober = svc.tenant_token("prober-tenant", "").await;
    svc.create_scope(&admin, "victim:data", "victim").await;
    for _ in 0..15 {
        let r = svc.client().encrypt_one(&prober, "victim:data", "v").await;
        assert_eq!(r.0, 403, "{}", r.1);
    }
    let text = logs.text();
    let lines = text
        .lines()
        .filter(|l| l.contains("access denied") && l.contains("prober-tenant"))
        .count();
    assert_eq!(lines, 1, "{text}");
}

#[tokio::test]
async fn token_changes_are_audited_and_a_zero_lifetime_is_refused() {
    let svc = Service::start("").await;
    for ttl in [Duration::ZERO, Duration::from_nanos(10)] {
        let e = svc
            .tokens
            .create(&Role::Tenant("acme".into()), "", Some(ttl))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than 0s"), "{e}");
    }
    assert!(
        svc.tokens.list().await.unwrap().is_empty(),
        "a refused token was stored"
    );
    let (info, secret) = svc
        .tokens
        .create(
            &Role::Tenant("acme".into()),
            "api",
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    assert!(svc.tokens.revoke(&info.id).await.unwrap());
    let records = svc
        .store
        .audit(&coffer_keys::AuditFilter::default())
        .await
        .unwrap();
    let details: Vec<String> = records.iter().map(|r| r.event.detail.clone()).collect();
    let created = details
        .iter()
        .find(|d| d.starts_with("token-create") && d.contains(&info.id))
        .unwrap_or_else(|| panic!("{details:?}"));
    assert!(
        created.contains("tenant=acme") && created.contains("expires=20"),
        "{created}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("token-revoke") && d.contains(&info.id)),
        "{details:?}"
    );
    let all = format!("{records:?}");
    assert!(
        !all.contains(secret.expose()),
        "the token is in the audit trail"
    );
    assert!(records.iter().all(|r| !r.event.actor.is_empty()));
}

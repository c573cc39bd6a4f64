//! Bad requests in process: each is a clear 4xx with a code and a message, and none changes the
//! key store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use coffer_server::tokens::Role;
use common::{Service, expect_error};
use serde_json::{Value, json};

/// A service with the scope `acme:a` of tenant acme, its token, and an admin token; tokens are
/// not cached, the body limit is 4 KiB, a batch at most 10 items.
async fn service() -> (Service, String, String) {
    let (svc, admin, acme) = Service::start_with_scope(
        "token_cache_ttl = \"0s\"\nmax_body_bytes = 4096\nmax_batch = 10\n",
        "acme:a",
    )
    .await;
    (svc, admin, acme)
}

fn one_value() -> Value {
    json!({"encoding": "utf8", "items": [{"column": "c", "plaintext": "v"}]})
}

#[tokio::test]
async fn missing_forged_revoked_and_expired_tokens_are_401() {
    let (svc, _, acme) = service().await;
    let c = svc.client();
    let revoked = svc
        .token(Role::Tenant("acme".to_owned()), "to-revoke", None)
        .await;
    let expiring = svc
        .token(
            Role::Tenant("acme".to_owned()),
            "",
            Some(Duration::from_secs(1)),
        )
        .await;
    // The revoked token works until it is revoked.
    let path = "/v1/scopes/acme:a/encrypt";
    assert_eq!(c.post(path, &revoked, one_value()).await.0, 200);
    let id = svc
        .tokens
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.label == "to-revoke")
        .unwrap()
        .id;
    assert!(svc.tokens.revoke(&id).await.unwrap());
    assert!(!svc.tokens.revoke(&id).await.unwrap(), "revoking twice");
    tokio::time::sleep(Duration::from_millis(1100)).await; // the 1 s token expires
    let before = svc.state().await;

    let r = c.post(path, &revoked, one_value()).await;
    expect_error(&r, 401, "unauthorized");
    assert!(
        r.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    let r = c.post(path, &expiring, one_value()).await;
    expect_error(&r, 401, "unauthorized");
    assert!(
        r.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let r = c
        .send(reqwest::Method::POST, path, None, Some(one_value()))
        .await;
    expect_error(&r, 401, "unauthorized");
    let forged = format!("{}x", &acme[..acme.len() - 1]);
    expect_error(
        &c.post(path, &forged, one_value()).await,
        401,
        "unauthorized",
    );
    let r = c
        .http
        .post(format!("{}{path}", c.base))
        .header("authorization", format!("Basic {acme}"))
        .json(&one_value())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        svc.state().await,
        before,
        "a refused request changed the key store"
    );
}

#[tokio::test]
async fn malformed_bodies_and_items_are_400_with_the_item() {
    let (svc, _, acme) = service().await;
    let c = svc.client();
    let before = svc.state().await;
    let path = "/v1/scopes/acme:a/encrypt";
    expect_error(
        &c.post_raw(path, &acme, "{\"items\": [").await,
        400,
        "bad_json",
    );
    expect_error(
        &c.post_raw(path, &acme, "{\"itemz\": []}").await,
        400,
        "bad_request",
    );
    let r = c
        .post(path, &acme, json!({"items": [{"column": "c", "plaintext": "v"}, {"column": "c", "plaintext": "%%%"}]}))
        .await;
    expect_error(&r, 400, "bad_base64");
    assert_eq!(r.1["error"]["item"], 0);
    let r = c
        .post(path, &acme, json!({"items": [{"column": "c", "plaintext": "dg=="}, {"column": "c", "plaintext": "%%%"}]}))
        .await;
    expect_error(&r, 400, "bad_base64");
    assert_eq!(r.1["error"]["item"], 1);
    expect_error(
        &c.post(path, &acme, json!({"items": [{"column": "c"}]}))
            .await,
        400,
        "bad_item",
    );
    expect_error(
        &c.post(
            "/v1/scopes/acme:a/decrypt",
            &acme,
            json!({"items": [{"column": "c", "ciphertext": "plaintext!"}]}),
        )
        .await,
        400,
        "bad_ciphertext",
    );
    expect_error(
        &c.post(
            "/v1/scopes/acme:a/blind-index",
            &acme,
            json!({"items": [{"column": "c", "normalize": ["shout"], "values": ["dg=="]}]}),
        )
        .await,
        400,
        "bad_normalizer",
    );
    expect_error(
        &c.post(
            path,
            &acme,
            json!({"items": [{"column": "c", "context": "1", "mode": "deterministic", "plaintext": "dg=="}]}),
        )
        .await,
        400,
        "invalid",
    );
    let r = c
        .http
        .post(format!("{}{path}", c.base))
        .bearer_auth(&acme)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    assert_eq!(
        svc.state().await,
        before,
        "a failed request changed the key store"
    );
}

#[tokio::test]
async fn batch_and_body_limits_are_enforced() {
    let (svc, _, acme) = service().await;
    let c = svc.client();
    let before = svc.state().await;
    let path = "/v1/scopes/acme:a/encrypt";
    expect_error(
        &c.post(path, &acme, json!({"items": []})).await,
        400,
        "empty_batch",
    );
    expect_error(
        &c.post("/v1/scopes/acme:a/datakeys", &acme, json!({"count": 0}))
            .await,
        400,
        "empty_batch",
    );
    let eleven: Vec<Value> = (0..11)
        .map(|_| json!({"column": "c", "plaintext": "dg=="}))
        .collect();
    expect_error(
        &c.post(path, &acme, json!({"items": eleven})).await,
        400,
        "batch_too_large",
    );
    let ten: Vec<Value> = (0..10)
        .map(|_| json!({"column": "c", "plaintext": "dg=="}))
        .collect();
    assert_eq!(c.post(path, &acme, json!({"items": ten})).await.0, 200);
    let big = "A".repeat(8000);
    expect_error(
        &c.post(
            path,
            &acme,
            json!({"items": [{"column": "c", "plaintext": big}]}),
        )
        .await,
        413,
        "too_large",
    );
    assert_eq!(
        svc.state().await,
        before,
        "a failed request changed the key store"
    );
}

#[tokio::test]
async fn unknown_scopes_routes_and_methods_are_404_and_405() {
    let (svc, _, acme) = service().await;
    let c = svc.client();
    expect_error(
        &c.post("/v1/scopes/acme:nope/encrypt", &acme, one_value())
            .await,
        404,
        "unknown_scope",
    );
    expect_error(&c.get("/v1/nothing-here", None).await, 404, "no_route");
    expect_error(
        &c.get("/v1/scopes/acme:a/encrypt", Some(&acme)).await,
        405,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn admin_endpoints_refuse_tenants_other_owners_and_unconfirmed_destruction() {
    let (svc, admin, acme) = service().await;
    let c = svc.client();
    let before = svc.state().await;
    expect_error(&c.admin_scope(&acme, "x", "acme").await, 403, "not_admin");
    expect_error(
        &c.admin_scope(&admin, "acme:a", "globex").await,
        409,
        "owned_by_another_tenant",
    );
    let r = c
        .send(
            reqwest::Method::DELETE,
            "/v1/admin/scopes/acme:a",
            Some(&admin),
            None,
        )
        .await;
    expect_error(&r, 400, "confirm");
    assert_eq!(
        svc.state().await,
        before,
        "a refused request changed the key store"
    );
}

#[tokio::test]
async fn a_destroyed_scope_answers_410_and_cannot_come_back() {
    let (svc, admin, acme) = service().await;
    let c = svc.client();
    let path = "/v1/scopes/acme:a/encrypt";
    assert_eq!(c.post(path, &acme, one_value()).await.0, 200);
    let r = c
        .send(
            reqwest::Method::DELETE,
            "/v1/admin/scopes/acme:a?confirm=acme:a",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    expect_error(
        &c.post(path, &acme, one_value()).await,
        410,
        "key_destroyed",
    );
    expect_error(
        &c.admin_scope(&admin, "acme:a", "acme").await,
        409,
        "scope_destroyed",
    );
}

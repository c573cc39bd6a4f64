//! The OpenAPI document in process: it lists exactly the routes, every secured one refuses a
//! request without a token, every open one answers, and every schema it refers to exists.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Service;
use serde_json::json;

#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let svc = Service::start("").await;
    let c = svc.client();
    let (s, doc) = c.get("/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            documented.push(format!("{} {path}", method.to_uppercase()));
            // Every documented operation has responses.
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            let url = path.replace("{scope}", "acme:x");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = op.get("requestBody").map(|_| json!({}));
            let (status, v) = c.send(m, &url, None, body).await;
            if op.get("security").is_some() {
                assert_eq!(status, 401, "{method} {path} without a token: {v}");
            } else {
                assert_eq!(status, 200, "{method} {path}: {v}");
            }
        }
    }
    documented.sort();
    let mut expected: Vec<String> = [
        "POST /v1/scopes/{scope}/encrypt",
        "POST /v1/scopes/{scope}/decrypt",
        "POST /v1/scopes/{scope}/blind-index",
        "POST /v1/scopes/{scope}/datakeys",
        "POST /v1/scopes/{scope}/datakeys/decrypt",
        "POST /v1/scopes/{scope}/rewrap",
        "GET /v1/scopes/{scope}",
        "POST /v1/admin/scopes",
        "GET /v1/admin/scopes",
        "GET /v1/admin/scopes/{scope}",
        "DELETE /v1/admin/scopes/{scope}",
        "POST /v1/admin/scopes/{scope}/rotate",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /openapi.json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    expected.sort();
    assert_eq!(documented, expected);
    // Every schema a path refers to exists.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for part in text.split("#/components/schemas/").skip(1) {
        let name: String = part.chars().take_while(|c| *c != '"').collect();
        assert!(schemas.contains_key(&name), "missing schema {name}");
    }
}

#[tokio::test]
async fn the_document_served_is_the_one_router_builds() {
    let svc = Service::start("").await;
    let (_, doc) = coffer_server::router(svc.app.clone());
    let (s, served) = svc.client().get("/openapi.json", None).await;
    assert_eq!(s, 200);
    let built: serde_json::Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
    assert_eq!(served, built);
}

#[tokio::test]
async fn the_benchmark_endpoint_exists_only_when_configured() {
    let off = Service::start("").await;
    let (s, _) = off
        .client()
        .send(
            reqwest::Method::POST,
            "/v1/bench/echo/acme:x",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 404);

    let (on, _admin, acme) = Service::start_with_scope("bench_endpoints = true\n", "acme:x").await;
    let r = on
        .client()
        .post_utf8(
            "/v1/bench/echo/acme:x",
            &acme,
            json!([{"column": "c", "plaintext": "echo"}]),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["items"][0]["ciphertext"], "ZWNobw==");
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_token() {
    let svc = Service::start("").await;
    let c = svc.client();
    let (s, h) = c.get("/healthz", None).await;
    assert_eq!(s, 200);
    assert_eq!(h["status"], "ok");
    assert!(h["module"].as_str().is_some_and(|m| !m.is_empty()), "{h}");
    let (s, r) = c.get("/readyz", None).await;
    assert_eq!(
        (s, r["store"].as_str(), r["kek"].as_str()),
        (200, Some("ok"), Some("ok"))
    );
}

//! `POST /v1/admin/scopes` in process: it creates new scopes for tenants and never gives an
//! existing scope (one made outside the service) to a tenant.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use coffer_core::ScopeId;
use common::{Service, expect_error};
use serde_json::json;

#[tokio::test]
async fn an_unowned_scope_is_never_given_to_a_tenant() {
    let (svc, admin, acme) = Service::start_with_tokens("").await;
    // A scope as `coffer keys create-scope` or `coffer reencrypt` makes it: in the key store,
    // with no owner; and a value sealed under it outside the service.
    let id = ScopeId::new("payroll:ssn").unwrap();
    svc.app.keyring().ensure_scope(&id).await.unwrap();
    let before = svc.state().await;
    let audit_before = svc.audit("payroll:ssn").await.len();

    let c = svc.client();
    let r = c.admin_scope(&admin, "payroll:ssn", "acme").await;
    expect_error(&r, 409, "scope_not_owned");
    let m = r.1["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("not owned by tenant 'acme'") && m.contains("cannot be given to a tenant"),
        "{m}"
    );
    // Nothing changed: no owner row, no DEK, no scope, no audit record of a change.
    assert_eq!(svc.state().await, before);
    assert!(svc.tokens.owner("payroll:ssn").await.unwrap().is_none());
    assert_eq!(svc.audit("payroll:ssn").await.len(), audit_before);
    // And the tenant still cannot reach it.
    let r = c.encrypt_one(&acme, "payroll:ssn", "v").await;
    expect_error(&r, 403, "wrong_tenant");
    // A retry is refused the same way.
    let r = c.admin_scope(&admin, "payroll:ssn", "acme").await;
    expect_error(&r, 409, "scope_not_owned");
    assert_eq!(svc.state().await, before);
}

#[tokio::test]
async fn new_scopes_are_created_and_owned_scopes_keep_their_owner() {
    let svc = Service::start("").await;
    let admin = svc.admin_token().await;
    let c = svc.client();
    let body = json!({"scope": "acme:x", "tenant": "acme"});
    let r = c.post("/v1/admin/scopes", &admin, body.clone()).await;
    assert_eq!(
        (r.0, r.1["outcome"].as_str()),
        (201, Some("created")),
        "{}",
        r.1
    );
    let r = c.post("/v1/admin/scopes", &admin, body).await;
    assert_eq!(
        (r.0, r.1["outcome"].as_str()),
        (200, Some("exists")),
        "{}",
        r.1
    );
    let before = svc.state().await;
    let r = c.admin_scope(&admin, "acme:x", "globex").await;
    expect_error(&r, 409, "owned_by_another_tenant");
    assert_eq!(svc.state().await, before);
    assert_eq!(
        svc.tokens.owner("acme:x").await.unwrap().as_deref(),
        Some("acme")
    );
}

//! Request timeouts in process (a test process of its own: it reads the global in-flight
//! gauge): a 1 ms timeout answers 503 `timeout` while the key-store work goes on and finishes,
//! so the store keeps working for later requests and for a service opened on it again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{LogBuffer, Service, metric};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_answer_503_and_leave_the_store_working() {
    let logs = LogBuffer::install();
    let svc =
        Service::start("request_timeout = \"1ms\"\nrate_limit = 1000000\nrate_burst = 1000000\n")
            .await;
    let admin = svc.admin_token().await;
    let acme = svc.tenant_token("acme", "").await;
    let scopes: Vec<String> = (0..20).map(|i| format!("acme:t{i}")).collect();
    let c = svc.client();
    let mut timeouts = 0;
    let mut check = |r: &(u16, Value)| {
        if r.0 == 503 {
            assert_eq!(r.1["error"]["code"], "timeout", "{}", r.1);
            timeouts += 1;
        } else {
            assert!(r.0 == 200 || r.0 == 201, "{} {}", r.0, r.1);
        }
    };
    for s in &scopes {
        check(&c.admin_scope(&admin, s, "acme").await);
    }
    for _ in 0..3 {
        for s in &scopes {
            let r = c
                .post(
                    &format!("/v1/scopes/{s}/encrypt"),
                    &acme,
                    json!({"encoding": "utf8", "items": [{"column": "c", "plaintext": "v"}]}),
                )
                .await;
            // A scope whose creation timed out may not be owned yet: retry until it is.
            if r.0 == 403 || r.0 == 404 {
                continue;
            }
            check(&r);
        }
    }
    assert!(
        timeouts > 0,
        "no request took longer than 1 ms; the test proved nothing"
    );
    // Let the detached requests finish, then: nothing is in flight, timeouts were counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, m) = c.get("/metrics", Some(common::METRICS_TOKEN)).await;
        // /metrics may run the key-store count: with a 1 ms limit it may time out itself.
        let m = if s == 200 {
            m.as_str().unwrap().to_owned()
        } else {
            String::new()
        };
        if s == 200 && metric(&m, "coffer_service_requests_in_flight") <= 1.0 {
            let timed_out = metric(
                &m,
                "coffer_service_requests_total{operation=\"encrypt\",outcome=\"timeout\"}",
            ) + metric(
                &m,
                "coffer_service_requests_total{operation=\"admin_create_scope\",outcome=\"timeout\"}",
            );
            assert!(timed_out > 0.0, "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "requests still in flight:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = svc.stop().await;
    assert!(
        !logs.text().contains("transaction depth"),
        "{}",
        logs.text()
    );

    // The store opens again (no transaction left holding its lock), and a service with a normal
    // timeout finds every scope created and owned, and encrypts in each.
    let svc = Service::open(dir, "request_timeout = \"30s\"\n", None).await;
    assert!(!svc.tokens.list().await.unwrap().is_empty());
    let c = svc.client();
    for s in &scopes {
        let r = c.admin_scope(&admin, s, "acme").await;
        assert_eq!(r.0, 200, "{}", r.1);
        assert_eq!(r.1["outcome"], "exists", "{}", r.1);
        let r = c
            .post(
                &format!("/v1/scopes/{s}/encrypt"),
                &acme,
                json!({"encoding": "utf8", "items": [{"column": "c", "plaintext": "v"}]}),
            )
            .await;
        assert_eq!(r.0, 200, "{}", r.1);
    }
}

//! `/metrics` needs the metrics token or an admin token, and scrapes do not make the key store
//! count: the count behind the KEK-rotation gauge runs at most once per 30 s. (A test process of
//! its own: it reads a process-wide counter.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{METRICS_TOKEN, Service, expect_error, metric};

#[tokio::test]
async fn metrics_need_a_token_and_scrapes_do_not_count_keys_each_time() {
    let (svc, admin, acme) = Service::start_with_tokens("").await;
    let c = svc.client();
    let r = c.get("/metrics", None).await;
    expect_error(&r, 401, "unauthorized");
    let r = c
        .get(
            "/metrics",
            Some("not-the-metrics-token-but-long-enough-000"),
        )
        .await;
    expect_error(&r, 401, "unauthorized");
    let r = c.get("/metrics", Some(&acme)).await;
    expect_error(&r, 403, "not_admin");
    let r = c.get("/metrics", Some(&admin)).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let mut last = String::new();
    for _ in 0..20 {
        let (s, m) = c.get("/metrics", Some(METRICS_TOKEN)).await;
        assert_eq!(s, 200, "{m}");
        last = m.as_str().unwrap().to_owned();
    }
    let counts = metric(&last, "coffer_service_key_counts_total");
    assert!(
        counts <= 1.0,
        "21 scrapes ran {counts} counts of the key store"
    );
}

//! The per-token rate limit in process: a 429 with Retry-After, for that token only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Service, expect_retry_after};

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let svc = Service::start("rate_limit = 1\nrate_burst = 3\n").await;
    let t = svc.tenant_token("acme", "").await;
    let other = svc.tenant_token("acme", "").await;
    let c = svc.client();
    let mut limited = 0;
    for _ in 0..10 {
        let r = c.get_response("/v1/scopes/none", &t).await;
        if r.status().as_u16() == 429 {
            expect_retry_after(r, "rate_limited").await;
            limited += 1;
        }
    }
    assert!(
        limited >= 1,
        "10 requests at once passed a 1/s limit with burst 3"
    );
    // The limit is per token: another token is not affected.
    let r = c.get("/v1/scopes/none", Some(&other)).await;
    assert_eq!(r.0, 404, "{}", r.1);
}

//! Redis (the L2 cache) killed while the service encrypts and decrypts: no request fails, and
//! /metrics shows that Redis was used, then found dead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Client, METRICS_TOKEN, Service, metric};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_while_serving_fails_no_request() {
    let mut svc = Service::start_with("rate_limit = 1000000\nrate_burst = 1000000\n", true).await;
    let admin = svc.admin_token().await;
    let acme = svc.tenant_token("acme", "").await;
    let scopes: Vec<String> = (0..8).map(|i| format!("acme:s{i}")).collect();
    for s in &scopes {
        svc.create_scope(&admin, s, "acme").await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (base, acme, scopes, stop) =
            (svc.base.clone(), acme.clone(), scopes.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = Client::new(&base);
            let (mut ok, mut failed) = (0u64, Vec::new());
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let scope = &scopes[(i + w) % scopes.len()];
                let v = format!("value-{w}-{i}");
                i += 1;
                let e = c
                    .post(
                        &format!("/v1/scopes/{scope}/encrypt"),
                        &acme,
                        json!({"encoding": "utf8", "items": [{"column": "c", "context": v, "plaintext": v}]}),
                    )
                    .await;
                if e.0 != 200 {
                    failed.push(e);
                    continue;
                }
                let d = c
                    .post(
                        &format!("/v1/scopes/{scope}/decrypt"),
                        &acme,
                        json!({"encoding": "utf8", "items": [{"column": "c", "context": v, "ciphertext": e.1["items"][0]["ciphertext"]}]}),
                    )
                    .await;
                if d.0 == 200 && d.1["items"][0]["plaintext"] == v.as_str() {
                    ok += 1;
                } else {
                    failed.push(d);
                }
            }
            (ok, failed)
        }));
    }
    // Let the caches fill through Redis, then kill it; the 1 s L1 lifetime and new versions
    // (rotations) make later requests miss L1 and find Redis gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    svc.redis.as_mut().unwrap().kill();
    let c = svc.client();
    for s in &scopes[..4] {
        let r = c
            .send(
                reqwest::Method::POST,
                &format!("/v1/admin/scopes/{s}/rotate"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.0, 200, "rotate with Redis down: {}", r.1);
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in tasks {
        let (ok, failed) = t.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} failed requests with Redis down, first: {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
        total += ok;
    }
    assert!(total > 40, "too few requests to mean anything: {total}");
    let m = c.metrics(METRICS_TOKEN).await;
    assert!(
        metric(&m, "coffer_keys_l2_errors_total") > 0.0,
        "the run never reached the dead Redis:\n{m}"
    );
    assert!(
        m.lines().any(|l| l.starts_with("coffer_keys_l2_hits_total")
            || l.starts_with("coffer_keys_l2_misses_total")),
        "Redis was never used before it died"
    );
}

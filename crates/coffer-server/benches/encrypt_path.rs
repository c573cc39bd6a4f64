//! Server CPU of one encrypt request at batch 1, beside the no-crypto echo endpoint, measured
//! in process: the whole router (token check, rate limit, tenant check, JSON, keyring, seal,
//! audit count, request-id and log layers) called through `tower::ServiceExt::oneshot` on a
//! current-thread runtime, with no sockets, hyper or kernel in the way. Those are the same for
//! both endpoints, and on a shared 2-core machine they are where the noise of a wrk run comes
//! from (docs/BENCHMARKS.md, "Service: server CPU of the encrypt path at batch 1").
//!
//! ```sh
//! cargo bench -p coffer-server --bench encrypt_path
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

const SERVICE: &str = "rate_limit = 100000000\nrate_burst = 100000000\nmax_batch = 1000\n\
                       bench_endpoints = true\nlog_level = \"warn\"";

/// The body bench-service.sh sends at batch 1: one 50-byte text item.
const BODY: &str = r#"{"encoding":"utf8","items":[{"column":"ssn","context":"row-1","plaintext":"bench value 00001 abcdefghijabcdefghijabcdefghijab"}]}"#;

fn request(path: &str, token: &str) -> http::Request<Body> {
    let mut req = http::Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(BODY))
        .unwrap();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (svc, _admin, token) = rt.block_on(common::Service::start_with_scope(SERVICE, "bench"));
    let (router, _) = coffer_server::router(svc.app.clone());
    // Both endpoints answer 200 with one item before anything is measured.
    for path in ["/v1/scopes/bench/encrypt", "/v1/bench/echo/bench"] {
        let res = rt
            .block_on(router.clone().oneshot(request(path, &token)))
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let body = rt.block_on(res.into_body().collect()).unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["items"].as_array().map(Vec::len), Some(1), "{path}: {v}");
    }
    let mut g = c.benchmark_group("service_batch_1");
    for (name, path) in [
        ("encrypt", "/v1/scopes/bench/encrypt"),
        ("echo (no crypto, baseline)", "/v1/bench/echo/bench"),
    ] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let router = router.clone();
                let req = request(path, &token);
                async move {
                    let res = router.oneshot(req).await.unwrap();
                    res.into_body().collect().await.unwrap().to_bytes()
                }
            });
        });
    }
    g.finish();
    rt.block_on(svc.stop());
}

criterion_group!(benches, bench);
criterion_main!(benches);

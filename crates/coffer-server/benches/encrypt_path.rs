//! Server CPU of one encrypt request at batch 1, beside the no-crypto echo endpoint, measured
//! in process: the whole router (token check, rate limit, tenant check, JSON, keyring, seal,
//! audit count, request-id and log layers) called through `tower::ServiceExt::oneshot` on a
//! current-thread runtime, with no sockets, hyper or kernel in the way. Those are the same for
//! both endpoints, and on a shared 2-core machine they are where the noise of a wrk run comes
//! from (docs/BENCHMARKS.md, "Service: server CPU of the encrypt path at batch 1").
//!
//! The figure is the CPU time of the benchmark's thread (`CLOCK_THREAD_CPUTIME_ID`), not wall
//! time: everything a request does runs on that thread, and time other processes take from it
//! is not counted. What other processes still change (caches, clock speed) drifts slowly, so
//! the two endpoints alternate in blocks of [`BLOCK`] requests, and the figure is the median of
//! the differences between neighbouring blocks: a drift moves both sides of a pair alike.
//! `COFFER_BENCH_PAIRS` sets the number of pairs (default 300).
//!
//! ```sh
//! cargo bench -p coffer-server --bench encrypt_path
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt as _;
use nix::time::{ClockId, clock_gettime};
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

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    Duration::from(clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap())
}

/// Requests per measured block.
const BLOCK: u32 = 1_000;

/// The value at quantile `q` (0..=1) of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let pairs: usize = std::env::var("COFFER_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
        .max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (svc, _admin, token) = rt.block_on(common::Service::start_with_scope(SERVICE, "bench"));
    let (router, _) = coffer_server::router(svc.app.clone());
    let encrypt = "/v1/scopes/bench/encrypt";
    let echo = "/v1/bench/echo/bench";
    // Both endpoints answer 200 with one item before anything is measured.
    for path in [encrypt, echo] {
        let res = rt
            .block_on(router.clone().oneshot(request(path, &token)))
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let body = rt.block_on(res.into_body().collect()).unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["items"].as_array().map(Vec::len), Some(1), "{path}: {v}");
    }
    // CPU µs per request of one block of `path`.
    let block = |path: &str| -> f64 {
        rt.block_on(async {
            let start = thread_cpu();
            for _ in 0..BLOCK {
                let res = router.clone().oneshot(request(path, &token)).await.unwrap();
                assert_eq!(res.status(), 200);
                std::hint::black_box(res.into_body().collect().await.unwrap());
            }
            (thread_cpu() - start).as_secs_f64() * 1e6 / f64::from(BLOCK)
        })
    };
    // Warm-up: a few blocks of each, not counted.
    for _ in 0..5 {
        block(encrypt);
        block(echo);
    }
    let (mut enc, mut ech, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        // Which side goes first alternates, so neither always follows the other.
        let (a, b) = if i % 2 == 0 {
            let a = block(encrypt);
            (a, block(echo))
        } else {
            let b = block(echo);
            (block(encrypt), b)
        };
        enc.push(a);
        ech.push(b);
        diff.push(a - b);
    }
    for v in [&mut enc, &mut ech, &mut diff] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "service batch 1, server CPU per request, {pairs} pairs of {BLOCK}-request blocks \
         (median, 10th-90th percentile):"
    );
    for (name, v) in [
        ("encrypt", &enc),
        ("echo (no crypto, baseline)", &ech),
        ("encrypt - echo, pairwise", &diff),
    ] {
        println!(
            "  {name:<28} {:>6.2} µs  ({:.2} - {:.2})",
            quantile(v, 0.5),
            quantile(v, 0.1),
            quantile(v, 0.9)
        );
    }
    rt.block_on(svc.stop());
}

//! Behind a proxy listed in `[service] trusted_proxies`, each client has its own failed-
//! authentication bucket (read from `X-Forwarded-For`); from anywhere else the header is ignored,
//! so a client cannot escape its bucket by writing one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Service;

const BAD: &str = "cft_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Sends a bad token `n` times with `X-Forwarded-For: xff` (when given); counts the 429s.
async fn limited(svc: &Service, xff: Option<&str>, n: usize) -> usize {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/scopes/acme:x", svc.base);
    let mut count = 0;
    for _ in 0..n {
        let mut r = http.get(&url).bearer_auth(BAD);
        if let Some(x) = xff {
            r = r.header("x-forwarded-for", x);
        }
        match r.send().await.unwrap().status().as_u16() {
            401 => {}
            429 => count += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    count
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_get_their_own_failed_auth_buckets() {
    // The test client connects from 127.0.0.1: it plays the proxy.
    let svc = Service::start(
        "auth_failure_rate = 1\nauth_failure_burst = 3\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    )
    .await;
    // One client behind the proxy exhausts its bucket...
    assert!(limited(&svc, Some("203.0.113.5"), 12).await >= 1);
    // ...and another client behind the same proxy is still only refused (401), not limited.
    assert_eq!(limited(&svc, Some("203.0.113.6"), 2).await, 0);
    // An address the client itself wrote in front of the proxy's entry is not believed: the
    // nearest untrusted entry (the one the proxy appended) is the client.
    assert!(limited(&svc, Some("198.51.100.1, 203.0.113.5"), 2).await >= 1);
}

#[tokio::test]
async fn the_forwarding_header_is_ignored_from_an_untrusted_peer() {
    let svc = Service::start("auth_failure_rate = 1\nauth_failure_burst = 3\n").await;
    // A different made-up address on every request: all of them are the peer's bucket.
    let http = reqwest::Client::new();
    let url = format!("{}/v1/scopes/acme:x", svc.base);
    let mut statuses = Vec::new();
    for i in 0..12u8 {
        let r = http
            .get(&url)
            .bearer_auth(BAD)
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn a_malformed_trusted_proxies_entry_is_a_clear_error() {
    let table: toml::Table = toml::from_str("trusted_proxies = [\"10.0.0.0/33\"]").unwrap();
    let e = coffer_server::ServiceConfig::from_table(Some(&table))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("trusted_proxies") && e.contains("10.0.0.0/33"),
        "{e}"
    );
}

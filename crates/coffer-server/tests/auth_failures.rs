//! Failed authentications are limited per client address and unknown tokens are remembered:
//! a stream of bad tokens neither queries the store once per request nor locks out other
//! addresses. (A test process of its own: it reads a process-wide counter.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::{Client, METRICS_TOKEN, Service, expect_retry_after, metric};

fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::from(ip)))
        .build()
        .unwrap()
}

async fn lookups(c: &Client) -> f64 {
    metric(
        &c.metrics(METRICS_TOKEN).await,
        "coffer_service_token_lookups_total",
    )
}

#[tokio::test]
async fn bad_tokens_are_limited_per_address_and_do_not_query_the_store_each_time() {
    let svc = Service::start("auth_failure_rate = 1\nauth_failure_burst = 5\n").await;
    let good = svc.tenant_token("acme", "").await;
    let c = svc.client();
    let before = lookups(&c).await;
    let bad = "cft_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let attacker = client_from([127, 0, 0, 1]);
    let url = format!("{}/v1/scopes/acme:x", svc.base);
    let n = 30;
    let (mut unauthorized, mut limited) = (0, 0);
    for _ in 0..n {
        let r = attacker.get(&url).bearer_auth(bad).send().await.unwrap();
        match r.status().as_u16() {
            401 => unauthorized += 1,
            429 => {
                expect_retry_after(r, "auth_rate_limited").await;
                limited += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(
        unauthorized >= 1 && limited >= 1,
        "{unauthorized} 401, {limited} 429"
    );
    assert!(
        unauthorized <= 10,
        "{unauthorized} failures passed a burst of 5"
    );
    // The same unknown token sent 30 times was looked up once.
    let after = lookups(&c).await;
    assert!(
        after - before <= 1.0,
        "{} token lookups for {n} requests",
        after - before
    );
    // Made-up tokens, each new, are refused before any lookup while the address is limited.
    for i in 0..10 {
        let t = format!("cft_{i:016x}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        let r = attacker.get(&url).bearer_auth(t).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 429);
    }
    assert_eq!(
        lookups(&c).await,
        after,
        "a limited address still reached the store"
    );
    // A good token from another address is served.
    let other = client_from([127, 0, 0, 2]);
    let r = other.get(&url).bearer_auth(&good).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404, "{}", r.text().await.unwrap());
}

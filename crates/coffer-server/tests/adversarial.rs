//! A generated corpus of hostile requests against every endpoint: malformed JSON, huge numbers,
//! 10 000-level nesting, long, Unicode and control-character names, unknown fields, wrong types,
//! path tricks, bodies beyond the limit and many headers. None may get a 5xx, the server must
//! keep serving, and its memory must not grow with what was sent. Requests go over raw HTTP/1.1
//! so that paths reach the server exactly as written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Service;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The resident set size of this process (the server runs in it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends one request on a new connection and returns the status (None: the server closed the
/// connection without an answer, e.g. after refusing a body it would not read).
async fn raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    // The server may answer and close before reading a body it refuses: ignore write errors.
    let _ = s.write_all(&req).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 4 << 20 {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next()?;
    line.split(' ').nth(1)?.parse().ok()
}

fn bodies() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = Vec::new();
    let texts = [
        "",
        "{",
        "}",
        "null",
        "[]",
        "{}",
        "\"x\"",
        "{\"items\":",
        "{\"items\":null}",
        "{\"items\":[]}",
        "{\"items\":{}}",
        "{\"items\":[null]}",
        "{\"items\":[1,2,3]}",
        "{\"items\":[{}]}",
        "{\"items\":[{\"column\":\"c\"}]}",
        "{\"items\":[{\"column\":\"c\",\"plaintext\":\"eA==\"}],\"encoding\":\"rot13\"}",
        "{\"items\":[{\"column\":\"c\",\"plaintext\":\"eA==\",\"bogus\":1}]}",
        "{\"items\":[{\"column\":\"c\",\"plaintext\":\"not base64!\"}]}",
        "{\"items\":[{\"column\":\"c\",\"type\":\"int\",\"plaintext\":1e999999}]}",
        "{\"items\":[{\"column\":\"c\",\"type\":\"int\",\"plaintext\":123456789012345678901234567890}]}",
        "{\"items\":[{\"column\":\"c\",\"type\":\"date\",\"plaintext\":-99999999999}]}",
        "{\"items\":[{\"column\":\"c\",\"type\":\"json\",\"plaintext\":{\"a\":[1,2,{\"b\":null}]}}]}",
        "{\"items\":[{\"column\":\"c\",\"type\":\"uuid\",\"plaintext\":\"ééééééééééééééééééé\"}]}",
        "{\"items\":[{\"column\":\"c\",\"mode\":\"deterministic\",\"context\":\"x\",\"plaintext\":\"eA==\"}]}",
        "{\"items\":[{\"column\":\"c\",\"ciphertext\":\"cf1:\"}]}",
        "{\"items\":[{\"column\":\"c\",\"ciphertext\":\"cf1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}",
        "{\"items\":[{\"column\":\"c\",\"ciphertext\":\"cf1:////////////////////////\"}]}",
        "{\"items\":[{\"column\":\"c\",\"values\":[\"eA==\"],\"bits\":65535}]}",
        "{\"items\":[{\"column\":\"c\",\"values\":[\"eA==\"],\"bits\":0}]}",
        "{\"items\":[{\"column\":\"c\",\"values\":[\"eA==\"],\"normalize\":[\"last:99999999999\"]}]}",
        "{\"items\":[{\"column\":\"c\",\"values\":[\"eA==\"],\"normalize\":[\"bogus\"]}]}",
        "{\"items\":[{\"wrapped\":\"AAAA\"}]}",
        "{\"items\":[{\"column\":\"c\",\"wrapped\":\"AAAA\",\"ciphertext\":\"cf1:AA\"}]}",
        "{\"count\":0}",
        "{\"count\":-1}",
        "{\"count\":18446744073709551616}",
        "{\"count\":1e3}",
        "{\"count\":999999999}",
        "{\"scope\":\"\",\"tenant\":\"\"}",
        "{\"scope\":\"a\\u0000b\",\"tenant\":\"t\"}",
        "{\"scope\":\"x:y\",\"tenant\":\"\\u0007bell\"}",
        "{\"scope\":\"x:y\",\"tenant\":\"t\",\"tenant\":\"u\"}",
        "{\"items\":[{\"column\":\"\\ud800\",\"plaintext\":\"eA==\"}]}",
        "{\"items\":[{\"column\":\"c\",\"plaintext\":\"eA==\"}]}trailing",
        "{\"a\":NaN}",
        "\u{feff}{\"items\":[]}",
    ];
    v.extend(texts.iter().map(|t| t.as_bytes().to_vec()));
    // Deep nesting, as an array and inside a field.
    let deep = 10_000;
    v.push(format!("{}{}", "[".repeat(deep), "]".repeat(deep)).into_bytes());
    v.push(
        format!(
            "{{\"items\":[{{\"column\":\"c\",\"type\":\"json\",\"plaintext\":{}1{}}}]}}",
            "[".repeat(deep),
            "]".repeat(deep)
        )
        .into_bytes(),
    );
    v.push("{\"a\":".repeat(deep).into_bytes());
    // Long, Unicode and control-character names.
    for name in [
        "c".repeat(300),
        "c".repeat(200_000),
        "é".repeat(200),
        "\\u0000\\u001f\\u007f".to_owned(),
        "名前🙂\\u202e".to_owned(),
    ] {
        v.push(
            format!("{{\"items\":[{{\"column\":\"{name}\",\"plaintext\":\"eA==\"}}]}}")
                .into_bytes(),
        );
        v.push(
            format!(
                "{{\"items\":[{{\"column\":\"c\",\"index\":\"{name}\",\"values\":[\"eA==\"]}}]}}"
            )
            .into_bytes(),
        );
        v.push(format!("{{\"scope\":\"{name}\",\"tenant\":\"{name}\"}}").into_bytes());
    }
    // Many items, many distinct columns, many context parts.
    let many: Vec<String> = (0..5000)
        .map(|i| {
            format!("{{\"column\":\"c{i}\",\"plaintext\":\"eA==\",\"context\":[\"a\",\"b\"]}}")
        })
        .collect();
    v.push(format!("{{\"items\":[{}]}}", many.join(",")).into_bytes());
    let parts: Vec<String> = (0..10_000).map(|i| format!("\"{i}\"")).collect();
    v.push(
        format!(
            "{{\"items\":[{{\"column\":\"c\",\"plaintext\":\"eA==\",\"context\":[{}]}}]}}",
            parts.join(",")
        )
        .into_bytes(),
    );
    // Beyond the body limit, and bytes that are not UTF-8.
    v.push(vec![b' '; 3 << 20]);
    v.push(vec![0xff, 0xfe, 0x00, 0x7b]);
    v
}

fn paths() -> Vec<String> {
    let mut p: Vec<String> = [
        "/v1/scopes/acme:a/encrypt",
        "/v1/scopes/acme:a/decrypt",
        "/v1/scopes/acme:a/blind-index",
        "/v1/scopes/acme:a/datakeys",
        "/v1/scopes/acme:a/datakeys/decrypt",
        "/v1/scopes/acme:a/rewrap",
        "/v1/scopes/acme:a",
        "/v1/admin/scopes",
        "/v1/admin/scopes/acme:a",
        "/v1/admin/scopes/acme:a/rotate",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    p.extend(
        [
            "/v1/../admin/scopes",
            "/v1/scopes/../admin/scopes",
            "/v1/scopes/%2e%2e/encrypt",
            "/v1/scopes/%2e%2e%2fadmin/encrypt",
            "/v1/scopes/..%2f..%2fv1%2fadmin%2fscopes/encrypt",
            "/v1/scopes/%00/encrypt",
            "/v1/scopes/%ff%fe/encrypt",
            "/v1/scopes/%/encrypt",
            "/v1/scopes/a%0ab/encrypt",
            "//v1//scopes//acme:a//encrypt",
            "/v1/scopes/acme:a/encrypt/",
            "/v1/admin/scopes/%2e%2e?confirm=%2e%2e",
            "/v1/admin/scopes/acme:a?confirm=acme:a&confirm=x",
            "/v1/scopes/%E5%90%8D%F0%9F%99%82/encrypt",
            "/V1/SCOPES/acme:a/ENCRYPT",
            "*",
            "/?%%%",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    p.push(format!("/v1/scopes/{}/encrypt", "a".repeat(5000)));
    p.push(format!("/v1/admin/scopes/{}", "%2e".repeat(2000)));
    p
}

#[tokio::test]
async fn hostile_inputs_get_no_5xx_and_do_not_grow_the_server() {
    let svc = Service::start(
        "auth_failure_rate = 1000000\nauth_failure_burst = 1000000\nrate_limit = 1000000\n\
         rate_burst = 1000000\ntoken_cache_ttl = \"60s\"\n",
    )
    .await;
    let admin = svc.admin_token().await;
    let acme = svc.tenant_token("acme", "").await;
    svc.create_scope(&admin, "acme:a", "acme").await;
    let addr = svc.base.trim_start_matches("http://").to_owned();
    let json = ("Content-Type".to_owned(), "application/json".to_owned());
    let auth = |t: &str| ("Authorization".to_owned(), format!("Bearer {t}"));
    let bodies = bodies();
    let paths = paths();
    let mut tried = 0u64;
    let mut server_errors = Vec::new();
    let mut check = |what: String, status: Option<u16>| {
        tried += 1;
        if status.is_some_and(|s| s >= 500) {
            server_errors.push(format!("{status:?} {what}"));
        }
    };

    // Warm up (first-use allocations), then measure.
    for _ in 0..2 {
        for p in &paths[..14] {
            raw(&addr, "GET", p, &[auth(&acme)], b"").await;
        }
    }
    let before = rss_kib();

    for round in 0..1 {
        // Every body to every endpoint that takes one, with each kind of token.
        for p in &paths {
            for (method, token) in [("POST", &acme), ("POST", &admin)] {
                for (i, b) in bodies.iter().enumerate() {
                    let s = raw(&addr, method, p, &[json.clone(), auth(token)], b).await;
                    check(format!("round {round} {method} {p} body #{i}"), s);
                }
            }
            for method in ["GET", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"] {
                let s = raw(&addr, method, p, &[auth(&admin)], b"").await;
                check(format!("{method} {p}"), s);
                let s = raw(&addr, method, p, &[auth(&acme)], b"").await;
                check(format!("{method} {p} (tenant)"), s);
            }
        }
        // Headers: many, huge, odd tokens and content types.
        let ep = "/v1/scopes/acme:a/encrypt";
        let body = br#"{"encoding":"utf8","items":[{"column":"c","plaintext":"x"}]}"#;
        let many: Vec<(String, String)> =
            (0..200).map(|i| (format!("X-H{i}"), "v".into())).collect();
        let mut with_many = vec![json.clone(), auth(&acme)];
        with_many.extend(many);
        check(
            "200 headers".into(),
            raw(&addr, "POST", ep, &with_many, body).await,
        );
        let huge = vec![
            json.clone(),
            auth(&acme),
            ("X-Big".into(), "v".repeat(200_000)),
        ];
        check(
            "a 200 kB header".into(),
            raw(&addr, "POST", ep, &huge, body).await,
        );
        for t in [
            String::new(),
            "Bearer".into(),
            "Bearer ".into(),
            "Basic YTpi".into(),
            format!("Bearer {}", "x".repeat(10_000)),
            "Bearer cft_ééééééééééééééé_x".into(),
            format!("Bearer cft_0123456789abcdef_{}", "A".repeat(43)),
            format!("Bearer {acme} {acme}"),
            format!("bearer {acme}"),
        ] {
            let h = vec![json.clone(), ("Authorization".to_owned(), t.clone())];
            check(
                format!("Authorization {:.40}", t),
                raw(&addr, "POST", ep, &h, body).await,
            );
        }
        for ct in [
            "text/plain",
            "application/json; charset=latin1",
            "application/problem+json",
            "",
            "application/x-www-form-urlencoded",
        ] {
            let h = vec![("Content-Type".to_owned(), ct.to_owned()), auth(&acme)];
            check(
                format!("Content-Type {ct}"),
                raw(&addr, "POST", ep, &h, body).await,
            );
        }
        for rid in ["x".repeat(1000), "a b".into(), "\u{7f}".into()] {
            let h = vec![json.clone(), auth(&acme), ("X-Request-Id".into(), rid)];
            check(
                "odd request id".into(),
                raw(&addr, "POST", ep, &h, body).await,
            );
        }
    }
    let after = rss_kib();
    println!(
        "adversarial corpus: {tried} inputs tried; RSS {before} KiB before, {after} KiB after"
    );
    assert!(
        server_errors.is_empty(),
        "5xx answers:\n{}",
        server_errors.join("\n")
    );
    assert!(svc.is_serving(), "the server stopped");
    let (s, _) = svc.client().get("/healthz", None).await;
    assert_eq!(s, 200);
    let ok = svc
        .client()
        .encrypt_one(&acme, "acme:a", "still here")
        .await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    assert!(
        after <= before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

//! An adversarial corpus against every endpoint of the ballots application: malformed JSON and
//! forms, huge numbers, deep nesting, long, Unicode and control-character strings, unknown
//! fields, wrong types, path tricks, odd headers and oversized bodies. Every answer must be a
//! 4xx or a success (never a 5xx), the process must stay up with its memory within a generous
//! bound, and nothing may be stored but what was accepted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// JSON bodies that are not what any endpoint takes, or take it to its limits.
fn json_bodies(option: i64) -> Vec<String> {
    let deep_array = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000));
    let long = "x".repeat(60_000);
    let mut v: Vec<String> = vec![
        String::new(),
        "{".into(),
        "}".into(),
        "[".into(),
        "nul".into(),
        "\"".into(),
        "{\"voter\":}".into(),
        "{\"voter\": \"a\", \"option_id\": 1,}".into(),
        "{'voter': 'a'}".into(),
        "\u{feff}{\"voter\": \"a\", \"option_id\": 1}".into(),
        "{\"voter\": \"a\" \"option_id\": 1}".into(),
        "{\"voter\": \"a\", \"voter\": \"b\", \"option_id\": 1}".into(),
        "null".into(),
        "true".into(),
        "12".into(),
        "[]".into(),
        "{}".into(),
        deep_array,
        deep_object,
        format!("{{\"voter\": \"{long}\", \"option_id\": 1}}"),
        format!("{{\"measure\": \"{long}\", \"options\": [\"A\", \"B\"]}}"),
        "{\"voter\": \"a\", \"option_id\": 1e400}".into(),
        "{\"voter\": \"a\", \"option_id\": 99999999999999999999999999}".into(),
        "{\"voter\": \"a\", \"option_id\": -9223372036854775809}".into(),
        "{\"voter\": \"a\", \"option_id\": 1.5}".into(),
        "{\"voter\": \"a\", \"option_id\": NaN}".into(),
        "{\"voter\": \"\\ud800\", \"option_id\": 1}".into(),
        "{\"voter\": \"a\", \"write_in\": \"\\ud83d\"}".into(),
        "{\"measure\": \"M\", \"options\": [\"A\", \"B\"], \"allow_write_ins\": \"yes\"}".into(),
        "{\"measure\": \"M\", \"options\": \"A\"}".into(),
        "{\"measure\": null, \"options\": [\"A\", \"B\"]}".into(),
        "{\"measure\": [\"M\"], \"options\": [\"A\", \"B\"]}".into(),
        "{\"measure\": \"M\", \"options\": [1, 2]}".into(),
        "{\"measure\": \"M\", \"options\": [[\"A\"], {\"B\": 1}]}".into(),
        "{\"voter\": 1, \"option_id\": 1}".into(),
        "{\"voter\": null, \"option_id\": 1}".into(),
        "{\"voter\": \"a\", \"option_id\": \"1\"}".into(),
        "{\"voter\": \"a\", \"option_id\": true}".into(),
        "{\"voter\": \"a\", \"write_in\": 5}".into(),
        "{\"voter\": \"a\", \"write_in\": null, \"option_id\": null}".into(),
    ];
    let options: Vec<String> = (0..51).map(|i| format!("option {i}")).collect();
    let many: Vec<String> = (0..5_000).map(|i| format!("o{i}")).collect();
    for body in [
        json!({"voter": "a", "option_id": option, "admin": true}),
        json!({"voter": "a", "option_id": option, "__proto__": {"x": 1}}),
        json!({"measure": "M", "options": ["A", "B"], "id": "chosen"}),
        json!({"measure": "M", "options": options}),
        json!({"measure": "M", "options": many}),
        json!({"measure": "M", "options": ["A", "A"]}),
        json!({"measure": "M", "options": ["A", "a\u{0301}", "A\u{200b}"]}),
        json!({"voter": "a", "option_id": i64::MAX}),
        json!({"voter": "a", "option_id": i64::MIN}),
        json!({"voter": "a", "option_id": 0}),
        json!({"voter": "a", "option_id": option, "write_in": "x"}),
    ] {
        v.push(body.to_string());
    }
    // Strings: Unicode of every kind, control characters, markup, SQL.
    for text in [
        "\u{0}",
        "a\u{0}b",
        "\u{1b}[31mred\u{1b}[0m",
        "line\rbreak",
        "tab\there",
        "\u{7f}",
        "\u{202e}evil\u{202c}",
        "\u{200b}\u{200c}\u{200d}\u{2060}",
        "\u{fdd0}\u{fffe}\u{10ffff}",
        "🗳️👩‍👩‍👧‍👦🏳️‍🌈",
        "e\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}",
        "ﷺ",
        "ﬃ",
        "<script>alert(1)</script>",
        "'; DROP TABLE votes; --",
        "%00%2e%2e%2f",
        "../../../../etc/passwd",
        "\\\\?\\C:\\",
        "        ",
        "\u{3000}",
    ] {
        let long = text.repeat(300);
        for t in [text, long.as_str()] {
            v.push(json!({"voter": t, "option_id": option}).to_string());
            v.push(json!({"voter": format!("w-{t}"), "write_in": t}).to_string());
            v.push(json!({"measure": t, "options": [t, "B"]}).to_string());
        }
    }
    v
}

/// Ballot ids and path tails that are not ballots.
fn path_ids() -> Vec<String> {
    vec![
        "%00".into(),
        "..".into(),
        "%2e%2e".into(),
        "..%2F..%2Fetc%2Fpasswd".into(),
        "%2F".into(),
        "a%20b".into(),
        "%27%3B%20DROP%20TABLE%20ballots%3B--".into(),
        "%F0%9F%97%B3".into(),
        "%FF%FE".into(),
        "a".repeat(10_000),
        "-".into(),
        "_".into(),
        "x".repeat(64),
        "x".repeat(65),
        "%25".into(),
    ]
}

#[test]
fn adversarial_corpus_gets_no_5xx_and_loses_nothing() {
    let (served, c, base) = serve_postgres("adversarial");
    let pid = served.server.pid();
    let rt = runtime();
    let (tried, created, voted) = rt.block_on(async {
        let (id, admin, _) = create_with(&c, "M", &["A", "B"]).await;
        // A connection per request: the server closes a connection whose request body it did
        // not read (a refusal before the body), and a pooled client could race that close.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        // A real identity and its form token, so that forms get past the token check.
        let r = http.get(format!("{base}/b/{id}")).send().await.unwrap();
        let voter = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("ballots_voter="))
            .map(|v| v.split(';').next().unwrap().to_owned())
            .unwrap();
        let page = r.text().await.unwrap();
        let marker = "name=\"csrf\" value=\"";
        let at = page.find(marker).unwrap() + marker.len();
        let csrf = page[at..at + page[at..].find('"').unwrap()].to_owned();
        let cookie = format!("ballots_voter={voter}; ballots_admin_{id}={admin}");

        let before = rss_kib(pid);
        let mut tried = 0u64;
        let mut created = 0u64;
        let mut voted = 0u64;
        let mut failures = Vec::new();
        macro_rules! send {
            ($what:expr, $req:expr) => {{
                tried += 1;
                match $req.send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let location = r
                            .headers()
                            .get("location")
                            .and_then(|l| l.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let _ = r.bytes().await;
                        if status >= 500 {
                            failures.push(format!("{status} {}", $what));
                        }
                        (status, location)
                    }
                    Err(e) => {
                        failures.push(format!("no answer ({e}) {}", $what));
                        (0, String::new())
                    }
                }
            }};
        }

        // JSON bodies on every JSON endpoint, with and without the right content type.
        let bodies = json_bodies(1);
        let json_posts = [
            "/api/ballots".to_owned(),
            format!("/api/ballots/{id}/votes"),
            format!("/api/ballots/{id}/close"),
        ];
        for body in &bodies {
            for path in &json_posts {
                for ct in ["application/json", "text/plain"] {
                    let what = format!("POST {path} ({ct}) {:.80}", body);
                    let (status, _) = send!(
                        what,
                        http.post(format!("{base}{path}"))
                            .header("content-type", ct)
                            .bearer_auth("not-the-token")
                            .body(body.clone())
                    );
                    if status == 201 && path == "/api/ballots" {
                        created += 1;
                    }
                    if status == 201 && path.ends_with("/votes") {
                        voted += 1;
                    }
                }
            }
        }
        // The same strings as form fields, with the right identity and token.
        let mut fields: Vec<Vec<(String, String)>> = vec![
            vec![],
            vec![("csrf".into(), csrf.clone())],
            vec![
                ("csrf".into(), csrf.clone()),
                ("choice".into(), "999999999999999999999".into()),
            ],
            vec![
                ("csrf".into(), csrf.clone()),
                ("choice".into(), "-1".into()),
            ],
            vec![
                ("csrf".into(), csrf.clone()),
                ("choice".into(), "write-in".into()),
            ],
            vec![("csrf".into(), "x".repeat(50_000))],
            vec![
                ("csrf".into(), csrf.clone()),
                ("options".into(), "\n".repeat(30_000)),
            ],
        ];
        for body in json_bodies(1).iter().step_by(3).take(40) {
            fields.push(vec![
                ("csrf".into(), csrf.clone()),
                ("choice".into(), "write-in".into()),
                ("write_in".into(), body.chars().take(3_000).collect()),
                ("measure".into(), body.chars().take(3_000).collect()),
                ("options".into(), body.chars().take(3_000).collect()),
            ]);
        }
        let form_posts = [
            "/ballots".to_owned(),
            format!("/b/{id}/vote"),
            format!("/b/{id}/close"),
        ];
        let raw_forms = [
            "%zz=%zz",
            "a=%",
            "choice&&&csrf",
            "=\u{0}=",
            "choice=1&choice=2",
        ];
        for path in &form_posts {
            for f in &fields {
                let what = format!("POST {path} form {:.80?}", f);
                if *path == form_posts[2] {
                    // Closing for real would end the corpus's votes: a wrong admin cookie.
                    send!(
                        what,
                        http.post(format!("{base}{path}"))
                            .header(
                                "cookie",
                                format!("ballots_voter={voter}; ballots_admin_{id}=wrong")
                            )
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(serde_urlencoded::to_string(f).unwrap())
                    );
                    continue;
                }
                let (status, location) = send!(
                    what,
                    http.post(format!("{base}{path}"))
                        .header("cookie", &cookie)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(serde_urlencoded::to_string(f).unwrap())
                );
                if status == 303 && path == "/ballots" {
                    created += 1;
                }
                if status == 303 && location.ends_with("?voted=1") {
                    voted += 1;
                }
            }
            for raw in raw_forms {
                let what = format!("POST {path} raw form {raw:?}");
                send!(
                    what,
                    http.post(format!("{base}{path}"))
                        .header("cookie", format!("ballots_voter={voter}"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(raw)
                );
            }
        }
        // Oversized bodies on every POST route.
        let huge = vec![b'{'; 2 * 1024 * 1024];
        // The server answers as soon as the limit is reached and then closes the connection,
        // so the client may see its upload cut off instead of the answer; either way the next
        // request must be answered.
        for path in json_posts.iter().chain(form_posts.iter()) {
            tried += 1;
            let sent = http
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(huge.clone())
                .send()
                .await;
            if let Ok(r) = sent
                && r.status().as_u16() >= 500
            {
                failures.push(format!("{} POST {path} 2 MiB", r.status()));
            }
            let (s, _) = c.get("/healthz").await;
            assert_eq!(s, 200, "answering after POST {path} 2 MiB");
        }
        // Path tricks on every route that takes an id, and odd paths.
        let routes = [
            ("GET", "/b/{}"),
            ("GET", "/b/{}/tally"),
            ("POST", "/b/{}/vote"),
            ("POST", "/b/{}/close"),
            ("GET", "/api/ballots/{}"),
            ("POST", "/api/ballots/{}/votes"),
            ("GET", "/api/ballots/{}/tally"),
            ("POST", "/api/ballots/{}/close"),
        ];
        for bad in path_ids() {
            for (method, route) in routes {
                let path = route.replace("{}", &bad);
                let what = format!("{method} {:.100}", path);
                let req = if method == "GET" {
                    http.get(format!("{base}{path}"))
                } else {
                    http.post(format!("{base}{path}"))
                        .header("content-type", "application/json")
                        .body(json!({"voter": "p", "option_id": 1}).to_string())
                };
                send!(what, req.header("cookie", &cookie).bearer_auth(&admin));
            }
        }
        for path in [
            "//api//ballots",
            "/api/ballots/",
            "/b/",
            "/b//tally",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/metrics/../healthz",
            "/?%zz",
            &format!("/b/{id}?voted=%zz&error=%ff"),
            &format!("/b/{id}?error={}", "A".repeat(20_000)),
            &format!("/b/{id}?error=%3Cscript%3E"),
        ] {
            let what = format!("GET {path:.100}");
            send!(what, http.get(format!("{base}{path}")));
        }
        // Headers: credentials and cookies of every wrong shape on every route.
        let header_values: Vec<Vec<u8>> = vec![
            b"Bearer".to_vec(),
            b"Bearer ".to_vec(),
            format!("Bearer {}", "t".repeat(8_000)).into_bytes(),
            b"Basic YWRtaW46YWRtaW4=".to_vec(),
            b"Bearer \xff\xfe".to_vec(),
            b"bearer lowercase".to_vec(),
        ];
        let cookies: Vec<Vec<u8>> = vec![
            b"ballots_voter=".to_vec(),
            format!("ballots_voter={}", "v".repeat(4_000)).into_bytes(),
            b"ballots_voter=\xff\xfe".to_vec(),
            b"ballots_voter=a; ballots_voter=b".to_vec(),
            b"=;=;;;".to_vec(),
        ];
        let plain = [
            ("GET", "/".to_owned()),
            ("GET", "/metrics".to_owned()),
            ("GET", "/healthz".to_owned()),
            ("GET", format!("/b/{id}")),
            ("GET", format!("/b/{id}/tally")),
            ("GET", format!("/api/ballots/{id}")),
            ("GET", format!("/api/ballots/{id}/tally")),
            ("POST", format!("/api/ballots/{id}/close")),
            ("POST", format!("/b/{id}/vote")),
            ("POST", format!("/b/{id}/close")),
            ("POST", "/ballots".to_owned()),
        ];
        for (method, path) in &plain {
            for (i, value) in header_values.iter().chain(cookies.iter()).enumerate() {
                let name = if i < header_values.len() {
                    "authorization"
                } else {
                    "cookie"
                };
                let value = reqwest::header::HeaderValue::from_bytes(value).unwrap();
                let req = if *method == "GET" {
                    http.get(format!("{base}{path}"))
                } else {
                    http.post(format!("{base}{path}"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(format!("csrf={csrf}&choice=1"))
                };
                let what = format!("{method} {path} {name}: {value:.60?}");
                let (status, location) = send!(what, req.header(name, value));
                if status == 303 && location.ends_with("?voted=1") {
                    voted += 1;
                }
            }
            for (name, value) in [
                ("origin", "null"),
                ("origin", "http://\u{0}"),
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-site", ""),
                ("content-type", "application/json; charset=utf-7"),
                ("content-length", "0"),
                ("host", "evil.example"),
            ] {
                let req = if *method == "GET" {
                    http.get(format!("{base}{path}"))
                } else {
                    http.post(format!("{base}{path}"))
                };
                let what = format!("{method} {path} {name}: {value:?}");
                if let Ok(v) = reqwest::header::HeaderValue::from_str(value) {
                    send!(what, req.header(name, v));
                }
            }
        }
        eprintln!("adversarial corpus: {tried} requests tried");
        assert!(
            failures.is_empty(),
            "{} of {tried} requests got no 4xx/2xx answer:\n{}",
            failures.len(),
            failures.join("\n")
        );

        // Still up and answering; memory within a generous bound of before.
        assert!(matches!(
            std::process::Command::new("kill").args(["-0", &pid.to_string()]).status(),
            Ok(s) if s.success()
        ));
        let (s, h) = c.get("/healthz").await;
        assert_eq!((s, &h["status"]), (200, &json!("ok")));
        let after = rss_kib(pid);
        eprintln!("adversarial corpus: RSS {before} KiB before, {after} KiB after");
        assert!(
            after <= before * 3 + 64 * 1024,
            "RSS grew from {before} KiB to {after} KiB"
        );
        // The ballot still works.
        vote(
            &c,
            &id,
            json!({"voter": "after-the-corpus", "option_id": 2}),
        )
        .await;
        (tried, created, voted + 1)
    });
    assert!(tried > 1_000, "{tried}");
    // Nothing stored but what was accepted.
    assert_eq!(
        served.db.sql("SELECT count(*) FROM ballots"),
        (1 + created).to_string()
    );
    assert_eq!(
        served.db.sql("SELECT count(*) FROM votes"),
        voted.to_string()
    );
    assert_eq!(
        served.db.sql("SELECT count(*) FROM has_voted"),
        voted.to_string()
    );
}

//! Vote privacy while a ballot is open: no route shows a count per option or a write-in, and
//! `/metrics` is for the operator only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

/// A page with the ballot's id and option ids replaced by placeholders, and each form token
/// blanked (a token is per visitor).
fn normalized(body: &str, id: &str, options: &[i64]) -> String {
    let mut out = body.replace(id, "ID");
    for (i, o) in options.iter().enumerate() {
        out = out
            .replace(&format!("value=\"{o}\""), &format!("value=\"OPTION{i}\""))
            .replace(&format!("\"id\":{o},"), &format!("\"id\":\"OPTION{i}\","));
    }
    let marker = "name=\"csrf\" value=\"";
    let mut from = 0;
    while let Some(at) = out[from..].find(marker) {
        let start = from + at + marker.len();
        let end = start + out[start..].find('"').unwrap();
        out.replace_range(start..end, "TOKEN");
        from = start;
    }
    out
}

#[test]
fn nothing_reveals_per_option_counts_before_close() {
    let (_served, c, base) = serve_postgres("privacy");
    runtime().block_on(async {
        let (x, x_admin, x_opts) = create(&c).await;
        let (y, y_admin, y_opts) = create(&c).await;
        let (_, home_before) = fetch(&base, "/", None).await;
        // The same number of votes on both ballots, distributed differently.
        for (ballot, opts, write_in) in [
            (&x, &x_opts, "Zebra crossing"),
            (&y, &y_opts, "Yak shaving"),
        ] {
            let option = if ballot == &x { opts[0] } else { opts[1] };
            let path = format!("/api/ballots/{ballot}/votes");
            for v in ["v1", "v2"] {
                let (s, b) = c
                    .post(&path, json!({"voter": v, "option_id": option}))
                    .await;
                assert_eq!(s, 201, "{b}");
            }
            let (s, b) = c
                .post(&path, json!({"voter": "v3", "write_in": write_in}))
                .await;
            assert_eq!(s, 201, "{b}");
        }
        // Every GET route the application has, for each ballot, as a stranger and as the
        // ballot's creator: the two ballots look the same.
        let routes = [
            "/b/{id}",
            "/b/{id}?voted=1",
            "/b/{id}/tally",
            "/b/{id}/tally?part=1",
            "/api/ballots/{id}",
            "/api/ballots/{id}/tally",
            "/healthz",
            "/metrics",
        ];
        let mut tried = 0;
        for route in routes {
            for admin in [false, true] {
                let page = |id: &str, token: &str| {
                    let path = route.replace("{id}", id);
                    let cookie = admin.then(|| format!("ballots_admin_{id}={token}"));
                    let base = base.clone();
                    async move { fetch(&base, &path, cookie.as_deref()).await }
                };
                let (sx, bx) = page(&x, &x_admin).await;
                let (sy, by) = page(&y, &y_admin).await;
                assert_eq!(sx, sy, "{route}");
                assert_eq!(
                    normalized(&bx, &x, &x_opts),
                    normalized(&by, &y, &y_opts),
                    "{route} differs"
                );
                for text in [&bx, &by] {
                    assert!(
                        !text.contains("Zebra") && !text.contains("Yak"),
                        "{route} shows a write-in: {text}"
                    );
                }
                tried += 1;
            }
        }
        assert_eq!(tried, routes.len() * 2);
        let (_, home_after) = fetch(&base, "/", None).await;
        assert_eq!(
            normalized(&home_before, "-", &[]),
            normalized(&home_after, "-", &[])
        );
        // The open tally says how many votes were cast, and nothing else.
        let (_, t) = c.get(&format!("/api/ballots/{x}/tally")).await;
        assert_eq!(
            (&t["total"], &t["results_hidden"]),
            (&json!(3), &json!(true))
        );
        assert_eq!(t["options"], json!([]));
        let (_, html) = fetch(&base, &format!("/b/{x}/tally"), None).await;
        assert!(
            html.contains("Votes cast so far") && !html.contains("<table"),
            "{html}"
        );

        // A write-in's answer does not tell whether someone wrote the same text in before.
        let probe = format!("/api/ballots/{x}/votes");
        let (_, same) = c
            .post(
                &probe,
                json!({"voter": "p1", "write_in": "zebra  CROSSING"}),
            )
            .await;
        let (_, new) = c
            .post(&probe, json!({"voter": "p2", "write_in": "Aardvark"}))
            .await;
        assert_eq!(same, new);
        assert_eq!(same, json!({"write_in": true}));

        // /metrics: only with its token; no series per ballot or option.
        let (s, b) = c.get("/metrics").await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("metrics_token")
        );
        let r = reqwest::Client::new()
            .get(format!("{base}/metrics"))
            .bearer_auth("not-the-metrics-token-at-all")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = reqwest::Client::new()
            .get(format!("{base}/metrics"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let metrics = r.text().await.unwrap();
        assert!(metrics.contains("ballots_votes_total"), "{metrics}");
        for needle in [x.as_str(), y.as_str(), "option", "ballot=", "voter"] {
            assert!(!metrics.contains(needle), "{needle:?} in /metrics");
        }

        // Closed: the results, right.
        for (id, admin) in [(&x, &x_admin), (&y, &y_admin)] {
            close(&c, id, admin).await;
        }
        let (_, t) = c.get(&format!("/api/ballots/{x}/tally")).await;
        assert_eq!(
            (&t["total"], &t["results_hidden"]),
            (&json!(5), &json!(false))
        );
        let n = counts(&t);
        assert_eq!(
            (
                n[OPTIONS[0]],
                n[OPTIONS[1]],
                n[OPTIONS[2]],
                n["Zebra crossing"],
                n["Aardvark"]
            ),
            (2, 0, 0, 2, 1),
            "{t}"
        );
        let (_, t) = c.get(&format!("/api/ballots/{y}/tally")).await;
        let n = counts(&t);
        assert_eq!(
            (n[OPTIONS[0]], n[OPTIONS[1]], n["Yak shaving"]),
            (0, 2, 1),
            "{t}"
        );
        let (_, page) = fetch(&base, &format!("/b/{x}"), None).await;
        assert!(
            page.contains("Zebra crossing"),
            "the closed page shows the results"
        );
    });
}

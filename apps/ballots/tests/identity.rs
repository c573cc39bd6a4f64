//! The web pages' identities and forged requests: the voter cookie survives cross-site
//! navigations and is never replaced; forms without their token, and requests from other
//! sites, are refused and change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

/// A client that does not follow redirects (to see the pages' answers themselves).
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `ballots_voter` value a response sets, if it sets one.
fn set_voter(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("ballots_voter="))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// The form token in a page.
fn csrf_in(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a form token") + marker.len();
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

/// POSTs a form; status, Location and body.
async fn post_form(
    base: &str,
    path: &str,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut req = raw_client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(fields).unwrap());
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, r.text().await.unwrap())
}

/// A forged form: cookie, fields, extra headers.
type Forged<'a> = (
    Option<&'a str>,
    Vec<(&'a str, &'a str)>,
    Vec<(&'a str, &'a str)>,
);

#[test]
fn forged_forms_are_refused_and_identities_stay() {
    let (served, c, base) = serve_postgres("csrf");
    runtime().block_on(async {
        let (id, admin, opts) = create(&c).await;
        let ballot = format!("/b/{id}");

        // The first visit sets the identity: HttpOnly, SameSite=Lax, kept for a year.
        let r = raw_client()
            .get(format!("{base}{ballot}"))
            .send()
            .await
            .unwrap();
        let set = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|v| v.starts_with("ballots_voter="))
            .expect("an identity cookie");
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
            assert!(set.contains(attribute), "{set}");
        }
        let voter = set_voter(&r).unwrap();
        let token = csrf_in(&r.text().await.unwrap());
        let cookie = format!("ballots_voter={voter}");

        // Arriving from a link on another site (a cross-site top-level navigation, which sends
        // a Lax cookie): the same identity, never a new cookie.
        for path in [ballot.as_str(), "/", &format!("{ballot}?voted=1")] {
            let r = raw_client()
                .get(format!("{base}{path}"))
                .header("cookie", &cookie)
                .header("sec-fetch-site", "cross-site")
                .header("sec-fetch-mode", "navigate")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(set_voter(&r), None, "{path} replaced the identity");
            assert_eq!(csrf_in(&r.text().await.unwrap()), token, "{path}");
        }

        // Forged votes: each refused with 403 and a reason, nothing stored.
        let option = opts[0].to_string();
        let other_token = {
            let r = raw_client()
                .get(format!("{base}{ballot}"))
                .send()
                .await
                .unwrap();
            csrf_in(&r.text().await.unwrap())
        };
        let vote = format!("{ballot}/vote");
        let forged: Vec<Forged> = vec![
            (Some(cookie.as_str()), vec![("choice", &option)], vec![]),
            (
                Some(cookie.as_str()),
                vec![("choice", &option), ("csrf", "")],
                vec![],
            ),
            (
                Some(cookie.as_str()),
                vec![("choice", &option), ("csrf", "bm9wZQ")],
                vec![],
            ),
            (
                Some(cookie.as_str()),
                vec![("choice", &option), ("csrf", &other_token)],
                vec![],
            ),
            (None, vec![("choice", &option), ("csrf", &token)], vec![]),
            (
                Some(cookie.as_str()),
                vec![("choice", &option), ("csrf", &token)],
                vec![("origin", "http://evil.example")],
            ),
            (
                Some(cookie.as_str()),
                vec![("choice", &option), ("csrf", &token)],
                vec![("origin", "null")],
            ),
            (
                Some(cookie.as_str()),
                vec![("choice", &option), ("csrf", &token)],
                vec![("sec-fetch-site", "cross-site")],
            ),
            (
                Some(cookie.as_str()),
                vec![("choice", &option), ("csrf", &token)],
                vec![("sec-fetch-site", "same-site")],
            ),
        ];
        for (cookie, fields, headers) in &forged {
            let (s, _, body) = post_form(&base, &vote, *cookie, fields, headers).await;
            assert_eq!(s, 403, "{fields:?} {headers:?}: {body}");
            assert!(body.contains("page"), "the refusal says what to do: {body}");
        }
        // A forged close and a forged ballot, too.
        let admin_cookie = format!("{cookie}; ballots_admin_{id}={admin}");
        let (s, _, _) = post_form(
            &base,
            &format!("{ballot}/close"),
            Some(admin_cookie.as_str()),
            &[],
            &[],
        )
        .await;
        assert_eq!(s, 403);
        let (s, _, _) = post_form(
            &base,
            "/ballots",
            Some(cookie.as_str()),
            &[
                ("measure", "M"),
                ("options", "A\nB"),
                ("csrf", &other_token),
            ],
            &[],
        )
        .await;
        assert_eq!(s, 403);
        // The API refuses a browser's cross-site request as well.
        let r = reqwest::Client::new()
            .post(format!("{base}/api/ballots/{id}/votes"))
            .header("content-type", "application/json")
            .header("origin", "http://evil.example")
            .body(json!({"voter": "x", "option_id": opts[0]}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert_eq!(served.db.sql("SELECT count(*) FROM votes"), "0");
        assert_eq!(served.db.sql("SELECT count(*) FROM has_voted"), "0");
        assert_eq!(served.db.sql("SELECT count(*) FROM ballots"), "1");
        assert_eq!(served.db.sql("SELECT status FROM ballots"), "open");

        // The real form, from the page (same origin): counted once; again: refused.
        let same = [("origin", base.as_str()), ("sec-fetch-site", "same-origin")];
        let fields = [("choice", option.as_str()), ("csrf", token.as_str())];
        let (s, location, _) = post_form(&base, &vote, Some(cookie.as_str()), &fields, &same).await;
        assert_eq!(
            (s, location.as_str()),
            (303, format!("{ballot}?voted=1").as_str())
        );
        let (s, location, _) = post_form(&base, &vote, Some(cookie.as_str()), &fields, &same).await;
        assert_eq!(s, 303);
        assert!(location.ends_with("?error=already_voted"), "{location}");
        assert_eq!(served.db.sql("SELECT count(*) FROM votes"), "1");
        // The creator closes it from the page.
        let (s, _, _) = post_form(
            &base,
            &format!("{ballot}/close"),
            Some(admin_cookie.as_str()),
            &[("csrf", &token)],
            &same,
        )
        .await;
        assert_eq!(s, 303);
        assert_eq!(served.db.sql("SELECT status FROM ballots"), "closed");
    });
}

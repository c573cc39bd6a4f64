//! The voter cookie is `Secure` whenever the page came over HTTPS: behind a TLS-terminating
//! proxy that says so (`X-Forwarded-Proto: https`), or always with `[app] secure_cookies = true`;
//! over plain HTTP without either it is not (a browser would drop a `Secure` cookie there).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

/// The `Set-Cookie` of the voter cookie on the home page, fetched with `headers`.
async fn voter_set_cookie(base: &str, headers: &[(&str, &str)]) -> String {
    let mut req = reqwest::Client::new().get(format!("{base}/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("ballots_voter="))
        .expect("a new visitor gets a voter cookie")
        .to_owned()
}

fn is_secure(set_cookie: &str) -> bool {
    set_cookie
        .split(';')
        .any(|a| a.trim().eq_ignore_ascii_case("secure"))
}

#[test]
fn the_voter_cookie_is_secure_when_the_page_came_over_https() {
    let db = Database::new("cookies");
    let setup = Setup::postgres(&db, None, "", "");
    let server = setup.start();
    runtime().block_on(async {
        let plain = voter_set_cookie(&server.base, &[]).await;
        assert!(!is_secure(&plain), "{plain}");
        assert!(
            plain.contains("HttpOnly") && plain.contains("SameSite=Lax"),
            "{plain}"
        );
        let proxied = voter_set_cookie(&server.base, &[("x-forwarded-proto", "https")]).await;
        assert!(is_secure(&proxied), "{proxied}");
        assert_eq!(
            proxied.matches("Secure").count(),
            1,
            "Secure once: {proxied}"
        );
    });
}

#[test]
fn secure_cookies_true_marks_them_secure_on_every_response() {
    let db = Database::new("cookies_on");
    let setup = Setup::postgres(&db, None, "secure_cookies = true\n", "");
    let server = setup.start();
    runtime().block_on(async {
        let plain = voter_set_cookie(&server.base, &[]).await;
        assert!(is_secure(&plain), "{plain}");
    });
}

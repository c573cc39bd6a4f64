//! The web page in headless Chromium (Debian's `chromium` and `chromedriver`, which `make test`
//! installs): create a ballot, vote from two browsers (an option and a write-in), watch the tally
//! refresh by itself, be refused a second vote, close the ballot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::json;

struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (apt-get install chromium-driver)");
        assert!(
            coffer_testkit::process::wait_for_listener(port, Duration::from_secs(20)),
            "chromedriver did not start"
        );
        Driver { child, port }
    }

    async fn browser(&self) -> Browser {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1000,900"]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of the element `css`, waiting up to 10 s for it. Right after a click that submits a
/// form, the element found can belong to the page being left and go stale: then look again.
async fn text(b: &Browser, css: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = b.find(Locator::Css(css)).await;
        if let Ok(e) = found
            && let Ok(t) = e.text().await
        {
            return t;
        }
        assert!(Instant::now() < deadline, "{css} did not appear");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The tally table as (option, votes) rows, read in one script call: the page's own script
/// replaces the table every 2 s, so element handles taken one by one can go stale in between.
async fn tally(b: &Browser) -> Vec<(String, String)> {
    let rows = b
        .execute(
            "return [...document.querySelectorAll('#tally tbody tr')]\
               .map(r => [r.querySelector('th').textContent.trim(),\
                          r.querySelector('td.n').textContent.trim()]);",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value::<Vec<(String, String)>>(rows).unwrap()
}

/// The number of votes cast, as the open ballot's page shows it.
async fn total(b: &Browser) -> String {
    let t = text(b, "#total strong").await;
    t.trim().to_owned()
}

async fn click_choice(b: &Browser, label: &str) {
    for l in b.find_all(Locator::Css("form label")).await.unwrap() {
        if l.text().await.unwrap().trim().starts_with(label) {
            l.find(Locator::Css("input[name=choice]"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            return;
        }
    }
    panic!("no choice labelled {label}");
}

#[test]
fn create_vote_and_watch_the_tally_in_chromium() {
    let db = Database::new("browser");
    let setup = Setup::postgres(&db, None, "status_cache_ttl = \"1ms\"", "");
    let server = setup.start();
    let driver = Driver::start();
    let base = server.base.clone();
    runtime().block_on(async {
        let a = driver.browser().await;
        a.goto(&format!("{base}/")).await.unwrap();
        a.find(Locator::Css("textarea[name=measure]"))
            .await
            .unwrap()
            .send_keys("Should the pool open at dawn?")
            .await
            .unwrap();
        a.find(Locator::Css("textarea[name=options]"))
            .await
            .unwrap()
            .send_keys("Yes\nNo\nOnly in summer")
            .await
            .unwrap();
        a.find(Locator::Css("form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(
            text(&a, "h1#measure").await,
            "Should the pool open at dawn?"
        );
        let url = a.current_url().await.unwrap().to_string();
        let id = url.rsplit('/').next().unwrap().to_owned();
        assert!(url.contains("/b/"), "{url}");

        // Voter A chooses a listed option.
        click_choice(&a, "Yes").await;
        a.find(Locator::Css("#vote"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert!(text(&a, "#voted").await.contains("counted"));
        // Open: the number of votes cast, no count per option.
        assert_eq!(total(&a).await, "1");
        assert_eq!(tally(&a).await, vec![]);

        // Voter B (another browser, so another voter cookie) writes in.
        let b = driver.browser().await;
        b.goto(&url).await.unwrap();
        click_choice(&b, "Write in").await;
        b.find(Locator::Css("input[name=write_in]"))
            .await
            .unwrap()
            .send_keys("Bees first")
            .await
            .unwrap();
        b.find(Locator::Css("#vote"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert!(text(&b, "#voted").await.contains("counted"));
        assert_eq!(total(&b).await, "2");
        let page = b.source().await.unwrap();
        assert!(
            !page.contains("Bees first"),
            "no write-in is shown while open"
        );
        // B is no admin: no close button.
        assert!(b.find(Locator::Css("#close")).await.is_err());

        // A third vote through the API: A's open page refreshes its tally by itself.
        let c = Client::new(&base);
        let (_, view) = c.get(&format!("/api/ballots/{id}")).await;
        let no = view["options"][1]["id"].as_i64().unwrap();
        vote(&c, &id, json!({"voter": "api", "option_id": no})).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let t = total(&a).await;
            if t == "3" {
                assert_eq!(tally(&a).await, vec![]);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the tally did not refresh: {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        // A votes again: refused, with the reason on the page.
        click_choice(&a, "No").await;
        a.find(Locator::Css("#vote"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert!(text(&a, "#error").await.contains("already voted"));

        // A created the ballot, so A can close it.
        a.find(Locator::Css("#close"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while text(&a, "#status").await != "closed" {
            assert!(Instant::now() < deadline, "not closed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            a.refresh().await.unwrap();
        }
        assert!(
            a.find(Locator::Css("#vote")).await.is_err(),
            "no vote form once closed"
        );
        // Closed: the results per option.
        let t = tally(&a).await;
        for row in [
            ("Yes", "1"),
            ("No", "1"),
            ("Only in summer", "0"),
            ("Bees first (write-in)", "1"),
        ] {
            assert!(t.contains(&(row.0.to_owned(), row.1.to_owned())), "{t:?}");
        }

        // The results page: the app's own stylesheet, a bar and a percentage per option, the
        // bars as long as the shares.
        a.goto(&format!("{base}/b/{id}/tally")).await.unwrap();
        let shown = a
            .execute(
                "const rows = [...document.querySelectorAll('#tally tbody tr')];\
                 return {font: getComputedStyle(document.body).fontFamily,\
                         stylesheets: document.styleSheets.length,\
                         external: document.querySelectorAll('link,script[src],img').length,\
                         rows: rows.map(r => [r.querySelector('th').textContent.trim(),\
                           r.querySelector('.pct').textContent.trim(),\
                           r.querySelector('.bar>span').getBoundingClientRect().width,\
                           r.querySelector('.bar').getBoundingClientRect().width,\
                           r.querySelector('.bar').getAttribute('aria-hidden')])};",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            shown["font"].as_str().unwrap().contains("system-ui"),
            "{shown}"
        );
        assert_eq!(shown["stylesheets"], 1, "{shown}");
        assert_eq!(
            shown["external"], 0,
            "nothing loaded from elsewhere: {shown}"
        );
        let rows = shown["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 4, "{shown}");
        for r in rows {
            let (label, pct) = (r[0].as_str().unwrap(), r[1].as_str().unwrap());
            let (bar, track) = (r[2].as_f64().unwrap(), r[3].as_f64().unwrap());
            let want = if label == "Only in summer" {
                "0.0%"
            } else {
                "33.3%"
            };
            assert_eq!(pct, want, "{shown}");
            let share = bar / track;
            let expected = if label == "Only in summer" {
                0.0
            } else {
                1.0 / 3.0
            };
            assert!(
                (share - expected).abs() < 0.02,
                "{label}: bar {bar} of {track}"
            );
            assert_eq!(r[4], "true", "the bar is hidden from screen readers");
        }
        a.close().await.unwrap();
        b.close().await.unwrap();
    });
}

#[test]
fn a_link_from_another_site_keeps_the_voters_identity() {
    let (_served, c, base) = serve_postgres("browser_lax");
    let driver = Driver::start();
    runtime().block_on(async {
        let (id, _, _) = create_with(&c, "Paint the bike shed green?", &["Yes", "No"]).await;
        let a = driver.browser().await;
        a.goto(&format!("{base}/b/{id}")).await.unwrap();
        click_choice(&a, "Yes").await;
        a.find(Locator::Css("#vote"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert!(text(&a, "#voted").await.contains("counted"));
        let identity = a
            .get_named_cookie("ballots_voter")
            .await
            .unwrap()
            .value()
            .to_owned();

        // The voter follows a link to the ballot from another site (as from a web mail): a
        // cross-site top-level navigation.
        let elsewhere =
            format!("data:text/html,<p><a%20id='go'%20href='{base}/b/{id}'>the%20ballot</a></p>");
        a.goto(&elsewhere).await.unwrap();
        a.find(Locator::Css("#go"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(text(&a, "h1#measure").await, "Paint the bike shed green?");
        let after = a
            .get_named_cookie("ballots_voter")
            .await
            .unwrap()
            .value()
            .to_owned();
        assert_eq!(after, identity, "the identity survived the link");

        // So a second vote is still refused.
        click_choice(&a, "No").await;
        a.find(Locator::Css("#vote"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert!(text(&a, "#error").await.contains("already voted"));
        let (_, t) = c.get(&format!("/api/ballots/{id}/tally")).await;
        assert_eq!(t["total"], 1, "{t}");
        a.close().await.unwrap();
    });
}

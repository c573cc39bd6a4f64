//! The pages' look: the tally page has the other pages' stylesheet, and its results are a
//! table with bars and percentages, nothing loaded from elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

#[test]
fn the_tally_page_is_styled_like_the_other_pages() {
    let (_served, c, base) = serve_postgres("styled");
    runtime().block_on(async {
        let (id, admin, opts) = create(&c).await;
        for (voter, option) in [("a", opts[0]), ("b", opts[0]), ("c", opts[2])] {
            vote(&c, &id, json!({"voter": voter, "option_id": option})).await;
        }
        let style = |page: &str| {
            let start = page.find("<style>").expect("an inline stylesheet");
            page[start..start + page[start..].find("</style>").unwrap()].to_owned()
        };
        let (_, home) = fetch(&base, "/", None).await;
        let (s, open) = fetch(&base, &format!("/b/{id}/tally"), None).await;
        assert_eq!(s, 200);
        assert!(open.starts_with("<!DOCTYPE html>"), "a whole page: {open}");
        assert_eq!(style(&open), style(&home), "the same stylesheet");
        close(&c, &id, &admin).await;
        let (_, page) = fetch(&base, &format!("/b/{id}/tally"), None).await;
        assert_eq!(style(&page), style(&home));
        for needle in [
            "<html lang=\"en\">",
            "<caption>Results</caption>",
            "<th scope=\"col\">Option</th>",
            "<th scope=\"row\">Yes, all of it</th><td class=\"n\">2</td>",
            "<span class=\"bar\" aria-hidden=\"true\"><span style=\"width:66.7%\"></span></span><span class=\"pct\">66.7%</span>",
            "<span style=\"width:0.0%\"></span></span><span class=\"pct\">0.0%</span>",
            "<span class=\"pct\">33.3%</span>",
            "<th scope=\"row\">Total</th><td class=\"n\">3</td>",
        ] {
            assert!(page.contains(needle), "{needle} not in\n{page}");
        }
        for external in ["<link", "src=", "@import", "url(", "http://", "https://"] {
            assert!(!page.contains(external), "{external} in the tally page");
        }
        // The ballot page's script fetches only the tally part.
        let (_, part) = fetch(&base, &format!("/b/{id}/tally?part=1"), None).await;
        assert!(part.starts_with("<table data-final"), "{part}");
    });
}

//! Option ids are per ballot (1..n), older databases are renumbered, and the README's API
//! example runs as written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

#[test]
fn option_ids_are_per_ballot_and_older_databases_are_renumbered() {
    let (mut served, c, _) = serve_postgres("numbers");
    let rt = runtime();
    let (first, second, second_admin) = rt.block_on(async {
        let (first, _, a) = create(&c).await;
        let (second, second_admin, b) = create(&c).await;
        assert_eq!(a, vec![1, 2, 3]);
        assert_eq!(b, vec![1, 2, 3], "each ballot numbers its own options");
        let path = format!("/api/ballots/{second}/votes");
        let (s, v) = c.post(&path, json!({"voter": "a", "option_id": 1})).await;
        assert_eq!((s, &v["option_id"]), (201, &json!(1)), "{v}");
        // Write-ins take the next numbers, an equal one shares its number (the closed tally
        // below shows them; a write-in's answer does not tell).
        for (voter, text) in [("b", "Bees"), ("c", "Ants"), ("d", " bees ")] {
            let (s, v) = c
                .post(&path, json!({"voter": voter, "write_in": text}))
                .await;
            assert_eq!((s, &v), (201, &json!({"write_in": true})));
        }
        vote(&c, &first, json!({"voter": "a", "write_in": "Ants"})).await;
        // An id of no option of this ballot: refused.
        for bad in [0, 6, -1, i64::MAX] {
            let (s, e) = c.post(&path, json!({"voter": "e", "option_id": bad})).await;
            assert_eq!(
                (s, e["error"]["code"].as_str()),
                (400, Some("unknown_option")),
                "{bad}"
            );
        }
        (first, second, second_admin)
    });
    served.server.stop();

    // A database from before per-ballot numbers: no number column, the rows' ids global.
    served
        .db
        .sql("ALTER TABLE ballot_options DROP COLUMN number");
    served.server = served.setup.start();
    assert!(
        served.server.log().contains("numbered the options"),
        "{}",
        served.server.log()
    );
    rt.block_on(async {
        let c = Client::new(&served.server.base);
        for id in [&first, &second] {
            let (_, v) = c.get(&format!("/api/ballots/{id}")).await;
            let ids: Vec<i64> = v["options"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_i64().unwrap())
                .collect();
            assert_eq!(ids, vec![1, 2, 3], "{v}");
        }
        // The numbers (and votes) carry on where they were.
        let path = format!("/api/ballots/{second}/votes");
        for (voter, text) in [("f", "Ants"), ("g", "Moths")] {
            let (s, _) = c
                .post(&path, json!({"voter": voter, "write_in": text}))
                .await;
            assert_eq!(s, 201);
        }
        close(&c, &second, &second_admin).await;
        let (_, t) = c.get(&format!("/api/ballots/{second}/tally")).await;
        let lines: Vec<(i64, String, i64)> = t["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["id"].as_i64().unwrap(),
                    o["text"].as_str().unwrap().to_owned(),
                    o["votes"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                (1, OPTIONS[0].to_owned(), 1),
                (2, OPTIONS[1].to_owned(), 0),
                (3, OPTIONS[2].to_owned(), 0),
                (4, "Bees".to_owned(), 2),
                (5, "Ants".to_owned(), 2),
                (6, "Moths".to_owned(), 1),
            ],
            "{t}"
        );
    });
    assert_eq!(
        served
            .db
            .sql("SELECT count(*) FROM ballot_options WHERE number IS NULL"),
        "0"
    );
}

/// Whether `line` is `pattern`, where each `…` in the pattern stands for any text.
fn matches_pattern(line: &str, pattern: &str) -> bool {
    let pieces: Vec<&str> = pattern.split('…').collect();
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if pieces.len() == 1 {
        return line == pattern;
    }
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn readme_api_examples_run_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("<!-- api-example -->\n```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README's API example");
    let dir = tempfile::tempdir().unwrap();
    // As the README says: `ballots serve --dev`, on another port.
    let server = Server::start_dev(dir.path());
    let script = block.replace("http://127.0.0.1:8080", &server.base);
    assert_ne!(script, block, "the example names the default address");
    // One answer per line: curl prints no newline of its own.
    std::fs::write(dir.path().join(".curlrc"), "write-out = \"\\n\"\n").unwrap();
    let out = coffer_testkit::process::output_of(
        Command::new("bash")
            .args(["-c", &script])
            .env("CURL_HOME", dir.path())
            .env("HOME", dir.path()),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let answers: Vec<&str> = stdout.lines().collect();
    let expected: Vec<&str> = block
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with('{'))
        .collect();
    assert_eq!(answers.len(), expected.len(), "{stdout}");
    assert!(expected.len() >= 8);
    for (answer, pattern) in answers.iter().zip(&expected) {
        assert!(
            matches_pattern(answer, pattern),
            "the README says\n  {pattern}\nthe application answers\n  {answer}"
        );
    }
}

#[test]
fn sqlite_databases_from_before_are_renumbered_too() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = ["serve", "--dev", "--listen", listen.as_str()];
    let mut server = Server::start_in(dir.path(), &[], port, &args);
    let rt = runtime();
    let (first, second, admin) = rt.block_on(async {
        let c = Client::new(&server.base);
        let (first, _, _) = create(&c).await;
        let (second, admin, _) = create(&c).await;
        let path = format!("/api/ballots/{second}/votes");
        for (voter, choice) in [
            ("a", json!({"option_id": 2})),
            ("b", json!({"write_in": "Bees"})),
            ("c", json!({"write_in": "Ants"})),
            ("d", json!({"write_in": "BEES"})),
        ] {
            let mut body = json!({"voter": voter});
            body.as_object_mut()
                .unwrap()
                .extend(choice.as_object().unwrap().clone());
            let (s, b) = c.post(&path, body).await;
            assert_eq!(s, 201, "{b}");
        }
        (first, second, admin)
    });
    server.stop();

    // The same file as an older version left it: no number column.
    rt.block_on(async {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}", dir.path().join("ballots.db").display());
        let mut db = sqlx::AnyConnection::connect(&url).await.unwrap();
        for sql in [
            "DROP INDEX ballot_options_number",
            "ALTER TABLE ballot_options DROP COLUMN number",
        ] {
            sqlx::query(sql).execute(&mut db).await.unwrap();
        }
        db.close().await.unwrap();
    });
    let server = Server::start_in(dir.path(), &[], port, &args);
    assert!(
        server.log().contains("numbered the options"),
        "{}",
        server.log()
    );
    rt.block_on(async {
        let c = Client::new(&server.base);
        for id in [&first, &second] {
            let (_, v) = c.get(&format!("/api/ballots/{id}")).await;
            let ids: Vec<i64> = v["options"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_i64().unwrap())
                .collect();
            assert_eq!(ids, vec![1, 2, 3], "{v}");
        }
        vote(&c, &second, json!({"voter": "e", "write_in": "Moths"})).await;
        close(&c, &second, &admin).await;
        let (_, t) = c.get(&format!("/api/ballots/{second}/tally")).await;
        let lines: Vec<(i64, String, i64)> = t["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["id"].as_i64().unwrap(),
                    o["text"].as_str().unwrap().to_owned(),
                    o["votes"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                (1, OPTIONS[0].to_owned(), 0),
                (2, OPTIONS[1].to_owned(), 1),
                (3, OPTIONS[2].to_owned(), 0),
                (4, "Bees".to_owned(), 2),
                (5, "Ants".to_owned(), 1),
                (6, "Moths".to_owned(), 1),
            ],
            "{t}"
        );
    });
}

//! The ballots application end to end: the real binary on PostgreSQL (and on the embedded
//! defaults), over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const WRITE_IN: &str = "Give it to the beekeepers";
const VOTER: &str = "voter-ada@example.org";

#[test]
fn vote_tally_close_on_postgres_and_the_dump_holds_no_text() {
    let db = Database::new("flow");
    let setup = Setup::postgres(&db, Some("redis://127.0.0.1:6379/6"), "", "");
    let server = setup.start();
    let rt = runtime();
    rt.block_on(async {
        let c = Client::new(&server.base);
        let (id, admin, opts) = create(&c).await;
        let vote = |voter: &str, choice: Value| {
            let mut body = json!({"voter": voter});
            body.as_object_mut()
                .unwrap()
                .extend(choice.as_object().unwrap().clone());
            body
        };
        let path = format!("/api/ballots/{id}/votes");
        // Listed options, a write-in, the same write-in spelled differently (shares the
        // option), a write-in equal to a listed option (counts for it).
        let cases = [
            (VOTER, json!({"option_id": opts[0]})),
            ("v2", json!({"option_id": opts[0]})),
            ("v3", json!({"option_id": opts[2]})),
            ("v4", json!({"write_in": WRITE_IN})),
            ("v5", json!({"write_in": "  give it to the BEEKEEPERS "})),
            ("v6", json!({"write_in": "no"})),
        ];
        for (voter, choice) in &cases {
            let (s, b) = c.post(&path, vote(voter, choice.clone())).await;
            assert_eq!(s, 201, "{b}");
            // A write-in's answer names no option (whether it is shared is not told); the
            // closed tally below shows where each counted.
            let expected = match choice.get("option_id") {
                Some(o) => json!({"option_id": o}),
                None => json!({"write_in": true}),
            };
            assert_eq!(b, expected);
        }
        // Bad input: each a clear 4xx, nothing stored.
        let bad: Vec<(String, String, u16, &str)> = vec![
            (
                path.clone(),
                vote(VOTER, json!({"option_id": opts[1]})).to_string(),
                409,
                "already_voted",
            ),
            (
                path.clone(),
                vote("v7", json!({"option_id": 999_999})).to_string(),
                400,
                "unknown_option",
            ),
            (
                path.clone(),
                vote("v7", json!({})).to_string(),
                400,
                "bad_choice",
            ),
            (
                path.clone(),
                vote("v7", json!({"option_id": opts[0], "write_in": "x"})).to_string(),
                400,
                "bad_choice",
            ),
            (
                path.clone(),
                vote("v7", json!({"write_in": "x".repeat(201)})).to_string(),
                400,
                "too_long",
            ),
            (
                path.clone(),
                vote("v7", json!({"write_in": "  "})).to_string(),
                400,
                "empty_text",
            ),
            (
                path.clone(),
                vote("v7", json!({"write_in": "a\u{7}b"})).to_string(),
                400,
                "bad_text",
            ),
            (
                path.clone(),
                vote("", json!({"option_id": opts[0]})).to_string(),
                400,
                "bad_voter",
            ),
            (
                path.clone(),
                "{\"voter\": \"v7\", \"option_id\": ".to_owned(),
                400,
                "bad_json",
            ),
            (
                path.clone(),
                vote("v7", json!({"option_id": opts[0], "extra": 1})).to_string(),
                400,
                "bad_json",
            ),
            (
                "/api/ballots/nope/votes".to_owned(),
                vote("v7", json!({"option_id": 1})).to_string(),
                404,
                "not_found",
            ),
            (
                "/api/ballots".to_owned(),
                json!({"measure": "M", "options": ["one"]}).to_string(),
                400,
                "bad_options",
            ),
            (
                "/api/ballots".to_owned(),
                json!({"measure": "M", "options": ["A", " a "]}).to_string(),
                400,
                "duplicate_option",
            ),
            (
                "/api/ballots".to_owned(),
                json!({"measure": "x".repeat(1001), "options": ["A", "B"]}).to_string(),
                400,
                "too_long",
            ),
        ];
        for (p, body, status, code) in &bad {
            let (s, b) = c.post_raw(p, body.clone(), None).await;
            assert_eq!(
                (s, b["error"]["code"].as_str()),
                (*status, Some(*code)),
                "{p} {body}: {b}"
            );
            assert!(!b["error"]["message"].as_str().unwrap().is_empty());
        }
        let (s, b) = c.get("/api/ballots/nope").await;
        assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")));

        // Open: the number of votes cast, nothing per option.
        let (s, t) = c.get(&format!("/api/ballots/{id}/tally")).await;
        assert_eq!(s, 200);
        assert_eq!(t["total"], 6);
        assert_eq!(t["results_hidden"], true);
        assert_eq!(t["options"], json!([]), "{t}");
        assert_eq!(t["measure"], MEASURE);
        let (s, v) = c.get(&format!("/api/ballots/{id}")).await;
        assert_eq!(s, 200);
        assert_eq!(
            v["options"].as_array().unwrap().len(),
            3,
            "write-ins are not listed"
        );

        // Close: only with the ballot's own token.
        let close = format!("/api/ballots/{id}/close");
        let (s, b) = c.post_raw(&close, String::new(), None).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
        let (_, other_admin, _) = (create(&c).await.0, create(&c).await.1, ());
        let (s, _) = c.post_raw(&close, String::new(), Some(&other_admin)).await;
        assert_eq!(s, 401);
        let (s, b) = c.post_raw(&close, String::new(), Some(&admin)).await;
        assert_eq!((s, b["status"].as_str()), (200, Some("closed")), "{b}");
        let (s, b) = c
            .post(&path, vote("late", json!({"option_id": opts[1]})))
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (409, Some("ballot_closed"))
        );
        let (_, t2) = c.get(&format!("/api/ballots/{id}/tally")).await;
        assert_eq!(
            (t2["status"].as_str(), &t2["total"]),
            (Some("closed"), &json!(6))
        );
        assert_eq!(t2["results_hidden"], false);
        let n = counts(&t2);
        assert_eq!(n[OPTIONS[0]], 2);
        assert_eq!(n[OPTIONS[1]], 0);
        assert_eq!(n[OPTIONS[2]], 2);
        assert_eq!(n[WRITE_IN], 2, "{t2}");

        // Metrics.
        assert_eq!(
            c.metric("ballots_votes_total{outcome=\"accepted\"}").await,
            6.0
        );
        assert!(c.metric("ballots_tally_seconds_count").await >= 2.0);
        assert!(c.metric("coffer_keys_kek_wraps_total").await >= 3.0);
        assert!(c.metric("ballots_key_cache_hits_total").await >= 1.0);
    });

    // What the database holds: counts as integers, texts only sealed.
    assert_eq!(db.sql("SELECT count(*) FROM votes"), "6");
    assert_eq!(db.sql("SELECT count(*) FROM has_voted"), "6");
    let cols = db.sql(
        "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns \
         WHERE table_name = 'votes'",
    );
    assert_eq!(
        cols, "ballot_id,option_id",
        "a vote holds no voter and no time"
    );
    // Padded: short texts of different lengths seal to one length.
    let lens = db.sql("SELECT string_agg(DISTINCT length(text)::text, ',') FROM ballot_options");
    assert_eq!(
        lens.split(',').count(),
        1,
        "option ciphertext lengths: {lens}"
    );
    let dump = db.dump();
    assert!(dump.contains("COPY public.votes"), "the dump has the data");
    for needle in [
        MEASURE,
        OPTIONS[0],
        OPTIONS[1],
        WRITE_IN,
        "beekeepers",
        "BEEKEEPERS",
        VOTER,
        "wildflower",
    ] {
        assert!(
            !dump.contains(needle),
            "{needle:?} is in the dump in plaintext"
        );
        let hex = hex::encode(needle.as_bytes());
        assert!(!dump.contains(&hex), "{needle:?} is in the dump as hex");
    }
    assert!(!server.log().contains(VOTER) && !server.log().contains(WRITE_IN));
}

#[test]
fn tampered_rows_fail_closed() {
    let db = Database::new("tamper");
    let setup = Setup::postgres(&db, None, "key_cache_ttl = \"1ms\"", "l1_ttl = \"1ms\"");
    let server = setup.start();
    let rt = runtime();
    rt.block_on(async {
        let c = Client::new(&server.base);
        let (a, _, _) = create(&c).await;
        let (b, _, _) = create(&c).await;
        // Swap two options' sealed texts within a ballot: neither opens where it now is.
        db.sql(&format!(
            "WITH o AS (SELECT id, text FROM ballot_options WHERE ballot_id = '{a}' ORDER BY id LIMIT 2) \
             UPDATE ballot_options SET text = (SELECT text FROM o WHERE o.id <> ballot_options.id) \
             WHERE id IN (SELECT id FROM o)"
        ));
        let (s, body) = c.get(&format!("/api/ballots/{a}")).await;
        assert_eq!((s, body["error"]["code"].as_str()), (500, Some("internal")), "{body}");
        assert!(!body.to_string().contains(OPTIONS[0]));
        // Another ballot's data key in this ballot's row: it does not open under this scope.
        db.sql(&format!(
            "UPDATE ballots SET encrypted_dek = (SELECT encrypted_dek FROM ballots WHERE id = '{b}') \
             WHERE id = '{a}'"
        ));
        std::thread::sleep(Duration::from_millis(20));
        let (s, _) = c.get(&format!("/api/ballots/{a}")).await;
        assert_eq!(s, 500);
        // The untouched ballot still works.
        let (s, v) = c.get(&format!("/api/ballots/{b}")).await;
        assert_eq!((s, v["measure"].as_str()), (200, Some(MEASURE)));
    });
    assert!(
        server.log().contains("does not open"),
        "the cause is logged"
    );
}

#[test]
fn ballots_are_shredded_after_retention_and_counts_remain() {
    let db = Database::new("shred");
    let setup = Setup::postgres(
        &db,
        None,
        "retention = \"1s\"\nshred_interval = \"200ms\"",
        "",
    );
    let mut server = setup.start();
    let rt = runtime();
    let (id, sealed_key) = rt.block_on(async {
        let c = Client::new(&server.base);
        let (id, admin, opts) = create(&c).await;
        let (keep, _, _) = create(&c).await;
        for (i, o) in [opts[0], opts[0], opts[1]].iter().enumerate() {
            vote(&c, &id, json!({"voter": format!("v{i}"), "option_id": o})).await;
        }
        vote(&c, &id, json!({"voter": "w", "write_in": WRITE_IN})).await;
        let sealed_key = db.sql(&format!(
            "SELECT encode(encrypted_dek, 'hex') FROM ballots WHERE id = '{id}'"
        ));
        close(&c, &id, &admin).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, t) = c.get(&format!("/api/ballots/{id}/tally")).await;
            if t["status"] == "shredded" {
                assert_eq!(t["total"], 4);
                assert_eq!(t["measure"], Value::Null);
                let mut votes: Vec<i64> = t["options"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .inspect(|o| assert_eq!(o["text"], Value::Null))
                    .map(|o| o["votes"].as_i64().unwrap())
                    .collect();
                votes.sort_unstable();
                assert_eq!(votes, vec![0, 1, 1, 2]);
                break;
            }
            assert!(Instant::now() < deadline, "not shredded in time: {t}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (s, b) = c.get(&format!("/api/ballots/{id}")).await;
        assert_eq!((s, &b["measure"]), (200, &Value::Null));
        let (s, b) = c
            .post(
                &format!("/api/ballots/{id}/votes"),
                json!({"voter": "x", "option_id": opts[0]}),
            )
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (409, Some("ballot_closed"))
        );
        // The open ballot is untouched.
        let (s, v) = c.get(&format!("/api/ballots/{keep}")).await;
        assert_eq!((s, v["measure"].as_str()), (200, Some(MEASURE)));
        assert_eq!(c.metric("ballots_shredded_total").await, 1.0);
        (id, sealed_key)
    });
    assert_eq!(
        db.sql(&format!(
            "SELECT encrypted_dek IS NULL FROM ballots WHERE id = '{id}'"
        )),
        "t"
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT count(*) FROM has_voted WHERE ballot_id = '{id}'"
        )),
        "0"
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT count(*) FROM votes WHERE ballot_id = '{id}'"
        )),
        "4"
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT destroyed_at_us IS NOT NULL FROM coffer_scopes WHERE scope = 'ballot:{id}'"
        )),
        "t"
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT count(*) FROM coffer_deks WHERE scope = 'ballot:{id}' AND wrapped IS NOT NULL"
        )),
        "0",
        "no wrapped key of the ballot is left in the key store"
    );
    // A restored backup of the ballots table brings the sealed key back, not the texts: the key
    // that opens it was destroyed in the key store, which the restore did not touch.
    db.sql(&format!(
        "UPDATE ballots SET encrypted_dek = decode('{sealed_key}', 'hex'), status = 'closed' WHERE id = '{id}'"
    ));
    server.stop();
    let server = setup.start();
    rt.block_on(async {
        let c = Client::new(&server.base);
        let (s, b) = c.get(&format!("/api/ballots/{id}")).await;
        assert_eq!((s, &b["measure"]), (200, &Value::Null), "{b}");
        let (_, t) = c.get(&format!("/api/ballots/{id}/tally")).await;
        assert_eq!(t["total"], 4);
    });
}

#[test]
fn embedded_defaults_run_with_one_command() {
    let dir = tempfile::tempdir().unwrap();
    // Without a key or --dev: a clear refusal.
    let out = Command::new(bin())
        .args(["serve"])
        .current_dir(dir.path())
        .env_remove("COFFER_MASTER_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("COFFER_MASTER_KEY") && err.contains("--dev"),
        "{err}"
    );

    let server = Server::start_dev(dir.path());
    let rt = runtime();
    rt.block_on(async {
        let c = Client::new(&server.base);
        let (id, admin, opts) = create(&c).await;
        vote(&c, &id, json!({"voter": "a", "option_id": opts[1]})).await;
        // Write-ins and a second vote on SQLite (the same batch SQL as PostgreSQL).
        let path = format!("/api/ballots/{id}/votes");
        let (s1, a) = c
            .post(&path, json!({"voter": "b", "write_in": WRITE_IN}))
            .await;
        let (s2, b) = c
            .post(
                &path,
                json!({"voter": "c", "write_in": WRITE_IN.to_uppercase()}),
            )
            .await;
        assert_eq!((s1, s2), (201, 201));
        assert_eq!(
            (&a, &b),
            (&json!({"write_in": true}), &json!({"write_in": true}))
        );
        let (s, e) = c
            .post(&path, json!({"voter": "a", "option_id": opts[0]}))
            .await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (409, Some("already_voted"))
        );
        close(&c, &id, &admin).await;
        let (_, t) = c.get(&format!("/api/ballots/{id}/tally")).await;
        assert_eq!(counts(&t)[OPTIONS[1]], 1);
        assert_eq!(counts(&t)[WRITE_IN], 2);
        assert_eq!(t["total"], 3);
        // Per-ballot option numbers on SQLite too: the write-in follows the listed options.
        assert_eq!(t["options"][3]["id"], 4, "{t}");
        let (s, h) = c.get("/healthz").await;
        assert_eq!((s, &h["encryption"]), (200, &json!(true)));
    });
    use std::os::unix::fs::PermissionsExt as _;
    for f in ["ballots.db", "ballots-keys.db", "ballots-dev.key"] {
        let meta = std::fs::metadata(dir.path().join(f)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o077, 0, "{f} is private");
    }
    let db = std::fs::read(dir.path().join("ballots.db")).unwrap();
    let needle = MEASURE.as_bytes();
    assert!(!db.windows(needle.len()).any(|w| w == needle));
    assert!(server.log().contains("development"));
}

#[test]
fn configuration_errors_are_refused_clearly() {
    let db = Database::new("config");
    for (app, needle) in [
        ("encryption = false", "refused in production"),
        ("bogus = 1", "unknown field"),
        ("retention = \"forever\"", "retention"),
        ("database_url = \"mysql://x\"", "database_url"),
    ] {
        let setup = Setup::postgres(&db, None, app, "");
        let out = Command::new(bin())
            .args(["serve", "--config", setup.config.to_str().unwrap()])
            .envs(setup.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{app}: {err}");
        assert!(err.contains(needle), "{app}: {err}");
    }
    // The benchmark-only plaintext mode, where it is allowed, says so loudly.
    let setup = Setup::postgres(
        &db,
        None,
        "encryption = false\nenvironment = \"development\"",
        "",
    );
    let server = setup.start();
    runtime().block_on(async {
        let c = Client::new(&server.base);
        let (_, h) = c.get("/healthz").await;
        assert_eq!(h["encryption"], json!(false));
    });
    assert!(server.log().contains("IN PLAINTEXT"));
}

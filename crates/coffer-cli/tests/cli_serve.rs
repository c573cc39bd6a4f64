//! `coffer serve` end to end over HTTP, against real PostgreSQL (key store, tokens, owners) and
//! a real Redis (L2) started per test: every endpoint, plaintexts kept out of the logs, bad
//! input, tenancy, Redis killed while serving, the OpenAPI document against the routes,
//! graceful shutdown, TLS and the loopback rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use coffer_testkit::pg::TestDb;
use coffer_testkit::psql::psql;
use coffer_testkit::redis::RedisServer as Redis;
use common::coffer;

fn keygen() -> String {
    let out = coffer().arg("keygen").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A fresh database, a config, and (once started) a running `coffer serve`.
struct Service {
    dir: tempfile::TempDir,
    _db: Option<TestDb>,
    url: String,
    kek: String,
    cache_key: String,
    child: Option<Child>,
    base: String,
    log: PathBuf,
    redis: Option<Redis>,
}

impl Service {
    /// Writes coffer.toml with `service` as its `[service]` table, on a fresh PostgreSQL
    /// database.
    fn new(service: &str, with_redis: bool) -> Service {
        Self::with_store(service, with_redis, None)
    }

    /// The same with another key store URL (a SQLite file) when `store` is given.
    fn with_store(service: &str, with_redis: bool, store: Option<&str>) -> Service {
        let db = store.is_none().then(|| TestDb::new("coffer_svc"));
        let url = store.map_or_else(|| db.as_ref().unwrap().url().to_owned(), str::to_owned);
        let dir = tempfile::tempdir().unwrap();
        let redis = with_redis.then(Redis::start);
        let cache = match &redis {
            Some(r) => format!(
                "[cache]\nredis_url = \"redis://127.0.0.1:{}\"\ncache_key = \"env:SVC_CACHE_KEY\"\nl1_ttl = \"1s\"\nactive_ttl = \"1s\"\n",
                r.port()
            ),
            None => String::new(),
        };
        let toml = format!(
            "[store]\nurl = \"{url}\"\n\n[[kek]]\nname = \"main\"\nversion = 1\nsource = \"env:SVC_KEK\"\nprimary = true\n\n{cache}\n[service]\nlisten = \"127.0.0.1:0\"\n{service}\n"
        );
        std::fs::write(dir.path().join("coffer.toml"), toml).unwrap();
        let log = dir.path().join("serve.log");
        Service {
            dir,
            _db: db,
            url,
            kek: keygen(),
            cache_key: keygen(),
            child: None,
            base: String::new(),
            log,
            redis,
        }
    }

    fn cmd(&self) -> Command {
        let mut c = coffer();
        c.current_dir(self.dir.path())
            .env_remove("COFFER_CONFIG")
            .env_remove("COFFER_STORE_URL")
            .env_remove("COFFER_REDIS_URL")
            .env_remove("RUST_LOG")
            .env("SVC_KEK", &self.kek)
            .env("SVC_CACHE_KEY", &self.cache_key);
        c
    }

    /// Starts `coffer serve` and waits for its `listening on` line.
    fn start(&mut self, extra: &[&str]) {
        let log = std::fs::File::create(&self.log).unwrap();
        let mut child = self
            .cmd()
            .args(["serve", "--config", "coffer.toml"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("listening on "),
            "serve did not start: {line:?}; log: {}",
            self.logs()
        );
        self.base = line["listening on ".len()..].trim().to_owned();
        self.child = Some(child);
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status.
    fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        nix_kill(child.id(), "TERM");
        let status = child.wait().unwrap();
        status.code()
    }

    fn token(&self, args: &[&str]) -> String {
        let out = self
            .cmd()
            .args(["tokens", "create", "--config", "coffer.toml"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tokens create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn tokens(&self, args: &[&str]) -> std::process::Output {
        self.cmd()
            .args(["tokens"])
            .args(args)
            .args(["--config", "coffer.toml"])
            .output()
            .unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(r) = &mut self.redis {
            r.kill();
        }
    }
}

fn nix_kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base.to_owned(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    async fn post_raw(&self, path: &str, token: &str, body: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, token, None).await
    }
}

#[track_caller]
fn expect_error(r: &(u16, Value), status: u16, code: &str) {
    assert_eq!(r.0, status, "{}", r.1);
    assert_eq!(r.1["error"]["code"], code, "{}", r.1);
    assert!(
        r.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.len() > 10),
        "no useful message: {}",
        r.1
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The mode of the "nid" item: deterministic, except in FIPS builds, which refuse AES-SIV.
const DETERMINISTIC: &str = if cfg!(feature = "fips") {
    "randomized"
} else {
    "deterministic"
};

// Plaintexts that must never reach a log line: shapes the redactor knows (SSN, e-mail,
// national id, card) and one it cannot recognise, which only never-logging keeps out.
const SSN: &str = "123-45-6789";
const EMAIL: &str = "ann.lee@example.org";
const NATIONAL_ID: &str = "987654321";
const CARD: &str = "4111 1111 1111 1111";
const MARKER: &str = "Zebra-Quartz-Plaintext-7731";

fn secrets() -> Vec<String> {
    let mut v: Vec<String> = [SSN, EMAIL, NATIONAL_ID, CARD, MARKER]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    // Their base64 forms too: a body logged as sent would show those.
    for s in [SSN, EMAIL, NATIONAL_ID, CARD, MARKER] {
        v.push(STANDARD.encode(s));
    }
    v
}

#[test]
fn every_endpoint_works_and_no_plaintext_reaches_the_logs() {
    let mut svc = Service::new("audit_interval = \"1h\"\nmax_batch = 50\n", true);
    svc.start(&[]);
    let admin = svc.token(&["--admin", "--label", "ops"]);
    let acme = svc.token(&["--tenant", "acme", "--label", "api"]);
    let globex = svc.token(&["--tenant", "globex"]);
    let c = Client::new(&svc.base);
    let rt = runtime();
    rt.block_on(async {
        let r = c
            .post("/v1/admin/scopes", &admin, json!({"scope": "acme:patients", "tenant": "acme"}))
            .await;
        assert_eq!(r.0, 201, "{}", r.1);
        assert_eq!(r.1["outcome"], "created");
        let r = c
            .post("/v1/admin/scopes", &admin, json!({"scope": "globex:users", "tenant": "globex"}))
            .await;
        assert_eq!(r.0, 201, "{}", r.1);

        // Encrypt: text, base64, deterministic, an authenticated NULL, array context.
        let enc = c
            .post(
                "/v1/scopes/acme:patients/encrypt",
                &acme,
                json!({"encoding": "utf8", "items": [
                    {"column": "ssn", "context": "42", "plaintext": SSN},
                    {"column": "email", "context": ["acme", "42"], "plaintext": EMAIL, "type": "text"},
                    {"column": "nid", "mode": DETERMINISTIC, "plaintext": NATIONAL_ID},
                    {"column": "card", "context": "42", "mode": "randomized-tag128", "plaintext": CARD},
                    {"column": "notes", "context": "42", "null": true},
                    {"column": "marker", "context": "42", "plaintext": MARKER},
                ]}),
            )
            .await;
        assert_eq!(enc.0, 200, "{}", enc.1);
        assert_eq!(enc.1["version"], 1);
        let cts: Vec<String> = enc.1["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["ciphertext"].as_str().unwrap().to_owned())
            .collect();
        assert!(cts.iter().all(|c| c.starts_with("cf1:")));
        let items = |cts: &[String]| {
            json!([
                {"column": "ssn", "context": "42", "ciphertext": cts[0]},
                {"column": "email", "context": ["acme", "42"], "type": "text", "ciphertext": cts[1]},
                {"column": "nid", "ciphertext": cts[2]},
                {"column": "card", "context": "42", "ciphertext": cts[3]},
                {"column": "notes", "context": "42", "ciphertext": cts[4]},
                {"column": "marker", "context": "42", "ciphertext": cts[5]},
            ])
        };
        let dec = c
            .post(
                "/v1/scopes/acme:patients/decrypt",
                &acme,
                json!({"encoding": "utf8", "items": items(&cts)}),
            )
            .await;
        assert_eq!(dec.0, 200, "{}", dec.1);
        let got: Vec<Value> = dec.1["items"].as_array().unwrap().clone();
        assert_eq!(got[0]["plaintext"], SSN);
        assert_eq!(got[1]["plaintext"], EMAIL);
        assert_eq!(got[2]["plaintext"], NATIONAL_ID);
        assert_eq!(got[3]["plaintext"], CARD);
        assert_eq!(got[4]["null"], true);
        assert!(got[4].get("plaintext").is_none());
        assert_eq!(got[5]["plaintext"], MARKER);
        // Base64 both ways.
        let enc64 = c
            .post(
                "/v1/scopes/acme:patients/encrypt",
                &acme,
                json!({"items": [{"column": "bin", "plaintext": STANDARD.encode([0u8, 255, 1])}]}),
            )
            .await;
        assert_eq!(enc64.0, 200, "{}", enc64.1);
        let dec64 = c
            .post(
                "/v1/scopes/acme:patients/decrypt",
                &acme,
                json!({"items": [{"column": "bin", "ciphertext": enc64.1["items"][0]["ciphertext"]}]}),
            )
            .await;
        assert_eq!(dec64.1["items"][0]["plaintext"], STANDARD.encode([0u8, 255, 1]));
        // Deterministic: equal values give equal ciphertexts (FIPS builds refuse the mode).
        let again = c
            .post(
                "/v1/scopes/acme:patients/encrypt",
                &acme,
                json!({"encoding": "utf8", "items": [{"column": "nid", "mode": "deterministic", "plaintext": NATIONAL_ID}]}),
            )
            .await;
        if cfg!(feature = "fips") {
            expect_error(&again, 400, "invalid");
        } else {
            assert_eq!(again.1["items"][0]["ciphertext"], cts[2].as_str());
        }

        // Blind index: store, then search terms; normalizers make both spellings equal.
        let bidx = |v: &str, search: bool| {
            json!({"encoding": "utf8", "search": search, "items": [
                {"column": "ssn", "index": "ssn_eq", "bits": 24, "normalize": ["digits"], "values": [v]}
            ]})
        };
        let stored = c
            .post("/v1/scopes/acme:patients/blind-index", &acme, bidx(SSN, false))
            .await;
        assert_eq!(stored.0, 200, "{}", stored.1);
        let other_spelling = c
            .post("/v1/scopes/acme:patients/blind-index", &acme, bidx("123456789", false))
            .await;
        assert_eq!(stored.1["items"][0][0]["index"], other_spelling.1["items"][0][0]["index"]);
        assert_eq!(stored.1["items"][0][0]["index"].as_str().unwrap().len(), 6);
        // Another tenant's index of the same value differs (its scope's keys are its own).
        let theirs = c
            .post("/v1/scopes/globex:users/blind-index", &globex, bidx(SSN, false))
            .await;
        assert_eq!(theirs.0, 200);
        assert_ne!(theirs.1["items"][0][0]["index"], stored.1["items"][0][0]["index"]);

        // Data keys.
        let dk = c
            .post("/v1/scopes/acme:patients/datakeys", &acme, json!({"count": 2}))
            .await;
        assert_eq!(dk.0, 200, "{}", dk.1);
        let k0 = dk.1["items"][0].clone();
        assert_eq!(STANDARD.decode(k0["plaintext"].as_str().unwrap()).unwrap().len(), 32);
        let opened = c
            .post(
                "/v1/scopes/acme:patients/datakeys/decrypt",
                &acme,
                json!({"items": [{"wrapped": k0["wrapped"]}]}),
            )
            .await;
        assert_eq!(opened.0, 200, "{}", opened.1);
        assert_eq!(opened.1["items"][0]["plaintext"], k0["plaintext"]);

        // Rotate, then rewrap moves values to v2; search covers both versions.
        let rot = c
            .send(reqwest::Method::POST, "/v1/admin/scopes/acme:patients/rotate", Some(&admin), None)
            .await;
        assert_eq!(rot.0, 200, "{}", rot.1);
        assert_eq!(rot.1["version"], 2);
        let mut rewrap_items = items(&cts).as_array().unwrap().clone();
        rewrap_items.push(json!({"wrapped": k0["wrapped"]}));
        let rw = c
            .post("/v1/scopes/acme:patients/rewrap", &acme, json!({"items": rewrap_items}))
            .await;
        assert_eq!(rw.0, 200, "{}", rw.1);
        assert_eq!(rw.1["version"], 2);
        assert!(rw.1["items"].as_array().unwrap().iter().all(|i| i["changed"] == true));
        let new_cts: Vec<String> = rw.1["items"].as_array().unwrap()[..6]
            .iter()
            .map(|i| i["ciphertext"].as_str().unwrap().to_owned())
            .collect();
        let dec2 = c
            .post(
                "/v1/scopes/acme:patients/decrypt",
                &acme,
                json!({"encoding": "utf8", "items": items(&new_cts)}),
            )
            .await;
        assert_eq!(dec2.0, 200, "{}", dec2.1);
        assert_eq!(dec2.1["items"], dec.1["items"]);
        let rewrapped_key = rw.1["items"][6]["wrapped"].clone();
        assert_ne!(rewrapped_key, k0["wrapped"]);
        let opened2 = c
            .post(
                "/v1/scopes/acme:patients/datakeys/decrypt",
                &acme,
                json!({"items": [{"wrapped": rewrapped_key}]}),
            )
            .await;
        assert_eq!(opened2.1["items"][0]["plaintext"], k0["plaintext"]);
        let rw_again = c
            .post(
                "/v1/scopes/acme:patients/rewrap",
                &acme,
                json!({"items": [{"column": "ssn", "context": "42", "ciphertext": new_cts[0]}]}),
            )
            .await;
        assert_eq!(rw_again.1["items"][0]["changed"], false);
        let terms = c
            .post("/v1/scopes/acme:patients/blind-index", &acme, bidx(SSN, true))
            .await;
        let terms = terms.1["items"][0].as_array().unwrap().clone();
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[0]["version"], 2);
        assert_eq!(terms[1]["index"], stored.1["items"][0][0]["index"]);

        // Scope info for the tenant and the admin.
        let info = c.get("/v1/scopes/acme:patients", Some(&acme)).await;
        assert_eq!(info.0, 200, "{}", info.1);
        assert_eq!(info.1["versions"].as_array().unwrap().len(), 2);
        assert_eq!(info.1["versions"][0]["state"], "decrypt-only");
        let ainfo = c.get("/v1/admin/scopes/acme:patients", Some(&admin)).await;
        assert_eq!(ainfo.1["tenant"], "acme");
        let list = c.get("/v1/admin/scopes", Some(&admin)).await;
        assert!(list.1["scopes"].as_array().unwrap().iter().any(|s| s["scope"] == "globex:users" && s["tenant"] == "globex"));

        // Failing requests that carry the plaintexts.
        let r = c
            .post(
                "/v1/scopes/globex:users/encrypt",
                &acme,
                json!({"encoding": "utf8", "items": [{"column": "ssn", "plaintext": SSN}, {"column": "m", "plaintext": MARKER}]}),
            )
            .await;
        expect_error(&r, 403, "wrong_tenant");
        let r = c
            .post(
                "/v1/scopes/acme:patients/decrypt",
                &acme,
                json!({"encoding": "utf8", "items": [{"column": "ssn", "context": "43", "ciphertext": new_cts[0]}]}),
            )
            .await;
        expect_error(&r, 422, "decryption_failed");
        assert_eq!(r.1["error"]["item"], 0);
        let r = c
            .post(
                "/v1/scopes/acme:patients/encrypt",
                &acme,
                json!({"items": [{"column": "ssn", "plaintext": MARKER}]}),
            )
            .await;
        expect_error(&r, 400, "bad_base64");
        let r = c
            .post(
                "/v1/scopes/acme:patients/blind-index",
                &acme,
                json!({"encoding": "utf8", "items": [{"column": "ssn", "bits": MARKER, "values": [SSN]}]}),
            )
            .await;
        expect_error(&r, 400, "bad_request");
        let many: Vec<Value> = (0..51)
            .map(|_| json!({"column": "m", "plaintext": MARKER}))
            .collect();
        let r = c
            .post("/v1/scopes/acme:patients/encrypt", &acme, json!({"encoding": "utf8", "items": many}))
            .await;
        expect_error(&r, 400, "batch_too_large");
        let truncated = format!("{{\"encoding\":\"utf8\",\"items\":[{{\"column\":\"m\",\"plaintext\":\"{MARKER} {SSN}\"");
        let r = c.post_raw("/v1/scopes/acme:patients/encrypt", &acme, &truncated).await;
        expect_error(&r, 400, "bad_json");
        let r = c
            .post(
                "/v1/scopes/acme:patients/encrypt",
                &admin,
                json!({"encoding": "utf8", "items": [{"column": "m", "plaintext": EMAIL}]}),
            )
            .await;
        expect_error(&r, 403, "admin_token");

        // Metrics: request counts and latency by operation and outcome, cache tiers; no tenant
        // label by default, no plaintext.
        let (s, m) = c.get("/metrics", None).await;
        assert_eq!(s, 200);
        let m = m.as_str().unwrap().to_owned();
        for needle in [
            "coffer_service_requests_total{operation=\"encrypt\",outcome=\"ok\"}",
            "coffer_service_requests_total{operation=\"decrypt\",outcome=\"decryption_failed\"}",
            "coffer_service_requests_total{operation=\"encrypt\",outcome=\"denied\"}",
            "coffer_service_request_duration_seconds_bucket{operation=\"encrypt\",outcome=\"ok\"",
            "coffer_service_items_total{operation=\"encrypt\"}",
            "coffer_keys_l1_hits_total",
            "coffer_keys_l1_misses_total",
            "coffer_keys_deks_pending_kek_rotation 0",
        ] {
            assert!(m.contains(needle), "{needle} not in /metrics:\n{m}");
        }
        assert!(!m.contains("tenant="), "tenant label without metrics_tenant_label");
        for s in secrets() {
            assert!(!m.contains(&s), "{s} in /metrics");
        }
    });
    assert_eq!(svc.stop(), Some(0), "{}", svc.logs());

    let logs = svc.logs();
    let lines: Vec<&str> = logs.lines().collect();
    let requests = lines
        .iter()
        .filter(|l| l.contains("\"message\":\"request\""))
        .count();
    assert!(
        requests >= 25,
        "expected a log line per request, got {requests}:\n{logs}"
    );
    for l in &lines {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
    for s in secrets() {
        assert!(!logs.contains(&s), "{s} appears in the log:\n{logs}");
    }
    assert!(
        !logs.contains(&acme) && !logs.contains(&admin),
        "a token in the log"
    );

    // Audit: the refused request at once, the data access on shutdown (aggregated).
    let denied = psql(
        &svc.url,
        "SELECT count(*) FROM coffer_audit WHERE operation = 'access-denied' AND scope = 'globex:users'",
    );
    assert_eq!(denied, "1");
    let access = psql(
        &svc.url,
        "SELECT detail FROM coffer_audit WHERE operation = 'data-access' AND scope = 'acme:patients' ORDER BY id",
    );
    assert!(
        access.contains(&format!(
            "tenant=acme operation=encrypt ok={} failed=0",
            if cfg!(feature = "fips") { 7 } else { 8 }
        )),
        "{access}"
    );
    assert!(
        access.contains("operation=decrypt ok=13 failed=1"),
        "{access}"
    );
    let verify = svc
        .cmd()
        .args(["keys", "audit", "--verify", "--config", "coffer.toml"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn bad_requests_are_clear_4xx_and_change_nothing() {
    let mut svc = Service::new(
        "token_cache_ttl = \"0s\"\nmax_body_bytes = 4096\nmax_batch = 10\n",
        false,
    );
    svc.start(&[]);
    let admin = svc.token(&["--admin"]);
    let acme = svc.token(&["--tenant", "acme"]);
    let revoked = svc.token(&["--tenant", "acme", "--label", "to-revoke"]);
    let expiring = svc.token(&["--tenant", "acme", "--expires", "1s"]);
    let c = Client::new(&svc.base);
    let rt = runtime();
    let state = |svc: &Service| {
        psql(
            &svc.url,
            "SELECT (SELECT count(*) FROM coffer_deks)::text || '/' || \
             (SELECT count(*) FROM coffer_scopes)::text || '/' || \
             (SELECT count(*) FROM coffer_scope_owners)::text",
        )
    };
    rt.block_on(async {
        let r = c
            .post("/v1/admin/scopes", &admin, json!({"scope": "acme:a", "tenant": "acme"}))
            .await;
        assert_eq!(r.0, 201);
        // The revoked token works until it is revoked.
        let enc = json!({"encoding": "utf8", "items": [{"column": "c", "plaintext": "v"}]});
        assert_eq!(c.post("/v1/scopes/acme:a/encrypt", &revoked, enc.clone()).await.0, 200);
        let out = svc.tokens(&["list", "--json"]);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["label"] == "to-revoke")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(svc.tokens(&["revoke", &id]).status.success());
        assert!(!svc.tokens(&["revoke", &id]).status.success(), "revoking twice");
        std::thread::sleep(Duration::from_millis(1100)); // the 1 s token expires
        let before = state(&svc);

        expect_error(&c.post("/v1/scopes/acme:a/encrypt", &revoked, enc.clone()).await, 401, "unauthorized");
        let r = c.post("/v1/scopes/acme:a/encrypt", &revoked, enc.clone()).await;
        assert!(r.1["error"]["message"].as_str().unwrap().contains("revoked"));
        let r = c.post("/v1/scopes/acme:a/encrypt", &expiring, enc.clone()).await;
        expect_error(&r, 401, "unauthorized");
        assert!(r.1["error"]["message"].as_str().unwrap().contains("expired"));
        let r = c
            .send(reqwest::Method::POST, "/v1/scopes/acme:a/encrypt", None, Some(enc.clone()))
            .await;
        expect_error(&r, 401, "unauthorized");
        let forged = format!("{}x", &acme[..acme.len() - 1]);
        expect_error(&c.post("/v1/scopes/acme:a/encrypt", &forged, enc.clone()).await, 401, "unauthorized");
        expect_error(&c.post_raw("/v1/scopes/acme:a/encrypt", &acme, "{\"items\": [").await, 400, "bad_json");
        expect_error(&c.post_raw("/v1/scopes/acme:a/encrypt", &acme, "{\"itemz\": []}").await, 400, "bad_request");
        let r = c
            .post("/v1/scopes/acme:a/encrypt", &acme, json!({"items": [{"column": "c", "plaintext": "v"}, {"column": "c", "plaintext": "%%%"}]}))
            .await;
        expect_error(&r, 400, "bad_base64");
        assert_eq!(r.1["error"]["item"], 0);
        let r = c
            .post("/v1/scopes/acme:a/encrypt", &acme, json!({"items": [{"column": "c", "plaintext": "dg=="}, {"column": "c", "plaintext": "%%%"}]}))
            .await;
        assert_eq!(r.1["error"]["item"], 1);
        expect_error(&c.post("/v1/scopes/acme:nope/encrypt", &acme, enc.clone()).await, 404, "unknown_scope");
        expect_error(&c.post("/v1/scopes/acme:a/encrypt", &acme, json!({"items": []})).await, 400, "empty_batch");
        let eleven: Vec<Value> = (0..11).map(|_| json!({"column": "c", "plaintext": "dg=="})).collect();
        expect_error(&c.post("/v1/scopes/acme:a/encrypt", &acme, json!({"items": eleven})).await, 400, "batch_too_large");
        let big = "A".repeat(8000);
        expect_error(
            &c.post("/v1/scopes/acme:a/encrypt", &acme, json!({"items": [{"column": "c", "plaintext": big}]})).await,
            413,
            "too_large",
        );
        expect_error(
            &c.post("/v1/scopes/acme:a/encrypt", &acme, json!({"items": [{"column": "c"}]})).await,
            400,
            "bad_item",
        );
        expect_error(
            &c.post("/v1/scopes/acme:a/decrypt", &acme, json!({"items": [{"column": "c", "ciphertext": "plaintext!"}]})).await,
            400,
            "bad_ciphertext",
        );
        expect_error(
            &c.post("/v1/scopes/acme:a/blind-index", &acme, json!({"items": [{"column": "c", "normalize": ["shout"], "values": ["dg=="]}]})).await,
            400,
            "bad_normalizer",
        );
        expect_error(
            &c.post("/v1/scopes/acme:a/encrypt", &acme, json!({"items": [{"column": "c", "context": "1", "mode": "deterministic", "plaintext": "dg=="}]})).await,
            400,
            "invalid",
        );
        expect_error(&c.post("/v1/admin/scopes", &acme, json!({"scope": "x", "tenant": "acme"})).await, 403, "not_admin");
        expect_error(
            &c.post("/v1/admin/scopes", &admin, json!({"scope": "acme:a", "tenant": "globex"})).await,
            409,
            "owned_by_another_tenant",
        );
        let r = c
            .send(reqwest::Method::DELETE, "/v1/admin/scopes/acme:a", Some(&admin), None)
            .await;
        expect_error(&r, 400, "confirm");
        let r = c.get("/v1/nothing-here", None).await;
        expect_error(&r, 404, "no_route");
        let r = c.get("/v1/scopes/acme:a/encrypt", Some(&acme)).await;
        expect_error(&r, 405, "method_not_allowed");
        let r = c
            .http
            .post(format!("{}/v1/scopes/acme:a/encrypt", c.base))
            .bearer_auth(&acme)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 415);
        assert_eq!(state(&svc), before, "a failed request changed the key store");

        // Destroy (confirmed), then the scope's data is gone: 410, and it cannot come back.
        let r = c
            .send(reqwest::Method::DELETE, "/v1/admin/scopes/acme:a?confirm=acme:a", Some(&admin), None)
            .await;
        assert_eq!(r.0, 200, "{}", r.1);
        expect_error(&c.post("/v1/scopes/acme:a/encrypt", &acme, enc.clone()).await, 410, "key_destroyed");
        expect_error(
            &c.post("/v1/admin/scopes", &admin, json!({"scope": "acme:a", "tenant": "acme"})).await,
            409,
            "scope_destroyed",
        );
    });
    assert_eq!(svc.stop(), Some(0));
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let mut svc = Service::new("rate_limit = 1\nrate_burst = 3\n", false);
    svc.start(&[]);
    let t = svc.token(&["--tenant", "acme"]);
    let other = svc.token(&["--tenant", "acme"]);
    let rt = runtime();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let mut limited = 0;
        for _ in 0..10 {
            let r = http
                .get(format!("{}/v1/scopes/none", svc.base))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap();
            if r.status().as_u16() == 429 {
                assert!(r.headers().contains_key("retry-after"));
                limited += 1;
            }
        }
        assert!(
            limited >= 1,
            "10 requests at once passed a 1/s limit with burst 3"
        );
        // The limit is per token: another token is not affected.
        let r = http
            .get(format!("{}/v1/scopes/none", svc.base))
            .bearer_auth(&other)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
    });
}

#[test]
fn redis_killed_while_serving_fails_no_request() {
    let mut svc = Service::new("rate_limit = 1000000\nrate_burst = 1000000\n", true);
    svc.start(&[]);
    let admin = svc.token(&["--admin"]);
    let acme = svc.token(&["--tenant", "acme"]);
    let base = svc.base.clone();
    let rt = runtime();
    let scopes: Vec<String> = (0..8).map(|i| format!("acme:s{i}")).collect();
    rt.block_on(async {
        let c = Client::new(&base);
        for s in &scopes {
            let r = c.post("/v1/admin/scopes", &admin, json!({"scope": s, "tenant": "acme"})).await;
            assert_eq!(r.0, 201);
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..4 {
            let (base, acme, scopes, stop) = (base.clone(), acme.clone(), scopes.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let c = Client::new(&base);
                let (mut ok, mut failed) = (0u64, Vec::new());
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let scope = &scopes[(i + w) % scopes.len()];
                    let v = format!("value-{w}-{i}");
                    let e = c
                        .post(&format!("/v1/scopes/{scope}/encrypt"), &acme, json!({"encoding": "utf8", "items": [{"column": "c", "context": v, "plaintext": v}]}))
                        .await;
                    if e.0 != 200 {
                        failed.push(e);
                        i += 1;
                        continue;
                    }
                    let d = c
                        .post(&format!("/v1/scopes/{scope}/decrypt"), &acme, json!({"encoding": "utf8", "items": [{"column": "c", "context": v, "ciphertext": e.1["items"][0]["ciphertext"]}]}))
                        .await;
                    if d.0 == 200 && d.1["items"][0]["plaintext"] == v.as_str() {
                        ok += 1;
                    } else {
                        failed.push(d);
                    }
                    i += 1;
                }
                (ok, failed)
            }));
        }
        // Let the caches fill through Redis, then kill it; the 1 s L1 lifetime and new versions
        // (rotations) make later requests miss L1 and find Redis gone.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        svc.redis.as_mut().unwrap().kill();
        for s in &scopes[..4] {
            let r = c.send(reqwest::Method::POST, &format!("/v1/admin/scopes/{s}/rotate"), Some(&admin), None).await;
            assert_eq!(r.0, 200, "rotate with Redis down: {}", r.1);
        }
        tokio::time::sleep(Duration::from_millis(3000)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = 0;
        for t in tasks {
            let (ok, failed) = t.await.unwrap();
            assert!(
                failed.is_empty(),
                "{} failed requests with Redis down, first: {:?}",
                failed.len(),
                &failed[..failed.len().min(3)]
            );
            total += ok;
        }
        assert!(total > 40, "too few requests to mean anything: {total}");
        let (_, m) = c.get("/metrics", None).await;
        let m = m.as_str().unwrap();
        let l2_errors = m
            .lines()
            .find(|l| l.starts_with("coffer_keys_l2_errors_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(l2_errors > 0.0, "the run never reached the dead Redis:\n{m}");
        let l2_hits = m.lines().any(|l| l.starts_with("coffer_keys_l2_hits_total") || l.starts_with("coffer_keys_l2_misses_total"));
        assert!(l2_hits, "Redis was never used before it died");
    });
    assert_eq!(svc.stop(), Some(0));
}

#[test]
fn openapi_document_matches_the_routes() {
    let mut svc = Service::new("", false);
    svc.start(&[]);
    let rt = runtime();
    rt.block_on(async {
        let c = Client::new(&svc.base);
        let (s, doc) = c.get("/openapi.json", None).await;
        assert_eq!(s, 200);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = Vec::new();
        for (path, ops) in paths {
            for (method, op) in ops.as_object().unwrap() {
                if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    continue;
                }
                documented.push(format!("{} {path}", method.to_uppercase()));
                // Every documented operation has responses, and request bodies reference schemas.
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {path}"
                );
                let url = path.replace("{scope}", "acme:x");
                let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let body = op.get("requestBody").map(|_| json!({}));
                let (status, v) = c.send(m, &url, None, body).await;
                let secured = op.get("security").is_some();
                if secured {
                    assert_eq!(status, 401, "{method} {path} without a token: {v}");
                } else {
                    assert_eq!(status, 200, "{method} {path}: {v}");
                }
            }
        }
        documented.sort();
        let mut expected: Vec<String> = [
            "POST /v1/scopes/{scope}/encrypt",
            "POST /v1/scopes/{scope}/decrypt",
            "POST /v1/scopes/{scope}/blind-index",
            "POST /v1/scopes/{scope}/datakeys",
            "POST /v1/scopes/{scope}/datakeys/decrypt",
            "POST /v1/scopes/{scope}/rewrap",
            "GET /v1/scopes/{scope}",
            "POST /v1/admin/scopes",
            "GET /v1/admin/scopes",
            "GET /v1/admin/scopes/{scope}",
            "DELETE /v1/admin/scopes/{scope}",
            "POST /v1/admin/scopes/{scope}/rotate",
            "GET /healthz",
            "GET /readyz",
            "GET /metrics",
            "GET /openapi.json",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        expected.sort();
        assert_eq!(documented, expected);
        // Every schema a path refers to exists.
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "missing schema {name}");
        }
        // Undocumented routes do not exist: the benchmark endpoint is off by default.
        let (s, _) = c
            .send(
                reqwest::Method::POST,
                "/v1/bench/echo/acme:x",
                None,
                Some(json!({})),
            )
            .await;
        assert_eq!(s, 404);
        let (s, h) = c.get("/healthz", None).await;
        assert_eq!(s, 200);
        assert_eq!(h["status"], "ok");
        let (s, r) = c.get("/readyz", None).await;
        assert_eq!(
            (s, r["store"].as_str(), r["kek"].as_str()),
            (200, Some("ok"), Some("ok"))
        );
    });
}

#[test]
fn shutdown_lets_the_request_in_flight_finish() {
    let mut svc = Service::new("", false);
    svc.start(&[]);
    let admin = svc.token(&["--admin"]);
    let acme = svc.token(&["--tenant", "acme"]);
    let rt = runtime();
    rt.block_on(async {
        let c = Client::new(&svc.base);
        assert_eq!(
            c.post(
                "/v1/admin/scopes",
                &admin,
                json!({"scope": "acme:a", "tenant": "acme"})
            )
            .await
            .0,
            201
        );
    });
    // Half a request on a raw connection, then SIGTERM, then the rest once the server says it
    // is shutting down: the request completes, then the process exits 0.
    let addr = svc.base.trim_start_matches("http://").to_owned();
    let body = "{\"encoding\":\"utf8\",\"items\":[{\"column\":\"c\",\"plaintext\":\"in flight\"}]}";
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST /v1/scopes/acme:a/encrypt HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {acme}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..20]
    )
    .unwrap();
    conn.flush().unwrap();
    // Give the server time to read the headers: a connection with no request begun is idle,
    // and a graceful shutdown closes idle connections.
    std::thread::sleep(Duration::from_millis(500));
    let pid = svc.child.as_ref().unwrap().id();
    nix_kill(pid, "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !svc.logs().contains("shutting down") {
        assert!(
            Instant::now() < deadline,
            "no shutdown log line: {}",
            svc.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // New connections are no longer accepted.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still accepting after SIGTERM"
    );
    conn.write_all(&body.as_bytes()[20..]).unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("cf1:"), "{resp}");
    let status = svc.child.take().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", svc.logs());
}

fn openssl_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    (cert, key)
}

#[test]
fn tls_loopback_rule_core_dumps_and_defaults() {
    // TLS with a configured certificate; curl checks it against the certificate.
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_cert(tmp.path());
    let mut svc = Service::new(
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        false,
    );
    if cfg!(feature = "fips") {
        // The FIPS build has no TLS (docs/SERVICE.md): a certificate is a clear startup error.
        let out = svc
            .cmd()
            .args(["serve", "--config", "coffer.toml"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("FIPS-validated TLS proxy"));
        svc = Service::new("", false);
        svc.start(&[]);
    } else {
        svc.start(&[]);
        assert!(svc.base.starts_with("https://"), "{}", svc.base);
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&cert)
            .arg(format!("{}/healthz", svc.base))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["status"], "ok");
        // Plain HTTP to the TLS port fails.
        let plain = Command::new("curl")
            .args([
                "-sS",
                &format!("{}/healthz", svc.base.replace("https", "http")),
            ])
            .output()
            .unwrap();
        assert!(
            !plain.status.success() || !String::from_utf8_lossy(&plain.stdout).contains("\"ok\"")
        );
    }
    // Core dumps are off in the serving process.
    let pid = svc.child.as_ref().unwrap().id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(
        core.split_whitespace().nth(4) == Some("0") && core.split_whitespace().nth(5) == Some("0"),
        "{core}"
    );
    assert_eq!(svc.stop(), Some(0));

    // Without TLS, a non-loopback address is refused unless --insecure-no-tls.
    let plain = Service::new("", false);
    let out = plain
        .cmd()
        .args(["serve", "--config", "coffer.toml", "--listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-no-tls"));

    // Embedded defaults: no coffer.toml and no COFFER_MASTER_KEY is a clear error; --dev makes
    // a 0600 development key and starts.
    let empty = tempfile::tempdir().unwrap();
    let out = coffer()
        .current_dir(empty.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("COFFER_CONFIG")
        .env_remove("COFFER_MASTER_KEY")
        .env_remove("COFFER_STORE_URL")
        .env_remove("COFFER_REDIS_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("COFFER_MASTER_KEY"));
    let mut dev = coffer()
        .current_dir(empty.path())
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .env_remove("COFFER_CONFIG")
        .env_remove("COFFER_STORE_URL")
        .env_remove("COFFER_REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(dev.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    nix_kill(dev.id(), "TERM");
    let mut err = String::new();
    dev.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(dev.wait().unwrap().code(), Some(0));
    assert!(err.contains("DEVELOPMENT MODE"), "{err}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(empty.path().join("coffer-dev.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(empty.path().join("coffer-keys.db").exists());
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn timeouts_answer_503_and_leave_the_store_working() {
    // A SQLite key store and a 1 ms request timeout: requests time out while their key-store
    // transactions run. They must finish on their own (not be cancelled half-way), so the
    // store keeps working for every later request and for other processes.
    let mut svc = Service::with_store(
        "request_timeout = \"1ms\"\nrate_limit = 1000000\nrate_burst = 1000000\n",
        false,
        Some("sqlite:keys.db"),
    );
    svc.start(&[]);
    let admin = svc.token(&["--admin"]);
    let acme = svc.token(&["--tenant", "acme"]);
    let rt = runtime();
    let scopes: Vec<String> = (0..20).map(|i| format!("acme:t{i}")).collect();
    rt.block_on(async {
        let c = Client::new(&svc.base);
        let mut timeouts = 0;
        let mut check = |r: &(u16, Value)| {
            if r.0 == 503 {
                assert_eq!(r.1["error"]["code"], "timeout", "{}", r.1);
                timeouts += 1;
            } else {
                assert!(r.0 == 200 || r.0 == 201, "{} {}", r.0, r.1);
            }
        };
        for s in &scopes {
            check(&c.post("/v1/admin/scopes", &admin, json!({"scope": s, "tenant": "acme"})).await);
        }
        for _ in 0..3 {
            for s in &scopes {
                let r = c
                    .post(&format!("/v1/scopes/{s}/encrypt"), &acme, json!({"encoding": "utf8", "items": [{"column": "c", "plaintext": "v"}]}))
                    .await;
                // A scope whose creation timed out may not be owned yet: retry until it is.
                if r.0 == 403 || r.0 == 404 {
                    continue;
                }
                check(&r);
            }
        }
        assert!(timeouts > 0, "no request took longer than 1 ms; the test proved nothing");
        // Let the detached requests finish, then: nothing is in flight, timeouts were counted.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (s, m) = c.get("/metrics", None).await;
            // /metrics runs a key-store query: with a 1 ms limit it may time out itself.
            let m = if s == 200 { m.as_str().unwrap().to_owned() } else { String::new() };
            if s == 200 && metric(&m, "coffer_service_requests_in_flight") <= 1.0 {
                assert!(metric(&m, "coffer_service_requests_total{operation=\"encrypt\",outcome=\"timeout\"}") + metric(&m, "coffer_service_requests_total{operation=\"admin_create_scope\",outcome=\"timeout\"}") > 0.0, "{m}");
                break;
            }
            assert!(Instant::now() < deadline, "requests still in flight:\n{m}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(svc.stop(), Some(0), "{}", svc.logs());
    assert!(!svc.logs().contains("transaction depth"), "{}", svc.logs());
    // Another process opens the store (no transaction left holding its lock), and a server
    // with a normal timeout finds every scope created and owned, and encrypts in each.
    let list = svc.tokens(&["list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let toml = std::fs::read_to_string(svc.dir.path().join("coffer.toml")).unwrap();
    std::fs::write(
        svc.dir.path().join("coffer.toml"),
        toml.replace("request_timeout = \"1ms\"", "request_timeout = \"30s\""),
    )
    .unwrap();
    svc.start(&[]);
    rt.block_on(async {
        let c = Client::new(&svc.base);
        for s in &scopes {
            let r = c
                .post(
                    "/v1/admin/scopes",
                    &admin,
                    json!({"scope": s, "tenant": "acme"}),
                )
                .await;
            assert_eq!(r.0, 200, "{}", r.1);
            assert_eq!(r.1["outcome"], "exists", "{}", r.1);
            let r = c
                .post(
                    &format!("/v1/scopes/{s}/encrypt"),
                    &acme,
                    json!({"encoding": "utf8", "items": [{"column": "c", "plaintext": "v"}]}),
                )
                .await;
            assert_eq!(r.0, 200, "{}", r.1);
        }
    });
    assert_eq!(svc.stop(), Some(0));
}

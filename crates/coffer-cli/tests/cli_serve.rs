//! `coffer serve` as a process: starting with the configuration, the embedded defaults and
//! `--dev`; TLS and the loopback rule; core dumps off; graceful shutdown on SIGTERM; exit
//! codes; and the `coffer tokens` commands against a served PostgreSQL key store, with the JSON
//! log on stderr. What the endpoints do is tested in process, in coffer-server's tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use coffer_testkit::pg::TestDb;
use coffer_testkit::process::output_of;
use coffer_testkit::psql::psql;
use common::{Key, coffer_in, create_token, listening_on, runtime};

/// A fresh database, a config, and (once started) a running `coffer serve`.
struct Service {
    dir: tempfile::TempDir,
    _db: TestDb,
    url: String,
    kek: String,
    child: Option<Child>,
    base: String,
    log: PathBuf,
}

impl Service {
    /// Writes coffer.toml with `service` as its `[service]` table, on a fresh PostgreSQL
    /// database.
    fn new(service: &str) -> Service {
        let db = TestDb::new("coffer_svc");
        let url = db.url().to_owned();
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "[store]\nurl = \"{url}\"\n\n[[kek]]\nname = \"main\"\nversion = 1\nsource = \"env:SVC_KEK\"\nprimary = true\n\n[service]\nlisten = \"127.0.0.1:0\"\n{service}\n"
        );
        std::fs::write(dir.path().join("coffer.toml"), toml).unwrap();
        let log = dir.path().join("serve.log");
        Service {
            dir,
            _db: db,
            url,
            kek: Key::env().secret,
            child: None,
            base: String::new(),
            log,
        }
    }

    fn cmd(&self) -> Command {
        coffer_in(self.dir.path(), &[("SVC_KEK", &self.kek)])
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
        self.base = listening_on(&mut child, || self.logs());
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
        create_token(self.cmd(), args)
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

    /// Sends `req`: the status, and the body as JSON (as a string when it is not JSON).
    async fn answer(req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        Self::answer(self.http.post(url).bearer_auth(token).json(&body)).await
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        Self::answer(self.http.get(url).bearer_auth(token)).await
    }

    /// [`Client::post`], asserting 200: the answer.
    async fn post_ok(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, answer) = self.post(path, token, body).await;
        assert_eq!(status, 200, "POST {path}: {answer}");
        answer
    }

    /// Creates `scope` for `tenant` through the admin API; asserts 201.
    async fn create_scope(&self, admin: &str, scope: &str, tenant: &str) {
        let body = json!({"scope": scope, "tenant": tenant});
        let (status, answer) = self.post("/v1/admin/scopes", admin, body).await;
        assert_eq!(status, 201, "{answer}");
    }
}

#[test]
fn tokens_from_the_cli_serve_data_log_json_and_audit_verifies() {
    let mut svc = Service::new("audit_interval = \"1h\"\ntoken_cache_ttl = \"0s\"\n");
    svc.start(&[]);
    let admin = svc.token(&["--admin", "--label", "ops"]);
    let acme = svc.token(&["--tenant", "acme", "--label", "api"]);
    let plaintext = "Zebra-Quartz-Plaintext-7731";
    let c = Client::new(&svc.base);
    let rt = runtime();
    rt.block_on(async {
        c.create_scope(&admin, "acme:patients", "acme").await;
        let item = json!({"column": "m", "context": "42", "plaintext": plaintext});
        let enc = c
            .post_ok(
                "/v1/scopes/acme:patients/encrypt",
                &acme,
                json!({"encoding": "utf8", "items": [item]}),
            )
            .await;
        let item =
            json!({"column": "m", "context": "42", "ciphertext": enc["items"][0]["ciphertext"]});
        let dec = c
            .post_ok(
                "/v1/scopes/acme:patients/decrypt",
                &acme,
                json!({"encoding": "utf8", "items": [item]}),
            )
            .await;
        assert_eq!(dec["items"][0]["plaintext"], plaintext, "{dec}");
    });
    // `coffer tokens list` and `revoke` against the store the service reads.
    let out = output_of(
        svc.cmd()
            .args(["tokens", "list", "--json", "--config", "coffer.toml"]),
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "api")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&acme),
        "a secret in the list"
    );
    assert!(svc.tokens(&["revoke", &id]).status.success());
    assert!(
        !svc.tokens(&["revoke", &id]).status.success(),
        "revoking twice"
    );
    rt.block_on(async {
        let r = c.get("/v1/scopes/acme:patients", &acme).await;
        assert_eq!(r.0, 401, "{}", r.1);
    });
    assert_eq!(svc.stop(), Some(0), "{}", svc.logs());

    let logs = svc.logs();
    for l in logs.lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
    let requests = logs
        .lines()
        .filter(|l| l.contains("\"message\":\"request\""))
        .count();
    assert_eq!(requests, 4, "a log line per request:\n{logs}");
    assert!(!logs.contains(plaintext), "a plaintext in the log:\n{logs}");
    assert!(
        !logs.contains(&acme) && !logs.contains(&admin),
        "a token in the log"
    );
    // The data access was written on shutdown, and the trail verifies.
    let access = psql(
        &svc.url,
        "SELECT detail FROM coffer_audit WHERE operation = 'data-access' AND scope = 'acme:patients' ORDER BY id",
    );
    assert!(
        access.contains("tenant=acme operation=encrypt ok=1 failed=0"),
        "{access}"
    );
    assert!(
        access.contains("operation=decrypt ok=1 failed=0"),
        "{access}"
    );
    output_of(
        svc.cmd()
            .args(["keys", "audit", "--verify", "--config", "coffer.toml"]),
    );
}

/// A started service whose admin made the scope `scope` for tenant acme; acme's token, and the
/// runtime the test's requests run on.
fn serving_acme(service: &str, scope: &str) -> (Service, String, tokio::runtime::Runtime) {
    let mut svc = Service::new(service);
    svc.start(&[]);
    let admin = svc.token(&["--admin"]);
    let acme = svc.token(&["--tenant", "acme"]);
    let rt = runtime();
    rt.block_on(Client::new(&svc.base).create_scope(&admin, scope, "acme"));
    (svc, acme, rt)
}

#[test]
fn data_access_answered_before_a_kill_9_is_in_the_audit_trail() {
    // The reproduction: 5 encrypts, then SIGKILL. With a bound of 0 each answer waits
    // for its record; the default bound loses at most that many items (audit_durability.rs).
    let (mut svc, acme, rt) = serving_acme(
        "audit_interval = \"1h\"\naudit_max_unrecorded = 0\n",
        "acme:k",
    );
    rt.block_on(async {
        let c = Client::new(&svc.base);
        let body = json!({"encoding": "utf8", "items": [{"column": "c", "plaintext": "v"}]});
        for _ in 0..5 {
            c.post_ok("/v1/scopes/acme:k/encrypt", &acme, body.clone())
                .await;
        }
    });
    let mut child = svc.child.take().unwrap();
    child.kill().unwrap(); // SIGKILL: no shutdown flush
    child.wait().unwrap();
    let rows = psql(
        &svc.url,
        "SELECT detail FROM coffer_audit WHERE operation = 'data-access' AND scope = 'acme:k' ORDER BY id",
    );
    let encrypted: u64 = rows
        .lines()
        .filter(|l| l.contains("operation=encrypt"))
        .filter_map(|l| l.split(' ').find_map(|kv| kv.strip_prefix("ok=")))
        .map(|n| n.trim().parse::<u64>().unwrap())
        .sum();
    assert_eq!(encrypted, 5, "{rows}");
}

#[test]
fn sigterm_the_moment_it_says_listening_is_a_graceful_shutdown() {
    // The signal handlers are installed before the `listening on` line: a SIGTERM sent as soon
    // as a supervisor reads it shuts down gracefully (exit 0), never kills the process. Before,
    // a spawned task installed them after the line; on a loaded machine the signal could win
    // and kill the process (seen once in a FIPS test run). That race does not show on an idle
    // machine, so this guards the order rather than reproducing the race each time.
    let mut svc = Service::new("");
    for _ in 0..5 {
        svc.start(&[]);
        assert_eq!(svc.stop(), Some(0), "{}", svc.logs());
    }
}

#[test]
fn shutdown_lets_the_request_in_flight_finish() {
    let (mut svc, acme, _rt) = serving_acme("", "acme:a");
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
    output_of(
        Command::new("openssl")
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
            .arg(&cert),
    );
    (cert, key)
}

#[test]
fn tls_serves_the_configured_certificate_with_core_dumps_off() {
    // TLS with a configured certificate; curl checks it against the certificate.
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_cert(tmp.path());
    let mut svc = Service::new(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    ));
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
        svc = Service::new("");
        svc.start(&[]);
    } else {
        svc.start(&[]);
        assert!(svc.base.starts_with("https://"), "{}", svc.base);
        let out = output_of(
            Command::new("curl")
                .args(["-sS", "--cacert"])
                .arg(&cert)
                .arg(format!("{}/healthz", svc.base)),
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
}

#[test]
fn plain_http_on_a_non_loopback_address_is_refused_with_exit_2() {
    // Without TLS, a non-loopback address is refused unless --insecure-no-tls.
    let plain = Service::new("");
    let out = plain
        .cmd()
        .args(["serve", "--config", "coffer.toml", "--listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-no-tls"));
}

/// `coffer` in an empty directory, with no configuration or store from the environment.
fn bare(dir: &Path) -> Command {
    let mut c = coffer_in(dir, &[]);
    c.stdin(Stdio::null());
    c
}

#[test]
fn embedded_defaults_without_a_master_key_exit_2_and_say_what_to_set() {
    let empty = tempfile::tempdir().unwrap();
    let out = bare(empty.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("COFFER_MASTER_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("COFFER_MASTER_KEY"));
}

#[test]
fn dev_mode_makes_a_0600_key_serves_and_stops_on_sigterm() {
    let empty = tempfile::tempdir().unwrap();
    let mut dev = bare(empty.path())
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
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

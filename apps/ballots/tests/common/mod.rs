//! Test harness: the real `ballots` binary and a client for it; a fresh PostgreSQL database per
//! test and a redis-server of the test's own come from coffer-testkit.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use serde_json::{Value, json};

pub use coffer_testkit::pg::TestDb as Database;
pub use coffer_testkit::ports::free_port;
#[allow(unused_imports)]
pub use coffer_testkit::psql::psql;
pub use coffer_testkit::random::key_base64 as random_key;
/// A redis-server of the test's own, so killing it touches nothing else.
#[allow(unused_imports)]
pub use coffer_testkit::redis::RedisServer as Redis;

/// The bearer token of `/metrics` in the configurations `Setup` writes.
pub const METRICS_TOKEN: &str = "metrics-token-for-the-tests-0123456789";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ballots")
}

/// A ballots.toml and the environment it reads its secrets from.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    pub env: Vec<(String, String)>,
}

impl Setup {
    /// PostgreSQL for ballots and keys, Redis L2 at `redis` (if any), and extra `[app]` lines.
    pub fn postgres(db: &Database, redis: Option<&str>, app: &str, cache: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let redis = redis
            .map(|r| format!("redis_url = \"{r}\"\ncache_key = \"env:COFFER_CACHE_KEY\"\n"))
            .unwrap_or_default();
        let text = format!(
            "[store]\nurl = \"{}\"\n\n[[kek]]\nname = \"main\"\nversion = 1\n\
             source = \"env:COFFER_MASTER_KEY\"\nprimary = true\n\n[cache]\n{redis}{cache}\n\
             [app]\nlisten = \"127.0.0.1:{port}\"\n\
             metrics_token = \"env:BALLOTS_METRICS_TOKEN\"\n{app}\n",
            db.url()
        );
        let config = dir.path().join("ballots.toml");
        std::fs::write(&config, text).unwrap();
        Setup {
            dir,
            config,
            port,
            env: vec![
                ("COFFER_MASTER_KEY".into(), random_key()),
                ("COFFER_CACHE_KEY".into(), random_key()),
                ("BALLOTS_METRICS_TOKEN".into(), METRICS_TOKEN.into()),
            ],
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn start(&self) -> Server {
        Server::start(self, &["serve", "--config", self.config.to_str().unwrap()])
    }
}

/// A running `ballots serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    log: PathBuf,
}

impl Server {
    pub fn start(setup: &Setup, args: &[&str]) -> Server {
        Server::start_in(setup.dir.path(), &setup.env, setup.port, args)
    }

    /// `ballots serve --dev` in `dir` on a free port (the embedded defaults).
    pub fn start_dev(dir: &Path) -> Server {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        Server::start_in(dir, &[], port, &["serve", "--dev", "--listen", &listen])
    }

    pub fn start_in(dir: &Path, env: &[(String, String)], port: u16, args: &[&str]) -> Server {
        let log = dir.join(format!("serve-{}.log", fastrand::u64(..)));
        let child = Command::new(bin())
            .args(args)
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("BALLOTS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("ballots exited with {status}: {}", s.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ballots did not start: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny blocking-free JSON client.
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base.to_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn text(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, body.to_string(), None).await
    }

    pub async fn post_raw(&self, path: &str, body: String, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A Prometheus counter's value (summed over labels), 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let r = self
            .http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "/metrics with its token");
        let text = r.text().await.unwrap();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Runs the load generator to completion.
pub fn load(args: &[&str]) -> (Output, Value) {
    let out = Command::new(bin())
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, summary)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub const MEASURE: &str = "Shall the Marsh Lane allotments become a wildflower meadow?";
pub const OPTIONS: [&str; 3] = ["Yes, all of it", "Only the north half", "No"];

/// Creates the ballot [`MEASURE`] with [`OPTIONS`]: its id, admin token and option ids.
pub async fn create(c: &Client) -> (String, String, Vec<i64>) {
    create_with(c, MEASURE, &OPTIONS).await
}

/// Creates a ballot on `measure` with `options`: its id, admin token and option ids.
pub async fn create_with(
    c: &Client,
    measure: &str,
    options: &[&str],
) -> (String, String, Vec<i64>) {
    let (s, b) = c
        .post(
            "/api/ballots",
            json!({"measure": measure, "options": options}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let ids = b["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect();
    (
        b["id"].as_str().unwrap().to_owned(),
        b["admin_token"].as_str().unwrap().to_owned(),
        ids,
    )
}

pub fn counts(tally: &Value) -> HashMap<String, i64> {
    tally["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["text"].as_str().unwrap_or("(none)").to_owned(),
                o["votes"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// A GET with an optional Cookie header: status and body.
pub async fn fetch(base: &str, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `ballots serve` on a fresh PostgreSQL database with the default configuration (no Redis, no
/// extra `[app]` lines). Dropped in field order: the server stops before its directory and
/// database go.
pub struct Served {
    pub server: Server,
    pub setup: Setup,
    pub db: Database,
}

/// [`Served`] on a database named after `name`, a client for it and its base URL.
pub fn serve_postgres(name: &str) -> (Served, Client, String) {
    let db = Database::new(name);
    let setup = Setup::postgres(&db, None, "", "");
    let server = setup.start();
    let client = Client::new(&server.base);
    let base = server.base.clone();
    (Served { server, setup, db }, client, base)
}

/// Closes ballot `id` through the API with its admin token; asserts 200.
pub async fn close(c: &Client, id: &str, admin: &str) {
    let (s, body) = c
        .post_raw(
            &format!("/api/ballots/{id}/close"),
            String::new(),
            Some(admin),
        )
        .await;
    assert_eq!(s, 200, "{body}");
}

/// Casts `vote` (`voter` and `option_id` or `write_in`) on ballot `id`; asserts 201.
pub async fn vote(c: &Client, id: &str, vote: Value) {
    let (s, body) = c.post(&format!("/api/ballots/{id}/votes"), vote).await;
    assert_eq!(s, 201, "{body}");
}

//! Scale-out: three `coffer serve` processes behind HAProxy, on one PostgreSQL key store and the
//! shared Redis Cluster L2 (127.0.0.1:7000-7005, `scripts/services-up.sh`), as
//! docs/OPERATIONS.md §12 describes the deployment.
//!
//! One test, about a minute, loopback only:
//! * a destroy through one instance's admin API is refused by the two others (polled directly,
//!   not through HAProxy) long before their one-hour L1 lifetime would let it: only an
//!   invalidation (PostgreSQL NOTIFY, Redis pub/sub) can do that; the delay is printed;
//! * steady encrypt + decrypt round trips through HAProxy see no failure while one instance is
//!   killed with SIGKILL and, later, one Redis master is killed and its replica takes over;
//! * that failover costs no KEK call storm: with every scope rotated while the master is down,
//!   so that each instance loads the new DEKs cold, each surviving instance unwraps each DEK in
//!   use at most once (`coffer_keys_kek_unwraps_total`).
//!
//! The killed Redis node is started again with its own configuration and the test waits until
//! the cluster is whole (the node back as a replica, every node `cluster_state:ok`), also when
//! the test fails half-way (a drop guard). Every process the test starts is killed by a drop
//! guard. Its own test binary, so no other test of this crate runs beside it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "scale_out/cluster.rs"]
mod cluster;
mod common;
#[path = "scale_out/haproxy.rs"]
mod haproxy;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::{
    CLUSTER_PORTS, KilledNode, cluster_whole, info_field, nodes_seen_by, redis_cli, wait_until,
};
use coffer_testkit::pg::TestDb;
use common::{Key, coffer_in, create_token, listening_on, runtime};
use haproxy::Haproxy;
use serde_json::{Value, json};

/// Client tasks, each round-tripping values in a scope of its own.
const TASKS: usize = 4;
/// How long the client traffic runs.
const TRAFFIC: Duration = Duration::from_secs(30);
/// The scrape token of every instance (from the environment, as `env:`).
const METRICS_TOKEN: &str = "scale-out-metrics-token-0123456789abcdef";

// ---------------------------------------------------------------------------------------------
// Processes

/// The processes the test started: killed (SIGKILL) and reaped when dropped, whatever happened.
#[derive(Default)]
struct Children(Vec<(String, Child)>);

impl Children {
    fn add(&mut self, name: &str, child: Child) {
        self.0.push((name.to_owned(), child));
    }

    /// Kills `name` with SIGKILL now (and forgets it).
    fn kill(&mut self, name: &str) {
        let at = self
            .0
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        let (_, mut child) = self.0.remove(at);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Panics (with `logs`) when a process has exited.
    fn check_running(&mut self, logs: &Path) {
        for (name, child) in &mut self.0 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{name} exited ({status}); its log:\n{}",
                    tail(&logs.join(format!("{name}.log")))
                );
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One `coffer serve` instance of the deployment.
struct Instance {
    name: String,
    base: String,
    port: u16,
}

/// The shared configuration: a PostgreSQL key store, one KEK, L2 on the Redis Cluster with a
/// one-hour L1, and the service's table.
struct Deployment {
    dir: tempfile::TempDir,
    _db: TestDb,
    kek: String,
    cache_key: String,
}

impl Deployment {
    fn new() -> Deployment {
        let db = TestDb::new("coffer_scale");
        let dir = tempfile::tempdir().unwrap();
        let seeds: Vec<String> = CLUSTER_PORTS
            .iter()
            .map(|p| format!("\"redis://127.0.0.1:{p}\""))
            .collect();
        // l1_ttl is one hour, so that only an invalidation makes an instance drop a DEK during
        // the test. Rate limits are per instance and per token; the test measures availability,
        // so they are raised out of the way.
        let toml = format!(
            "[store]\nurl = \"{url}\"\n\n\
             [[kek]]\nname = \"main\"\nversion = 1\nsource = \"env:SCALE_KEK\"\nprimary = true\n\n\
             [cache]\nl1_ttl = \"1h\"\nredis_cluster = [{seeds}]\ncache_key = \"env:SCALE_CACHE_KEY\"\n\n\
             [service]\nlisten = \"127.0.0.1:0\"\nmetrics_token = \"env:SCALE_METRICS_TOKEN\"\n\
             rate_limit = 1000000\nrate_burst = 1000000\n",
            url = db.url(),
            seeds = seeds.join(", "),
        );
        std::fs::write(dir.path().join("coffer.toml"), toml).unwrap();
        Deployment {
            dir,
            _db: db,
            kek: Key::env().secret,
            cache_key: Key::env().secret,
        }
    }

    fn cmd(&self) -> Command {
        coffer_in(
            self.dir.path(),
            &[
                ("SCALE_KEK", &self.kek),
                ("SCALE_CACHE_KEY", &self.cache_key),
                ("SCALE_METRICS_TOKEN", METRICS_TOKEN),
            ],
        )
    }

    /// `coffer tokens create --config coffer.toml ARGS…`: the token.
    fn token(&self, args: &[&str]) -> String {
        create_token(self.cmd(), args)
    }

    /// Starts `coffer serve` as `name` (its log in `name.log`), without waiting.
    fn spawn(&self, name: &str) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        self.cmd()
            .args(["serve", "--config", "coffer.toml"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Waits for the `listening on` line of a spawned instance.
    fn listening(&self, name: &str, child: &mut Child) -> Instance {
        let log = self.dir.path().join(format!("{name}.log"));
        let base = listening_on(child, || format!("{name}: {}", tail(&log)));
        let port = base.rsplit(':').next().unwrap().parse().unwrap();
        Instance {
            name: name.to_owned(),
            base,
            port,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let mut r = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("{e:?}"))?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn post(http: &reqwest::Client, url: &str, token: &str, body: Value) -> (u16, Value) {
    send(http, reqwest::Method::POST, url, token, Some(body))
        .await
        .unwrap()
}

fn encrypt_body(context: &str, plaintext: &str) -> Value {
    json!({"encoding": "utf8",
           "items": [{"column": "notes", "context": context, "plaintext": plaintext}]})
}

fn decrypt_body(context: &str, ciphertext: &str) -> Value {
    json!({"encoding": "utf8",
           "items": [{"column": "notes", "context": context, "ciphertext": ciphertext}]})
}

/// One encrypt and one decrypt through `base`; what went wrong, if anything.
async fn round_trip(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    scope: &str,
    n: u64,
) -> Result<(), String> {
    let context = format!("row-{n}");
    let plaintext = format!("value {n} of {scope}");
    let (s, v) = send(
        http,
        reqwest::Method::POST,
        &format!("{base}/v1/scopes/{scope}/encrypt"),
        token,
        Some(encrypt_body(&context, &plaintext)),
    )
    .await
    .map_err(|e| format!("encrypt: {e}"))?;
    if s != 200 {
        return Err(format!("encrypt: {s} {v}"));
    }
    let ct = v["items"][0]["ciphertext"]
        .as_str()
        .ok_or_else(|| format!("encrypt: no ciphertext in {v}"))?
        .to_owned();
    let (s, v) = send(
        http,
        reqwest::Method::POST,
        &format!("{base}/v1/scopes/{scope}/decrypt"),
        token,
        Some(decrypt_body(&context, &ct)),
    )
    .await
    .map_err(|e| format!("decrypt: {e}"))?;
    if s != 200 {
        return Err(format!("decrypt: {s} {v}"));
    }
    if v["items"][0]["plaintext"] != plaintext.as_str() {
        return Err(format!("decrypt: wrong plaintext {v}"));
    }
    Ok(())
}

/// The value of a counter on an instance's /metrics.
async fn counter(http: &reqwest::Client, inst: &Instance, name: &str) -> f64 {
    let (s, v) = send(
        http,
        reqwest::Method::GET,
        &format!("{}/metrics", inst.base),
        METRICS_TOKEN,
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{}: /metrics {s}", inst.name);
    v.as_str()
        .unwrap()
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The keyring's counters of each instance, summed: KEK unwraps, L2 hits, L2 errors.
async fn key_counters(http: &reqwest::Client, instances: &[&Instance]) -> [f64; 3] {
    let mut sum = [0.0; 3];
    for inst in instances {
        for (i, name) in [
            "coffer_keys_kek_unwraps_total",
            "coffer_keys_l2_hits_total",
            "coffer_keys_l2_errors_total",
        ]
        .iter()
        .enumerate()
        {
            sum[i] += counter(http, inst, name).await;
        }
    }
    sum
}

/// What the client traffic saw: successful round trips per phase (the phase a round trip
/// started in), and the failures.
#[derive(Default)]
struct Traffic {
    phase: AtomicUsize,
    ok: [AtomicU64; 4],
    failures: Mutex<Vec<String>>,
    failed: AtomicU64,
}

const PHASES: [&str; 4] = [
    "all up",
    "after an instance was killed",
    "after a Redis master was killed, before its replica took over",
    "after the Redis failover",
];

// ---------------------------------------------------------------------------------------------

#[test]
fn three_instances_behind_haproxy_survive_instance_and_redis_master_loss() {
    assert!(
        wait_until(Duration::from_secs(20), cluster_whole),
        "the Redis Cluster on 127.0.0.1:7000-7005 is absent or not whole (every node ok, each \
         master with a replica in sync): run scripts/services-up.sh"
    );
    let rt = runtime();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    let deployment = Deployment::new();
    let dir = deployment.dir.path().to_owned();
    let admin = deployment.token(&["--admin", "--label", "ops"]);
    let tenant = deployment.token(&["--tenant", "acme", "--label", "api"]);
    let mut children = Children::default();
    // The first instance alone (it registers the KEK in the new store), then the two others.
    let mut a = deployment.spawn("a");
    let a_inst = deployment.listening("a", &mut a);
    children.add("a", a);
    let (mut b, mut c) = (deployment.spawn("b"), deployment.spawn("c"));
    let b_inst = deployment.listening("b", &mut b);
    let c_inst = deployment.listening("c", &mut c);
    children.add("b", b);
    children.add("c", c);
    let instances = [a_inst, b_inst, c_inst];
    let [a_inst, b_inst, c_inst] = &instances;

    let haproxy = Haproxy::start(&dir, &instances, &mut children);
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut up = 0;
            for i in &instances {
                if haproxy.status(&http, &i.name).await == "UP" {
                    up += 1;
                }
            }
            if up == instances.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy does not see the three instances up; its log:\n{}",
                tail(&dir.join("haproxy.log"))
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let scopes: Vec<String> = (0..TASKS).map(|t| format!("acme:traffic-{t}")).collect();
    rt.block_on(async {
        for scope in scopes.iter().map(String::as_str).chain(["acme:shred"]) {
            let r = post(
                &http,
                &format!("{}/v1/admin/scopes", a_inst.base),
                &admin,
                json!({"scope": scope, "tenant": "acme"}),
            )
            .await;
            assert_eq!(r.0, 201, "{}", r.1);
        }
    });

    // 1. A destroy through A reaches B and C: both held the DEK in their one-hour L1.
    rt.block_on(async {
        let shred = "acme:shred";
        let (s, v) = post(
            &http,
            &format!("{}/v1/scopes/{shred}/encrypt", a_inst.base),
            &tenant,
            encrypt_body("row-1", "to be shredded"),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let ct = v["items"][0]["ciphertext"].as_str().unwrap().to_owned();
        for inst in [b_inst, c_inst] {
            let (s, v) = post(
                &http,
                &format!("{}/v1/scopes/{shred}/decrypt", inst.base),
                &tenant,
                decrypt_body("row-1", &ct),
            )
            .await;
            assert_eq!(s, 200, "{}: {v}", inst.name);
            assert_eq!(v["items"][0]["plaintext"], "to be shredded");
        }
        let (s, v) = send(
            &http,
            reqwest::Method::DELETE,
            &format!("{}/v1/admin/scopes/{shred}?confirm={shred}", a_inst.base),
            &admin,
            None,
        )
        .await
        .unwrap();
        assert_eq!((s, &v["versions_destroyed"]), (200, &json!(1)), "{v}");
        let destroyed_at = Instant::now();
        let deadline = destroyed_at + Duration::from_secs(10);
        let mut waiting = vec![b_inst, c_inst];
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for inst in waiting {
                let (s, v) = post(
                    &http,
                    &format!("{}/v1/scopes/{shred}/decrypt", inst.base),
                    &tenant,
                    decrypt_body("row-1", &ct),
                )
                .await;
                if s == 410 {
                    assert_eq!(v["error"]["code"], "key_destroyed", "{v}");
                    println!(
                        "destroy through {} refused by {} after {:?}",
                        a_inst.name,
                        inst.name,
                        destroyed_at.elapsed()
                    );
                } else {
                    assert_eq!(s, 200, "{}: {v}", inst.name);
                    still.push(inst);
                }
            }
            waiting = still;
            if let Some(inst) = waiting.first() {
                assert!(
                    Instant::now() < deadline,
                    "{} still decrypts 10 s after the scope was destroyed through {}",
                    inst.name,
                    a_inst.name
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });

    // 2. Steady traffic through HAProxy while an instance and a Redis master die.
    let traffic = Arc::new(Traffic::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = scopes
        .iter()
        .map(|scope| {
            let (http, base, token) = (http.clone(), haproxy.base(), tenant.clone());
            let (scope, traffic, stop) = (scope.clone(), traffic.clone(), stop.clone());
            rt.spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let phase = traffic.phase.load(Ordering::Relaxed);
                    match round_trip(&http, &base, &token, &scope, n).await {
                        Ok(()) => {
                            traffic.ok[phase].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            traffic.failed.fetch_add(1, Ordering::Relaxed);
                            let mut f = traffic.failures.lock().unwrap();
                            if f.len() < 20 {
                                f.push(format!("{}: {e}", PHASES[phase]));
                            }
                        }
                    }
                    n += 1;
                }
            })
        })
        .collect();
    let started = Instant::now();

    std::thread::sleep(Duration::from_secs(5));
    children.check_running(&dir);
    traffic.phase.store(1, Ordering::Relaxed);
    children.kill("c");
    let killed_at = Instant::now();
    let noticed = rt.block_on(async {
        while Instant::now() < killed_at + Duration::from_secs(10) {
            if haproxy
                .status(&http, &c_inst.name)
                .await
                .starts_with("DOWN")
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    });
    assert!(noticed, "HAProxy's health checks did not mark c down");
    println!(
        "HAProxy marked c down {:?} after SIGKILL",
        killed_at.elapsed()
    );

    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    let survivors = [a_inst, b_inst];
    let before = rt.block_on(key_counters(&http, &survivors));
    // The master with the lowest port, and its replica.
    let nodes = nodes_seen_by(CLUSTER_PORTS[0]).unwrap();
    let master = nodes
        .iter()
        .filter(|n| n.master && !n.failed)
        .min_by_key(|n| n.port)
        .unwrap();
    let replica = nodes
        .iter()
        .find(|n| n.master_id.as_deref() == Some(master.id.as_str()) && !n.failed)
        .unwrap()
        .port;
    let mut node = KilledNode::prepare(master.port);
    traffic.phase.store(2, Ordering::Relaxed);
    node.kill();
    let master_killed_at = Instant::now();
    // New versions while the master is down: every instance needs their DEKs, cold, while part
    // of L2 does not answer, which is when a cache that fails open could call the KEK for
    // every request.
    rt.block_on(async {
        for scope in &scopes {
            let (s, v) = send(
                &http,
                reqwest::Method::POST,
                &format!("{}/v1/admin/scopes/{scope}/rotate", a_inst.base),
                &admin,
                None,
            )
            .await
            .unwrap();
            assert_eq!((s, &v["version"]), (200, &json!(2)), "{v}");
        }
    });
    let took_over = wait_until(Duration::from_secs(20), || {
        redis_cli(replica, &["role"]).is_some_and(|r| r.starts_with("master"))
            && redis_cli(replica, &["cluster", "info"])
                .and_then(|t| info_field(&t, "cluster_state"))
                .is_some_and(|s| s == "ok")
    });
    assert!(
        took_over,
        "replica {replica} did not take over from master {} within 20 s",
        master.port
    );
    traffic.phase.store(3, Ordering::Relaxed);
    println!(
        "Redis master {} killed; replica {replica} serving after {:?}",
        master.port,
        master_killed_at.elapsed()
    );

    std::thread::sleep(
        TRAFFIC
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(5)),
    );
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    let after = rt.block_on(key_counters(&http, &survivors));
    let (retries, redispatches) = rt.block_on(async {
        (
            haproxy.total(&http, "wretr").await,
            haproxy.total(&http, "wredis").await,
        )
    });
    children.check_running(&dir);

    // The cluster whole again before anything is asserted.
    assert!(
        node.restart(),
        "Redis node {} restarted, but the cluster is not whole within 30 s: run \
         scripts/services-up.sh",
        master.port
    );
    println!("Redis node {} back as a replica", master.port);

    let ok: Vec<u64> = traffic
        .ok
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    println!(
        "round trips through HAProxy: {ok:?} per phase ({PHASES:?}), {} failed; HAProxy \
         retries {retries}, redispatches {redispatches}",
        traffic.failed.load(Ordering::Relaxed)
    );
    assert_eq!(
        traffic.failed.load(Ordering::Relaxed),
        0,
        "the client saw failures: {:#?}",
        traffic.failures.lock().unwrap()
    );
    for (phase, n) in ok.iter().enumerate() {
        assert!(*n > 0, "no round trip completed {}", PHASES[phase]);
    }

    // 3. No KEK call storm: each surviving instance unwraps each DEK in use (two versions of
    // each scope) at most once.
    let versions = 2 * scopes.len();
    let bound = (versions * survivors.len()) as f64;
    let [unwraps, l2_hits, l2_errors] = [0, 1, 2].map(|i| after[i] - before[i]);
    println!(
        "during the Redis failover: {unwraps} KEK unwraps (bound {bound}), {l2_hits} L2 hits, \
         {l2_errors} L2 errors"
    );
    assert!(
        unwraps <= bound,
        "{unwraps} KEK unwraps on {} instances during the Redis failover, for {versions} DEKs \
         in use",
        survivors.len(),
    );
}

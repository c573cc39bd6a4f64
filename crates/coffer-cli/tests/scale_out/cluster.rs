//! The shared Redis Cluster (127.0.0.1:7000-7005, `scripts/services-up.sh`) through `redis-cli`:
//! its state, and a node killed and started again the way it was configured.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Redis Cluster's nodes.
pub const CLUSTER_PORTS: [u16; 6] = [7000, 7001, 7002, 7003, 7004, 7005];

/// `redis-cli -p PORT ARGS…` on 127.0.0.1: its output, or `None` when the node does not answer.
pub fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
}

/// `field:value` from the output of INFO or CLUSTER INFO.
pub fn info_field(text: &str, field: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

/// One line of CLUSTER NODES: (id, port, flags, master id).
pub struct Node {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    pub master_id: Option<String>,
}

pub fn nodes_seen_by(port: u16) -> Option<Vec<Node>> {
    let text = redis_cli(port, &["cluster", "nodes"])?;
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let addr = f[1].split('@').next().unwrap();
                Node {
                    id: f[0].to_owned(),
                    port: addr.rsplit(':').next().unwrap().parse().unwrap(),
                    master: f[2].contains("master"),
                    failed: f[2].contains("fail"),
                    master_id: (f[3] != "-").then(|| f[3].to_owned()),
                }
            })
            .collect(),
    )
}

/// Every node answers and says `cluster_state:ok`, and every master has a replica in sync.
pub fn cluster_whole() -> bool {
    for port in CLUSTER_PORTS {
        let ok = redis_cli(port, &["cluster", "info"])
            .and_then(|t| info_field(&t, "cluster_state"))
            .is_some_and(|s| s == "ok");
        if !ok {
            return false;
        }
    }
    let Some(nodes) = nodes_seen_by(CLUSTER_PORTS[0]) else {
        return false;
    };
    let masters: Vec<&Node> = nodes.iter().filter(|n| n.master && !n.failed).collect();
    masters.len() == 3
        && masters.iter().all(|m| {
            nodes.iter().any(|r| {
                r.master_id.as_deref() == Some(m.id.as_str())
                    && !r.failed
                    && redis_cli(r.port, &["info", "replication"])
                        .and_then(|t| info_field(&t, "master_link_status"))
                        .is_some_and(|s| s == "up")
            })
        })
}

pub fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A cluster node the test kills: started again, as it was configured, when the test is done
/// with it or fails before (drop), and waited for until the cluster is whole.
pub struct KilledNode {
    port: u16,
    dir: String,
    args: Vec<String>,
    restarted: bool,
}

impl KilledNode {
    /// Reads `port`'s configuration (to start it again the same way) before it is killed.
    pub fn prepare(port: u16) -> KilledNode {
        let get = |name: &str| -> String {
            let text = redis_cli(port, &["config", "get", name]).unwrap();
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some(name), "CONFIG GET {name}: {text}");
            lines.next().unwrap_or("").to_owned()
        };
        let dir = get("dir");
        let args = vec![
            "--port".to_owned(),
            port.to_string(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--daemonize".to_owned(),
            "yes".to_owned(),
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-config-file".to_owned(),
            get("cluster-config-file"),
            "--cluster-node-timeout".to_owned(),
            get("cluster-node-timeout"),
            "--dir".to_owned(),
            dir.clone(),
            "--logfile".to_owned(),
            get("logfile"),
            "--pidfile".to_owned(),
            get("pidfile"),
            "--save".to_owned(),
            String::new(),
            "--appendonly".to_owned(),
            "no".to_owned(),
        ];
        KilledNode {
            port,
            dir,
            args,
            restarted: false,
        }
    }

    /// SIGKILL to the node's process (its pid from INFO server).
    pub fn kill(&self) {
        let info = redis_cli(self.port, &["info", "server"]).unwrap();
        let pid = info_field(&info, "process_id").unwrap();
        let ok = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        assert!(ok.success(), "kill -KILL {pid}");
        assert!(
            wait_until(Duration::from_secs(5), || redis_cli(self.port, &["ping"])
                .is_none()),
            "Redis node {} still answers after SIGKILL",
            self.port
        );
    }

    /// Starts the node again (daemonized: it belongs to the shared cluster, not to the test)
    /// and waits, at most 30 s, until the cluster is whole; false if it did not get there.
    pub fn restart(&mut self) -> bool {
        self.restarted = true;
        let started = Command::new("redis-server")
            .args(&self.args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        started && wait_until(Duration::from_secs(30), cluster_whole)
    }
}

impl Drop for KilledNode {
    fn drop(&mut self) {
        if !self.restarted && !self.restart() {
            eprintln!(
                "the Redis Cluster is not whole after restarting node {}: run \
                 scripts/services-up.sh",
                self.port
            );
        }
    }
}

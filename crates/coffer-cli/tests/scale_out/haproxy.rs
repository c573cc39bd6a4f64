//! HAProxy for the scale-out test: the configuration, `haproxy -f cfg -db` as a child process,
//! and its statistics page (server states, retry counters).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use coffer_testkit::ports::free_port;
use coffer_testkit::process::wait_for_listener;

use super::{Children, Instance, tail};

/// The HAProxy configuration the test runs (docs/OPERATIONS.md §12 shows the same). `{front}`,
/// `{stats}` and the servers are filled in.
const HAPROXY_CFG: &str = "\
global
    nbthread 1
    maxconn 512

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout http-keep-alive 30s
    # Longer than coffer's own [service] request_timeout (30 s), which answers 503 first.
    timeout server 35s
    timeout check 2s
    # A request that meets a dead or dying instance is sent again, each time to another one.
    retries 3
    option redispatch 1
    retry-on all-retryable-errors

frontend coffer
    bind 127.0.0.1:{front}
    default_backend coffer

backend coffer
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 2
    # Rotation is the one call that must not run twice: retried only if it was never sent.
    http-request disable-l7-retry if { path_end /rotate }
{servers}
listen stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats
";

pub struct Haproxy {
    front: u16,
    stats: u16,
}

impl Haproxy {
    /// Writes the configuration and starts `haproxy -f cfg -db` (foreground) in `children`.
    pub fn start(dir: &Path, instances: &[Instance], children: &mut Children) -> Haproxy {
        let haproxy = which("haproxy").unwrap_or_else(|| {
            panic!("haproxy is not installed: run scripts/services-up.sh (it installs it)")
        });
        let (front, stats) = (free_port(), free_port());
        let servers: String = instances
            .iter()
            .map(|i| format!("    server {} 127.0.0.1:{}\n", i.name, i.port))
            .collect();
        let cfg = HAPROXY_CFG
            .replace("{front}", &front.to_string())
            .replace("{stats}", &stats.to_string())
            .replace("{servers}", &servers);
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let check = Command::new(&haproxy)
            .args(["-c", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "haproxy -c: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Command::new(&haproxy)
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        children.add("haproxy", child);
        for port in [front, stats] {
            assert!(
                wait_for_listener(port, Duration::from_secs(10)),
                "haproxy does not listen on {port}; its log:\n{}",
                tail(&dir.join("haproxy.log"))
            );
        }
        Haproxy { front, stats }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.front)
    }

    /// The backend servers' rows of the statistics page (CSV), by column name.
    async fn servers(&self, http: &reqwest::Client) -> Vec<HashMap<String, String>> {
        let text = http
            .get(format!("http://127.0.0.1:{}/stats;csv", self.stats))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut lines = text.lines();
        let header: Vec<String> = lines
            .next()
            .unwrap()
            .trim_start_matches("# ")
            .split(',')
            .map(str::to_owned)
            .collect();
        lines
            .map(|l| {
                header
                    .iter()
                    .cloned()
                    .zip(l.split(',').map(str::to_owned))
                    .collect::<HashMap<_, _>>()
            })
            .filter(|row| {
                row.get("pxname").map(String::as_str) == Some("coffer")
                    && !matches!(
                        row.get("svname").map(String::as_str),
                        Some("FRONTEND" | "BACKEND")
                    )
            })
            .collect()
    }

    /// The health-check status of server `name` (`UP`, `DOWN`, `UP 1/2`…).
    pub async fn status(&self, http: &reqwest::Client, name: &str) -> String {
        self.servers(http)
            .await
            .into_iter()
            .find(|r| r.get("svname").map(String::as_str) == Some(name))
            .and_then(|r| r.get("status").cloned())
            .unwrap_or_default()
    }

    /// The sum of a counter column over the servers (`wretr`: retries, `wredis`: redispatches).
    pub async fn total(&self, http: &reqwest::Client, column: &str) -> u64 {
        self.servers(http)
            .await
            .iter()
            .filter_map(|r| r.get(column)?.parse::<u64>().ok())
            .sum()
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

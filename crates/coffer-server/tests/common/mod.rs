//! The service in process for the endpoint tests: a SQLite key store and a local KEK in a
//! temporary directory (optionally a private Redis as L2), the router of `coffer serve` on
//! 127.0.0.1:0 inside the test's runtime, tokens created through `coffer_server::tokens`, and an
//! HTTP client.

#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coffer_keys::config::Config;
use coffer_keys::{AuditFilter, AuditRecord, KeyStore};
use coffer_server::tokens::{Role, TokenStore};
use coffer_server::{App, ServiceConfig};
use coffer_store::SqlStore;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::Value;

pub use coffer_testkit::server_client::{Client, expect_error, expect_retry_after};

/// The mode of the "nid" item: deterministic, except in FIPS builds, which refuse AES-SIV.
pub const DETERMINISTIC: &str = if cfg!(feature = "fips") {
    "randomized"
} else {
    "deterministic"
};

// Plaintexts that must never reach a log line or /metrics: shapes the redactor knows (SSN,
// e-mail, national id, card) and one it cannot recognise, which only never-logging keeps out.
pub const SSN: &str = "123-45-6789";
pub const EMAIL: &str = "ann.lee@example.org";
pub const NATIONAL_ID: &str = "987654321";
pub const CARD: &str = "4111 1111 1111 1111";
pub const MARKER: &str = "Zebra-Quartz-Plaintext-7731";

/// The `[service] metrics_token` of every test service (from a file in its directory).
pub const METRICS_TOKEN: &str = "metrics-scrape-token-for-tests-0123456789";

/// The plaintexts above and their base64 forms (a body logged as sent would show those).
pub fn secrets() -> Vec<String> {
    let plain = [SSN, EMAIL, NATIONAL_ID, CARD, MARKER];
    let mut v: Vec<String> = plain.iter().map(|s| (*s).to_owned()).collect();
    v.extend(plain.iter().map(|s| STANDARD.encode(s)));
    v
}

/// The Prometheus recorder is global: one per test process, shared by its services.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| coffer_server::telemetry::init_metrics().unwrap())
        .clone()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of the test's own, so killing it touches nothing else.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A key store, its configuration and (once started) the service's router serving on
/// 127.0.0.1:0 in the test's runtime.
pub struct Service {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub store: Arc<SqlStore>,
    pub tokens: TokenStore,
    pub app: App,
    pub base: String,
    pub redis: Option<Redis>,
    server: tokio::task::JoinHandle<()>,
}

impl Service {
    /// A fresh key store with `service` as the `[service]` table, serving.
    pub async fn start(service: &str) -> Service {
        Self::start_with(service, false).await
    }

    /// A fresh key store with `service` as the `[service]` table, serving, an admin token and
    /// a token of tenant `acme`.
    pub async fn start_with_tokens(service: &str) -> (Service, String, String) {
        let svc = Self::start(service).await;
        let admin = svc.admin_token().await;
        let acme = svc.tenant_token("acme", "").await;
        (svc, admin, acme)
    }

    /// The same with `scope` created for tenant `acme`.
    pub async fn start_with_scope(service: &str, scope: &str) -> (Service, String, String) {
        let (svc, admin, acme) = Self::start_with_tokens(service).await;
        svc.create_scope(&admin, scope, "acme").await;
        (svc, admin, acme)
    }

    /// The same with a private Redis as L2 (1 s lifetimes) when `with_redis`.
    pub async fn start_with(service: &str, with_redis: bool) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let redis = with_redis.then(Redis::start);
        Self::open(dir, service, redis).await
    }

    /// Opens the key store in `dir` (a new one, or the one a stopped service left) and serves.
    pub async fn open(dir: tempfile::TempDir, service: &str, redis: Option<Redis>) -> Service {
        let config = config(dir.path(), service, redis.as_ref().map(|r| r.port));
        let store = Arc::new(SqlStore::connect(&config.store.url).await.unwrap());
        // The keyring as `coffer serve` assembles it (coffer-assembly, the one composition root).
        let ring = coffer_assembly::kek_ring(&config).await.unwrap();
        let dyn_store: Arc<dyn KeyStore> = store.clone();
        let keyring =
            coffer_assembly::keyring_on(&config, dyn_store, ring, config.keyring_config().unwrap())
                .await
                .unwrap();
        keyring.register_keks().await.unwrap();
        let service_config = ServiceConfig::from_table(config.service.as_ref()).unwrap();
        let tokens = TokenStore::new(store.as_ref().clone(), keyring.clone());
        let app = App::new(
            keyring,
            tokens.clone(),
            service_config,
            Some(metrics_handle()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (router, _) = coffer_server::router(app.clone());
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Service {
            dir,
            config,
            store,
            tokens,
            app,
            base,
            redis,
            server,
        }
    }

    /// Stops serving and writes the pending audit records (as `coffer serve` does on
    /// shutdown); gives back the directory, to open the key store again.
    pub async fn stop(self) -> tempfile::TempDir {
        self.server.abort();
        let _ = self.server.await;
        self.app.flush_audit(true).await;
        let Service { dir, .. } = self;
        dir
    }

    /// Whether the server task is still running (it has not stopped or panicked).
    pub fn is_serving(&self) -> bool {
        !self.server.is_finished()
    }

    /// A client for this service.
    pub fn client(&self) -> Client {
        Client::new(&self.base)
    }

    /// A new tenant token.
    pub async fn tenant_token(&self, tenant: &str, label: &str) -> String {
        self.token(Role::Tenant(tenant.to_owned()), label, None)
            .await
    }

    /// A new admin token.
    pub async fn admin_token(&self) -> String {
        self.token(Role::Admin, "ops", None).await
    }

    /// A new token.
    pub async fn token(&self, role: Role, label: &str, ttl: Option<Duration>) -> String {
        let (_, secret) = self.tokens.create(&role, label, ttl).await.unwrap();
        secret.expose().to_owned()
    }

    /// The audit records of `scope`, oldest first.
    pub async fn audit(&self, scope: &str) -> Vec<AuditRecord> {
        self.store
            .audit(&AuditFilter {
                scope: Some(scope.to_owned()),
                ..AuditFilter::default()
            })
            .await
            .unwrap()
    }

    /// Counts of DEKs, scopes and scope owners: what a failed request must not change.
    pub async fn state(&self) -> (usize, usize, usize) {
        let scopes = self.store.scopes().await.unwrap();
        let mut deks = 0;
        for s in &scopes {
            deks += self.store.deks(&s.scope).await.unwrap().len();
        }
        let owners = self.tokens.owners().await.unwrap().len();
        (deks, scopes.len(), owners)
    }

    /// Creates `scope` for `tenant` through the admin endpoint.
    pub async fn create_scope(&self, admin: &str, scope: &str, tenant: &str) {
        let r = self.client().admin_scope(admin, scope, tenant).await;
        assert_eq!(r.0, 201, "{}", r.1);
    }
}

/// A service with the scopes `acme:patients` (tenant acme) and `globex:users` (tenant globex),
/// and a token for each tenant and an admin.
pub struct Tenants {
    pub svc: Service,
    pub admin: String,
    pub acme: String,
    pub globex: String,
}

impl Tenants {
    /// A fresh key store with `service` as the `[service]` table, serving, with the two scopes.
    pub async fn start(service: &str) -> Tenants {
        let svc = Service::start(service).await;
        let admin = svc.admin_token().await;
        let acme = svc.tenant_token("acme", "api").await;
        let globex = svc.tenant_token("globex", "").await;
        let r = svc
            .client()
            .admin_scope(&admin, "acme:patients", "acme")
            .await;
        assert_eq!(r.0, 201, "{}", r.1);
        assert_eq!(r.1["outcome"], "created");
        svc.create_scope(&admin, "globex:users", "globex").await;
        Tenants {
            svc,
            admin,
            acme,
            globex,
        }
    }

    /// Sends the failing requests that carry plaintexts, each checked against the error it
    /// answers: acme's values to globex's scope, a ciphertext under the wrong context (the
    /// error names the item), a value that is not base64, truncated JSON, an admin token on a
    /// data endpoint. `ssn_ct` is [`SSN`] sealed under column `ssn`, context `42`, in
    /// `acme:patients`. Returns how many requests it sent.
    pub async fn failing_requests(&self, ssn_ct: &Value) -> usize {
        let c = self.svc.client();
        let both = serde_json::json!([
            {"column": "ssn", "plaintext": SSN},
            {"column": "m", "plaintext": MARKER},
        ]);
        let r = c.utf8("encrypt", "globex:users", &self.acme, both).await;
        expect_error(&r, 403, "wrong_tenant");
        let wrong = serde_json::json!([{"column": "ssn", "context": "43", "ciphertext": ssn_ct}]);
        let r = c.utf8("decrypt", "acme:patients", &self.acme, wrong).await;
        expect_error(&r, 422, "decryption_failed");
        assert_eq!(r.1["error"]["item"], 0);
        let not_base64 = serde_json::json!({"items": [{"column": "ssn", "plaintext": MARKER}]});
        let path = "/v1/scopes/acme:patients/encrypt";
        expect_error(
            &c.post(path, &self.acme, not_base64).await,
            400,
            "bad_base64",
        );
        let truncated = format!(
            "{{\"encoding\":\"utf8\",\"items\":[{{\"column\":\"m\",\"plaintext\":\"{MARKER} {SSN}\""
        );
        let r = c.post_raw(path, &self.acme, &truncated).await;
        expect_error(&r, 400, "bad_json");
        let r = c.encrypt_one(&self.admin, "acme:patients", EMAIL).await;
        expect_error(&r, 403, "admin_token");
        5
    }
}

/// The configuration of a key store in `dir`: SQLite, one local KEK (a key file made once),
/// and L2 on the Redis at `redis_port` if any.
fn config(dir: &Path, service: &str, redis_port: Option<u16>) -> Config {
    let kek = dir.join("kek.key");
    coffer_keys::source::create_key_file(&kek).unwrap();
    let metrics_token = dir.join("metrics.token");
    if !metrics_token.exists() {
        std::fs::write(&metrics_token, METRICS_TOKEN).unwrap();
    }
    let cache = match redis_port {
        Some(port) => {
            let cache_key = dir.join("cache.key");
            coffer_keys::source::create_key_file(&cache_key).unwrap();
            format!(
                "[cache]\nredis_url = \"redis://127.0.0.1:{port}\"\ncache_key = \"file:{}\"\n\
                 l1_ttl = \"1s\"\nactive_ttl = \"1s\"\n",
                cache_key.display()
            )
        }
        None => String::new(),
    };
    let toml = format!(
        "[store]\nurl = \"sqlite:{}\"\n\n[[kek]]\nname = \"main\"\nversion = 1\n\
         source = \"file:{}\"\nprimary = true\n\n{cache}\n[service]\nlisten = \"127.0.0.1:0\"\n\
         metrics_token = \"file:{}\"\n{service}\n",
        dir.join("keys.db").display(),
        kek.display(),
        metrics_token.display()
    );
    Config::from_toml(&toml).unwrap()
}

/// The sum of the samples of the metric lines that start with `prefix`.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The service's log as `coffer serve` writes it (JSON lines through the redactor), into
/// memory. The subscriber is global: install it once, in a test file of its own.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Installs the logging pipeline writing here.
    pub fn install() -> LogBuffer {
        let buf = LogBuffer::default();
        let out = buf.clone();
        let redactor = Arc::new(coffer_server::telemetry::Redactor::new(&[], &[]).unwrap());
        coffer_server::telemetry::init_logging_to("info", redactor, move || out.clone()).unwrap();
        buf
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

//! moto, the AWS API mock the S3 and KMS tests run against: one server per machine, shared by
//! every test binary and bench.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// moto's endpoint (`http://127.0.0.1:PORT`): `COFFER_TEST_MOTO_ENDPOINT` when set, else what
/// `scripts/moto-up.sh` prints (it starts moto_server on a free loopback port, or reuses the one
/// it started before, installing `moto[server]` with pip if needed). Asked once per process.
pub fn endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(find_or_start).clone()
}

fn find_or_start() -> String {
    if let Some(e) = std::env::var("COFFER_TEST_MOTO_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
    {
        return e.trim().to_owned();
    }
    let script = crate::scripts_dir().join("moto-up.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed ({}): {stdout}; install moto[server] or set COFFER_TEST_MOTO_ENDPOINT",
        script.display(),
        out.status
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("export COFFER_TEST_MOTO_ENDPOINT="))
        .unwrap_or_else(|| panic!("{} printed no endpoint: {stdout}", script.display()))
        .trim()
        .to_owned()
}

/// `host:port` of [`endpoint`], for plain TCP clients.
pub fn host() -> String {
    endpoint()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

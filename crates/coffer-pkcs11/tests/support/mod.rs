//! Finds (or sets up) the SoftHSM2 token the PKCS#11 tests and benchmarks run against.
//!
//! * With `SOFTHSM2_CONF` set, the token described there is used; `COFFER_TEST_PKCS11_MODULE`
//!   (default: the usual libsofthsm2.so paths), `COFFER_TEST_PKCS11_TOKEN` (default
//!   `coffer-test`) and `COFFER_TEST_PKCS11_PIN_FILE` (default: a file holding `1234`, written
//!   under the target directory) may override the rest.
//! * Without it, `scripts/softhsm-setup.sh` runs with a directory under `CARGO_TARGET_TMPDIR` and
//!   its `export` lines are applied to this process.
//!
//! `COFFER_TEST_PKCS11_PIN` is set to the user PIN if unset, for the `pin-env=` tests.
#![allow(dead_code, unsafe_code, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The PIN environment variable the `pin-env=` references name.
pub const PIN_ENV: &str = "COFFER_TEST_PKCS11_PIN";

const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
];

/// The test token.
#[derive(Debug)]
pub struct Hsm {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The token label.
    pub token: String,
    /// A file holding the user PIN.
    pub pin_file: PathBuf,
}

impl Hsm {
    /// A reference to key `key` on the test token, reading the PIN from the PIN file.
    pub fn reference(&self, key: &str) -> String {
        format!(
            "pkcs11:module={};token={};key={key};pin-file={}",
            self.module.display(),
            self.token,
            self.pin_file.display()
        )
    }

    /// A reference to key `key` on the test token, reading the PIN from [`PIN_ENV`].
    pub fn reference_pin_env(&self, key: &str) -> String {
        format!(
            "pkcs11:module={};token={};key={key};pin-env={PIN_ENV}",
            self.module.display(),
            self.token,
        )
    }
}

/// The test token, set up on first use; an error says what is missing.
pub fn hsm() -> Result<&'static Hsm, String> {
    static HSM: OnceLock<Result<Hsm, String>> = OnceLock::new();
    HSM.get_or_init(setup).as_ref().map_err(Clone::clone)
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// Sets an environment variable. Called only from `setup`, inside the `OnceLock`
/// initialization that every test and the benchmark go through before anything reads the
/// environment or loads the PKCS#11 module.
fn set_env(key: &str, value: &str) {
    // SAFETY: see above; no other thread reads the environment at this point of the tests.
    unsafe { std::env::set_var(key, value) };
}

fn setup() -> Result<Hsm, String> {
    let mut from_script = std::collections::HashMap::new();
    if std::env::var_os("SOFTHSM2_CONF").is_none() {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("coffer-softhsm");
        let script = scripts_dir().join("softhsm-setup.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "SOFTHSM2_CONF is not set and {} failed ({}):\n{}\nInstall SoftHSM2 \
                 (apt-get install softhsm2) or point SOFTHSM2_CONF / COFFER_TEST_PKCS11_MODULE at a token.",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((key, value)) = line
                .strip_prefix("export ")
                .and_then(|kv| kv.split_once('='))
            else {
                continue;
            };
            if value.contains(['\'', '"', '\\', '$']) {
                return Err(format!(
                    "{} printed a quoted value for {key}; use a directory without special characters",
                    script.display()
                ));
            }
            from_script.insert(key.to_owned(), value.to_owned());
        }
        let conf = from_script
            .get("SOFTHSM2_CONF")
            .ok_or_else(|| format!("{} printed no SOFTHSM2_CONF", script.display()))?;
        set_env("SOFTHSM2_CONF", conf);
    }
    let var = |key: &str| {
        from_script
            .get(key)
            .cloned()
            .or_else(|| std::env::var(key).ok())
            .filter(|v| !v.is_empty())
    };

    let module = match var("COFFER_TEST_PKCS11_MODULE") {
        Some(m) => PathBuf::from(m),
        None => MODULE_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| {
                format!(
                    "SoftHSM2 is not installed: no libsofthsm2.so in {MODULE_CANDIDATES:?}. \
                     Install it (apt-get install softhsm2) or set COFFER_TEST_PKCS11_MODULE."
                )
            })?,
    };
    if !module.exists() {
        return Err(format!(
            "the PKCS#11 module {} does not exist; install SoftHSM2 (apt-get install softhsm2) \
             or fix COFFER_TEST_PKCS11_MODULE",
            module.display()
        ));
    }
    let token = var("COFFER_TEST_PKCS11_TOKEN").unwrap_or_else(|| "coffer-test".to_owned());
    let pin_file = match var("COFFER_TEST_PKCS11_PIN_FILE") {
        Some(p) => PathBuf::from(p),
        None => {
            let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join("coffer-softhsm-user.pin");
            let pin = std::env::var(PIN_ENV).unwrap_or_else(|_| "1234".to_owned());
            std::fs::write(&p, format!("{pin}\n"))
                .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            p
        }
    };
    if std::env::var_os(PIN_ENV).is_none() {
        let pin = std::fs::read_to_string(&pin_file)
            .map_err(|e| format!("cannot read {}: {e}", pin_file.display()))?;
        set_env(PIN_ENV, pin.trim_end_matches(['\r', '\n']));
    }
    Ok(Hsm {
        module,
        token,
        pin_file,
    })
}

/// A label no other test run used: `prefix-` and 12 random hex digits.
pub fn unique_label(prefix: &str) -> String {
    let dek = coffer_core::Dek::generate().expect("random");
    let hex: String = dek.expose_secret()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{prefix}-{hex}")
}

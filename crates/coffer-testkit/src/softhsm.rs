//! A SoftHSM2 token for the PKCS#11 tests.
//!
//! * With `SOFTHSM2_CONF` set, the token described there is used; `COFFER_TEST_PKCS11_MODULE`
//!   (default: the usual libsofthsm2.so paths), `COFFER_TEST_PKCS11_TOKEN` (default
//!   `coffer-test`) and `COFFER_TEST_PKCS11_PIN_FILE` (default: a file under the given
//!   directory holding [`PIN_ENV`]'s value or `1234`) may override the rest.
//! * Without it, `scripts/softhsm-setup.sh` sets a token up in the given directory (idempotent).
//!
//! The PINs are those of throw-away test tokens.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable `pin-env=` test references name.
pub const PIN_ENV: &str = "COFFER_TEST_PKCS11_PIN";

const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
];

/// A test token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The SoftHSM2 configuration file (what `SOFTHSM2_CONF` must name for the module).
    pub conf: PathBuf,
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The token label.
    pub token: String,
    /// A file holding the user PIN.
    pub pin_file: PathBuf,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("conf", &self.conf)
            .field("module", &self.module)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// The token `SOFTHSM2_CONF` describes, or else one set up by `scripts/softhsm-setup.sh`
    /// in `dir`. The error says what is missing.
    pub fn find_or_setup(dir: &Path) -> Result<Token, String> {
        let mut from_script = HashMap::new();
        let conf = match std::env::var_os("SOFTHSM2_CONF") {
            Some(conf) => PathBuf::from(conf),
            None => {
                from_script = run_setup(dir)?;
                from_script
                    .get("SOFTHSM2_CONF")
                    .map(PathBuf::from)
                    .ok_or("softhsm-setup.sh printed no SOFTHSM2_CONF")?
            }
        };
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
                "the PKCS#11 module {} does not exist; install SoftHSM2 (apt-get install \
                 softhsm2) or fix COFFER_TEST_PKCS11_MODULE",
                module.display()
            ));
        }
        let token = var("COFFER_TEST_PKCS11_TOKEN").unwrap_or_else(|| "coffer-test".to_owned());
        let pin_file = match var("COFFER_TEST_PKCS11_PIN_FILE") {
            Some(p) => PathBuf::from(p),
            None => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let p = dir.join("user.pin");
                let pin = std::env::var(PIN_ENV).unwrap_or_else(|_| "1234".to_owned());
                std::fs::write(&p, format!("{pin}\n"))
                    .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
                p
            }
        };
        Ok(Token {
            conf,
            module,
            token,
            pin_file,
        })
    }

    /// The user PIN, read from [`Token::pin_file`].
    pub fn pin(&self) -> Result<String, String> {
        std::fs::read_to_string(&self.pin_file)
            .map(|p| p.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| format!("cannot read {}: {e}", self.pin_file.display()))
    }

    /// A reference to key `key` on this token, reading the PIN from the PIN file.
    pub fn reference(&self, key: &str) -> String {
        format!(
            "pkcs11:module={};token={};key={key};pin-file={}",
            self.module.display(),
            self.token,
            self.pin_file.display()
        )
    }

    /// A reference to key `key` on this token, reading the PIN from [`PIN_ENV`].
    pub fn reference_pin_env(&self, key: &str) -> String {
        format!(
            "pkcs11:module={};token={};key={key};pin-env={PIN_ENV}",
            self.module.display(),
            self.token,
        )
    }

    /// The variables a child process needs to find this token, as scripts/softhsm-setup.sh
    /// exports them: `SOFTHSM2_CONF` and `COFFER_TEST_PKCS11_{MODULE,TOKEN,PIN_FILE}`.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("SOFTHSM2_CONF", self.conf.display().to_string()),
            (
                "COFFER_TEST_PKCS11_MODULE",
                self.module.display().to_string(),
            ),
            ("COFFER_TEST_PKCS11_TOKEN", self.token.clone()),
            (
                "COFFER_TEST_PKCS11_PIN_FILE",
                self.pin_file.display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Runs scripts/softhsm-setup.sh for `dir`; its `export` lines.
fn run_setup(dir: &Path) -> Result<HashMap<String, String>, String> {
    let script = crate::scripts_dir().join("softhsm-setup.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
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
    let mut vars = HashMap::new();
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
        vars.insert(key.to_owned(), value.to_owned());
    }
    Ok(vars)
}

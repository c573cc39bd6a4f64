//! Running the real `coffer` binary from tests: keys, invocations and their outcomes.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable test keys of the `env:` kind live in.
pub const KEY_VAR: &str = "COFFER_TEST_KEY";

/// The binary, with no `COFFER_KEY_REF` inherited from the test's environment.
pub fn coffer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
    cmd.env_remove("COFFER_KEY_REF");
    cmd
}

/// One finished invocation.
#[derive(Debug)]
pub struct Out {
    /// The exit status (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Out {
    /// Asserts exit status 0 and an empty stderr.
    #[track_caller]
    pub fn success(&self) {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        assert!(self.stderr.is_empty(), "stderr: {}", self.stderr);
    }

    /// Asserts exit status `code`, empty stdout, and a stderr message containing `needle`.
    #[track_caller]
    pub fn fails(&self, code: i32, needle: &str) {
        assert_eq!(self.code, Some(code), "stderr: {}", self.stderr);
        assert!(self.stdout.is_empty(), "stdout: {:?}", self.stdout_str());
        assert!(
            self.stderr.contains(needle),
            "{needle:?} not in stderr: {}",
            self.stderr
        );
    }

    /// Stdout as UTF-8.
    pub fn stdout_str(&self) -> &str {
        std::str::from_utf8(&self.stdout).unwrap()
    }
}

/// Runs `coffer args…` with extra environment variables, and `stdin` (or none) as stdin.
pub fn run(args: &[&str], envs: &[(&str, &str)], stdin: Option<&[u8]>) -> Out {
    let mut cmd = coffer();
    cmd.args(args).envs(envs.iter().copied());
    output(cmd, stdin)
}

/// A fresh key from `coffer keygen`, referenced as `env:` or `file:`.
pub struct Key {
    /// The base64 key.
    pub secret: String,
    file: Option<(tempfile::TempDir, PathBuf)>,
}

impl Key {
    /// A new key read through `--key env:COFFER_TEST_KEY`.
    pub fn env() -> Key {
        let out = run(&["keygen"], &[], None);
        out.success();
        Key {
            secret: out.stdout_str().trim_end().to_owned(),
            file: None,
        }
    }

    /// A new key written by `coffer keygen --out` and read through `--key file:PATH`.
    pub fn file() -> Key {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coffer.key");
        run(&["keygen", "--out", path.to_str().unwrap()], &[], None).success();
        let secret = std::fs::read_to_string(&path)
            .unwrap()
            .trim_end()
            .to_owned();
        Key {
            secret,
            file: Some((dir, path)),
        }
    }

    /// A key given as base64 (for golden vectors), read through `env:`.
    pub fn from_base64(secret: &str) -> Key {
        Key {
            secret: secret.to_owned(),
            file: None,
        }
    }

    /// The key file, for `file:` keys.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(_, p)| p.as_path())
    }

    /// The environment variable that holds the key for `env:` references.
    pub fn env_pair(&self) -> (&str, &str) {
        (KEY_VAR, &self.secret)
    }

    /// The `--key` reference.
    pub fn reference(&self) -> String {
        match self.path() {
            Some(p) => format!("file:{}", p.display()),
            None => format!("env:{KEY_VAR}"),
        }
    }

    /// Runs `coffer args… --key REF`.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Out {
        let reference = self.reference();
        let mut all = args.to_vec();
        all.extend(["--key", reference.as_str()]);
        run(&all, &[self.env_pair()], stdin)
    }

    /// `field encrypt args…` with `plaintext` on stdin; the text output without its newline.
    #[track_caller]
    pub fn encrypt(&self, args: &[&str], plaintext: &[u8]) -> String {
        let mut all = vec!["field", "encrypt"];
        all.extend_from_slice(args);
        let out = self.run(&all, Some(plaintext));
        out.success();
        let text = out.stdout_str();
        assert!(text.ends_with('\n'), "{text:?}");
        text.trim_end().to_owned()
    }

    /// `field decrypt args… --value CT`; the plaintext.
    #[track_caller]
    pub fn decrypt(&self, args: &[&str], ciphertext: &str) -> Vec<u8> {
        let mut all = vec!["field", "decrypt", "--value", ciphertext];
        all.extend_from_slice(args);
        let out = self.run(&all, None);
        out.success();
        out.stdout
    }
}

/// Runs `coffer keys args…` in `dir` with extra environment variables and no stdin, with no
/// configuration inherited from the test's environment.
pub fn keys(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Out {
    let out = coffer()
        .current_dir(dir)
        .arg("keys")
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("COFFER_CONFIG")
        .env_remove("COFFER_STORE_URL")
        .env_remove("COFFER_REDIS_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Asserts exit status 0 and returns stdout.
#[track_caller]
pub fn ok(out: &Out) -> String {
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    out.stdout_str().to_owned()
}

/// Spawns `cmd` with piped stdout and stderr, feeds `stdin` (or none) from a thread so large
/// inputs cannot deadlock against the child's output, and collects the outcome.
pub fn output(mut cmd: Command, stdin: Option<&[u8]>) -> Out {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().unwrap();
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        // A command that fails before reading its input closes the pipe early: not an error.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        })
    });
    let out = child.wait_with_output().unwrap();
    if let Some(w) = writer {
        w.join().unwrap();
    }
    Out {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs a Python helper from tests/interop with extra environment variables and `input` on
/// stdin; asserts success and returns stdout and stderr.
pub fn python(
    script: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    input: &[u8],
) -> (Vec<u8>, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop")
        .join(script);
    let mut cmd = Command::new("python3");
    cmd.arg(path).args(args).envs(envs.iter().copied());
    let out = output(cmd, Some(input));
    assert_eq!(
        out.code,
        Some(0),
        "{script} {args:?} failed (`make test` installs boto3 and aws-encryption-sdk[MPL]): {}",
        out.stderr
    );
    (out.stdout, out.stderr)
}

#[allow(unused_imports)]
pub use coffer_testkit::moto::endpoint as moto;

/// A SoftHSM2 token for this test binary (coffer-testkit's `softhsm`, in a directory named
/// `name` under the target directory): the variables that find it, as (name, value) pairs.
pub fn softhsm(name: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    coffer_testkit::softhsm::Token::find_or_setup(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .env()
}

/// `coffer file ARGS` in `dir` with `envs` set and `stdin` piped in.
pub fn file(dir: &Path, args: &[&str], envs: &[(&str, &str)], stdin: Option<&[u8]>) -> Out {
    let mut cmd = coffer();
    cmd.current_dir(dir)
        .arg("file")
        .args(args)
        .envs(envs.iter().copied());
    output(cmd, stdin)
}

/// A fresh random KEK, base64 (what `coffer keygen` prints).
pub fn kek_base64() -> String {
    coffer_core::Kek::generate()
        .unwrap()
        .to_base64()
        .to_string()
}

/// `coffer keys init` of a SQLite key store (keys.db) under the KEK in COFFER_KEK.
pub const INIT_SQLITE: [&str; 5] = [
    "init",
    "--store",
    "sqlite:keys.db",
    "--kek",
    "env:COFFER_KEK",
];

/// A new directory where `coffer keys` [`INIT_SQLITE`] wrote coffer.toml and keys.db, under a
/// new KEK.
pub struct KeyStoreDir {
    dir: tempfile::TempDir,
    /// The KEK (base64), for COFFER_KEK.
    pub kek: String,
    /// What `keys init` printed.
    pub init: String,
}

impl KeyStoreDir {
    /// Runs `keys init` in a new directory; panics unless it succeeds.
    #[track_caller]
    pub fn init() -> KeyStoreDir {
        let dir = tempfile::tempdir().unwrap();
        let kek = kek_base64();
        let init = ok(&keys(dir.path(), &INIT_SQLITE, &[("COFFER_KEK", &kek)]));
        KeyStoreDir { dir, kek, init }
    }

    /// The directory (`keys` runs there).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The environment `keys` needs: COFFER_KEK.
    pub fn env(&self) -> [(&'static str, &str); 1] {
        [("COFFER_KEK", self.kek.as_str())]
    }

    /// The key store's URL (`sqlite:…/keys.db`).
    pub fn store_url(&self) -> String {
        format!("sqlite:{}", self.path().join("keys.db").display())
    }
}

/// `coffer` in `dir` with `envs` set and nothing inherited that would change what it reads:
/// COFFER_CONFIG, COFFER_STORE_URL, COFFER_REDIS_URL and RUST_LOG are unset.
pub fn coffer_in(dir: &Path, envs: &[(&str, &str)]) -> Command {
    let mut cmd = coffer();
    cmd.current_dir(dir)
        .env_remove("COFFER_CONFIG")
        .env_remove("COFFER_STORE_URL")
        .env_remove("COFFER_REDIS_URL")
        .env_remove("RUST_LOG")
        .envs(envs.iter().copied());
    cmd
}

/// `coffer tokens create --config coffer.toml ARGS…` through `cmd` (e.g. [`coffer_in`]): the
/// new token. Panics with stderr when it fails.
#[track_caller]
pub fn create_token(mut cmd: Command, args: &[&str]) -> String {
    coffer_testkit::process::stdout_of(
        cmd.args(["tokens", "create", "--config", "coffer.toml"])
            .args(args),
    )
}

/// The URL of the `listening on URL` line a spawned `coffer serve` prints first (its stdout
/// piped). Panics with `log()` (what it wrote to its log) when the line is anything else.
#[track_caller]
pub fn listening_on(child: &mut std::process::Child, log: impl FnOnce() -> String) -> String {
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    match line.strip_prefix("listening on ") {
        Some(url) => url.trim().to_owned(),
        None => panic!("serve did not start: {line:?}; its log:\n{}", log()),
    }
}

/// The Tokio runtime the HTTP clients of the serve tests run on: two worker threads.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `n` bytes of test data for the file and S3 round trips: a byte pattern of period 253.
pub fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 253) as u8).collect()
}

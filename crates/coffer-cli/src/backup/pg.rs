//! The PostgreSQL client programs a backup runs, `pg_dump` and `pg_restore`: started in a cleared
//! environment, their stderr kept for the error message, killed if coffer gives up on them.

use std::ffi::OsStr;
use std::io::Read as _;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use anyhow::{Context as _, Result, anyhow, bail};

/// How much of a child's stderr is kept for the error message (its end).
const STDERR_TAIL: usize = 16 * 1024;

/// A command for `program` whose environment holds only what libpq and the program need: `PATH`,
/// the locale, `HOME` (where libpq finds `~/.pgpass`, `~/.pg_service.conf` and client
/// certificates) and every `PG*` variable the user set (`PGPASSWORD`, `PGHOST`, `PGSSLMODE`…).
/// Nothing else is inherited: above all not the variable holding a KEK (`--kek env:VAR`).
pub(crate) fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for (name, value) in std::env::vars_os() {
        if passes(&name) {
            cmd.env(name, value);
        }
    }
    cmd
}

fn passes(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    matches!(name, "PATH" | "HOME" | "LANG" | "LC_ALL" | "LC_MESSAGES") || name.starts_with("PG")
}

/// Refuses a connection string carrying a password: it would be passed to `pg_dump` or
/// `pg_restore` on their command line, which every user of the machine can read.
pub(crate) fn check_conninfo(conninfo: &str) -> Result<()> {
    let lower = conninfo.to_ascii_lowercase();
    let uri = ["postgresql://", "postgres://"]
        .iter()
        .find_map(|p| lower.strip_prefix(p));
    let has_password = match uri {
        Some(rest) => {
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
            userinfo.is_some_and(|u| u.contains(':'))
                || rest
                    .split_once('?')
                    .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("password=")))
        }
        None => lower.match_indices("password").any(|(i, w)| {
            lower[i + w.len()..].trim_start().starts_with('=')
                && (i == 0 || lower[..i].ends_with(char::is_whitespace))
        }),
    };
    if has_password {
        bail!(
            "--dbname carries a password, which would show in the process list of pg_dump or \
             pg_restore; put it in PGPASSWORD or ~/.pgpass instead"
        );
    }
    Ok(())
}

/// `program --version`, e.g. "pg_dump (PostgreSQL) 15.20"; also proves the program runs.
pub(crate) fn version(program: &str) -> Result<String> {
    let out = command(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("cannot run {program}: is the PostgreSQL client installed and on PATH?")
        })?;
    if !out.status.success() {
        bail!("{program} --version failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A started `pg_dump` or `pg_restore`. Dropped before [`Running::finish`] (coffer failed), it
/// is killed and reaped, so nothing keeps writing a dump or restoring half a database.
pub(crate) struct Running {
    program: &'static str,
    child: Child,
    stderr: Option<JoinHandle<Vec<u8>>>,
    finished: bool,
}

impl Running {
    /// Starts `cmd` (made by [`command`]) with its stderr captured; stdin and stdout are as the
    /// caller set them.
    pub(crate) fn spawn(program: &'static str, mut cmd: Command) -> Result<Self> {
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut tail = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
                tail
            })
        });
        Ok(Running {
            program,
            child,
            stderr,
            finished: false,
        })
    }

    /// The child's stdout, when it was piped.
    pub(crate) fn stdout(&mut self) -> Result<ChildStdout> {
        self.child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("{} has no stdout pipe", self.program))
    }

    /// The child's stdin, when it was piped.
    pub(crate) fn stdin(&mut self) -> Result<ChildStdin> {
        self.child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("{} has no stdin pipe", self.program))
    }

    /// Waits for the child; an error with the end of its stderr unless it exited with 0. On
    /// success, whatever it printed (warnings) is returned.
    pub(crate) fn finish(mut self) -> Result<String> {
        self.finished = true;
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {}", self.program))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).trim_end().to_owned();
        if !status.success() {
            if stderr.is_empty() {
                bail!("{} failed ({status})", self.program);
            }
            bail!("{} failed ({status}):\n{stderr}", self.program);
        }
        Ok(stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_connection_strings_are_refused() {
        for bad in [
            "postgresql://u:secret@db/app",
            "postgres://u:secret@db:5432/app?sslmode=require",
            "postgresql://u@db/app?sslmode=require&password=secret",
            "host=db password=secret dbname=app",
            "password = secret",
            "host=db PASSWORD=secret",
        ] {
            assert!(check_conninfo(bad).is_err(), "{bad}");
        }
        for good in [
            "app",
            "postgresql://u@db/app",
            "postgresql://db:5432/app?sslmode=require",
            "host=db user=u dbname=app passfile=/etc/pgpass",
            "dbname=password_vault",
        ] {
            assert!(check_conninfo(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn children_get_a_cleared_environment() {
        for ok in ["PATH", "HOME", "LANG", "PGPASSWORD", "PGHOST"] {
            assert!(passes(OsStr::new(ok)), "{ok}");
        }
        for no in ["COFFER_KEK", "AWS_SECRET_ACCESS_KEY", "LD_PRELOAD", "USER"] {
            assert!(!passes(OsStr::new(no)), "{no}");
        }
    }
}

//! The PostgreSQL client programs a backup runs, `pg_dump` and `pg_restore`: started in a cleared
//! environment, their stderr kept for the error message, killed if coffer gives up on them.

use std::ffi::OsStr;
use std::io::{self, BufRead, Read};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// How much of a child's stderr is kept for the error message (its end).
const STDERR_TAIL: usize = 16 * 1024;

/// A command for `program` whose environment holds only what libpq and the program need: `PATH`,
/// the locale, `HOME` (where libpq finds `~/.pgpass`, `~/.pg_service.conf` and client
/// certificates) and every `PG*` variable the user set (`PGPASSWORD`, `PGHOST`, `PGSSLMODE`…).
/// Nothing else is inherited: above all not the variable holding a KEK (`--kek env:VAR`).
pub fn command(program: &str) -> Command {
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
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the safe places for a password.
pub fn check_conninfo(conninfo: &str) -> Result<()> {
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
        return Err(Error::InvalidInput(
            "--dbname carries a password, which would show in the process list of pg_dump or \
             pg_restore; put it in PGPASSWORD or ~/.pgpass instead"
                .into(),
        ));
    }
    Ok(())
}

/// `program --version`, e.g. "pg_dump (PostgreSQL) 15.20"; also proves the program runs.
///
/// # Errors
///
/// [`Error::Tool`] when it cannot be started or fails.
pub fn version(program: &'static str) -> Result<String> {
    let out = command(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Tool {
            program,
            status: format!("cannot run it: {e}; is the PostgreSQL client installed and on PATH?"),
            stderr: String::new(),
        })?;
    if !out.status.success() {
        return Err(Error::Tool {
            program,
            status: format!("--version: {}", out.status),
            stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_owned(),
        });
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
            .map_err(|e| Error::Tool {
                program,
                status: format!("cannot start it: {e}"),
                stderr: String::new(),
            })?;
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
            .ok_or_else(|| Error::InvalidInput(format!("{} has no stdout pipe", self.program)))
    }

    /// The child's stdin, when it was piped.
    pub(crate) fn stdin(&mut self) -> Result<ChildStdin> {
        self.child
            .stdin
            .take()
            .ok_or_else(|| Error::InvalidInput(format!("{} has no stdin pipe", self.program)))
    }

    /// Waits for the child; an error with the end of its stderr unless it exited with 0. On
    /// success, whatever it printed (warnings) is returned.
    pub(crate) fn finish(mut self) -> Result<String> {
        self.finished = true;
        let status = self
            .child
            .wait()
            .map_err(Error::io(format!("waiting for {}", self.program)))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).trim_end().to_owned();
        if !status.success() {
            return Err(Error::Tool {
                program: self.program,
                status: status.to_string(),
                stderr,
            });
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

/// Reads a child's stdout on a thread of its own, up to `depth` chunks of `chunk` bytes ahead of
/// the caller, so that `pg_dump` keeps writing while coffer hashes, writes and fsyncs a part (a
/// pipe holds only 64 KiB). Memory stays bounded by `depth × chunk`.
pub(crate) struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    pub(crate) fn new<R: Read + Send + 'static>(mut src: R, chunk: usize, depth: usize) -> Self {
        let (tx, rx) = sync_channel(depth);
        std::thread::spawn(move || {
            loop {
                let mut buf = vec![0u8; chunk];
                let mut filled = 0;
                while filled < chunk {
                    match src.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                if filled == 0 {
                    return;
                }
                buf.truncate(filled);
                // The reader gave up (an error on its side): stop reading.
                if tx.send(Ok(buf)).is_err() {
                    return;
                }
            }
        });
        ReadAhead {
            rx,
            buf: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl BufRead for ReadAhead {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.buf.len() && !self.done {
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    self.buf = buf;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The thread ended: end of stream.
                Err(_) => self.done = true,
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let have = self.fill_buf()?;
        let n = have.len().min(out.len());
        out[..n].copy_from_slice(&have[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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
    fn read_ahead_delivers_every_byte_in_order() {
        let data: Vec<u8> = (0..3_000_001u32).map(|i| (i % 251) as u8).collect();
        let mut r = ReadAhead::new(io::Cursor::new(data.clone()), 65_536, 4);
        let mut out = Vec::new();
        let mut small = [0u8; 1000];
        let n = r.read(&mut small).unwrap();
        out.extend_from_slice(&small[..n]);
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert!(r.fill_buf().unwrap().is_empty());
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

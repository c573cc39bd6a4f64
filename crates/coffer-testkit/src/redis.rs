//! A private `redis-server` on a free loopback port, for tests that stop, restart or kill it
//! without disturbing anything else. Killed on `Drop`. No persistence (`--save ""`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a starting server may take before the test fails.
const START_WITHIN: Duration = Duration::from_secs(10);

/// A `redis-server` child process.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free loopback port (another port is tried if the first is taken
    /// meanwhile).
    pub fn start() -> RedisServer {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start_on(crate::ports::free_port()) {
                Ok(server) => return server,
                Err(e) => last = e,
            }
        }
        panic!("{last}")
    }

    /// Starts one on `port` (e.g. again where a stopped one was).
    pub fn start_on(port: u16) -> RedisServer {
        Self::try_start_on(port).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_on(port: u16) -> Result<RedisServer, String> {
        let mut server = RedisServer { port, child: None };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run redis-server ({e}); install Redis (apt-get install redis-server)"
                )
            })?;
        if crate::process::wait_for_listener(self.port, START_WITHIN) {
            self.child = Some(child);
            return Ok(());
        }
        let exited = child.try_wait().ok().flatten();
        let _ = child.kill();
        let _ = child.wait();
        Err(match exited {
            Some(status) => format!(
                "redis-server exited ({status}) before listening on port {}",
                self.port
            ),
            None => format!(
                "redis-server did not listen on port {} within {START_WITHIN:?}",
                self.port
            ),
        })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether it was started and not stopped or killed since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Shuts it down with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let sent = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if !sent {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Kills it with SIGKILL (a crash, as far as its clients can tell) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (stopping it first if it runs).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;

    use super::*;

    fn ping(port: u16) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    #[test]
    fn stop_restart_and_kill() {
        let mut r = RedisServer::start();
        assert!(r.url().ends_with(&r.port().to_string()));
        assert_eq!(ping(r.port()).unwrap(), "+PONG\r\n");
        r.stop();
        assert!(!r.is_running());
        assert!(ping(r.port()).is_err());
        r.restart();
        assert_eq!(ping(r.port()).unwrap(), "+PONG\r\n");
        r.kill();
        assert!(ping(r.port()).is_err());
    }
}

//! Child processes in tests: run one to completion, or wait for a server to listen.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `cmd` to completion and returns its stdout, trimmed; panics with its stderr when it
/// fails (or cannot start).
#[track_caller]
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = output_of(cmd);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`; false if nothing did
/// within `within` (a server that failed to start).
pub fn wait_for_listener(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` to completion and returns all it wrote (stdout as bytes, stderr too); panics with
/// its stderr when it fails (or cannot start). [`stdout_of`] for text output.
#[track_caller]
pub fn output_of(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{:?} failed ({}): {}",
        cmd.get_program(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_is_trimmed() {
        assert_eq!(stdout_of(Command::new("echo").arg(" hi ")), "hi");
    }

    #[test]
    #[should_panic(expected = "failed")]
    fn a_failure_panics() {
        stdout_of(&mut Command::new("false"));
    }

    #[test]
    fn output_is_kept_whole_and_a_failure_panics() {
        let out = output_of(Command::new("sh").args(["-c", "printf ' a\\n'; echo e >&2"]));
        assert_eq!(out.stdout, b" a\n");
        assert_eq!(out.stderr, b"e\n");
        let failed = std::panic::catch_unwind(|| output_of(&mut Command::new("false")));
        assert!(failed.is_err());
    }

    #[test]
    fn a_listener_is_found_and_a_closed_port_is_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(wait_for_listener(port, Duration::from_secs(5)));
        drop(l);
        assert!(!wait_for_listener(port, Duration::ZERO));
    }
}

//! A stand-in for the service manager: a Unix datagram socket in a temp
//! dir, named to ward by `NOTIFY_SOCKET`, that receives what ward tells it
//! (`READY=1`, `STATUS=...`, `WATCHDOG=1`, `STOPPING=1`) one message at a
//! time, each a list of `KEY=VALUE` lines.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The service manager's variables ward reads, which the harness clears
/// for every ward it starts unless a test sets them.
pub const VARIABLES: [&str; 4] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "RUNTIME_DIRECTORY",
];

/// The notification socket.
pub struct Manager {
    _dir: tempfile::TempDir,
    socket: UnixDatagram,
    pub path: PathBuf,
}

impl Default for Manager {
    fn default() -> Self {
        Self::new()
    }
}

impl Manager {
    pub fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Manager {
            _dir: dir,
            socket,
            path,
        }
    }

    /// `NOTIFY_SOCKET` naming this socket, for [`crate::support::Ward::spawn_with_env`].
    pub fn env(&self) -> (&'static str, &OsStr) {
        ("NOTIFY_SOCKET", self.path.as_os_str())
    }

    /// The next message, waiting until `deadline` at most.
    pub fn next_by(&self, deadline: Instant) -> Option<Vec<String>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        self.socket.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(lines(&buf[..n]))
    }

    /// A message that has arrived already, without waiting.
    pub fn arrived(&self) -> Option<Vec<String>> {
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let received = self.socket.recv(&mut buf);
        self.socket.set_nonblocking(false).unwrap();
        let n = received.ok()?;
        Some(lines(&buf[..n]))
    }

    /// The next message within `within`.
    pub fn next(&self, within: Duration) -> Option<Vec<String>> {
        self.next_by(Instant::now() + within)
    }

    /// Messages until one with the line `line` (which ends the list),
    /// failing after `within`.
    pub fn until(&self, line: &str, within: Duration) -> Vec<Vec<String>> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let Some(message) = self.next_by(deadline) else {
                panic!("no {line} within {within:?}; got {seen:?}");
            };
            let found = message.iter().any(|l| l == line);
            seen.push(message);
            if found {
                return seen;
            }
        }
    }
}

fn lines(message: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(message).expect("UTF-8 notification");
    text.lines().map(str::to_string).collect()
}

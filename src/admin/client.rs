//! The `ward ctl` side of the admin socket: connect, send one request, read
//! one reply, and turn `{"ok":false}` into an error.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::protocol::Request;

/// How long `ward ctl` waits for the service.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach ward at {path}: {source} (is it running? try --socket)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("admin socket sent something that is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("ward closed the connection without a reply")]
    NoReply,
    #[error("{0}")]
    Refused(String),
}

/// How long `ward ctl reload` waits: a reload starts and stops children.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Sends one request and returns the reply's fields (`ok` was true).
pub fn request(socket: &Path, request: &Request) -> Result<Value, ClientError> {
    request_within(socket, request, TIMEOUT)
}

/// [`request`], waiting up to `timeout` for the reply.
pub fn request_within(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Value, ClientError> {
    let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    // A refused client may find the socket closed before it writes; the
    // refusal is still there to read.
    let written = (&stream).write_all(line.as_bytes());
    let mut reply = String::new();
    if BufReader::new(&stream).read_line(&mut reply)? == 0 {
        written?;
        return Err(ClientError::NoReply);
    }
    let value: Value = serde_json::from_str(&reply)?;
    if value.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(value)
    } else {
        let error = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        Err(ClientError::Refused(error.to_string()))
    }
}

/// The socket `ward ctl` talks to: the configured one, or, when that does
/// not exist and the service runs as root, `/run/ward/admin.sock`.
pub fn resolve_socket(configured: PathBuf, explicit: bool) -> PathBuf {
    let system = PathBuf::from("/run/ward/admin.sock");
    if explicit || configured.exists() || !system.exists() {
        configured
    } else {
        system
    }
}

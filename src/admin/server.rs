//! The admin server (kind `admin`): a task child whose task is the accept
//! loop of the admin socket.
//!
//! Each client connection is served by a task of the accept loop, so
//! nothing waits on a client. Clients past `max_clients` get an error line
//! and are closed. The listening socket and its file are held across the
//! actor's restarts (killing it, which a client may ask for, loses no
//! connection attempt); they are released when ward stops.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorCell;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use ward_actors::net::{accept_each, Connections, Held, Lease};
use ward_actors::warn_throttled;
use ward_supervision::{ChildFailure, ChildSpec, Restart};

use super::operations::{self as ops, error_reply};
use super::protocol::{Request, VERSION};
use super::socket_file::{self, SocketFile};
use crate::context::ServiceContext;

/// The longest request line accepted.
const MAX_LINE: usize = 64 * 1024;
/// A client idle this long is disconnected.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A client that takes longer than this to accept a reply is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin socket and its file, held across the server's restarts.
pub type AdminSocket = (UnixListener, SocketFile);

/// Where and how the admin socket is served.
#[derive(Clone)]
pub struct AdminArgs {
    pub socket: PathBuf,
    pub gid: Option<u32>,
    pub max_clients: usize,
    pub ctx: Arc<ServiceContext>,
}

/// The admin server's child spec.
pub fn child_spec(args: AdminArgs, held: Held<AdminSocket>) -> ChildSpec {
    ChildSpec::task("admin", "admin", Restart::Permanent, move |_| {
        let (args, held) = (args.clone(), held.clone());
        async move {
            let lease = held
                .lease(|| socket_file::bind(&args.socket, args.gid))
                .await
                .map_err(ChildFailure::of)?;
            tracing::info!(socket = %args.socket.display(), "admin socket ready");
            Ok(async move { held.guard(accept(lease, args)).await })
        }
    })
}

async fn accept(socket: Lease<AdminSocket>, args: AdminArgs) -> Result<(), ChildFailure> {
    let mut clients = Connections::new(args.max_clients);
    let dead = accept_each(&socket.0, "admin socket", |stream, _| {
        if !clients.has_room() {
            return refuse(stream);
        }
        let ctx = args.ctx.clone();
        clients.serve(async move { serve_client(stream, &ctx).await });
    })
    .await;
    Err(dead.into())
}

fn refuse(stream: UnixStream) {
    warn_throttled!(
        "admin clients",
        "admin socket: too many clients; refusing one"
    );
    let line = format!("{}\n", error_reply("too many admin clients; try again"));
    // Best effort: a fresh socket has room for one short line.
    let _ = stream.try_write(line.as_bytes());
}

async fn serve_client(stream: UnixStream, ctx: &ServiceContext) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        // `take` on the buffered reader itself, so bytes after the newline
        // stay buffered for the next request.
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        let read = tokio::time::timeout(IDLE_TIMEOUT, limited.read_until(b'\n', &mut line));
        match read.await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        if line.len() > MAX_LINE && line.last() != Some(&b'\n') {
            let reply = error_reply(&format!("request longer than {MAX_LINE} bytes"));
            let _ = tokio::time::timeout(
                WRITE_TIMEOUT,
                write.write_all(format!("{reply}\n").as_bytes()),
            )
            .await;
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let (reply, to_kill) = if is_reload(text) {
            (ops::reload(ctx).await, None)
        } else {
            handle_request(text, ctx)
        };
        // A client that does not read its replies gives its slot back.
        let sent = tokio::time::timeout(
            WRITE_TIMEOUT,
            write.write_all(format!("{reply}\n").as_bytes()),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        if let Some(cell) = to_kill {
            cell.kill();
        }
    }
}

/// A reload waits for children to start and stop: it is served here, not
/// in [`handle_request`].
fn is_reload(line: &str) -> bool {
    matches!(serde_json::from_str(line), Ok(Request::Reload))
}

/// The reply to one request line, and an actor to kill once it is sent.
pub fn handle_request(line: &str, ctx: &ServiceContext) -> (Value, Option<ActorCell>) {
    let request: Request = match serde_json::from_str(line) {
        Ok(request) => request,
        Err(e) => return (error_reply(&format!("bad request: {e}")), None),
    };
    match request {
        Request::Tree => (ops::tree(ctx), None),
        Request::Kill { path } => ops::kill(&path, ctx),
        Request::Stats => (ops::stats(ctx), None),
        Request::Version => (json!({"ok": true, "version": VERSION}), None),
        Request::CacheFlush => (ops::cache_flush(ctx), None),
        Request::Dialers => (ops::dialers(ctx), None),
        Request::Probe { name } => (ops::probe(&name, ctx), None),
        Request::Reload => (error_reply("reload is served by the connection loop"), None),
    }
}

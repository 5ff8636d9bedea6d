//! A TCP or TLS connection to an upstream, as a task child of the upstream
//! (kind `dns-upstream-conn`). It carries many queries at once: the upstream
//! files each under a random id in the connection's pending map and pushes
//! its frame into the connection's bounded outgoing queue; the writer task
//! sends frames, the reader task completes queries as answers arrive, in any
//! order.
//!
//! Queries never wait in the actor's mailbox, where they would die with it:
//! a query is either pending (and sent again once on a fresh connection when
//! this one dies, even killed) or refused at once because the queue is
//! closed. The connection ends when the server closes it, an I/O error
//! breaks it (a [`ConnError`], classified where it was seen), or it idles
//! (a normal end).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorCell, ActorRef, SpawnErr};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use ward_supervision::{ChildFailure, Classify, TaskChild, TaskScope};

use super::actor::UpstreamMsg;
use super::pending::Pending;
use crate::dialer::{Dialer, Failure, Track};
use crate::io_class::{classify_io_error, IoClass, IoSide};

/// How long connecting (and the TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames queued for the writer at most; past it queries fail at once.
const QUEUE: usize = 512;

/// Where a stream connection goes.
#[derive(Clone)]
pub enum StreamTarget {
    Tcp(SocketAddr),
    Tls {
        addr: SocketAddr,
        name: ServerName<'static>,
        config: Arc<ClientConfig>,
    },
}

impl StreamTarget {
    pub fn addr(&self) -> SocketAddr {
        match self {
            StreamTarget::Tcp(addr) | StreamTarget::Tls { addr, .. } => *addr,
        }
    }
}

/// A query's bytes on its way out: `key` files it in the pending map.
pub struct Outgoing {
    pub key: u16,
    pub wire: Vec<u8>,
    /// After this nobody waits for the answer.
    pub deadline: std::time::Instant,
}

/// How often a connection fails queries past their deadline.
pub const SWEEP: Duration = Duration::from_millis(250);

/// The outgoing queue of a connection: the upstream keeps the sender.
pub fn outgoing_queue() -> (mpsc::Sender<Outgoing>, mpsc::Receiver<Outgoing>) {
    mpsc::channel(QUEUE)
}

/// What a connection (TCP, TLS or HTTPS) is started with.
pub struct ConnArgs {
    pub target: StreamTarget,
    /// The path it goes through, chosen by the upstream.
    pub dialer: Arc<Dialer>,
    pub pending: Arc<Pending>,
    pub outgoing: mpsc::Receiver<Outgoing>,
    pub owner: ActorRef<UpstreamMsg>,
    pub conn_id: u64,
    pub idle: Duration,
}

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connect failed: {reason}")]
    ConnectFailed { class: IoClass, reason: String },
    /// The server closed it, or I/O broke it.
    #[error("connection broken: {reason}")]
    Broken { class: IoClass, reason: String },
}

impl Classify for ConnError {
    fn class(&self) -> &'static str {
        match self {
            ConnError::ConnectFailed { class, .. } | ConnError::Broken { class, .. } => {
                class.label()
            }
        }
    }
}

impl ConnError {
    /// Tells the dialer of a broken connection; the connection's failure.
    pub fn reported(self, dialer: &Dialer, pending: &Pending) -> ChildFailure {
        if let ConnError::Broken { class, reason } = &self {
            report_broken(dialer, pending, *class, reason);
        }
        ChildFailure::of(self)
    }
}

/// Spawns a TCP or TLS connection, linked to its upstream, its task in
/// the upstream incarnation's scope.
pub async fn spawn(
    args: ConnArgs,
    upstream: ActorCell,
    tasks: TaskScope,
) -> Result<(ActorCell, JoinHandle<()>), SpawnErr> {
    let (actor, join) =
        TaskChild::spawn_linked(async move { Ok(run(args)) }, upstream, tasks).await?;
    Ok((actor.get_cell(), join))
}

/// Tells the dialer a TLS handshake over it failed: the server's doing as
/// far as anyone can tell, but a node that resets tunnels right after
/// CONNECT looks the same, so the dialer re-probes.
pub fn report_tls_failure(dialer: &Dialer, class: IoClass, reason: &str) {
    let failure = Failure::session(class, reason.to_string(), dialer.hop(), false);
    dialer.report_failure(Track::Tcp, &failure);
}

/// Tells the dialer a connection broke; with queries in flight through a
/// node, that is the node's failure.
fn report_broken(dialer: &Dialer, pending: &Pending, class: IoClass, reason: &str) {
    let failure = Failure::session(class, reason.to_string(), dialer.hop(), !pending.is_empty());
    dialer.report_failure(Track::Tcp, &failure);
}

/// A DNS message with its two-byte length prefix (RFC 1035 4.2.2).
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 2);
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    out
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Connects through the dialer (which hears how that went), then runs the
/// TLS handshake when there is one.
async fn connect(target: &StreamTarget, dialer: &Dialer) -> Result<Box<dyn Stream>, ConnError> {
    let tcp = dialer
        .connect_tcp(target.addr(), CONNECT_TIMEOUT)
        .await
        .map_err(|failure| ConnError::ConnectFailed {
            class: failure.class,
            reason: failure.to_string(),
        })?;
    match target {
        StreamTarget::Tcp(_) => Ok(Box::new(tcp)),
        StreamTarget::Tls { name, config, .. } => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let handshake = connector.connect(name.clone(), tcp);
            let (class, reason) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => return Ok(Box::new(tls)),
                Ok(Err(e)) => (
                    classify_io_error(&e, IoSide::Dial),
                    format!("TLS handshake: {e}"),
                ),
                Err(_) => (IoClass::PathFailed, "TLS handshake timed out".to_string()),
            };
            report_tls_failure(dialer, class, &reason);
            Err(ConnError::ConnectFailed { class, reason })
        }
    }
}

/// The connection, until it idles (`Ok`) or breaks.
async fn run(args: ConnArgs) -> Result<(), ChildFailure> {
    let ConnArgs {
        target,
        dialer,
        pending,
        outgoing,
        owner,
        conn_id,
        idle,
    } = args;
    let stream = connect(&target, &dialer)
        .await
        .map_err(|e| e.reported(&dialer, &pending))?;
    let _ = owner.send_message(UpstreamMsg::ConnReady(conn_id));
    let (reader, writer) = tokio::io::split(stream);
    let ended = tokio::select! {
        broken = read_answers(reader, &pending) => Err(broken),
        ended = write_queries(writer, outgoing, &pending, idle) => ended,
    };
    ended.map_err(|e| e.reported(&dialer, &pending))
}

/// Writes queued queries until the queue closes or the connection idles
/// (`Ok`), or a write fails; fails queries past their deadline meanwhile.
async fn write_queries(
    mut writer: impl AsyncWrite + Unpin,
    mut queue: mpsc::Receiver<Outgoing>,
    pending: &Pending,
    idle: Duration,
) -> Result<(), ConnError> {
    let mut sweep = tokio::time::interval(SWEEP);
    let mut last_used = std::time::Instant::now();
    loop {
        tokio::select! {
            frame = queue.recv() => {
                let Some(frame) = frame else { return Ok(()) };
                last_used = std::time::Instant::now();
                // Flushed: a stream wrapped by a node's protocol may hold
                // what the socket did not take at once.
                let written = async {
                    writer.write_all(&frame.wire).await?;
                    writer.flush().await
                };
                if let Err(e) = written.await {
                    let class = classify_io_error(&e, IoSide::Session);
                    return Err(ConnError::Broken { class, reason: e.to_string() });
                }
            }
            _ = sweep.tick() => {
                // A server that never answers a query must not keep it (and
                // the connection) forever.
                let now = std::time::Instant::now();
                pending.expire(now);
                if pending.is_empty() && now.duration_since(last_used) >= idle {
                    let _ = writer.shutdown().await;
                    return Ok(());
                }
            }
        }
    }
}

/// Completes queries as their answers arrive, until the connection breaks.
async fn read_answers(mut reader: impl AsyncRead + Unpin, pending: &Pending) -> ConnError {
    let mut buf = vec![0u8; 65_535];
    loop {
        let mut len = [0u8; 2];
        if let Err(e) = reader.read_exact(&mut len).await {
            return broken(e, "closed by the server");
        }
        let len = u16::from_be_bytes(len) as usize;
        if let Err(e) = reader.read_exact(&mut buf[..len]).await {
            return broken(e, "closed mid-answer");
        }
        pending.complete(&buf[..len]);
    }
}

/// A broken connection's error: EOF is the server going away.
fn broken(e: io::Error, eof: &str) -> ConnError {
    let (class, reason) = if e.kind() == io::ErrorKind::UnexpectedEof {
        (IoClass::PeerGone, eof.to_string())
    } else {
        (classify_io_error(&e, IoSide::Session), e.to_string())
    };
    ConnError::Broken { class, reason }
}

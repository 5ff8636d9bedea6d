//! A TCP or TLS connection to an upstream, as a child actor of the upstream
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
//! breaks it, or it idles.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use ward_supervision::TaskGuard;

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

pub struct StreamConn;

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

pub struct StreamConnArgs {
    pub target: StreamTarget,
    /// The path it goes through, chosen by the upstream.
    pub dialer: Arc<Dialer>,
    pub pending: Arc<Pending>,
    pub outgoing: mpsc::Receiver<Outgoing>,
    pub owner: ActorRef<UpstreamMsg>,
    pub conn_id: u64,
    pub idle: Duration,
}

pub enum StreamConnMsg {
    /// From the connection's tasks: why it is over.
    Ended(End),
}

/// Why a connection is over.
#[derive(Debug)]
pub enum End {
    /// No query for the idle time: a normal exit.
    Idle,
    /// Connecting failed.
    ConnectFailed(IoClass, String),
    /// The server closed it, or I/O broke it.
    Broken(IoClass, String),
}

pub struct StreamConnState {
    _io: TaskGuard,
    dialer: Arc<Dialer>,
    pending: Arc<Pending>,
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
pub fn report_broken(dialer: &Dialer, pending: &Pending, class: IoClass, reason: &str) {
    let failure = Failure::session(class, reason.to_string(), dialer.hop(), !pending.is_empty());
    dialer.report_failure(Track::Tcp, &failure);
}

impl Actor for StreamConn {
    type Msg = StreamConnMsg;
    type State = StreamConnState;
    type Arguments = StreamConnArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StreamConnMsg>,
        args: StreamConnArgs,
    ) -> Result<StreamConnState, ActorProcessingErr> {
        let io = TaskGuard::spawn(run(
            args.target,
            args.dialer.clone(),
            args.outgoing,
            args.pending.clone(),
            myself,
            args.owner,
            args.conn_id,
            args.idle,
        ));
        Ok(StreamConnState {
            _io: io,
            dialer: args.dialer,
            pending: args.pending,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<StreamConnMsg>,
        message: StreamConnMsg,
        state: &mut StreamConnState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            StreamConnMsg::Ended(End::Idle) => myself.stop(Some("idle".to_string())),
            StreamConnMsg::Ended(End::ConnectFailed(class, reason)) => {
                return Err(format!("connect failed ({}): {reason}", class.label()).into())
            }
            StreamConnMsg::Ended(End::Broken(class, reason)) => {
                report_broken(&state.dialer, &state.pending, class, &reason);
                return Err(format!("connection broken ({}): {reason}", class.label()).into());
            }
        }
        Ok(())
    }
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
async fn connect(target: &StreamTarget, dialer: &Dialer) -> Result<Box<dyn Stream>, End> {
    let tcp = dialer
        .connect_tcp(target.addr(), CONNECT_TIMEOUT)
        .await
        .map_err(|failure| End::ConnectFailed(failure.class, failure.to_string()))?;
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
            Err(End::ConnectFailed(class, reason))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    target: StreamTarget,
    dialer: Arc<Dialer>,
    mut queue: mpsc::Receiver<Outgoing>,
    pending: Arc<Pending>,
    conn: ActorRef<StreamConnMsg>,
    owner: ActorRef<UpstreamMsg>,
    conn_id: u64,
    idle: Duration,
) {
    let stream = match connect(&target, &dialer).await {
        Ok(stream) => stream,
        Err(end) => {
            let _ = conn.send_message(StreamConnMsg::Ended(end));
            return;
        }
    };
    let _ = owner.send_message(UpstreamMsg::ConnReady(conn_id));
    let (reader, mut writer) = tokio::io::split(stream);
    let _reader = TaskGuard::spawn(read_answers(reader, pending.clone(), conn.clone()));
    let mut sweep = tokio::time::interval(SWEEP);
    let mut last_used = std::time::Instant::now();
    loop {
        tokio::select! {
            frame = queue.recv() => {
                let Some(frame) = frame else { return };
                last_used = std::time::Instant::now();
                if let Err(e) = writer.write_all(&frame.wire).await {
                    let class = classify_io_error(&e, IoSide::Session);
                    let _ = conn.send_message(StreamConnMsg::Ended(End::Broken(class, e.to_string())));
                    return;
                }
            }
            _ = sweep.tick() => {
                // A server that never answers a query must not keep it (and
                // the connection) forever.
                let now = std::time::Instant::now();
                pending.expire(now);
                if pending.is_empty() && now.duration_since(last_used) >= idle {
                    let _ = writer.shutdown().await;
                    let _ = conn.send_message(StreamConnMsg::Ended(End::Idle));
                    return;
                }
            }
        }
    }
}

async fn read_answers(
    mut reader: impl AsyncRead + Unpin,
    pending: Arc<Pending>,
    conn: ActorRef<StreamConnMsg>,
) {
    let mut buf = vec![0u8; 65_535];
    let end = loop {
        let mut len = [0u8; 2];
        if let Err(e) = reader.read_exact(&mut len).await {
            break broken(e, "closed by the server");
        }
        let len = u16::from_be_bytes(len) as usize;
        if let Err(e) = reader.read_exact(&mut buf[..len]).await {
            break broken(e, "closed mid-answer");
        }
        pending.complete(&buf[..len]);
    };
    let _ = conn.send_message(StreamConnMsg::Ended(end));
}

fn broken(e: io::Error, eof: &str) -> End {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        End::Broken(IoClass::PeerGone, eof.to_string())
    } else {
        End::Broken(classify_io_error(&e, IoSide::Session), e.to_string())
    }
}

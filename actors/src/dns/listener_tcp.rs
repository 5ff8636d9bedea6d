//! A TCP DNS listener (kind `dns-listener-tcp`): a task child whose task
//! is the accept loop; each connection is a task of its own. Queries on one
//! connection are pipelined: each is answered as soon as its answer is
//! ready, in whatever order. A client that half-closes still gets the
//! answers it is owed; then ward closes its side.
//!
//! The listening socket is held across the actor's restarts, and the
//! connections (in [`TcpClients`], capped per client address and in total)
//! outlive it: a killed listener loses no accepted connection. A client
//! idle too long is disconnected, and so is one that does not send a whole
//! query in time (slowloris), so neither keeps its place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use ward_supervision::{ChildFailure, ChildSpec, Restart};

use super::metrics::{Dropped, Transport};
use super::resolver::{Decision, Resolver};
use super::tcp_clients::{ClientSlot, TcpClients};
use super::upstream::conn::frame;
use crate::io_class::{IoSide, SocketFailure};
use crate::net::socket::bind_tcp;
use crate::net::{accept_paced, Held, Lease};

/// Answers queued per connection before its reader waits.
const ANSWER_QUEUE: usize = 64;
/// A client that takes longer than this to accept an answer is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The size of a DNS header: no query is shorter.
const HEADER: usize = 12;

/// The child for DNS over TCP on the configured `addr`, bound to `bind`
/// (the same, or with the port chosen at start for port 0). `held` keeps
/// its listening socket across restarts; `clients` its connections.
pub fn child_spec(
    addr: SocketAddr,
    bind: SocketAddr,
    resolver: Arc<Resolver>,
    held: Held<TcpListener>,
    clients: Arc<TcpClients>,
) -> ChildSpec {
    ChildSpec::task(
        format!("tcp:{addr}"),
        "dns-listener-tcp",
        Restart::Permanent,
        move |_| {
            let (held, resolver, clients) = (held.clone(), resolver.clone(), clients.clone());
            async move {
                let lease = held.lease(|| bind_tcp(bind)).await.map_err(|e| {
                    SocketFailure::new(format!("bind tcp {bind}"), IoSide::Listener, e)
                })?;
                let bound = lease.local_addr().unwrap_or(addr);
                tracing::info!(%addr, %bound, "DNS listening on TCP");
                Ok(async move { held.guard(accept(lease, bound, resolver, clients)).await })
            }
        },
    )
}

async fn accept(
    listener: Lease<TcpListener>,
    bound: SocketAddr,
    resolver: Arc<Resolver>,
    clients: Arc<TcpClients>,
) -> Result<(), ChildFailure> {
    let what = format!("dns tcp {bound}");
    let dead = accept_paced(
        &*listener,
        &what,
        || clients.room(),
        |stream, peer| {
            let Ok(slot) = clients.admit(peer.ip(), std::time::Instant::now()) else {
                return; // counted; closing the stream refuses it
            };
            let slot = Arc::new(slot);
            // Not a task of the listener's: it outlives the listener's actor.
            let task = tokio::spawn(serve(stream, peer, resolver.clone(), slot.clone()));
            slot.serve_with(task.abort_handle());
        },
    )
    .await;
    Err(dead.into())
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    resolver: Arc<Resolver>,
    slot: Arc<ClientSlot>,
) {
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = stream.into_split();
    let (answers, mut queue) = mpsc::channel::<Vec<u8>>(ANSWER_QUEUE);
    let written = slot.clone();
    let read = read_queries(reader, peer, resolver, slot, answers);
    let write = async move {
        while let Some(answer) = queue.recv().await {
            // A client that stops reading is dropped; the reader and the
            // tasks answering it then fail fast and give their permits back.
            match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&answer)).await {
                Ok(Ok(())) => written.answered(),
                _ => return,
            }
        }
        // Every sender is gone: the reader stopped and every answer is out.
        let _ = writer.shutdown().await;
    };
    tokio::join!(read, write);
}

/// Reads queries until the client closes, idles, is too slow, or the
/// answers cannot be queued; each is answered through `answers`.
async fn read_queries(
    mut reader: OwnedReadHalf,
    peer: SocketAddr,
    resolver: Arc<Resolver>,
    slot: Arc<ClientSlot>,
    answers: mpsc::Sender<Vec<u8>>,
) {
    let limits = resolver.settings().limits;
    let connected = Instant::now();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut first = true;
    loop {
        // The first query must be whole by `tcp_query` after connecting;
        // later ones by `tcp_query` after their first byte, which may take
        // up to `tcp_idle` to come.
        let (wait, by) = match first {
            true => (limits.tcp_query, Some(connected + limits.tcp_query)),
            false => (limits.tcp_idle, None),
        };
        match read_query(&mut reader, &mut buf, wait, by, limits.tcp_query).await {
            // Shorter than a header: the framing is broken; nothing more
            // this client sends can be read as queries.
            Read::Query if buf.len() < HEADER => {
                resolver.metrics.dropped(Dropped::Short);
                break;
            }
            Read::Query => {}
            Read::Closed => break,
            Read::Slow => {
                resolver.metrics.dropped(Dropped::TcpSlow);
                break;
            }
        }
        first = false;
        match resolver.decide(&buf, peer.ip(), Transport::Tcp, &mut out) {
            Decision::Reply => {
                slot.query();
                if answers.send(frame(&out)).await.is_err() {
                    break;
                }
            }
            Decision::Drop => {}
            Decision::Resolve(pending) => {
                slot.query();
                let answers = answers.clone();
                resolver.spawn_resolve(
                    pending,
                    &buf,
                    peer.ip(),
                    Transport::Tcp,
                    move |answer| async move {
                        let _ = answers.send(frame(&answer)).await;
                    },
                );
            }
        }
    }
}

/// How reading one query went.
enum Read {
    Query,
    /// EOF, an error, or idle: stop reading; owed answers still go out.
    Closed,
    /// The query did not arrive whole in time.
    Slow,
}

/// Reads one length-prefixed query into `buf`: its first byte within
/// `wait`, the rest by `by` (or within `whole` of the first byte).
async fn read_query(
    reader: &mut OwnedReadHalf,
    buf: &mut Vec<u8>,
    wait: Duration,
    by: Option<Instant>,
    whole: Duration,
) -> Read {
    let mut len = [0u8; 2];
    match tokio::time::timeout(wait, reader.read(&mut len[..1])).await {
        Ok(Ok(1)) => {}
        Ok(_) => return Read::Closed,
        Err(_) if by.is_some() => return Read::Slow,
        Err(_) => return Read::Closed,
    }
    let deadline = by.unwrap_or_else(|| Instant::now() + whole);
    let rest = async {
        reader.read_exact(&mut len[1..]).await?;
        buf.resize(u16::from_be_bytes(len) as usize, 0);
        reader.read_exact(buf).await
    };
    match tokio::time::timeout_at(deadline, rest).await {
        Ok(Ok(_)) => Read::Query,
        Ok(Err(_)) => Read::Closed,
        Err(_) => Read::Slow,
    }
}

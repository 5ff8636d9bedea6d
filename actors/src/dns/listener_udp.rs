//! A UDP DNS listener (kind `dns-listener-udp`): a task child whose task is
//! the receive loop. The loop takes queries in batches (`recvmmsg`),
//! answers what can be answered at once and spawns a task per miss; it
//! never waits on upstream work. Answers from those tasks come back through
//! a bounded channel; all answers ready together leave in one `sendmmsg`.
//!
//! The socket and that channel are held across the actor's restarts: a
//! killed listener loses no query (its replacement reads what queued in
//! the kernel meanwhile, and answers in flight leave through the same
//! socket). They are built again only when the socket itself failed
//! (ENOTCONN, EBADF, ECONNABORTED when it is destroyed from outside).
//! Transient errors, ICMP echoes of earlier answers among them, never end
//! the loop.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use ward_supervision::{ChildFailure, ChildSpec, Restart};

use super::metrics::{Dropped, Transport};
use super::resolver::{Decision, Resolver};
use crate::io_class::{classify_io_error, IoClass, IoSide, SocketFailure};
use crate::net::socket::bind_udp;
use crate::net::socket_drops::{SocketDrops, Watched};
use crate::net::udp_batch::{RecvBatch, SendBatch, BATCH};
use crate::net::{Held, Lease};

/// An answer and the client it is for.
type Answer = (SocketAddr, Vec<u8>);

/// What a UDP listener keeps across its actor's restarts.
pub struct UdpListenerHeld {
    socket: Arc<UdpSocket>,
    /// Answers of spawned misses on their way back; outlives a listener
    /// killed while they were in flight.
    answers_tx: mpsc::Sender<Answer>,
    answers: mpsc::Receiver<Answer>,
}

impl UdpListenerHeld {
    /// Binds `addr`, with an answer channel as deep as the queries that may
    /// be in flight at once.
    pub fn bind(addr: SocketAddr, resolver: &Resolver) -> std::io::Result<Self> {
        Ok(Self::with(bind_udp(addr)?, resolver))
    }

    /// Holds a socket bound already.
    pub fn with(socket: UdpSocket, resolver: &Resolver) -> Self {
        let (answers_tx, answers) = mpsc::channel(resolver.settings().limits.in_flight.max(1));
        Self {
            socket: Arc::new(socket),
            answers_tx,
            answers,
        }
    }
}

/// The child for DNS over UDP on the configured `addr`, bound to `bind`
/// (the same, or with the port the kernel chose at start for port 0).
pub fn child_spec(
    addr: SocketAddr,
    bind: SocketAddr,
    resolver: Arc<Resolver>,
    held: Held<UdpListenerHeld>,
) -> ChildSpec {
    ChildSpec::task(
        format!("udp:{addr}"),
        "dns-listener-udp",
        Restart::Permanent,
        move |start| {
            let (held, resolver) = (held.clone(), resolver.clone());
            // Its socket's drops are counted under its path.
            let path = start.path.clone();
            async move {
                let lease = held
                    .lease(|| UdpListenerHeld::bind(bind, &resolver))
                    .await
                    .map_err(|e| {
                        SocketFailure::new(format!("bind udp {bind}"), IoSide::Listener, e)
                    })?;
                let watched: Watched = lease.socket.clone();
                SocketDrops::global().watch(&path, &watched);
                // The UDP relay answers DNS captured for this address
                // through this very socket, never binding it a second time.
                resolver.register_udp(addr, &lease.socket);
                let bound = lease.socket.local_addr().unwrap_or(addr);
                tracing::info!(%addr, %bound, "DNS listening on UDP");
                Ok(async move { held.guard(serve(lease, resolver)).await })
            }
        },
    )
}

async fn serve(
    mut held: Lease<UdpListenerHeld>,
    resolver: Arc<Resolver>,
) -> Result<(), ChildFailure> {
    let dead = |what: &str, e: std::io::Error| -> ChildFailure {
        SocketFailure::classed(what, IoClass::SocketDead, e).into()
    };
    // A socket destroyed from outside reports only an error: wait for that too.
    let interest = Interest::READABLE | Interest::ERROR;
    // SAFETY: the AsyncFd owns a handle on the held socket, whose fd stays
    // open and the same until the AsyncFd is dropped.
    let socket = unsafe { AsyncFd::register_with_interest(held.socket.clone(), interest) }
        .map_err(|e| dead("register", e.into()))?;
    let fd = socket.get_ref().as_raw_fd();
    let held = &mut *held;
    let mut queries = RecvBatch::new();
    let mut out = SendBatch::default();
    let mut reply = Vec::with_capacity(1232);
    loop {
        tokio::select! {
            biased;
            Some((client, answer)) = held.answers.recv() => {
                out.push(client, &answer);
                while let Ok((client, answer)) = held.answers.try_recv() {
                    out.push(client, &answer);
                }
            }
            ready = socket.ready(interest) => {
                let mut ready = ready.map_err(|e| dead("wait", e))?;
                match queries.recv(fd) {
                    Ok(n) => {
                        // A short batch emptied the queue: wait for the next wake-up.
                        if n < BATCH {
                            ready.clear_ready();
                        }
                        for i in 0..n {
                            if let Some((packet, client)) = queries.get(i) {
                                handle(packet, client, &resolver, &held.answers_tx, &mut reply, &mut out);
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => ready.clear_ready(),
                    Err(e) => match classify_io_error(&e, IoSide::Listener) {
                        IoClass::Transient | IoClass::Normal => {}
                        class => return Err(SocketFailure::classed("receive", class, e).into()),
                    },
                }
            }
        }
        if !out.is_empty() {
            for _ in 0..out.flush(fd) {
                resolver.metrics.dropped(Dropped::SendFailed);
            }
        }
    }
}

/// One query: answered into `out`, or handed to a task whose answer comes
/// back through `answers`.
fn handle(
    packet: &[u8],
    client: SocketAddr,
    resolver: &Arc<Resolver>,
    answers: &mpsc::Sender<Answer>,
    reply: &mut Vec<u8>,
    out: &mut SendBatch,
) {
    match resolver.decide(packet, client.ip(), Transport::Udp, reply) {
        Decision::Reply => out.push(client, reply),
        Decision::Drop => {}
        Decision::Resolve(pending) => {
            let answers = answers.clone();
            resolver.spawn_resolve(
                pending,
                packet,
                client.ip(),
                Transport::Udp,
                move |answer| async move {
                    let _ = answers.send((client, answer)).await;
                },
            );
        }
    }
}

//! Inbounds (kind `udp-inbound`, children of `udp/inbounds`): sockets
//! where clients' datagrams enter. Each is a task child whose task is its
//! receive loop, which owns the inbound's flow table ([`Flows`]).
//!
//! The socket and the flows are held across the actor's restarts: a
//! killed inbound loses no flow and no datagram that reached it (its
//! replacement reads what queued in the kernel meanwhile, endpoints keep
//! their sessions, answers in flight leave through the same socket). They
//! are built again only when the socket itself failed.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use ward_supervision::{ChildFailure, ChildSpec, Restart};

use super::endpoint::Reply;
use super::flows::Flows;
use super::reply_pool::ReplyPool;
use super::settings::InboundSpec;
use super::socks5_inbound::{self, Socks5Held};
use super::tproxy;
use super::{Event, Relay};
use crate::dialer::socks5::{self, TargetAddr};
use crate::io_class::{classify_io_error, IoClass, IoSide, SocketFailure};
use crate::net::socket::bind_udp;
use crate::net::socket_drops::{SocketDrops, Watched};
use crate::net::udp_batch::{Datagrams, RecvBatch, BATCH};
use crate::net::{Held, Lease};

/// Batches read per wake-up before endpoint events get their turn.
const BATCHES_PER_TURN: usize = 8;
/// The largest UDP payload (IPv4: 65,535 minus the IP and UDP headers).
const MAX_DATAGRAM: usize = 65_507;

/// What an inbound keeps across its actor's restarts.
pub enum InboundHeld {
    Forward {
        socket: Arc<UdpSocket>,
        to: SocketAddr,
        flows: Flows,
        events: mpsc::Receiver<Event>,
    },
    Tproxy {
        socket: Arc<UdpSocket>,
        flows: Flows,
        events: mpsc::Receiver<Event>,
    },
    Socks5(Socks5Held),
}

impl InboundHeld {
    /// Binds the inbound's socket(s) and makes its flow table.
    pub fn bind(spec: &InboundSpec, relay: &Arc<Relay>) -> io::Result<InboundHeld> {
        Ok(match spec {
            InboundSpec::Forward { listen, to } => {
                let socket = bind(*listen)?;
                let (flows, events) =
                    Flows::new(relay.clone(), SocketReply::new(&socket, false), "forward");
                InboundHeld::Forward {
                    socket,
                    to: *to,
                    flows,
                    events,
                }
            }
            InboundSpec::Tproxy { listen } => {
                let socket = tproxy::bind_listener(*listen)?;
                let pool = ReplyPool::new(relay.settings().reply_sockets, relay.metrics.clone());
                let reply = Arc::new(tproxy::TproxyReply {
                    pool: Arc::new(pool),
                    inbound: Arc::downgrade(&socket),
                    gso: AtomicBool::new(true),
                });
                let (flows, events) = Flows::new(relay.clone(), reply, "tproxy");
                InboundHeld::Tproxy {
                    socket,
                    flows,
                    events,
                }
            }
            InboundSpec::Socks5 {
                listen,
                credentials,
            } => InboundHeld::Socks5(Socks5Held::bind(*listen, credentials.clone(), relay)?),
        })
    }

    /// The UDP socket datagrams enter by.
    pub fn socket(&self) -> &Arc<UdpSocket> {
        match self {
            InboundHeld::Forward { socket, .. } | InboundHeld::Tproxy { socket, .. } => socket,
            InboundHeld::Socks5(held) => &held.socket,
        }
    }
}

/// The child of one inbound, bound to `spec`'s address (with the port the
/// kernel chose at start, for port 0) and named `name`.
pub fn child_spec(
    name: String,
    spec: InboundSpec,
    relay: Arc<Relay>,
    held: Held<InboundHeld>,
) -> ChildSpec {
    let configured = name.clone();
    ChildSpec::task(name, "udp-inbound", Restart::Permanent, move |start| {
        let (spec, relay, held) = (spec.clone(), relay.clone(), held.clone());
        let name = configured.clone();
        // Its socket's drops are counted under its path.
        let path = start.path.clone();
        async move {
            let lease = held
                .lease(|| InboundHeld::bind(&spec, &relay))
                .await
                .map_err(|e| {
                    SocketFailure::new(format!("bind {}", spec.name()), IoSide::Listener, e)
                })?;
            let watched: Watched = lease.socket().clone();
            SocketDrops::global().watch(&path, &watched);
            let bound = lease
                .socket()
                .local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            // Named as configured (port 0 stays 0 there), beside the
            // address it bound, as the DNS listeners' lines are.
            tracing::info!(inbound = %name, %bound, "UDP inbound listening");
            Ok(async move { held.guard(run(lease)).await })
        }
    })
}

/// The inbound's loop, until its socket dies.
async fn run(mut held: Lease<InboundHeld>) -> Result<(), ChildFailure> {
    match &mut *held {
        InboundHeld::Forward {
            socket,
            to,
            flows,
            events,
        } => forward(socket, *to, flows, events).await,
        InboundHeld::Tproxy {
            socket,
            flows,
            events,
        } => tproxy::receive_loop(socket, flows, events).await,
        InboundHeld::Socks5(held) => socks5_inbound::run(held).await,
    }
    .map_err(ChildFailure::from)
}

/// A forward inbound's loop: every datagram goes to `to`. Datagrams are
/// taken in batches (`recvmmsg`).
async fn forward(
    socket: &UdpSocket,
    to: SocketAddr,
    flows: &mut Flows,
    events: &mut mpsc::Receiver<Event>,
) -> Result<(), SocketFailure> {
    let fd = socket.as_raw_fd();
    let mut batch = RecvBatch::with_slot(MAX_DATAGRAM);
    loop {
        tokio::select! {
            ready = socket.readable() => {
                ready.map_err(|e| SocketFailure::new("wait", IoSide::Listener, e))?;
                for _ in 0..BATCHES_PER_TURN {
                    match socket.try_io(Interest::READABLE, || batch.recv(fd)) {
                        Ok(n) => {
                            for i in 0..n {
                                if let Some((bytes, client)) = batch.get(i) {
                                    flows.datagram(client, to, bytes);
                                }
                            }
                            flows.flush();
                            if n < BATCH {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => match classify_io_error(&e, IoSide::Listener) {
                            IoClass::SocketDead => {
                                return Err(SocketFailure::classed("receive", IoClass::SocketDead, e))
                            }
                            _ => break,
                        },
                    }
                }
            }
            Some(event) = events.recv() => flows.event(event),
        }
    }
}

/// A UDP socket for an inbound: a large receive buffer for bursts.
pub(crate) fn bind(listen: SocketAddr) -> io::Result<Arc<UdpSocket>> {
    Ok(Arc::new(UdpSocket::from_std(bind_udp(listen)?)?))
}

/// Replies from an inbound's own socket: as they are for a forward
/// inbound, with the SOCKS5 UDP header naming their source for a SOCKS5
/// one. Weak: an endpoint must not keep the socket bound after its inbound
/// died.
pub(crate) struct SocketReply {
    socket: Weak<UdpSocket>,
    socks5: bool,
    /// Runs of answers may still leave as one segmented send.
    gso: AtomicBool,
}

impl SocketReply {
    pub(crate) fn new(socket: &Arc<UdpSocket>, socks5: bool) -> Arc<SocketReply> {
        Arc::new(SocketReply {
            socket: Arc::downgrade(socket),
            socks5,
            gso: AtomicBool::new(true),
        })
    }

    fn socket(&self) -> io::Result<Arc<UdpSocket>> {
        self.socket
            .upgrade()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    fn write(&self, from: SocketAddr, payload: &[u8], out: &mut Vec<u8>) {
        if self.socks5 {
            socks5::encapsulate(&TargetAddr::Ip(from), payload, out);
        } else {
            out.extend_from_slice(payload);
        }
    }
}

impl Reply for SocketReply {
    fn send_many(
        &self,
        client: SocketAddr,
        answers: &[(SocketAddr, &[u8])],
        out: &mut Datagrams,
    ) -> Result<(), (usize, io::Error)> {
        let socket = self.socket().map_err(|e| (0, e))?;
        out.clear();
        for (from, payload) in answers {
            out.push(Some(client), |bytes| self.write(*from, payload, bytes));
        }
        out.send(socket.as_raw_fd(), &self.gso)
    }
}

//! The UDP transport of an upstream: a few connected sockets on random
//! source ports, each with a receive task that matches answers to pending
//! queries by id and question. Connected sockets hear ICMP port-unreachable
//! as ECONNREFUSED, so a dead upstream fails its queries at once instead of
//! after a timeout.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio::net::UdpSocket;
use ward_supervision::{TaskGuard, TaskScope};

use super::actor::UpstreamMsg;
use super::pending::Pending;
use super::{UpstreamError, UpstreamQuery};
use crate::io_class::{classify_io_error, IoClass, IoSide};
use crate::warn_throttled;

/// Sockets per upstream address.
pub const SOCKETS: usize = 4;
/// How often expired queries are failed and forgotten.
const SWEEP: Duration = Duration::from_millis(250);

struct Link {
    socket: Arc<UdpSocket>,
    pending: Arc<Pending>,
    _recv: TaskGuard,
}

/// Connected sockets to one address.
pub struct UdpTransport {
    links: Vec<Link>,
    next: AtomicUsize,
}

impl UdpTransport {
    /// Opens `SOCKETS` sockets connected to `addr`; their receive tasks run
    /// in `scope`. `label` names the upstream in logs.
    pub fn open(
        addr: SocketAddr,
        scope: &TaskScope,
        label: &str,
        owner: &ActorRef<UpstreamMsg>,
    ) -> io::Result<UdpTransport> {
        let bind: SocketAddr = match addr {
            SocketAddr::V4(_) => "0.0.0.0:0".parse().map_err(io::Error::other)?,
            SocketAddr::V6(_) => "[::]:0".parse().map_err(io::Error::other)?,
        };
        let mut links = Vec::with_capacity(SOCKETS);
        for _ in 0..SOCKETS {
            let std_socket = std::net::UdpSocket::bind(bind)?;
            std_socket.connect(addr)?;
            std_socket.set_nonblocking(true)?;
            let socket = Arc::new(UdpSocket::from_std(std_socket)?);
            let pending = Arc::new(Pending::default());
            let recv = scope.spawn(receive(
                socket.clone(),
                pending.clone(),
                label.to_string(),
                owner.clone(),
            ));
            links.push(Link {
                socket,
                pending,
                _recv: recv,
            });
        }
        Ok(UdpTransport {
            links,
            next: AtomicUsize::new(0),
        })
    }

    /// Sends a query without waiting; its answer or failure arrives on its
    /// reply channel.
    pub fn send(&self, query: UpstreamQuery) {
        let link = &self.links[self.next.fetch_add(1, Ordering::Relaxed) % self.links.len()];
        let (id, wire) = match link.pending.insert(query, |id, q| q.wire(id)) {
            Ok(sent) => sent,
            Err(query) => return query.fail(UpstreamError::Unavailable),
        };
        if let Err(e) = link.socket.try_send(&wire) {
            if let Some(query) = link.pending.take(id) {
                let class = classify_io_error(&e, IoSide::Dial);
                query.fail(if class == IoClass::Transient {
                    UpstreamError::Unavailable
                } else {
                    UpstreamError::Io(class)
                });
            }
        }
    }
}

async fn receive(
    socket: Arc<UdpSocket>,
    pending: Arc<Pending>,
    label: String,
    owner: ActorRef<UpstreamMsg>,
) {
    let mut buf = vec![0u8; 65_535];
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            received = socket.recv(&mut buf) => match received {
                Ok(n) => {
                    pending.complete(&buf[..n]);
                }
                Err(e) => match classify_io_error(&e, IoSide::Session) {
                    IoClass::Transient | IoClass::Normal => {}
                    // The socket is gone: the actor starts again with new ones.
                    IoClass::SocketDead => {
                        pending.fail_all(UpstreamError::Io(IoClass::SocketDead));
                        let _ = owner.send_message(UpstreamMsg::TransportFailed(e.to_string()));
                        return;
                    }
                    // ICMP port unreachable and the like: nobody answers
                    // there now; the resolver counts it against the upstream.
                    class => {
                        warn_throttled!(&label, upstream = %label, error = %e, "upstream UDP receive failed");
                        pending.fail_all(UpstreamError::Io(class));
                    }
                },
            },
            _ = sweep.tick() => pending.expire(Instant::now()),
        }
    }
}

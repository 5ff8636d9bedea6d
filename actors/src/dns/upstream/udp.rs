//! The UDP transport of an upstream. Direct, every query gets its own
//! socket, connected on a fresh random source port (as unbound and dnsmasq
//! do): an off-path attacker must guess the port as well as the id
//! (RFC 5452), and no port lives long enough to be found by a side channel.
//! Each such query is one short task of the upstream's incarnation that
//! waits for the answer, under the query's deadline, and closes the socket.
//! Through a SOCKS5 node, a few UDP associations carry the queries (the
//! node picks the ports the upstream sees), each with a receive task that
//! matches answers to pending queries by id and question. Connected
//! sockets hear ICMP port-unreachable as ECONNREFUSED, so a dead upstream
//! fails its queries at once instead of after a timeout; an association
//! whose control connection closes ends at once.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio::net::{TcpStream, UdpSocket};
use ward_supervision::{TaskGuard, TaskScope};

use super::actor::UpstreamMsg;
use super::conn::CONNECT_TIMEOUT;
use super::failure::UpstreamFailure;
use super::pending::Pending;
use super::{UpstreamError, UpstreamQuery};
use crate::dialer::{socks5, Dialer, Failure, Stage, Track, UdpSession, Via};
use crate::dns::wire;
use crate::io_class::{classify_io_error, IoClass, IoSide, SocketFailure};
use crate::net::ready::readable_or_error;
use crate::warn_throttled;

/// Associations per upstream address through a node.
pub const SOCKETS: usize = 4;
/// How often expired queries are failed and forgotten.
const SWEEP: Duration = Duration::from_millis(250);

struct Link {
    session: Arc<UdpSession>,
    pending: Arc<Pending>,
    _recv: TaskGuard,
    /// Keeps a SOCKS5 association open and ends the upstream when the node
    /// closes it.
    _control: Option<TaskGuard>,
}

/// How queries reach the address.
enum Carrier {
    /// A socket per query (direct); its task runs in `scope`.
    PerQuery {
        addr: SocketAddr,
        scope: TaskScope,
        label: Arc<str>,
    },
    /// Long-lived associations through a node, taken in turn.
    Links { links: Vec<Link>, next: AtomicUsize },
}

/// Queries to one address, through one dialer.
pub struct UdpTransport {
    carrier: Carrier,
    dialer: Arc<Dialer>,
    via: Via,
    owner: ActorRef<UpstreamMsg>,
    /// The owner was told the dialer is down (once).
    moving: AtomicBool,
}

impl UdpTransport {
    /// Reaches `addr` through a dialer `via` selects: direct, nothing to
    /// open; through a node, `SOCKETS` associations. Tasks run in `scope`.
    /// `label` names the upstream in logs.
    pub async fn open(
        addr: SocketAddr,
        via: &Via,
        scope: &TaskScope,
        label: &str,
        owner: &ActorRef<UpstreamMsg>,
    ) -> Result<UdpTransport, UpstreamFailure> {
        let dialer = via
            .select(Track::Udp, &[])
            .ok_or_else(|| UpstreamFailure::NoDialer {
                via: via.name().to_string(),
            })?;
        let carrier = if dialer.is_direct() {
            Carrier::PerQuery {
                addr,
                scope: scope.clone(),
                label: label.into(),
            }
        } else {
            let mut links = Vec::with_capacity(SOCKETS);
            for _ in 0..SOCKETS {
                links.push(Link::open(addr, &dialer, scope, label, owner).await?);
            }
            Carrier::Links {
                links,
                next: AtomicUsize::new(0),
            }
        };
        Ok(UdpTransport {
            carrier,
            dialer,
            via: via.clone(),
            owner: owner.clone(),
            moving: AtomicBool::new(false),
        })
    }

    /// The queries waiting for an answer on associations, taken out (to be
    /// sent again on the transport that replaces this one). A query on its
    /// own socket stays there until answered or expired.
    pub fn take_pending(&self) -> Vec<UpstreamQuery> {
        match &self.carrier {
            Carrier::PerQuery { .. } => Vec::new(),
            Carrier::Links { links, .. } => links
                .iter()
                .flat_map(|link| link.pending.take_all())
                .collect(),
        }
    }

    /// Sends a query without waiting; its answer or failure arrives on its
    /// reply channel.
    pub fn send(&self, query: UpstreamQuery) {
        // Its dialer went down (probes or other traffic said so) while
        // another member of its group is up: the owner moves the sessions.
        if !self.dialer.health(Track::Udp).is_up()
            && self.via.has_other_up(Track::Udp, &self.dialer.name)
            && !self.moving.swap(true, Ordering::Relaxed)
        {
            let _ = self.owner.send_message(UpstreamMsg::DialerDown);
        }
        match &self.carrier {
            Carrier::PerQuery { addr, scope, label } => {
                let Some(opened) = self.dialer.query_socket(*addr) else {
                    return query.fail(UpstreamError::Unavailable);
                };
                let id = rand::random::<u16>();
                // Straight to the system call: a socket just registered
                // has no readiness yet, so tokio's `try_send` would not try.
                let sent = opened.and_then(|socket| {
                    socket2::SockRef::from(&socket).send(&query.wire(id))?;
                    Ok(socket)
                });
                match sent {
                    Ok(socket) => scope.spawn_detached(await_answer(
                        socket,
                        id,
                        query,
                        self.dialer.clone(),
                        label.clone(),
                    )),
                    Err(e) => query.fail(send_error(&e)),
                }
            }
            Carrier::Links { links, next } => {
                let link = &links[next.fetch_add(1, Ordering::Relaxed) % links.len()];
                let (id, wire) = match link.pending.insert(query, |id, q| q.wire(id)) {
                    Ok(sent) => sent,
                    Err(query) => return query.fail(UpstreamError::Unavailable),
                };
                if let Err(e) = link.session.try_send(&wire) {
                    if let Some(query) = link.pending.take(id) {
                        query.fail(send_error(&e));
                    }
                }
            }
        }
    }
}

/// Why a query could not be sent: out of descriptors or buffer space is
/// nobody's fault (the chain moves on); anything else is the socket's.
fn send_error(e: &io::Error) -> UpstreamError {
    match classify_io_error(e, IoSide::Dial) {
        IoClass::Transient => UpstreamError::Unavailable,
        class => UpstreamError::Io(class),
    }
}

thread_local! {
    /// Where answers on per-query sockets are read, before the one that
    /// matches is copied out: a waiting query holds no buffer.
    static ANSWER: RefCell<Vec<u8>> = RefCell::new(vec![0; 65_535]);
}

/// One query's socket: the first datagram with its id and question is its
/// answer; anything else (late, spoofed) is skipped. Ends by the deadline,
/// and the socket closes with it.
async fn await_answer(
    socket: UdpSocket,
    id: u16,
    query: UpstreamQuery,
    dialer: Arc<Dialer>,
    label: Arc<str>,
) {
    let deadline = tokio::time::Instant::from_std(query.deadline);
    loop {
        let read = match tokio::time::timeout_at(deadline, readable_or_error(&socket)).await {
            Err(_) => return query.fail(UpstreamError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => ANSWER.with_borrow_mut(|buf| {
                let n = socket.try_recv(buf)?;
                let answer = &buf[..n];
                let ours = wire::read_u16(answer, 0) == Some(id)
                    && wire::same_question(answer, &query.question);
                Ok(ours.then(|| answer.to_vec()))
            }),
        };
        let error = match read {
            Ok(Some(answer)) => {
                let _ = query.reply.send(Ok(answer));
                return;
            }
            Ok(None) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => e,
        };
        match classify_io_error(&error, IoSide::Session) {
            IoClass::Transient | IoClass::Normal => continue,
            // ICMP port unreachable and the like: nobody answers there now;
            // the resolver counts it against the upstream.
            class => {
                warn_throttled!(&*label, upstream = %label, error = %error, "upstream UDP receive failed");
                dialer.report_failure(
                    Track::Udp,
                    &Failure::io(&error, Stage::Session, dialer.hop(), true),
                );
                return query.fail(UpstreamError::Io(class));
            }
        }
    }
}

impl Link {
    /// An association through the node, with its receive task (and the
    /// task watching its control connection) in `scope`.
    async fn open(
        addr: SocketAddr,
        dialer: &Arc<Dialer>,
        scope: &TaskScope,
        label: &str,
        owner: &ActorRef<UpstreamMsg>,
    ) -> Result<Link, UpstreamFailure> {
        let mut session = dialer
            .udp_session(addr, CONNECT_TIMEOUT)
            .await
            .map_err(|failure| UpstreamFailure::Path {
                dialer: dialer.name.clone(),
                failure,
            })?;
        let control = session.take_control();
        let session = Arc::new(session);
        let pending = Arc::new(Pending::default());
        let recv = scope.spawn(receive(
            session.clone(),
            pending.clone(),
            dialer.clone(),
            label.to_string(),
            owner.clone(),
        ));
        let control = control
            .map(|control| scope.spawn(watch_control(control, dialer.clone(), owner.clone())));
        Ok(Link {
            session,
            pending,
            _recv: recv,
            _control: control,
        })
    }
}

async fn receive(
    session: Arc<UdpSession>,
    pending: Arc<Pending>,
    dialer: Arc<Dialer>,
    label: String,
    owner: ActorRef<UpstreamMsg>,
) {
    let mut buf = vec![0u8; 65_535];
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            received = session.recv(&mut buf) => match received {
                Ok(n) => {
                    pending.complete(&buf[..n]);
                }
                // A session framed in a stream to the node (Trojan) that
                // failed or ended carries nothing more: the upstream starts
                // again, through another dialer when the node is to blame.
                Err(e) if session.is_over() => {
                    let failure = Failure::node_stream_ended(&e, !pending.is_empty());
                    dialer.report_failure(Track::Udp, &failure);
                    let ended = if failure.blames_path() {
                        UpstreamFailure::Path { dialer: dialer.name.clone(), failure }
                    } else {
                        SocketFailure::classed("UDP session to the node", failure.class, e).into()
                    };
                    let _ = owner.send_message(UpstreamMsg::TransportFailed(ended));
                    return;
                }
                Err(e) => match classify_io_error(&e, IoSide::Session) {
                    IoClass::Transient | IoClass::Normal => {}
                    // The socket is gone: the actor starts again with new ones.
                    IoClass::SocketDead => {
                        pending.fail_all(UpstreamError::Io(IoClass::SocketDead));
                        let dead = SocketFailure::classed("UDP receive", IoClass::SocketDead, e);
                        let _ = owner.send_message(UpstreamMsg::TransportFailed(dead.into()));
                        return;
                    }
                    // ICMP port unreachable and the like: nobody answers
                    // there now. Direct, the resolver counts it against the
                    // upstream; through a node, the node's relay is gone.
                    class => {
                        warn_throttled!(&label, upstream = %label, error = %e, "upstream UDP receive failed");
                        let failure = Failure::io(&e, Stage::Session, dialer.hop(), !pending.is_empty());
                        dialer.report_failure(Track::Udp, &failure);
                        if failure.blames_path() {
                            // The node's relay is gone: the upstream starts
                            // again through another dialer, and the queries
                            // in flight wait for it (see `watch_control`).
                            let _ = owner.send_message(UpstreamMsg::TransportFailed(UpstreamFailure::Path {
                                dialer: dialer.name.clone(),
                                failure,
                            }));
                            return;
                        }
                        pending.fail_all(UpstreamError::Io(class));
                    }
                },
            },
            _ = sweep.tick() => pending.expire(Instant::now()),
        }
    }
}

/// Holds a SOCKS5 association open; when the node closes it, the dialer
/// hears of it and the upstream starts again (through another dialer if its
/// group has one up).
async fn watch_control(mut control: TcpStream, dialer: Arc<Dialer>, owner: ActorRef<UpstreamMsg>) {
    let error = socks5::control_closed(&mut control).await;
    let failure = Failure::association_closed(error.as_ref());
    dialer.report_failure(Track::Udp, &failure);
    // The queries in flight are not failed here: they are dropped with the
    // actor, and the resolver sends them again through its replacement.
    let _ = owner.send_message(UpstreamMsg::TransportFailed(UpstreamFailure::Path {
        dialer: dialer.name.clone(),
        failure,
    }));
}

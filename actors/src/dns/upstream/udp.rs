//! The UDP transport of an upstream: a few sessions through its dialer
//! (connected sockets on random source ports, or SOCKS5 UDP associations),
//! each with a receive task that matches answers to pending queries by id
//! and question. Connected sockets hear ICMP port-unreachable as
//! ECONNREFUSED, so a dead upstream fails its queries at once instead of
//! after a timeout; an association whose control connection closes ends at
//! once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio::net::TcpStream;
use ward_supervision::{TaskGuard, TaskScope};

use super::actor::UpstreamMsg;
use super::conn::CONNECT_TIMEOUT;
use super::pending::Pending;
use super::{UpstreamError, UpstreamQuery};
use crate::dialer::{socks5, Dialer, Failure, Stage, Track, UdpSession, Via};
use crate::io_class::{classify_io_error, IoClass, IoSide};
use crate::warn_throttled;

/// Sockets per upstream address.
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

/// Sessions to one address, through one dialer.
pub struct UdpTransport {
    links: Vec<Link>,
    next: AtomicUsize,
    dialer: Arc<Dialer>,
    via: Via,
    owner: ActorRef<UpstreamMsg>,
    /// The owner was told the dialer is down (once).
    moving: AtomicBool,
}

impl UdpTransport {
    /// Opens `SOCKETS` sessions to `addr` through a dialer `via` selects;
    /// their receive tasks run in `scope`. `label` names the upstream in
    /// logs.
    pub async fn open(
        addr: SocketAddr,
        via: &Via,
        scope: &TaskScope,
        label: &str,
        owner: &ActorRef<UpstreamMsg>,
    ) -> Result<UdpTransport, String> {
        let dialer = via
            .select(Track::Udp, &[])
            .ok_or_else(|| format!("no dialer in {:?}", via.name()))?;
        let mut links = Vec::with_capacity(SOCKETS);
        for _ in 0..SOCKETS {
            let mut session = dialer
                .udp_session(addr, CONNECT_TIMEOUT)
                .await
                .map_err(|f| format!("UDP session through {}: {f}", dialer.name))?;
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
            links.push(Link {
                session,
                pending,
                _recv: recv,
                _control: control,
            });
        }
        Ok(UdpTransport {
            links,
            next: AtomicUsize::new(0),
            dialer,
            via: via.clone(),
            owner: owner.clone(),
            moving: AtomicBool::new(false),
        })
    }

    /// The queries waiting for an answer, taken out (to be sent again on
    /// the sessions that replace these).
    pub fn take_pending(&self) -> Vec<UpstreamQuery> {
        self.links
            .iter()
            .flat_map(|link| link.pending.take_all())
            .collect()
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
        let link = &self.links[self.next.fetch_add(1, Ordering::Relaxed) % self.links.len()];
        let (id, wire) = match link.pending.insert(query, |id, q| q.wire(id)) {
            Ok(sent) => sent,
            Err(query) => return query.fail(UpstreamError::Unavailable),
        };
        if let Err(e) = link.session.try_send(&wire) {
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
                Err(e) => match classify_io_error(&e, IoSide::Session) {
                    IoClass::Transient | IoClass::Normal => {}
                    // The socket is gone: the actor starts again with new ones.
                    IoClass::SocketDead => {
                        pending.fail_all(UpstreamError::Io(IoClass::SocketDead));
                        let _ = owner.send_message(UpstreamMsg::TransportFailed(e.to_string()));
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
                            let _ = owner.send_message(UpstreamMsg::TransportFailed(failure.to_string()));
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
    let _ = owner.send_message(UpstreamMsg::TransportFailed(failure.to_string()));
}

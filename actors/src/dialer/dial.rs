//! A dialer's handle: opens TCP connections and UDP sessions over its path,
//! takes reports from the owners of what it opened, and publishes its
//! health for selection.
//!
//! What a dialer opens is owned by the actor that uses it (a DNS upstream
//! connection, a UDP endpoint); the dialer keeps no socket. Owners report
//! back: a success with its latency, or a classified [`Failure`]. Only
//! failures that blame the path count against its health.

use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use ractor::ActorRef;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpStream, UdpSocket};

use super::actor::DialerMsg;
use super::failure::{Blame, Failure, Hop, Stage};
use super::health::{Source, Track, TrackHealth};
use super::metrics::DialerMetrics;
use super::settings::{DialerSpec, HealthSettings};
use super::socks5::{self, TargetAddr};
use crate::net::ready::readable_or_error;
use crate::net::socket::{connected_udp_socket, flow_socket, tcp_socket, udp_socket};
use crate::net::udp_batch::{Datagrams, RecvBatch};
use crate::warn_throttled;

/// One outbound path.
pub struct Dialer {
    pub name: String,
    pub spec: DialerSpec,
    pub(crate) settings: Arc<HealthSettings>,
    tracks: [TrackHealth; 2],
    /// A re-probe was asked for and the actor has not taken it yet: the
    /// requests of a burst of failures become one message.
    reprobe_asked: [AtomicBool; 2],
    actor: ArcSwapOption<ActorRef<DialerMsg>>,
    pub(crate) metrics: Arc<DialerMetrics>,
}

impl Dialer {
    pub fn new(
        name: String,
        spec: DialerSpec,
        settings: Arc<HealthSettings>,
        metrics: Arc<DialerMetrics>,
    ) -> Self {
        Self {
            name,
            spec,
            settings,
            tracks: Default::default(),
            reprobe_asked: Default::default(),
            actor: ArcSwapOption::empty(),
            metrics,
        }
    }

    pub fn health(&self, track: Track) -> &TrackHealth {
        &self.tracks[track as usize]
    }

    /// Direct: no node in between.
    pub fn is_direct(&self) -> bool {
        matches!(self.spec, DialerSpec::Direct { .. })
    }

    pub fn hop(&self) -> Hop {
        match self.spec {
            DialerSpec::Direct { .. } => Hop::Direct,
            DialerSpec::Socks5 { .. } => Hop::Proxy,
        }
    }

    /// A TCP connection to `target` over this path, within `timeout`.
    /// The latency is reported on success; a failure is reported and
    /// returned.
    pub async fn connect_tcp(
        &self,
        target: SocketAddr,
        timeout: Duration,
    ) -> Result<TcpStream, Failure> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let result = self.dial_tcp(&TargetAddr::Ip(target), deadline).await;
        match &result {
            Ok(_) => self.report_success(Track::Tcp, started.elapsed()),
            Err(failure) => self.report_failure(Track::Tcp, failure),
        }
        result
    }

    /// Dials by `deadline` without reporting (probes report their own
    /// way). A name is looked up locally when direct, by the node through
    /// a SOCKS5 node. Reaching the node in time is the node's business;
    /// what the destination then takes is not (a probe tells the two
    /// apart).
    pub(crate) async fn dial_tcp(
        &self,
        target: &TargetAddr,
        deadline: tokio::time::Instant,
    ) -> Result<TcpStream, Failure> {
        let timed_out = |stage| move |_| Failure::timeout(stage);
        match &self.spec {
            DialerSpec::Direct { mark, interface } => {
                let io = |e: io::Error| Failure::io(&e, Stage::TargetConnect, Hop::Direct, false);
                let addr = match target {
                    TargetAddr::Ip(addr) => *addr,
                    TargetAddr::Domain(host, port) => {
                        let name = format!("{host}:{port}");
                        tokio::time::timeout_at(deadline, resolve(&name))
                            .await
                            .map_err(timed_out(Stage::Cancelled))?
                            .map_err(|e| Failure::local(format!("cannot look up {host}: {e}")))?
                    }
                };
                let socket = tcp_socket(addr, *mark, interface.as_deref()).map_err(io)?;
                let stream = tokio::time::timeout_at(deadline, socket.connect(addr))
                    .await
                    .map_err(timed_out(Stage::TargetConnect))?
                    .map_err(io)?;
                stream.set_nodelay(true).map_err(io)?;
                Ok(stream)
            }
            DialerSpec::Socks5 {
                credentials, mark, ..
            } => {
                let mut control = tokio::time::timeout_at(deadline, self.reach_node(*mark))
                    .await
                    .map_err(timed_out(Stage::ProxyConnect))??;
                // A node that accepts but never negotiates is stuck itself.
                tokio::time::timeout_at(
                    deadline,
                    socks5::negotiate(&mut control, credentials.as_ref()),
                )
                .await
                .map_err(timed_out(Stage::ProxyHandshake))?
                .map_err(|e| Failure::socks5(&e))?;
                let request = socks5::request_connect(control, target);
                let (stream, _bound) = tokio::time::timeout_at(deadline, request)
                    .await
                    .map_err(timed_out(Stage::TargetConnect))?
                    .map_err(|e| Failure::socks5(&e))?;
                Ok(stream)
            }
        }
    }

    /// A TCP connection to the SOCKS5 node itself.
    async fn reach_node(&self, mark: Option<u32>) -> Result<TcpStream, Failure> {
        let DialerSpec::Socks5 { server, .. } = &self.spec else {
            unreachable!("only SOCKS5 dialers reach a node");
        };
        let io = |e: io::Error| Failure::io(&e, Stage::ProxyConnect, Hop::Proxy, false);
        let addr = resolve(server).await.map_err(io)?;
        let socket = tcp_socket(addr, mark, None).map_err(io)?;
        let stream = socket.connect(addr).await.map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        Ok(stream)
    }

    /// A UDP session to `target` over this path, within `timeout`: a socket
    /// connected to it (direct), or a SOCKS5 UDP association. Its owner
    /// reports failures; UDP latency comes from the probes.
    pub async fn udp_session(
        &self,
        target: SocketAddr,
        timeout: Duration,
    ) -> Result<UdpSession, Failure> {
        self.open_udp_reported(target, true, timeout).await
    }

    /// A connected UDP socket to `target` on a fresh random source port,
    /// made at once: a direct dialer's, for one DNS query (RFC 5452: the
    /// port is the half of a query's unpredictability the id cannot give).
    /// None through a node, whose associations take a handshake.
    pub fn query_socket(&self, target: SocketAddr) -> Option<io::Result<UdpSocket>> {
        let DialerSpec::Direct { mark, interface } = &self.spec else {
            return None;
        };
        Some(connected_udp_socket(target, *mark, interface.as_deref()))
    }

    /// A full-cone UDP session (datagrams to any destination, answers from
    /// any source), of the family of `first`, within `timeout`: an
    /// unconnected socket (direct), or a SOCKS5 UDP association. Its owner
    /// reports failures.
    pub async fn udp_flow(
        &self,
        first: SocketAddr,
        timeout: Duration,
    ) -> Result<UdpSession, Failure> {
        self.open_udp_reported(first, false, timeout).await
    }

    async fn open_udp_reported(
        &self,
        target: SocketAddr,
        connected: bool,
        timeout: Duration,
    ) -> Result<UdpSession, Failure> {
        let result = match tokio::time::timeout(timeout, self.open_udp(target, connected)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::timeout(Stage::ProxyHandshake)),
        };
        if let Err(failure) = &result {
            self.report_failure(Track::Udp, failure);
        }
        result
    }

    /// A UDP session through this path: to `target` only, or (not
    /// `connected`) to any destination of `target`'s family.
    pub(crate) async fn open_udp(
        &self,
        target: SocketAddr,
        connected: bool,
    ) -> Result<UdpSession, Failure> {
        match &self.spec {
            DialerSpec::Direct { mark, interface } => {
                let io = |e: io::Error| Failure::io(&e, Stage::TargetConnect, Hop::Direct, false);
                let (socket, dual_stack) = if connected {
                    let socket = connected_udp_socket(target, *mark, interface.as_deref());
                    (socket.map_err(io)?, false)
                } else {
                    flow_socket(target, *mark, interface.as_deref()).map_err(io)?
                };
                Ok(UdpSession {
                    socket,
                    relayed: false,
                    dual_stack,
                    target: connected.then(|| (target, Vec::new())),
                    control: None,
                    gso: AtomicBool::new(true),
                })
            }
            DialerSpec::Socks5 {
                credentials, mark, ..
            } => {
                let control = self.reach_node(*mark).await?;
                let io = |e: io::Error| Failure::io(&e, Stage::ProxyHandshake, Hop::Proxy, false);
                let node = control.peer_addr().map_err(io)?;
                let socket = udp_socket(node, *mark, None).map_err(io)?;
                let local = socket.local_addr().map_err(io)?;
                let association = socks5::udp_associate(control, credentials.as_ref(), local)
                    .await
                    .map_err(|e| Failure::socks5(&e))?;
                socket.connect(association.relay).await.map_err(io)?;
                // A node that vanishes without a FIN (a partition) still
                // ends the association, after about 25 s.
                let keepalive = TcpKeepalive::new()
                    .with_time(Duration::from_secs(10))
                    .with_interval(Duration::from_secs(5))
                    .with_retries(3);
                SockRef::from(&association.control)
                    .set_tcp_keepalive(&keepalive)
                    .map_err(io)?;
                let target = connected.then(|| {
                    let mut header = Vec::with_capacity(22);
                    socks5::encapsulate(&TargetAddr::Ip(target), &[], &mut header);
                    (target, header)
                });
                Ok(UdpSession {
                    socket,
                    relayed: true,
                    dual_stack: false,
                    target,
                    control: Some(association.control),
                    gso: AtomicBool::new(true),
                })
            }
        }
    }

    /// An owner's success: the latency counts toward the averages; on a
    /// down track it counts toward bringing it back up.
    pub fn report_success(&self, track: Track, latency: Duration) {
        let health = self.health(track);
        health.record_success(latency);
        self.metrics.latency(&self.name, track, latency);
        if !health.is_up() {
            self.tell(DialerMsg::Succeeded(track));
        }
    }

    /// An owner's failure. Only one that blames the path counts; one
    /// reaching the node itself counts on both tracks. Each asks for a
    /// re-probe of the tracks it touched, and so does one blamed on the
    /// destination (an idle tunnel closed by a node that just died looks
    /// like that).
    pub fn report_failure(&self, track: Track, failure: &Failure) {
        self.metrics.failure(&self.name, track, failure);
        match failure.blame {
            Blame::Nobody => {}
            Blame::Target => self.request_reprobe(track),
            Blame::Path if failure.stage.reaches_node() => {
                for track in Track::ALL {
                    self.record_failure(track, failure.clone(), Source::Traffic);
                    self.request_reprobe(track);
                }
            }
            Blame::Path => {
                self.record_failure(track, failure.clone(), Source::Traffic);
                self.request_reprobe(track);
            }
        }
    }

    /// Asks the actor to probe `track` soon: at once when it is up, at its
    /// next retry when it is down. Requests made before the actor took the
    /// last one are folded into it.
    pub fn request_reprobe(&self, track: Track) {
        if !self.reprobe_asked[track as usize].swap(true, Ordering::AcqRel) {
            self.tell(DialerMsg::Reprobe(track));
        }
    }

    /// Called by the actor when it takes a re-probe request.
    pub(crate) fn reprobe_taken(&self, track: Track) {
        self.reprobe_asked[track as usize].store(false, Ordering::Release);
    }

    pub(crate) fn record_failure(&self, track: Track, failure: Failure, source: Source) {
        let down_after = match source {
            Source::Traffic => self.settings.traffic_failures,
            // A node that does not even answer is down on every track.
            Source::Probe if failure.stage.reaches_node() => 1,
            Source::Probe => match track {
                Track::Tcp => 1,
                Track::Udp => 3,
            },
        };
        let reason = failure.to_string();
        if self
            .health(track)
            .record_failure(failure, source, down_after)
        {
            self.metrics.set_up(&self.name, track, false);
            warn_throttled!(&format!("dialer-down:{}", self.name), dialer = %self.name,
                track = track.label(), source = source.label(), %reason, "dialer marked down");
        }
    }

    /// Asks the dialer's actor to probe every track now (an operator's
    /// `ward ctl probe`); false when it has nothing to probe with.
    pub fn probe_now(&self) -> bool {
        let can = self.settings.tcp_url.is_some() || self.settings.udp_dns.is_some();
        if can {
            self.tell(DialerMsg::ProbeNow);
        }
        can
    }

    fn tell(&self, message: DialerMsg) {
        if let Some(actor) = self.actor.load_full() {
            let _ = actor.send_message(message);
        }
    }

    pub(crate) fn attach(&self, actor: ActorRef<DialerMsg>) {
        self.actor.store(Some(Arc::new(actor)));
    }

    pub(crate) fn detach(&self, actor: &ActorRef<DialerMsg>) {
        let current = self.actor.load();
        if current
            .as_ref()
            .is_some_and(|a| a.get_id() == actor.get_id())
        {
            self.actor.store(None);
        }
    }
}

/// A UDP session over a dialer: datagrams to one destination, or (a flow)
/// to any.
pub struct UdpSession {
    socket: UdpSocket,
    /// Through a SOCKS5 relay: every datagram carries a UDP request header.
    relayed: bool,
    /// An IPv6 socket that also reaches IPv4 (as v4-mapped addresses): a
    /// direct flow may send to either family, whatever its first
    /// destination was.
    dual_stack: bool,
    /// The one destination of a session opened for it, with its header
    /// when relayed.
    target: Option<(SocketAddr, Vec<u8>)>,
    /// A SOCKS5 association's control connection: its close ends the
    /// association, so the owner watches it (see [`UdpSession::take_control`]).
    control: Option<TcpStream>,
    /// Runs of datagrams may still leave as one segmented send (cleared
    /// when this socket's path turns out unable to segment).
    gso: AtomicBool,
}

fn no_target() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "a flow session needs a destination",
    )
}

impl UdpSession {
    /// Sends one datagram to the session's destination without waiting
    /// (`WouldBlock`: the socket buffer is full). Straight to the system
    /// call, as [`Self::send_many`]: tokio's `try_send` tries only once the
    /// reactor has seen the socket writable, which a session just opened
    /// has not.
    pub fn try_send(&self, payload: &[u8]) -> io::Result<()> {
        let Some((_, header)) = &self.target else {
            return Err(no_target());
        };
        let socket = SockRef::from(&self.socket);
        if !self.relayed {
            return socket.send(payload).map(drop);
        }
        let mut datagram = Vec::with_capacity(header.len() + payload.len());
        datagram.extend_from_slice(header);
        datagram.extend_from_slice(payload);
        socket.send(&datagram).map(drop)
    }

    /// Sends `datagrams` in order now, without waiting, runs to one
    /// destination as one segmented send where the path takes it (see
    /// [`Datagrams::send`]): how many went before the first that could
    /// not, and why (`WouldBlock`: the socket buffer is full).
    pub fn send_many(
        &self,
        datagrams: &[(SocketAddr, &[u8])],
        out: &mut Datagrams,
    ) -> Result<(), (usize, io::Error)> {
        out.clear();
        // Through a node or to the one target, the socket is connected.
        let unconnected = !self.relayed && self.target.is_none();
        for (dst, payload) in datagrams {
            out.push(unconnected.then(|| self.wire(*dst)), |bytes| {
                if self.relayed {
                    socks5::encapsulate(&TargetAddr::Ip(*dst), payload, bytes);
                } else {
                    bytes.extend_from_slice(payload);
                }
            });
        }
        out.send(self.socket.as_raw_fd(), &self.gso)
    }

    /// Sends one datagram to `dst` (waiting for room in the socket buffer).
    pub async fn send_to(&self, payload: &[u8], dst: SocketAddr) -> io::Result<()> {
        if self.relayed {
            let mut datagram = Vec::with_capacity(payload.len() + 22);
            socks5::encapsulate(&TargetAddr::Ip(dst), payload, &mut datagram);
            return self.socket.send(&datagram).await.map(drop);
        }
        match &self.target {
            Some(_) => self.socket.send(payload).await.map(drop),
            None => self.socket.send_to(payload, self.wire(dst)).await.map(drop),
        }
    }

    /// `dst` as this socket addresses it: v4-mapped on a dual-stack one.
    fn wire(&self, dst: SocketAddr) -> SocketAddr {
        match dst {
            SocketAddr::V4(v4) if self.dual_stack => {
                SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0).into()
            }
            _ => dst,
        }
    }

    /// A source as the flow names it: plain IPv4 for a v4-mapped one.
    fn unwire(&self, from: SocketAddr) -> SocketAddr {
        match from {
            SocketAddr::V6(v6) if self.dual_stack => {
                SocketAddr::new(v6.ip().to_canonical(), v6.port())
            }
            _ => from,
        }
    }

    /// Receives one datagram's payload into the start of `buf`. Datagrams
    /// from the relay that do not parse are dropped.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_from(buf).await.map(|(_, n)| n)
    }

    /// Receives one datagram's payload into the start of `buf`, with the
    /// address it came from (for a relayed one, the source the relay
    /// reports).
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(SocketAddr, usize)> {
        loop {
            self.readable().await?;
            let (n, from) = match self.socket.try_recv_from(buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if !self.relayed {
                let from = match &self.target {
                    Some((target, _)) => *target,
                    None => self.unwire(from),
                };
                return Ok((from, n));
            }
            let Ok((TargetAddr::Ip(from), payload)) = socks5::decapsulate(&buf[..n]) else {
                continue;
            };
            let (start, len) = (n - payload.len(), payload.len());
            buf.copy_within(start..n, 0);
            return Ok((from, len));
        }
    }

    /// Takes the datagrams waiting (up to a batch, `recvmmsg`) without
    /// waiting: `WouldBlock` when there are none. Read them with
    /// [`Self::received`].
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let fd = self.socket.as_raw_fd();
        self.socket
            .try_io(tokio::io::Interest::READABLE, || batch.recv(fd))
    }

    /// Datagram `i` of a batch taken by [`Self::try_recv_batch`]: where it
    /// came from (for a relayed one, the source the relay reports) and its
    /// payload. `None` for a datagram from the relay that does not parse.
    pub fn received<'b>(&self, batch: &'b RecvBatch, i: usize) -> Option<(SocketAddr, &'b [u8])> {
        let (bytes, from) = batch.get(i)?;
        if !self.relayed {
            let from = self
                .target
                .as_ref()
                .map_or_else(|| self.unwire(from), |(target, _)| *target);
            return Some((from, bytes));
        }
        match socks5::decapsulate(bytes) {
            Ok((TargetAddr::Ip(from), payload)) => Some((from, payload)),
            _ => None,
        }
    }

    /// Waits until a datagram may be waiting (see [`Self::try_recv_batch`]),
    /// or fails with the error an ICMP message left on a connected socket
    /// (see [`readable_or_error`]).
    pub async fn readable(&self) -> io::Result<()> {
        readable_or_error(&self.socket).await
    }

    /// The control connection of a SOCKS5 association, for the owner to
    /// watch with [`socks5::control_closed`] (and to keep open).
    pub fn take_control(&mut self) -> Option<TcpStream> {
        self.control.take()
    }

    /// True while runs of datagrams may still leave as one segmented send
    /// (false once this session's path turned out unable to segment).
    pub fn segments(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
    }
}

/// `host:port` to an address (the first the system resolver gives).
pub(crate) async fn resolve(server: &str) -> io::Result<SocketAddr> {
    if let Ok(addr) = server.parse() {
        return Ok(addr);
    }
    tokio::net::lookup_host(server)
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{server}: no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialer(spec: DialerSpec) -> Dialer {
        Dialer::new(
            "d".into(),
            spec,
            Arc::new(HealthSettings::default()),
            Arc::new(DialerMetrics::default()),
        )
    }

    /// A port nobody listens on: ICMP port unreachable to whoever sends there.
    fn closed_udp_port() -> SocketAddr {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// A session sends the moment it is open, and the ICMP error its peer
    /// sends back reaches its receiver at once (EPOLLERR alone never made
    /// the socket readable), through both ways of receiving, and is
    /// cleared once read.
    #[tokio::test]
    async fn a_connected_session_hears_port_unreachable_while_it_waits() {
        let direct = dialer(DialerSpec::Direct {
            mark: None,
            interface: None,
        });
        let within = Duration::from_secs(2);
        let mut buf = [0u8; 512];
        let session = direct.open_udp(closed_udp_port(), true).await.unwrap();
        session.try_send(b"anyone?").unwrap();
        let woke = tokio::time::timeout(within, session.readable()).await;
        let error = woke.expect("woken at once").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ECONNREFUSED));
        session.try_send(b"anyone?").unwrap();
        let received = tokio::time::timeout(within, session.recv(&mut buf)).await;
        let error = received.expect("woken at once").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ECONNREFUSED));
        // Read once, the error is gone: the session waits again.
        let again = tokio::time::timeout(Duration::from_millis(200), session.readable()).await;
        assert!(again.is_err(), "{again:?}");
    }

    /// A SOCKS5 client's flow may go to both families whatever its first
    /// destination; answers name their sources as the client sent to them
    /// (plain IPv4, not v4-mapped).
    #[tokio::test]
    async fn a_direct_flow_reaches_both_families() {
        let echo = |bind: &str| {
            let socket = std::net::UdpSocket::bind(bind).unwrap();
            let addr = socket.local_addr().unwrap();
            std::thread::spawn(move || {
                socket
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut buf = [0u8; 64];
                while let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            });
            addr
        };
        let (v4, v6) = (echo("127.0.0.1:0"), echo("[::1]:0"));
        let d = dialer(DialerSpec::Direct {
            mark: None,
            interface: None,
        });
        let session = d.udp_flow(v4, Duration::from_secs(2)).await.unwrap();
        assert!(session.dual_stack, "this host has IPv6");
        let mut buf = [0u8; 64];
        for dst in [v6, v4] {
            session.send_to(b"one", dst).await.unwrap();
            let (from, n) =
                tokio::time::timeout(Duration::from_secs(2), session.recv_from(&mut buf))
                    .await
                    .expect("an answer in time")
                    .unwrap();
            assert_eq!((from, &buf[..n]), (dst, &b"one"[..]));
        }
        let datagrams: [(SocketAddr, &[u8]); 2] = [(v4, b"two"), (v6, b"two")];
        session
            .send_many(&datagrams, &mut Datagrams::default())
            .unwrap();
        let mut batch = RecvBatch::with_slot(64);
        let mut answers = Vec::new();
        while answers.len() < 2 {
            tokio::time::timeout(Duration::from_secs(2), session.readable())
                .await
                .expect("answers in time")
                .unwrap();
            let Ok(n) = session.try_recv_batch(&mut batch) else {
                continue;
            };
            for i in 0..n {
                let (from, payload) = session.received(&batch, i).unwrap();
                answers.push((from, payload.to_vec()));
            }
        }
        answers.sort();
        assert_eq!(answers, [(v4, b"two".to_vec()), (v6, b"two".to_vec())]);
    }

    #[tokio::test]
    async fn direct_sets_the_mark() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: SO_MARK needs CAP_NET_ADMIN");
            return;
        }
        // Connecting needs only a listening socket: the kernel completes
        // the handshake before anyone accepts.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = listener.local_addr().unwrap();
        let d = dialer(DialerSpec::Direct {
            mark: Some(0x2a),
            interface: None,
        });
        let stream = d.connect_tcp(peer, Duration::from_secs(2)).await.unwrap();
        assert_eq!(socket2::SockRef::from(&stream).mark().unwrap(), 0x2a);
        let session = d.udp_session(peer, Duration::from_secs(2)).await.unwrap();
        assert_eq!(
            socket2::SockRef::from(&session.socket).mark().unwrap(),
            0x2a
        );
    }
}

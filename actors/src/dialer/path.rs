//! One outbound path's handle, [`Dialer`]: opens streams and UDP sessions
//! over it through its [`Outbound`] (direct, or a node's protocol), takes
//! reports from the owners of what it opened, publishes its health for
//! selection, and asks its actor for probes.
//!
//! What a dialer opens is owned by the actor that uses it (a DNS upstream
//! connection, a UDP endpoint); the dialer keeps no socket. Owners report
//! back: a success with its latency, or a classified [`Failure`]. Only
//! failures that blame the path count against its health. A session's
//! datagrams are [`UdpSession`]'s business; sockets are built in
//! [`crate::net::socket`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio::net::UdpSocket;
use ward_supervision::{Attachment, Live};

use super::actor::DialerMsg;
use super::failure::{Blame, Failure, Hop, Stage};
use super::health::{Source, Track, TrackHealth};
use super::metrics::DialerMetrics;
use super::outbound::{Outbound, ProxyStream};
use super::session::UdpSession;
use super::settings::{DialerSpec, HealthSettings};
use super::socks5::TargetAddr;
use crate::warn_throttled;

/// One outbound path.
pub struct Dialer {
    pub name: String,
    pub spec: DialerSpec,
    /// The protocol that opens what this path carries.
    outbound: Box<dyn Outbound>,
    pub(crate) settings: Arc<HealthSettings>,
    tracks: [TrackHealth; 2],
    /// A re-probe was asked for and the actor has not taken it yet: the
    /// requests of a burst of failures become one message.
    reprobe_asked: [AtomicBool; 2],
    /// The current incarnation of the dialer's actor, published by it.
    actor: Arc<Live<ActorRef<DialerMsg>>>,
    pub(crate) metrics: Arc<DialerMetrics>,
}

impl Dialer {
    pub fn new(
        name: String,
        spec: DialerSpec,
        settings: Arc<HealthSettings>,
        metrics: Arc<DialerMetrics>,
    ) -> Self {
        let outbound = super::build_outbound(&name, &spec, &metrics);
        Self {
            name,
            spec,
            outbound,
            settings,
            tracks: Default::default(),
            reprobe_asked: Default::default(),
            actor: Arc::default(),
            metrics,
        }
    }

    pub fn health(&self, track: Track) -> &TrackHealth {
        &self.tracks[track as usize]
    }

    /// Direct: no node in between.
    pub fn is_direct(&self) -> bool {
        self.outbound.hop() == Hop::Direct
    }

    pub fn hop(&self) -> Hop {
        self.outbound.hop()
    }

    /// What silence from this path may mean (see
    /// [`Outbound::silence_means`]).
    pub(crate) fn silence_means(&self) -> Option<&'static str> {
        self.outbound.silence_means()
    }

    /// A stream to `target` over this path, within `timeout`. The latency
    /// is reported on success; a failure is reported and returned.
    pub async fn connect_tcp(
        &self,
        target: SocketAddr,
        timeout: Duration,
    ) -> Result<ProxyStream, Failure> {
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
    /// way). A name is looked up locally when direct, by the node
    /// otherwise. Reaching the node in time is the node's business; what
    /// the destination then takes is not (a probe tells the two apart).
    pub(crate) async fn dial_tcp(
        &self,
        target: &TargetAddr,
        deadline: tokio::time::Instant,
    ) -> Result<ProxyStream, Failure> {
        self.outbound.stream(target, deadline).await
    }

    /// A UDP session to `target` over this path, within `timeout`: a socket
    /// connected to it (direct), or a session through the node. Its owner
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
    /// None through a node, whose sessions take a handshake.
    pub fn query_socket(&self, target: SocketAddr) -> Option<io::Result<UdpSocket>> {
        self.outbound.query_socket(target)
    }

    /// A full-cone UDP session (datagrams to any destination, answers from
    /// any source), of the family of `first`, within `timeout`: an
    /// unconnected socket (direct), or a session through the node. Its
    /// owner reports failures.
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
        self.outbound.udp(target, connected).await
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

    /// A message to the dialer's actor; none while it is restarting.
    fn tell(&self, message: DialerMsg) {
        if let Some(published) = self.actor.load().as_ref() {
            let _ = published.value.send_message(message);
        }
    }

    /// Publishes `actor` as the dialer's actor until the attachment is
    /// dropped with its state.
    pub(crate) fn attach(&self, actor: ActorRef<DialerMsg>) -> Attachment<ActorRef<DialerMsg>> {
        self.actor.attach(actor.get_id(), actor)
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

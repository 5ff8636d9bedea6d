//! The resolver: everything between a listener's socket and the upstreams.
//!
//! [`Resolver::decide`] runs inside the receive loop and never waits: it
//! answers errors, refusals, static names and fresh cache hits on the spot,
//! and for the rest hands back an in-flight permit (or REFUSED past the
//! bound). [`Resolver::resolve`] runs in its own task per miss: identical
//! misses share one fetch; a fetch walks the route's chain of upstreams
//! within `dns.timeout_ms`; a failure serves a stale answer when there is
//! one, SERVFAIL otherwise.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::answer::{AnswerError, CachedAnswer};
use super::cache::{Cache, KeyBuf, Lookup};
use super::coalesce::{Coalescer, FetchError, Outcome, Role};
use super::limits::{Acl, RateLimiter};
use super::metrics::{DnsMetrics, Dropped, Refused, Transport};
use super::settings::{Chain, DnsSettings, Strategy};
use super::statics::Statics;
use super::upstream::{UpstreamError, UpstreamQuery, UpstreamSlot, Upstreams};
use super::wire::{self, rcode, Query, QueryError};
use crate::dialer::Dialers;
use crate::dns::settings::Transport as UpstreamTransport;

const TYPE_AXFR: u16 = 252;
const TYPE_IXFR: u16 = 251;
/// The largest answer over TCP.
const TCP_LIMIT: usize = 65_535;
/// The least time an attempt gets when later upstreams wait behind it.
const MIN_ATTEMPT: Duration = Duration::from_millis(300);

/// What to do with a packet, decided without waiting.
pub enum Decision {
    /// The answer is in `out`.
    Reply,
    /// Nothing to send.
    Drop,
    /// Needs upstreams: run [`Resolver::resolve`] holding this permit.
    Resolve(Pending),
}

/// A query on its way upstream.
pub struct Pending {
    pub permit: OwnedSemaphorePermit,
    /// An expired answer to serve if every upstream fails.
    pub stale: Option<Arc<CachedAnswer>>,
}

/// The shared query path of every DNS listener.
pub struct Resolver {
    settings: DnsSettings,
    pub cache: Arc<Cache>,
    coalescer: Coalescer,
    pub upstreams: Upstreams,
    statics: Statics,
    acl: Acl,
    rate: Option<RateLimiter>,
    in_flight: Arc<Semaphore>,
    pub metrics: Arc<DnsMetrics>,
    /// The UDP listeners' sockets by configured address, held weakly.
    own_udp: std::sync::Mutex<HashMap<SocketAddr, Weak<std::net::UdpSocket>>>,
}

/// Why one upstream attempt brought nothing usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttemptError {
    Upstream(UpstreamError),
    /// An answer with an rcode that sends us to the next upstream.
    Rcode(u16),
    Truncated,
}

impl AttemptError {
    fn kind(self) -> &'static str {
        match self {
            AttemptError::Upstream(e) => e.kind(),
            AttemptError::Rcode(code) => match code {
                2 => "servfail",
                5 => "refused",
                _ => "bad_rcode",
            },
            AttemptError::Truncated => "truncated",
        }
    }

    /// Failures that say the upstream itself is unwell.
    fn hurts_health(self) -> bool {
        matches!(self, AttemptError::Upstream(_))
    }
}

/// Times one attempt waits for its upstream's actor to come back.
const RESTART_WAITS: u32 = 2;

impl Resolver {
    pub fn new(
        settings: DnsSettings,
        metrics: Arc<DnsMetrics>,
        dialers: &Dialers,
    ) -> Arc<Resolver> {
        let cache = Arc::new(Cache::new(
            settings.cache.size,
            settings.cache.serve_stale_s,
        ));
        metrics.watch_cache(&cache);
        Arc::new(Resolver {
            cache,
            coalescer: Coalescer::default(),
            upstreams: Upstreams::new(&settings, &metrics, dialers),
            statics: Statics::new(&settings.statics),
            acl: Acl::new(settings.allow.clone()),
            rate: settings.limits.per_client_qps.map(RateLimiter::new),
            in_flight: Arc::new(Semaphore::new(settings.limits.in_flight)),
            metrics,
            own_udp: Default::default(),
            settings,
        })
    }

    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    /// Records a UDP listener's socket for its configured address.
    pub fn register_udp(&self, addr: SocketAddr, socket: &Arc<std::net::UdpSocket>) {
        self.own_udp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, Arc::downgrade(socket));
    }

    /// The live UDP listener socket for exactly this address, if any.
    pub fn udp_listener(&self, addr: SocketAddr) -> Option<Arc<std::net::UdpSocket>> {
        self.own_udp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)?
            .upgrade()
    }

    /// Answers a UDP query that reached ward some other way (the relay
    /// captured it) through the listener socket `socket`, as the listener
    /// would.
    pub fn answer_from(
        self: &Arc<Self>,
        socket: Arc<std::net::UdpSocket>,
        packet: &[u8],
        client: SocketAddr,
    ) {
        let mut reply = Vec::new();
        match self.decide(packet, client.ip(), Transport::Udp, &mut reply) {
            Decision::Reply => {
                let _ = socket.send_to(&reply, client);
            }
            Decision::Drop => {}
            Decision::Resolve(pending) => {
                let resolver = self.clone();
                let packet = packet.to_vec();
                tokio::spawn(async move {
                    let answer = resolver
                        .resolve(&packet, client.ip(), Transport::Udp, pending.stale)
                        .await;
                    if socket.send_to(&answer, client).is_err() {
                        resolver
                            .metrics
                            .dropped(super::metrics::Dropped::SendFailed);
                    }
                    drop(pending.permit);
                });
            }
        }
    }

    /// Queries being resolved now.
    pub fn in_flight(&self) -> usize {
        self.settings.limits.in_flight - self.in_flight.available_permits()
    }

    /// Decides what to do with a packet from `client`; writes any immediate
    /// answer into `out`.
    pub fn decide(
        &self,
        packet: &[u8],
        client: IpAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Decision {
        let query = match wire::parse_query(packet) {
            Ok(query) => query,
            Err(error) => return self.bad_query(packet, error, transport, out),
        };
        if !self.acl.allows(client) {
            return self.refuse(&query, Refused::Acl, transport, out);
        }
        let now = Instant::now();
        if self
            .rate
            .as_ref()
            .is_some_and(|rate| !rate.allow(client, now))
        {
            self.metrics.dropped(Dropped::RateLimited);
            return Decision::Drop;
        }
        if query.qclass != wire::CLASS_IN || query.qtype == TYPE_AXFR || query.qtype == TYPE_IXFR {
            return self.refuse(&query, Refused::Unsupported, transport, out);
        }
        let limit = limit(&query, transport);
        if let Some(answer) = self.statics.lookup(&query) {
            answer.write(&query, now, false, limit, out);
            self.metrics.answered(transport, answer.rcode());
            return Decision::Reply;
        }
        let stale = match self.cache.lookup(KeyBuf::of(&query).as_bytes(), now) {
            Lookup::Fresh(answer) => {
                answer.write(&query, now, false, limit, out);
                self.metrics.answered(transport, answer.rcode());
                return Decision::Reply;
            }
            Lookup::Stale(answer) => Some(answer),
            Lookup::Miss => None,
        };
        match self.in_flight.clone().try_acquire_owned() {
            Ok(permit) => Decision::Resolve(Pending { permit, stale }),
            Err(_) => self.refuse(&query, Refused::Overload, transport, out),
        }
    }

    fn bad_query(
        &self,
        packet: &[u8],
        error: QueryError,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Decision {
        let code = match error {
            QueryError::Short => {
                self.metrics.dropped(Dropped::Short);
                return Decision::Drop;
            }
            QueryError::IsResponse => {
                self.metrics.dropped(Dropped::Response);
                return Decision::Drop;
            }
            QueryError::NotImplemented => rcode::NOTIMP as u16,
            QueryError::Malformed => rcode::FORMERR as u16,
            QueryError::BadVersion => rcode::BADVERS,
        };
        wire::write_header_error(packet, code, out);
        self.metrics.answered(transport, (code & 0xf) as u8);
        Decision::Reply
    }

    fn refuse(
        &self,
        query: &Query<'_>,
        reason: Refused,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Decision {
        wire::write_empty_response(query, rcode::REFUSED as u16, false, out);
        self.metrics.refused(reason);
        self.metrics.answered(transport, rcode::REFUSED);
        Decision::Reply
    }

    /// Resolves a query `decide` sent upstream; the answer's bytes.
    /// The caller keeps the query's permit until the answer is on its way
    /// out, so answers waiting for a slow client count against the bound.
    pub async fn resolve(
        self: &Arc<Self>,
        packet: &[u8],
        client: IpAddr,
        transport: Transport,
        stale: Option<Arc<CachedAnswer>>,
    ) -> Vec<u8> {
        let _in_flight = InFlight::new(&self.metrics);
        let mut out = Vec::new();
        let Ok(query) = wire::parse_query(packet) else {
            wire::write_header_error(packet, rcode::FORMERR as u16, &mut out);
            return out;
        };
        let key = KeyBuf::of(&query);
        let (outcome, led) = match self.coalescer.join(key.as_bytes()) {
            Role::Leader(leader) => {
                let outcome = self.fetch(&query, client).await;
                leader.finish(&outcome);
                (outcome, true)
            }
            Role::Follower(waiting) => (waiting.await.unwrap_or(Err(FetchError::Cancelled)), false),
        };
        let now = Instant::now();
        let limit = limit(&query, transport);
        match (outcome, stale) {
            (Ok(answer), _) => {
                answer.write(&query, now, false, limit, &mut out);
            }
            (Err(FetchError::Truncated), _) if transport == Transport::Udp => {
                wire::write_empty_response(&query, rcode::NOERROR as u16, true, &mut out);
            }
            (Err(_), Some(stale)) => {
                stale.write(&query, now, true, limit, &mut out);
                self.cache.count_stale();
                // The leader keeps the stale copy and refreshes it, once.
                if led {
                    self.cache
                        .insert(key.as_bytes(), Arc::new(stale.restaled(now)), now);
                    self.refresh_later(packet.to_vec(), client);
                }
            }
            (Err(_), None) => {
                wire::write_empty_response(&query, rcode::SERVFAIL as u16, false, &mut out);
            }
        }
        self.metrics.answered(
            transport,
            wire::read_u16(&out, 2).map_or(0, |f| (f & 0xf) as u8),
        );
        out
    }

    /// After serving stale, tries the upstreams again in the background.
    fn refresh_later(self: &Arc<Self>, packet: Vec<u8>, client: IpAddr) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            return;
        };
        let resolver = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Ok(query) = wire::parse_query(&packet) {
                let key = KeyBuf::of(&query);
                if let Role::Leader(leader) = resolver.coalescer.join(key.as_bytes()) {
                    let outcome = resolver.fetch(&query, client).await;
                    leader.finish(&outcome);
                }
            }
        });
    }

    /// The chain for a query: the first matching route's, else the default.
    fn chain(&self, qname: &str, qtype: u16, client: IpAddr) -> &Chain {
        self.settings
            .routes
            .iter()
            .find(|route| route.matches(qname, qtype, client))
            .map_or(&self.settings.default, |route| &route.chain)
    }

    /// Asks the chain; caches and returns the answer.
    async fn fetch(&self, query: &Query<'_>, client: IpAddr) -> Outcome {
        let chain = self.chain(&query.qname_text(), query.qtype, client);
        let slots = self.order(chain);
        let ask = Ask {
            question: Arc::from(wire::lowercase_question(query)),
            checking_disabled: query.checking_disabled(),
            dnssec_ok: query.dnssec_ok(),
            deadline: Instant::now() + self.settings.timeout,
        };
        let result = match chain.strategy {
            Strategy::Race if slots.len() >= 2 => self.race(&slots, &ask).await,
            _ => self.sequential(&slots, &ask).await,
        };
        let now = Instant::now();
        let key = KeyBuf::of(query);
        match result {
            Ok(accepted) => {
                let answer = Arc::new(accepted.answer);
                if accepted.cacheable {
                    self.cache.insert(key.as_bytes(), answer.clone(), now);
                }
                Ok(answer)
            }
            // Nothing known about the name (no upstream asked), or only that
            // it does not fit UDP (TCP will do): nothing to remember.
            Err(error @ (FetchError::Unavailable | FetchError::Truncated)) => Err(error),
            Err(error) => {
                let servfail = CachedAnswer::servfail(query, &self.settings.cache.ttl, now);
                self.cache.insert(key.as_bytes(), Arc::new(servfail), now);
                Err(error)
            }
        }
    }

    /// The chain's upstreams, those up first (in order), then those down.
    fn order(&self, chain: &Chain) -> Vec<Arc<UpstreamSlot>> {
        let slots: Vec<Arc<UpstreamSlot>> = chain
            .upstreams
            .iter()
            .filter_map(|name| self.upstreams.get(name).cloned())
            .collect();
        let (mut up, down): (Vec<_>, Vec<_>) = slots.into_iter().partition(|s| s.health.is_up());
        up.extend(down);
        up
    }

    async fn sequential(
        &self,
        slots: &[Arc<UpstreamSlot>],
        ask: &Ask,
    ) -> Result<super::answer::Accepted, FetchError> {
        self.sequential_after(slots, ask, Failures::default()).await
    }

    /// [`Self::sequential`], adding to failures already seen.
    async fn sequential_after(
        &self,
        slots: &[Arc<UpstreamSlot>],
        ask: &Ask,
        mut failures: Failures,
    ) -> Result<super::answer::Accepted, FetchError> {
        for (i, slot) in slots.iter().enumerate() {
            let now = Instant::now();
            if now >= ask.deadline {
                return Err(FetchError::Timeout);
            }
            let remaining = ask.deadline - now;
            let left = (slots.len() - i) as u32;
            let budget = if left > 1 {
                (remaining / left).max(MIN_ATTEMPT).min(remaining)
            } else {
                remaining
            };
            match self.attempt(slot, ask, now + budget).await {
                Ok(accepted) => return Ok(accepted),
                Err(error) => failures.add(error),
            }
        }
        Err(failures.into_error())
    }

    /// The first two at once; the first good answer wins; then the rest in order.
    async fn race(
        &self,
        slots: &[Arc<UpstreamSlot>],
        ask: &Ask,
    ) -> Result<super::answer::Accepted, FetchError> {
        let first = self.attempt(&slots[0], ask, ask.deadline);
        let second = self.attempt(&slots[1], ask, ask.deadline);
        tokio::pin!(first, second);
        let (mut first_done, mut second_done) = (false, false);
        let mut failures = Failures::default();
        while !(first_done && second_done) {
            let result = tokio::select! {
                result = &mut first, if !first_done => {
                    first_done = true;
                    result
                }
                result = &mut second, if !second_done => {
                    second_done = true;
                    result
                }
            };
            match result {
                Ok(accepted) => return Ok(accepted),
                Err(error) => failures.add(error),
            }
        }
        self.sequential_after(&slots[2..], ask, failures).await
    }

    /// One upstream, until `until`: UDP, then TCP where the upstream has it
    /// and UDP failed or came back truncated.
    async fn attempt(
        &self,
        slot: &UpstreamSlot,
        ask: &Ask,
        until: Instant,
    ) -> Result<super::answer::Accepted, AttemptError> {
        let tcp_fallback = matches!(
            slot.spec.transport,
            UpstreamTransport::TcpUdp(_) | UpstreamTransport::System(_)
        );
        let mut use_tcp = false;
        let mut waits = 0;
        loop {
            let started = Instant::now();
            let result = self.ask_once(slot, ask, use_tcp, until).await;
            // Its actor is restarting (a transport or path died under it):
            // the query waits for the new one instead of failing at once.
            if matches!(
                result,
                Err(AttemptError::Upstream(UpstreamError::Unavailable))
            ) && waits < RESTART_WAITS
                && slot.restarting()
            {
                waits += 1;
                if slot.wait_attached(until).await {
                    continue;
                }
            }
            let result = result.and_then(|bytes| {
                CachedAnswer::from_upstream(
                    &bytes,
                    &ask.question,
                    &self.settings.cache.ttl,
                    Instant::now(),
                )
                .map_err(|e| match e {
                    AnswerError::Truncated => AttemptError::Truncated,
                    AnswerError::Rcode(code) => AttemptError::Rcode(code),
                    AnswerError::Malformed => AttemptError::Upstream(UpstreamError::Malformed),
                })
            });
            match result {
                Ok(accepted) => {
                    slot.latency.observe(started.elapsed().as_secs_f64());
                    slot.health.record_success();
                    return Ok(accepted);
                }
                Err(error) => {
                    self.metrics.upstream_failed(&slot.name, error.kind());
                    let retry_tcp = tcp_fallback
                        && !use_tcp
                        && Instant::now() < until
                        && matches!(error, AttemptError::Truncated | AttemptError::Upstream(_));
                    if retry_tcp {
                        use_tcp = true;
                        continue;
                    }
                    if error.hurts_health() && slot.health.record_failure() {
                        tracing::warn!(upstream = %slot.name, "upstream marked down after consecutive failures; probing it");
                        slot.start_probing();
                    }
                    return Err(error);
                }
            }
        }
    }

    async fn ask_once(
        &self,
        slot: &UpstreamSlot,
        ask: &Ask,
        use_tcp: bool,
        until: Instant,
    ) -> Result<Vec<u8>, AttemptError> {
        let (reply, answer) = oneshot::channel();
        let query = UpstreamQuery {
            question: ask.question.clone(),
            checking_disabled: ask.checking_disabled,
            dnssec_ok: ask.dnssec_ok,
            use_tcp,
            deadline: until,
            retried: false,
            reply,
        };
        // UDP goes straight to the transport; the rest through the actor.
        let query = if use_tcp {
            Err(query)
        } else {
            slot.send_udp(query)
        };
        if let Err(query) = query {
            slot.send(query);
        }
        match tokio::time::timeout_at(until.into(), answer).await {
            Err(_) => Err(AttemptError::Upstream(UpstreamError::Timeout)),
            Ok(Err(_)) => Err(AttemptError::Upstream(UpstreamError::Unavailable)),
            Ok(Ok(result)) => result.map_err(AttemptError::Upstream),
        }
    }
}

/// What the failed attempts of one fetch add up to.
#[derive(Default)]
struct Failures {
    last: Option<FetchError>,
}

impl Failures {
    fn add(&mut self, error: AttemptError) {
        self.last = Some(match error {
            AttemptError::Truncated => FetchError::Truncated,
            AttemptError::Upstream(UpstreamError::Timeout) => FetchError::Timeout,
            // Not asked at all: says nothing unless nothing else happened.
            AttemptError::Upstream(UpstreamError::Unavailable) => {
                if self.last.is_some() {
                    return;
                }
                FetchError::Unavailable
            }
            _ => FetchError::AllFailed,
        });
    }

    fn into_error(self) -> FetchError {
        self.last.unwrap_or(FetchError::Unavailable)
    }
}

/// What every attempt of one fetch asks.
struct Ask {
    question: Arc<[u8]>,
    checking_disabled: bool,
    dnssec_ok: bool,
    deadline: Instant,
}

fn limit(query: &Query<'_>, transport: Transport) -> usize {
    match transport {
        Transport::Udp => query.udp_limit(),
        Transport::Tcp => TCP_LIMIT,
    }
}

/// Counts a query in the in-flight gauge while it lives.
struct InFlight<'a>(&'a DnsMetrics);

impl<'a> InFlight<'a> {
    fn new(metrics: &'a DnsMetrics) -> Self {
        metrics.in_flight().inc();
        Self(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight().dec();
    }
}

//! The resolver: everything between a listener's socket and the upstreams,
//! and the one handle every listener shares.
//!
//! [`Resolver::decide`] runs inside the receive loop and never waits
//! (`admission`). [`Resolver::resolve`] runs in its own task per miss:
//! identical misses share one fetch; a fetch walks the route's chain of
//! upstreams within `dns.timeout_ms` (`fetch`); its answer is cached, and a
//! failure serves a stale answer when there is one, SERVFAIL otherwise
//! (`stale`). `captured` answers queries the UDP relay caught on their way
//! to ward's own addresses.

mod admission;
mod captured;
mod fetch;
mod stale;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use super::answer::CachedAnswer;
use super::cache::{Cache, KeyBuf};
use super::coalesce::{Coalescer, FetchError, Role};
use super::limits::{Acl, RateLimiter};
use super::metrics::{DnsMetrics, Transport};
use super::settings::{Chain, DnsSettings};
use super::statics::Statics;
use super::upstream::{UpstreamSlot, Upstreams};
use super::wire::{self, rcode};
use crate::dialer::Dialers;
use crate::reload::Changes;
pub use admission::{Decision, Pending};

/// The shared query path of every DNS listener. What the configuration
/// says ([`Conf`]) is swapped whole by a reload; the cache, the fetches in
/// flight and the metrics stay.
pub struct Resolver {
    conf: ArcSwap<Conf>,
    pub cache: Arc<Cache>,
    coalescer: Coalescer,
    pub metrics: Arc<DnsMetrics>,
    /// The UDP listeners' sockets by configured address, held weakly.
    own_udp: std::sync::Mutex<HashMap<SocketAddr, Weak<std::net::UdpSocket>>>,
}

/// One generation's DNS configuration and what is built from it.
struct Conf {
    settings: Arc<DnsSettings>,
    upstreams: Upstreams,
    statics: Statics,
    acl: Acl,
    rate: Option<Arc<RateLimiter>>,
    in_flight: Arc<Semaphore>,
}

impl Conf {
    /// The configuration of `settings`, keeping from `old` what did not
    /// change: upstream slots (and so their actors and health), the rate
    /// limiter's per-client state, the in-flight bound and its permits.
    fn build(
        settings: DnsSettings,
        metrics: &DnsMetrics,
        dialers: &Dialers,
        old: Option<&Conf>,
    ) -> Conf {
        let limits = settings.limits;
        let same_limits = old.filter(|old| old.settings.limits == limits);
        Conf {
            upstreams: Upstreams::build(&settings, metrics, dialers, old.map(|o| &o.upstreams)),
            statics: Statics::new(&settings.statics),
            acl: Acl::new(settings.allow.clone()),
            rate: match same_limits {
                Some(old) => old.rate.clone(),
                None => limits
                    .per_client_qps
                    .map(|qps| Arc::new(RateLimiter::new(qps))),
            },
            in_flight: match same_limits {
                Some(old) => old.in_flight.clone(),
                None => Arc::new(Semaphore::new(limits.in_flight)),
            },
            settings: Arc::new(settings),
        }
    }

    /// The chain for a query: the first matching route's, else the default.
    fn chain(&self, qname: &str, qtype: u16, client: IpAddr) -> &Chain {
        self.settings
            .routes
            .iter()
            .find(|route| route.matches(qname, qtype, client))
            .map_or(&self.settings.default, |route| &route.chain)
    }
}

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
            conf: ArcSwap::from_pointee(Conf::build(settings, &metrics, dialers, None)),
            cache,
            coalescer: Coalescer::default(),
            metrics,
            own_udp: Default::default(),
        })
    }

    /// Swaps in `settings` (a reload): upstreams whose spec and path did
    /// not change keep their slots, the cache keeps its answers (resized
    /// to the new size; flushed when upstreams, routes or records changed,
    /// as an answer may now be wrong). What happened to each upstream, as
    /// `dns/upstreams/<name>`.
    pub fn reconfigure(&self, settings: DnsSettings, dialers: &Dialers) -> Changes {
        let old = self.conf.load_full();
        let new = Conf::build(settings, &self.metrics, dialers, Some(&old));
        let mut changes = Changes::default();
        changes.compare(
            "dns/upstreams",
            &old.upstreams.by_name(),
            &new.upstreams.by_name(),
            Arc::ptr_eq,
        );
        let (was, now) = (&old.settings, &new.settings);
        let answers_may_differ = !changes.is_empty()
            || was.routes != now.routes
            || was.default != now.default
            || was.statics != now.statics
            || was.cache.ttl != now.cache.ttl;
        self.cache.resize(now.cache.size, now.cache.serve_stale_s);
        self.conf.store(Arc::new(new));
        if answers_may_differ {
            let flushed = self.cache.flush();
            tracing::info!(
                flushed,
                "DNS cache flushed: upstreams, routes or records changed"
            );
        }
        changes
    }

    /// The settings of this generation.
    pub fn settings(&self) -> Arc<DnsSettings> {
        self.conf.load().settings.clone()
    }

    /// The upstream named `name`'s slot.
    pub fn upstream(&self, name: &str) -> Option<Arc<UpstreamSlot>> {
        self.conf.load().upstreams.get(name).cloned()
    }

    /// Every upstream's slot.
    pub fn upstream_slots(&self) -> Vec<Arc<UpstreamSlot>> {
        self.conf.load().upstreams.iter().cloned().collect()
    }

    /// Queries being resolved now.
    pub fn in_flight(&self) -> usize {
        let conf = self.conf.load();
        conf.settings
            .limits
            .in_flight
            .saturating_sub(conf.in_flight.available_permits())
    }

    /// Resolves a query `decide` sent upstream in a task of its own and
    /// hands the answer to `deliver`. The query's permit is held until
    /// `deliver` is done, so answers waiting for a slow client count
    /// against the bound.
    pub fn spawn_resolve<F, D>(
        self: &Arc<Self>,
        pending: Pending,
        packet: &[u8],
        client: IpAddr,
        transport: Transport,
        deliver: F,
    ) where
        F: FnOnce(Vec<u8>) -> D + Send + 'static,
        D: Future<Output = ()> + Send,
    {
        let resolver = self.clone();
        let packet = packet.to_vec();
        tokio::spawn(async move {
            let Pending { permit, stale } = pending;
            let answer = resolver.resolve(&packet, client, transport, stale).await;
            deliver(answer).await;
            drop(permit);
        });
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
        let limit = admission::limit(&query, transport);
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
                    self.keep_stale(&key, &stale, packet, client, now);
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

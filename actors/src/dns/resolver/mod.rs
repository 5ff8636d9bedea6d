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

use tokio::sync::Semaphore;

use super::answer::CachedAnswer;
use super::cache::{Cache, KeyBuf};
use super::coalesce::{Coalescer, FetchError, Role};
use super::limits::{Acl, RateLimiter};
use super::metrics::{DnsMetrics, Transport};
use super::settings::DnsSettings;
use super::statics::Statics;
use super::upstream::Upstreams;
use super::wire::{self, rcode};
use crate::dialer::Dialers;
pub use admission::{Decision, Pending};

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

    /// Queries being resolved now.
    pub fn in_flight(&self) -> usize {
        self.settings.limits.in_flight - self.in_flight.available_permits()
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

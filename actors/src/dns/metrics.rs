//! DNS metrics: queries by transport and rcode, refusals and drops by
//! reason, upstream latency and failures per upstream, in-flight queries, and
//! the cache figures. Hot-path counters are plain handles, created up front,
//! so counting a query is one atomic add.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::cache::Cache;

/// How a query reached ward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp = 0,
    Tcp = 1,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

const RCODE_LABELS: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "OTHER",
];

/// Why a query got REFUSED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The client is outside `dns.allow`.
    Acl = 0,
    /// `dns.limits.in_flight` queries were already being resolved.
    Overload = 1,
    /// Not class IN, or a zone transfer.
    Unsupported = 2,
}

const REFUSED_LABELS: [&str; 3] = ["acl", "overload", "unsupported"];

/// Why a packet got no answer at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Too short to hold a header.
    Short = 0,
    /// QR=1.
    Response = 1,
    /// Over the client's `per_client_qps`.
    RateLimited = 2,
    /// The answer could not be sent (socket buffer full, client gone).
    SendFailed = 3,
    /// Over the per-client TCP connection cap.
    TcpClientCap = 4,
    /// A TCP connection refused: the total cap is reached and every
    /// connection is busy.
    TcpFull = 5,
    /// An idle TCP connection closed to make room for a new one.
    TcpShed = 6,
    /// A TCP client too slow to send a whole query (the first within
    /// `tcp_query_s` of connecting, each within `tcp_query_s` of its
    /// first byte): disconnected.
    TcpSlow = 7,
}

const DROPPED_LABELS: [&str; 8] = [
    "short",
    "response",
    "rate_limited",
    "send_failed",
    "tcp_client_cap",
    "tcp_full",
    "tcp_shed",
    "tcp_slow",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    transport: &'static str,
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamFailureLabel {
    pub upstream: String,
    pub kind: &'static str,
}

/// Every DNS metric.
pub struct DnsMetrics {
    queries: [[Counter; 7]; 2],
    refused: [Counter; 3],
    dropped: [Counter; 8],
    upstream_latency: Family<UpstreamLabel, Histogram>,
    upstream_failures: Family<UpstreamFailureLabel, Counter>,
    in_flight: Gauge,
    cache_entries: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_stale: Counter,
    cache_evictions: Counter,
    seen: [AtomicU64; 4],
    cache: Mutex<Option<Weak<Cache>>>,
}

impl DnsMetrics {
    /// Creates the metrics and registers them under `dns_`.
    pub fn register(registry: &mut Registry) -> Arc<DnsMetrics> {
        let dns = registry.sub_registry_with_prefix("dns");
        let query_family = Family::<QueryLabels, Counter>::default();
        dns.register(
            "queries",
            "Queries answered, by transport and rcode",
            query_family.clone(),
        );
        let queries = [Transport::Udp, Transport::Tcp].map(|t| {
            RCODE_LABELS.map(|rcode| {
                query_family
                    .get_or_create(&QueryLabels {
                        transport: t.label(),
                        rcode,
                    })
                    .clone()
            })
        });
        let refused_family = Family::<ReasonLabel, Counter>::default();
        dns.register(
            "refused",
            "Queries answered REFUSED, by reason",
            refused_family.clone(),
        );
        let refused = REFUSED_LABELS.map(|reason| {
            refused_family
                .get_or_create(&ReasonLabel { reason })
                .clone()
        });
        let dropped_family = Family::<ReasonLabel, Counter>::default();
        dns.register(
            "dropped",
            "Packets dropped without an answer, by reason",
            dropped_family.clone(),
        );
        let dropped = DROPPED_LABELS.map(|reason| {
            dropped_family
                .get_or_create(&ReasonLabel { reason })
                .clone()
        });
        let upstream_latency = Family::<UpstreamLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
        });
        dns.register(
            "upstream_duration_seconds",
            "Time to an upstream's answer",
            upstream_latency.clone(),
        );
        let upstream_failures = Family::<UpstreamFailureLabel, Counter>::default();
        dns.register(
            "upstream_failures",
            "Failed upstream attempts, by upstream and kind",
            upstream_failures.clone(),
        );
        let in_flight = Gauge::default();
        dns.register(
            "in_flight",
            "Queries being resolved upstream",
            in_flight.clone(),
        );
        let cache_entries = Gauge::default();
        dns.register(
            "cache_entries",
            "Answers in the cache, fresh or stale",
            cache_entries.clone(),
        );
        let [cache_hits, cache_misses, cache_stale, cache_evictions] =
            [(); 4].map(|_| Counter::default());
        dns.register(
            "cache_hits",
            "Queries answered from the cache",
            cache_hits.clone(),
        );
        dns.register(
            "cache_misses",
            "Cache lookups that found no fresh answer",
            cache_misses.clone(),
        );
        dns.register(
            "cache_stale",
            "Expired answers served because every upstream failed",
            cache_stale.clone(),
        );
        dns.register(
            "cache_evictions",
            "Answers evicted to make room",
            cache_evictions.clone(),
        );
        Arc::new(DnsMetrics {
            queries,
            refused,
            dropped,
            upstream_latency,
            upstream_failures,
            in_flight,
            cache_entries,
            cache_hits,
            cache_misses,
            cache_stale,
            cache_evictions,
            seen: Default::default(),
            cache: Mutex::new(None),
        })
    }

    /// Counts an answered query by the rcode it carries (low four bits).
    pub fn answered(&self, transport: Transport, rcode: u8) {
        let index = match rcode {
            0..=5 => rcode as usize,
            _ => 6,
        };
        self.queries[transport as usize][index].inc();
    }

    pub fn refused(&self, reason: Refused) {
        self.refused[reason as usize].inc();
    }

    pub fn dropped(&self, reason: Dropped) {
        self.dropped[reason as usize].inc();
    }

    /// The latency histogram of one upstream, to keep and observe into
    /// without a lookup per answer.
    pub fn upstream_latency(&self, upstream: &str) -> Histogram {
        self.upstream_latency
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_string(),
            })
            .clone()
    }

    pub fn upstream_failed(&self, upstream: &str, kind: &'static str) {
        self.upstream_failures
            .get_or_create(&UpstreamFailureLabel {
                upstream: upstream.to_string(),
                kind,
            })
            .inc();
    }

    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The cache whose figures are exported.
    pub fn watch_cache(&self, cache: &Arc<Cache>) {
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::downgrade(cache));
    }

    /// Copies the cache's counters into the exported metrics (before a scrape).
    pub fn refresh(&self) {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Weak::upgrade);
        let Some(cache) = cache else {
            return;
        };
        self.cache_entries.set(cache.len() as i64);
        let c = &cache.counters;
        let current =
            [&c.hits, &c.misses, &c.stale, &c.evictions].map(|a| a.load(Ordering::Relaxed));
        let targets = [
            &self.cache_hits,
            &self.cache_misses,
            &self.cache_stale,
            &self.cache_evictions,
        ];
        for ((now, seen), counter) in current.iter().zip(&self.seen).zip(targets) {
            let before = seen.swap(*now, Ordering::Relaxed);
            counter.inc_by(now.saturating_sub(before));
        }
    }

    /// Queries answered so far, over all transports and rcodes.
    pub fn answered_total(&self) -> u64 {
        self.queries.iter().flatten().map(Counter::get).sum()
    }
}

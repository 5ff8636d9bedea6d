//! UDP relay metrics: live endpoints, endpoints created, flows refused and
//! datagrams dropped by reason, failovers, datagrams relayed, and the
//! tproxy inbounds' reply sockets (open, evicted at their cap).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a new flow got no endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `udp.max_endpoints` endpoints were live.
    MaxEndpoints = 0,
    /// Out of file descriptors (EMFILE, ENFILE): backing off.
    FdLimit = 1,
    /// No dialer left that has not failed the flow.
    NoPath = 2,
    /// The endpoints supervisor was restarting (killed, or escalated):
    /// there was nobody to start the endpoint. The next datagram tries
    /// again.
    Restarting = 3,
    /// A SOCKS5 inbound's control connection past its cap of associations.
    Associations = 4,
}

impl Refused {
    pub const ALL: [Refused; 5] = [
        Refused::MaxEndpoints,
        Refused::FdLimit,
        Refused::NoPath,
        Refused::Restarting,
        Refused::Associations,
    ];
}

const REFUSED: [&str; 5] = [
    "max_endpoints",
    "fd_limit",
    "no_path",
    "restarting",
    "associations",
];

/// Why a datagram was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// The endpoint's queue was full (its datagrams, or the relay's queued
    /// bytes): the oldest datagram went.
    QueueFull = 0,
    /// Sending towards the destination failed (and was not retried).
    SendFailed = 1,
    /// Sending a reply to the client failed.
    ReplyFailed = 2,
    /// The flow failed more than the retries allow.
    RetriesExhausted = 3,
    /// Not a datagram the inbound can relay (a bad SOCKS5 header, a name
    /// or a fragment).
    Malformed = 4,
    /// From a SOCKS5 client without a live association.
    Unassociated = 5,
    /// An endpoint's word to its inbound was lost (its channel full): the
    /// datagrams it carried, or the end of a flow the inbound then learns
    /// of at its next datagram.
    EventLost = 6,
    /// The relay's queued bytes were at `udp.queue_bytes` and the flow had
    /// nothing waiting to give up: the new datagram went.
    OverBudget = 7,
}

const DROPPED: [&str; 8] = [
    "queue_full",
    "send_failed",
    "reply_failed",
    "retries_exhausted",
    "malformed",
    "unassociated",
    "event_lost",
    "queue_bytes",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

pub struct UdpMetrics {
    pub endpoints: Gauge,
    pub created: Counter,
    pub failovers: Counter,
    refused: [Counter; 5],
    dropped: [Counter; 8],
    /// Client to destination, destination to client.
    pub upstream: Counter,
    pub downstream: Counter,
    /// Transparent reply sockets open, over every tproxy inbound.
    pub reply_sockets: Gauge,
    /// Reply sockets closed to make room at `udp.reply_sockets`.
    pub reply_sockets_evicted: Counter,
    /// Addresses whose reply bind failed lately, forgotten early to make
    /// room at `udp.reply_sockets` (the bind is tried again sooner).
    pub reply_binds_failed_evicted: Counter,
}

impl Default for UdpMetrics {
    fn default() -> Self {
        Self::build(None)
    }
}

impl UdpMetrics {
    /// Creates the metrics and registers them under `udp_`.
    pub fn register(registry: &mut Registry) -> Arc<UdpMetrics> {
        Arc::new(Self::build(Some(registry.sub_registry_with_prefix("udp"))))
    }

    fn build(registry: Option<&mut Registry>) -> Self {
        let refused_family = Family::<ReasonLabel, Counter>::default();
        let dropped_family = Family::<ReasonLabel, Counter>::default();
        let datagrams = Family::<DirectionLabel, Counter>::default();
        // Each handle is taken in its own statement: a family's read guard
        // lives to the end of the statement, and the next get_or_create
        // would wait for it forever.
        let refused = REFUSED.map(|reason| {
            let counter = refused_family.get_or_create(&ReasonLabel { reason });
            counter.clone()
        });
        let dropped = DROPPED.map(|reason| {
            let counter = dropped_family.get_or_create(&ReasonLabel { reason });
            counter.clone()
        });
        let direction = |direction| {
            let counter = datagrams.get_or_create(&DirectionLabel { direction });
            counter.clone()
        };
        let upstream = direction("upstream");
        let downstream = direction("downstream");
        let metrics = UdpMetrics {
            endpoints: Gauge::default(),
            created: Counter::default(),
            failovers: Counter::default(),
            refused,
            dropped,
            upstream,
            downstream,
            reply_sockets: Gauge::default(),
            reply_sockets_evicted: Counter::default(),
            reply_binds_failed_evicted: Counter::default(),
        };
        if let Some(r) = registry {
            r.register(
                "endpoints",
                "Live UDP endpoints (flows)",
                metrics.endpoints.clone(),
            );
            r.register(
                "endpoints_created",
                "UDP endpoints created",
                metrics.created.clone(),
            );
            r.register(
                "failovers",
                "Flows moved to another dialer after their path failed",
                metrics.failovers.clone(),
            );
            r.register("refused", "New flows refused, by reason", refused_family);
            r.register("dropped", "Datagrams dropped, by reason", dropped_family);
            r.register("datagrams", "Datagrams relayed, by direction", datagrams);
            r.register(
                "reply_sockets",
                "Transparent sockets tproxy inbounds answer through",
                metrics.reply_sockets.clone(),
            );
            r.register(
                "reply_sockets_evicted",
                "Reply sockets closed, least recently used first, to make room at udp.reply_sockets",
                metrics.reply_sockets_evicted.clone(),
            );
            r.register(
                "reply_binds_failed_evicted",
                "Failed reply binds forgotten early to make room at udp.reply_sockets",
                metrics.reply_binds_failed_evicted.clone(),
            );
        }
        metrics
    }

    pub fn refused(&self, why: Refused) {
        self.refused[why as usize].inc();
    }

    pub fn dropped(&self, why: Dropped) {
        self.dropped[why as usize].inc();
    }

    pub fn refused_count(&self, why: Refused) -> u64 {
        self.refused[why as usize].get()
    }

    pub fn dropped_count(&self, why: Dropped) -> u64 {
        self.dropped[why as usize].get()
    }
}

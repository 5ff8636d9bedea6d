//! Upstreams: one actor per configured upstream, owning its transports
//! (UDP sockets; TCP, TLS and HTTP/2 connections as child actors), and the
//! slots through which the resolver reaches them.
//!
//! The resolver never waits on an upstream's mailbox: it sends a query with
//! a oneshot for the answer and awaits that, under its own deadline.

pub mod actor;
pub mod conn;
pub mod doh;
pub mod failure;
#[cfg(test)]
pub(crate) mod fake;
pub mod health;
pub mod pending;
mod pool;
mod prober;
mod setup;
pub mod tls;
pub mod udp;
mod udp_sessions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ractor::ActorRef;
use tokio::sync::oneshot;
use ward_supervision::Live;

use crate::dialer::{Dialers, Via};
use crate::io_class::IoClass;

use super::metrics::DnsMetrics;
use super::settings::{DnsSettings, UpstreamSpec};
pub use actor::{UpstreamActor, UpstreamArgs, UpstreamMsg};
pub use failure::UpstreamFailure;
pub use health::Health;

use prometheus_client::metrics::histogram::Histogram;
use udp::UdpTransport;

/// Why an upstream gave no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("no answer in time")]
    Timeout,
    #[error("i/o failure ({})", .0.label())]
    Io(IoClass),
    #[error("not reachable now (reconnecting, or its actor is restarting)")]
    Unavailable,
    #[error("its connection broke with the query in flight")]
    ConnectionLost,
    #[error("answer did not parse")]
    Malformed,
}

impl UpstreamError {
    /// A stable label for the failures metric.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Timeout => "timeout",
            UpstreamError::Io(class) => class.label(),
            UpstreamError::Unavailable => "unavailable",
            UpstreamError::ConnectionLost => "connection_lost",
            UpstreamError::Malformed => "malformed",
        }
    }
}

/// The answer bytes, or why there are none.
pub type Reply = Result<Vec<u8>, UpstreamError>;

/// One question for an upstream.
#[derive(Debug)]
pub struct UpstreamQuery {
    /// Name (lowercase wire format), type and class.
    pub question: Arc<[u8]>,
    pub checking_disabled: bool,
    pub dnssec_ok: bool,
    /// Ask over TCP (a truncated UDP answer, or UDP failed).
    pub use_tcp: bool,
    /// After this nobody waits for the answer.
    pub deadline: Instant,
    /// Set once the query was sent again after its connection broke.
    pub retried: bool,
    pub reply: oneshot::Sender<Reply>,
}

impl UpstreamQuery {
    /// The wire query with this id.
    pub fn wire(&self, id: u16) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.question.len() + 12 + 11);
        super::wire::write_question_query(
            &self.question,
            id,
            self.checking_disabled,
            self.dnssec_ok,
            &mut out,
        );
        out
    }

    pub fn fail(self, error: UpstreamError) {
        let _ = self.reply.send(Err(error));
    }
}

/// What the current incarnation of an upstream's actor publishes in its
/// slot: itself, and its UDP transports so UDP queries go out without a
/// trip through its mailbox.
#[derive(Clone)]
pub struct UpstreamHandle {
    pub actor: ActorRef<UpstreamMsg>,
    pub udp: Arc<Vec<UdpTransport>>,
}

/// How the resolver reaches one upstream: its current actor (replaced when
/// the actor restarts) and its health, which outlives restarts.
pub struct UpstreamSlot {
    pub name: String,
    pub spec: UpstreamSpec,
    /// The dialer or group its connections and sockets go through.
    pub via: Via,
    pub health: Health,
    /// Time to this upstream's answers (a metrics handle made once).
    pub latency: Histogram,
    /// The current actor and its transports; empty while it restarts.
    live: Arc<Live<UpstreamHandle>>,
}

impl UpstreamSlot {
    pub fn new(name: String, spec: UpstreamSpec, via: Via, latency: Histogram) -> Self {
        Self {
            name,
            spec,
            via,
            health: Health::default(),
            latency,
            live: Arc::default(),
        }
    }

    /// Where the upstream's actor publishes itself (see [`UpstreamHandle`]).
    pub fn live(&self) -> &Arc<Live<UpstreamHandle>> {
        &self.live
    }

    /// True while the upstream has no actor (it is restarting).
    pub fn restarting(&self) -> bool {
        !self.live.is_attached()
    }

    /// Waits until an actor is attached, at most until `until`; true when
    /// one is.
    pub async fn wait_attached(&self, until: Instant) -> bool {
        self.live.wait_attached(until).await
    }

    /// Sends a query over the upstream's UDP transport when it has one;
    /// gives the query back otherwise (it then goes to the actor).
    pub fn send_udp(&self, query: UpstreamQuery) -> Result<(), UpstreamQuery> {
        let live = self.live.load();
        let Some(transports) = live
            .as_ref()
            .map(|published| &published.value.udp)
            .filter(|t| !t.is_empty())
        else {
            return Err(query);
        };
        transports[self.server_index(transports.len())].send(query);
        Ok(())
    }

    /// Which of `servers` (system: several) to ask: the next one after
    /// each run of failures that would mark the upstream down.
    pub fn server_index(&self, servers: usize) -> usize {
        let failures = self.health.consecutive_failures();
        (failures / health::DOWN_AFTER) as usize % servers.max(1)
    }

    /// Hands a query to the upstream's actor. When there is none (it is
    /// restarting) the query fails with `Unavailable`.
    pub fn send(&self, query: UpstreamQuery) {
        let live = self.live.load();
        let Some(published) = live.as_ref() else {
            query.fail(UpstreamError::Unavailable);
            return;
        };
        if let Err(ractor::MessagingErr::SendErr(UpstreamMsg::Query(query))) = published
            .value
            .actor
            .send_message(UpstreamMsg::Query(query))
        {
            query.fail(UpstreamError::Unavailable);
        }
        // Any other send error dropped the query, and with it the reply
        // sender: the resolver reads that as `Unavailable` too.
    }

    /// Tells the actor its upstream went down, so it probes it back.
    pub fn start_probing(&self) {
        if let Some(published) = self.live.load().as_ref() {
            let _ = published
                .value
                .actor
                .send_message(UpstreamMsg::StartProbing);
        }
    }
}

/// Every upstream, by name. The set is fixed by the config; actors come and go.
#[derive(Default)]
pub struct Upstreams {
    by_name: HashMap<String, Arc<UpstreamSlot>>,
}

impl Upstreams {
    /// One slot per configured upstream; `via` names resolve in `dialers`
    /// (validated by the config; an unknown name falls back to `direct`).
    pub fn new(settings: &DnsSettings, metrics: &DnsMetrics, dialers: &Dialers) -> Self {
        Self::build(settings, metrics, dialers, None)
    }

    /// [`Upstreams::new`], taking from `old` every slot whose spec and path
    /// (the same dialer or group) did not change: its actor, connections
    /// and health go on.
    pub fn build(
        settings: &DnsSettings,
        metrics: &DnsMetrics,
        dialers: &Dialers,
        old: Option<&Upstreams>,
    ) -> Self {
        Self {
            by_name: settings
                .upstreams
                .iter()
                .map(|(name, spec)| {
                    let via = dialers.via(&spec.via).unwrap_or_else(|| dialers.direct());
                    let kept = old
                        .and_then(|old| old.by_name.get(name))
                        .filter(|slot| slot.spec == *spec && slot.via.same(&via))
                        .cloned();
                    let slot = kept.unwrap_or_else(|| {
                        let latency = metrics.upstream_latency(name);
                        Arc::new(UpstreamSlot::new(name.clone(), spec.clone(), via, latency))
                    });
                    (name.clone(), slot)
                })
                .collect(),
        }
    }

    /// Every slot by name, in order.
    pub fn by_name(&self) -> std::collections::BTreeMap<String, Arc<UpstreamSlot>> {
        self.by_name
            .iter()
            .map(|(name, slot)| (name.clone(), slot.clone()))
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<UpstreamSlot>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<UpstreamSlot>> {
        self.by_name.values()
    }
}

//! Fetch policy: how a miss walks its route's chain of upstreams within
//! `dns.timeout_ms`. Upstreams that are up go first. `Sequential` asks one
//! after another, each with a fair share of what is left of the budget;
//! `Race` asks the first two at once and takes the first good answer, then
//! the rest in order. An attempt tries UDP, then TCP where the upstream has
//! it and UDP failed or came back truncated; it waits for an upstream whose
//! actor is restarting. What a fetch brings is cached by `stale`.
//!
//! Deadlines are read on tokio's clock (the system's, unless a test paused
//! it), so the time budget can be tested on paused time.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Conf, Resolver};
use crate::dns::answer::{Accepted, AnswerError, CachedAnswer};
use crate::dns::coalesce::{FetchError, Outcome};
use crate::dns::settings::{Chain, Strategy, Transport as UpstreamTransport};
use crate::dns::upstream::{UpstreamError, UpstreamQuery, UpstreamSlot};
use crate::dns::wire::{self, Query};

/// The least time an attempt gets when later upstreams wait behind it.
const MIN_ATTEMPT: Duration = Duration::from_millis(300);
/// Times one attempt waits for its upstream's actor to come back.
const RESTART_WAITS: u32 = 2;

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

impl Resolver {
    /// Asks the chain; what it brought is remembered (see `stale`).
    pub(super) async fn fetch(&self, query: &Query<'_>, client: IpAddr) -> Outcome {
        // One generation's configuration for the whole fetch.
        let conf = self.conf.load_full();
        let chain = conf.chain(&query.qname_text(), query.qtype, client);
        let slots = order(&conf, chain);
        let ask = Ask {
            question: Arc::from(wire::lowercase_question(query)),
            checking_disabled: query.checking_disabled(),
            dnssec_ok: query.dnssec_ok(),
            deadline: Instant::now() + conf.settings.timeout,
        };
        let result = match chain.strategy {
            Strategy::Race if slots.len() >= 2 => self.race(&slots, &ask).await,
            _ => self.sequential(&slots, &ask).await,
        };
        self.remember(query, result)
    }

    async fn sequential(
        &self,
        slots: &[Arc<UpstreamSlot>],
        ask: &Ask,
    ) -> Result<Accepted, FetchError> {
        self.sequential_after(slots, ask, Failures::default()).await
    }

    /// [`Self::sequential`], adding to failures already seen.
    async fn sequential_after(
        &self,
        slots: &[Arc<UpstreamSlot>],
        ask: &Ask,
        mut failures: Failures,
    ) -> Result<Accepted, FetchError> {
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
    async fn race(&self, slots: &[Arc<UpstreamSlot>], ask: &Ask) -> Result<Accepted, FetchError> {
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
    ) -> Result<Accepted, AttemptError> {
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
                if slot.wait_attached(until.into_std()).await {
                    continue;
                }
            }
            let error = match result.and_then(|bytes| self.accept(&bytes, ask)) {
                Ok(accepted) => {
                    slot.latency.observe(started.elapsed().as_secs_f64());
                    slot.health.record_success();
                    return Ok(accepted);
                }
                Err(error) => error,
            };
            self.metrics.upstream_failed(&slot.name, error.kind());
            let retry_tcp = tcp_fallback
                && !use_tcp
                && Instant::now() < until
                && matches!(error, AttemptError::Truncated | AttemptError::Upstream(_));
            if retry_tcp {
                use_tcp = true;
                continue;
            }
            blame(slot, error);
            return Err(error);
        }
    }

    /// An upstream's answer made canonical, or why it is no use.
    fn accept(&self, bytes: &[u8], ask: &Ask) -> Result<Accepted, AttemptError> {
        let now = std::time::Instant::now();
        let ttl = self.conf.load().settings.cache.ttl;
        CachedAnswer::from_upstream(bytes, &ask.question, &ttl, now).map_err(|e| match e {
            AnswerError::Truncated => AttemptError::Truncated,
            AnswerError::Rcode(code) => AttemptError::Rcode(code),
            AnswerError::Malformed => AttemptError::Upstream(UpstreamError::Malformed),
        })
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
            deadline: until.into_std(),
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
        match tokio::time::timeout_at(until, answer).await {
            Err(_) => Err(AttemptError::Upstream(UpstreamError::Timeout)),
            Ok(Err(_)) => Err(AttemptError::Upstream(UpstreamError::Unavailable)),
            Ok(Ok(result)) => result.map_err(AttemptError::Upstream),
        }
    }
}

/// Counts a failure that says the upstream itself is unwell against its
/// health; the one that marks it down sets its actor probing.
fn blame(slot: &UpstreamSlot, error: AttemptError) {
    if error.hurts_health() && slot.health.record_failure() {
        tracing::warn!(upstream = %slot.name, "upstream marked down after consecutive failures; probing it");
        slot.start_probing();
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

/// The chain's upstreams, those up first (in order), then those down.
fn order(conf: &Conf, chain: &Chain) -> Vec<Arc<UpstreamSlot>> {
    let slots: Vec<Arc<UpstreamSlot>> = chain
        .upstreams
        .iter()
        .filter_map(|name| conf.upstreams.get(name).cloned())
        .collect();
    let (mut up, down): (Vec<_>, Vec<_>) = slots.into_iter().partition(|s| s.health.is_up());
    up.extend(down);
    up
}

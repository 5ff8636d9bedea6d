//! The prober of an upstream's actor: once the resolver marks the upstream
//! down (or the actor starts while it is down), it asks the upstream
//! `. NS` over the actor's own transports, with growing delays, until an
//! answer brings it back up. It builds the probe and reads its outcome;
//! sending it is the actor's dispatch, as for any query.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio::sync::oneshot;
use ward_supervision::{Backoff, BackoffPolicy, TaskGuard};

use super::actor::UpstreamMsg;
use super::{UpstreamQuery, UpstreamSlot};
use crate::dns::wire;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE_FIRST: Duration = Duration::from_millis(500);
const PROBE_MAX: Duration = Duration::from_secs(30);

/// Probing of one upstream incarnation.
pub(super) struct Prober {
    slot: Arc<UpstreamSlot>,
    probing: bool,
    /// Delays between probes: each unanswered probe waits longer.
    delays: Backoff,
    /// Waiting for the next probe, or for a probe's answer.
    task: Option<TaskGuard>,
}

impl Prober {
    /// A prober that starts at once when the upstream is already down (the
    /// actor restarted while it was).
    pub fn new(slot: Arc<UpstreamSlot>, myself: &ActorRef<UpstreamMsg>) -> Self {
        let mut prober = Self {
            slot,
            probing: false,
            delays: Backoff::new(BackoffPolicy::doubling(PROBE_FIRST, PROBE_MAX)),
            task: None,
        };
        if !prober.slot.health.is_up() {
            prober.start(myself);
        }
        prober
    }

    /// The resolver marked the upstream down.
    pub fn start(&mut self, myself: &ActorRef<UpstreamMsg>) {
        if !self.probing {
            self.probing = true;
            self.delays.succeed();
            self.schedule(myself);
        }
    }

    /// The next probe, after the next delay.
    fn schedule(&mut self, myself: &ActorRef<UpstreamMsg>) {
        let target = myself.clone();
        let delay = self.delays.fail();
        self.task = Some(TaskGuard::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = target.send_message(UpstreamMsg::Probe);
        }));
    }

    /// Time to probe: the query to send, unless the upstream came back up
    /// meanwhile. Its outcome reaches the actor as `ProbeResult`.
    pub fn probe(&mut self, myself: &ActorRef<UpstreamMsg>) -> Option<UpstreamQuery> {
        if self.slot.health.is_up() {
            self.probing = false;
            return None;
        }
        let (reply, answer) = oneshot::channel();
        let query = UpstreamQuery {
            question: Arc::from(&wire::ROOT_NS[..]),
            checking_disabled: false,
            dnssec_ok: false,
            use_tcp: false,
            deadline: Instant::now() + PROBE_TIMEOUT,
            retried: true,
            reply,
        };
        let target = myself.clone();
        self.task = Some(TaskGuard::spawn(async move {
            let answered = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, answer).await,
                Ok(Ok(Ok(_)))
            );
            let _ = target.send_message(UpstreamMsg::ProbeResult(answered));
        }));
        Some(query)
    }

    /// A probe's outcome: an answer marks the upstream up; otherwise the
    /// next probe waits longer.
    pub fn result(&mut self, myself: &ActorRef<UpstreamMsg>, answered: bool) {
        if answered {
            self.slot.health.record_success();
            self.probing = false;
            tracing::info!(upstream = %self.slot.name, "upstream answers again; marked up");
        } else {
            self.schedule(myself);
        }
    }
}

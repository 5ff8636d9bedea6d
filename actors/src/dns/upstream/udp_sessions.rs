//! The UDP sessions of an upstream's actor: one [`UdpTransport`] per server,
//! opened in a task (through a node that is a handshake), reopened through
//! another dialer when the one under them goes down, and retried with
//! backoff when they cannot be opened. Queries in flight on sessions being
//! replaced go again once on the new ones. What a transport does with a
//! query is `udp`'s job; publishing the sessions in the slot is the actor's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use ward_supervision::{Backoff, BackoffPolicy, TaskGuard, TaskScope};

use super::actor::UpstreamMsg;
use super::failure::UpstreamFailure;
use super::udp::UdpTransport;
use super::{UpstreamError, UpstreamSlot};
use crate::warn_throttled;

/// Retry delays of UDP sessions that could not be opened.
const UDP_RETRY_MIN: Duration = Duration::from_millis(500);
const UDP_RETRY_MAX: Duration = Duration::from_secs(30);

/// The UDP side of one upstream incarnation.
pub(super) struct UdpSessions {
    slot: Arc<UpstreamSlot>,
    tasks: TaskScope,
    /// Where UDP queries go.
    servers: Vec<SocketAddr>,
    /// The sessions queries go out on now.
    current: Arc<Vec<UdpTransport>>,
    /// Opening (or reopening) the sessions, or waiting to retry.
    opening: Option<TaskGuard>,
    /// Delays after consecutive failures to open them.
    retry: Backoff,
}

impl UdpSessions {
    /// Sessions to `servers`, opening at once when there are any.
    pub fn start(
        slot: Arc<UpstreamSlot>,
        tasks: TaskScope,
        servers: Vec<SocketAddr>,
        myself: &ActorRef<UpstreamMsg>,
    ) -> Self {
        let mut sessions = Self {
            slot,
            tasks,
            servers,
            current: Arc::new(Vec::new()),
            opening: None,
            retry: Backoff::new(BackoffPolicy::doubling(UDP_RETRY_MIN, UDP_RETRY_MAX)),
        };
        if !sessions.servers.is_empty() {
            sessions.open(myself);
        }
        sessions
    }

    /// The sessions queries go out on now (none while opening the first).
    pub fn current(&self) -> &Arc<Vec<UdpTransport>> {
        &self.current
    }

    /// True while the sessions are being opened or wait to be retried.
    pub fn is_opening(&self) -> bool {
        self.opening.is_some()
    }

    /// Opens sessions to every server (concurrently) in a task; the actor
    /// hears `UdpReady`.
    pub fn open(&mut self, myself: &ActorRef<UpstreamMsg>) {
        let (slot, tasks, me) = (self.slot.clone(), self.tasks.clone(), myself.clone());
        let servers = self.servers.clone();
        self.opening = Some(TaskGuard::spawn(async move {
            let opening = servers
                .iter()
                .map(|addr| UdpTransport::open(*addr, &slot.via, &tasks, &slot.name, &me));
            let opened = futures::future::try_join_all(opening).await;
            let _ = me.send_message(UpstreamMsg::UdpReady(opened));
        }));
    }

    /// The dialer under the sessions went down and its group has another
    /// member up: move there. The old sessions serve until the new ones
    /// are ready.
    pub fn dialer_down(&mut self, myself: &ActorRef<UpstreamMsg>) {
        if self.opening.is_none() {
            self.open(myself);
        }
    }

    /// No route, no node, no descriptors: the upstream stays up (its TCP
    /// side, if any, works; UDP queries fail at once so the resolver moves
    /// on) and tries again, backing off.
    pub fn failed(&mut self, error: &UpstreamFailure, myself: &ActorRef<UpstreamMsg>) {
        let delay = self.retry.fail();
        let name = &self.slot.name;
        warn_throttled!(name, upstream = %name, error = %error,
            retry_in_ms = delay.as_millis() as u64, "cannot open the upstream's UDP sessions");
        let me = myself.clone();
        self.opening = Some(TaskGuard::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.send_message(UpstreamMsg::RetryUdp);
        }));
    }

    /// The sessions are open: they replace the current ones. Returns the
    /// replaced ones, whose queries in flight go again with
    /// [`Self::resend_from`] once the new ones are published.
    pub fn opened(&mut self, opened: Vec<UdpTransport>) -> Arc<Vec<UdpTransport>> {
        self.opening = None;
        self.retry.succeed();
        std::mem::replace(&mut self.current, Arc::new(opened))
    }

    /// Queries in flight on the sessions being replaced go again on the
    /// new ones, once.
    pub fn resend_from(&self, old: &[UdpTransport]) {
        for (old, new) in old.iter().zip(self.current.iter()) {
            for mut query in old.take_pending() {
                if query.retried {
                    query.fail(UpstreamError::ConnectionLost);
                } else {
                    query.retried = true;
                    new.send(query);
                }
            }
        }
    }
}

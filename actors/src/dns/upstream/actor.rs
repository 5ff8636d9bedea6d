//! The upstream actor (kind `dns-upstream`): owns one upstream's transports
//! and is the one mailbox for what changes them.
//!
//! This file holds its messages, its start and its dispatch: a query goes
//! to the UDP sessions (`udp_sessions`) or to the stream connection pool
//! (`pool`, connections as child actors of kind `dns-upstream-conn`); a
//! downed upstream is probed back (`prober`); what the configured transport
//! asks for is read by `setup`. The actor publishes itself and its UDP
//! transports in its slot, so UDP queries skip its mailbox.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ward_supervision::{Attachment, ChildFailure, ChildList, ExitReason, TaskScope};

use super::failure::UpstreamFailure;
use super::pool::StreamPool;
use super::prober::Prober;
use super::setup::transports;
use super::udp::UdpTransport;
use super::udp_sessions::UdpSessions;
use super::{UpstreamError, UpstreamHandle, UpstreamQuery, UpstreamSlot};

pub enum UpstreamMsg {
    Query(UpstreamQuery),
    /// A connection child finished connecting.
    ConnReady(u64),
    /// The resolver marked the upstream down.
    StartProbing,
    /// A UDP socket or association of the upstream stopped working: the
    /// actor ends with this failure and starts again with new ones.
    TransportFailed(UpstreamFailure),
    /// The UDP sessions are open (or could not be).
    UdpReady(Result<Vec<UdpTransport>, UpstreamFailure>),
    /// Time to try opening the UDP sessions again.
    RetryUdp,
    /// The dialer under the UDP sessions is down and another is up.
    DialerDown,
    Probe,
    ProbeResult(bool),
}

pub struct UpstreamActor;

pub struct UpstreamArgs {
    pub slot: Arc<UpstreamSlot>,
    /// The upstream's connections, as the tree shows them.
    pub children: Arc<ChildList>,
    pub tasks: TaskScope,
}

pub struct UpstreamState {
    slot: Arc<UpstreamSlot>,
    /// What this incarnation published in its slot, withdrawn however it
    /// dies; none until it takes queries.
    attachment: Option<Attachment<UpstreamHandle>>,
    udp: UdpSessions,
    pool: StreamPool,
    prober: Prober,
}

impl Actor for UpstreamActor {
    type Msg = UpstreamMsg;
    type State = UpstreamState;
    type Arguments = UpstreamArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<UpstreamMsg>,
        args: UpstreamArgs,
    ) -> Result<UpstreamState, ActorProcessingErr> {
        let (udp_servers, streams) =
            transports(&args.slot.spec.transport).map_err(ChildFailure::from)?;
        // UDP sessions may need a handshake with a node: they open in a
        // task, and the upstream takes queries once they are ready (the
        // resolver waits for it meanwhile). Without UDP it takes them now.
        let udp = UdpSessions::start(args.slot.clone(), args.tasks.clone(), udp_servers, &myself);
        let mut state = UpstreamState {
            attachment: None,
            udp,
            pool: StreamPool::new(args.slot.clone(), args.children, args.tasks, streams),
            prober: Prober::new(args.slot.clone(), &myself),
            slot: args.slot,
        };
        if !state.udp.is_opening() {
            state.publish(&myself);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<UpstreamMsg>,
        message: UpstreamMsg,
        state: &mut UpstreamState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            UpstreamMsg::Query(query) => state.dispatch(&myself, query).await,
            UpstreamMsg::ConnReady(conn_id) => state.pool.conn_ready(conn_id),
            UpstreamMsg::StartProbing => state.prober.start(&myself),
            UpstreamMsg::Probe => {
                if let Some(query) = state.prober.probe(&myself) {
                    state.dispatch(&myself, query).await;
                }
            }
            UpstreamMsg::ProbeResult(ok) => state.prober.result(&myself, ok),
            UpstreamMsg::UdpReady(Err(e)) => {
                state.udp.failed(&e, &myself);
                if state.attachment.is_none() {
                    state.publish(&myself);
                }
            }
            UpstreamMsg::RetryUdp => state.udp.open(&myself),
            UpstreamMsg::UdpReady(Ok(opened)) => {
                let old = state.udp.opened(opened);
                state.publish(&myself);
                state.udp.resend_from(&old);
            }
            UpstreamMsg::DialerDown => state.udp.dialer_down(&myself),
            UpstreamMsg::TransportFailed(failure) => return Err(ChildFailure::from(failure).into()),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<UpstreamMsg>,
        event: SupervisionEvent,
        state: &mut UpstreamState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((id, reason)) = ExitReason::from_event(event) {
            state.pool.conn_ended(&myself, id, reason).await;
        }
        Ok(())
    }
}

impl UpstreamState {
    /// Publishes this incarnation and its current UDP transports: from now
    /// on the resolver sends it queries.
    fn publish(&mut self, myself: &ActorRef<UpstreamMsg>) {
        let handle = UpstreamHandle {
            actor: myself.clone(),
            udp: Arc::clone(self.udp.current()),
        };
        match &self.attachment {
            Some(attachment) => attachment.update(handle),
            None => {
                let live = self.slot.live();
                self.attachment = Some(live.attach(myself.get_id(), handle));
            }
        }
    }

    /// Over a stream when asked for (or when there is no UDP), else over
    /// UDP to the server the upstream's health points at.
    async fn dispatch(&mut self, myself: &ActorRef<UpstreamMsg>, query: UpstreamQuery) {
        let udp = self.udp.current();
        let over_stream = self.pool.has_streams() && (query.use_tcp || udp.is_empty());
        if over_stream {
            self.pool.send(myself, query).await;
        } else if !udp.is_empty() {
            udp[self.slot.server_index(udp.len())].send(query);
        } else {
            query.fail(UpstreamError::Unavailable);
        }
    }
}

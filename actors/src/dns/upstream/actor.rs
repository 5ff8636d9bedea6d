//! The upstream actor (kind `dns-upstream`): owns one upstream's transports.
//!
//! UDP queries go out on its connected sockets without waiting. TCP, TLS
//! and HTTPS queries go to a connection child actor (kind
//! `dns-upstream-conn`, listed below the upstream in the tree), opened on
//! demand; consecutive connect failures back off, and while backing off
//! queries fail at once so the resolver moves on. When a connection dies its
//! in-flight queries are sent again once on a fresh one. When the resolver
//! marks the upstream down, the actor probes it (`. NS`) until it answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::{mpsc, oneshot};
use ward_supervision::{Attachment, ChildList, ExitReason, TaskGuard, TaskScope};

use super::conn::{frame, outgoing_queue, Outgoing, StreamConn, StreamConnArgs, StreamTarget};
use super::doh::{DohConn, DohConnArgs};
use super::health::DOWN_AFTER;
use super::pending::Pending;
use super::tls;
use super::udp::UdpTransport;
use super::{UpstreamError, UpstreamHandle, UpstreamQuery, UpstreamSlot};
use crate::dialer::{Dialer, Track};
use crate::dns::settings::{resolv_conf_servers, Transport};
use crate::warn_throttled;

/// A connection idle this long is closed.
pub const CONN_IDLE: Duration = Duration::from_secs(10);
/// The probe sent to a downed upstream: `. IN NS`.
const PROBE_QUESTION: [u8; 5] = [0, 0, 2, 0, 1];
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE_FIRST: Duration = Duration::from_millis(500);
const PROBE_MAX: Duration = Duration::from_secs(30);
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// Retry delays of UDP sessions that could not be opened.
const UDP_RETRY_MIN: Duration = Duration::from_millis(500);
const UDP_RETRY_MAX: Duration = Duration::from_secs(30);

pub enum UpstreamMsg {
    Query(UpstreamQuery),
    /// A connection child finished connecting.
    ConnReady(u64),
    /// The resolver marked the upstream down.
    StartProbing,
    /// A UDP socket of the upstream stopped working: the actor ends and
    /// starts again with new ones.
    TransportFailed(String),
    /// The UDP sessions are open (or could not be).
    UdpReady(Result<Vec<UdpTransport>, String>),
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

/// How stream queries travel.
enum Streams {
    None,
    /// One target per server (TCP or TLS).
    Dns(Vec<StreamTarget>),
    Https {
        target: StreamTarget,
        uri: String,
    },
}

struct Conn {
    conn_id: u64,
    /// The dialer it goes through.
    dialer: Arc<Dialer>,
    /// Where its queries go; closed once the connection's task has ended.
    outgoing: mpsc::Sender<Outgoing>,
    pending: Arc<Pending>,
    /// DNS over TCP/TLS frames each query with its length; DoH sends it
    /// bare with id 0 (RFC 8484).
    framed: bool,
    ready: bool,
}

impl Conn {
    fn encode(framed: bool, id: u16, query: &UpstreamQuery) -> Vec<u8> {
        if framed {
            frame(&query.wire(id))
        } else {
            query.wire(0)
        }
    }
}

pub struct UpstreamState {
    slot: Arc<UpstreamSlot>,
    /// What this incarnation published in its slot, withdrawn however it
    /// dies; none until it takes queries.
    attachment: Option<Attachment<UpstreamHandle>>,
    children: Arc<ChildList>,
    udp: Arc<Vec<UdpTransport>>,
    streams: Streams,
    conns: HashMap<ActorId, Conn>,
    active: Option<ActorId>,
    next_conn_id: u64,
    connect_failures: u32,
    retry_after: Option<Instant>,
    /// The dialer of the last connection that broke: the next connection
    /// avoids it (the queries it carried are being retried).
    avoid: Option<String>,
    probing: bool,
    probe_delay: Duration,
    probe_task: Option<TaskGuard>,
    tasks: TaskScope,
    /// Where UDP queries go.
    udp_servers: Vec<SocketAddr>,
    /// Opening (or reopening) the UDP sessions, or waiting to retry.
    udp_opening: Option<TaskGuard>,
    /// Consecutive failures to open them.
    udp_failures: u32,
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
        let (udp_servers, streams) = transports(&args.slot.spec.transport)?;
        // UDP sessions may need a handshake with a node: they open in a
        // task, and the upstream takes queries once they are ready (the
        // resolver waits for it meanwhile). Without UDP it takes them now.
        let udp_opening = (!udp_servers.is_empty())
            .then(|| open_udp(&args.slot, udp_servers.clone(), &args.tasks, &myself));
        let mut state = UpstreamState {
            slot: args.slot,
            attachment: None,
            children: args.children,
            udp: Arc::new(Vec::new()),
            streams,
            conns: HashMap::new(),
            active: None,
            next_conn_id: 1,
            connect_failures: 0,
            retry_after: None,
            avoid: None,
            probing: false,
            probe_delay: PROBE_FIRST,
            probe_task: None,
            tasks: args.tasks,
            udp_servers,
            udp_opening,
            udp_failures: 0,
        };
        if state.udp_opening.is_none() {
            state.publish(&myself);
        }
        // Restarted while its upstream is down: keep probing it back.
        if !state.slot.health.is_up() {
            state.probing = true;
            state.schedule_probe(&myself);
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
            UpstreamMsg::ConnReady(conn_id) => state.conn_ready(conn_id),
            UpstreamMsg::StartProbing => {
                if !state.probing {
                    state.probing = true;
                    state.probe_delay = PROBE_FIRST;
                    state.schedule_probe(&myself);
                }
            }
            UpstreamMsg::Probe => state.probe(&myself).await,
            UpstreamMsg::ProbeResult(ok) => state.probe_result(&myself, ok),
            UpstreamMsg::UdpReady(Err(e)) => {
                // No route, no node, no descriptors: the upstream stays up
                // (its TCP side, if any, works; UDP queries fail at once so
                // the resolver moves on) and tries again, backing off.
                state.udp_failures = state.udp_failures.saturating_add(1);
                let delay = UDP_RETRY_MIN
                    .saturating_mul(1 << state.udp_failures.min(10))
                    .min(UDP_RETRY_MAX);
                warn_throttled!(state.name(), upstream = %state.name(), error = %e,
                    retry_in_ms = delay.as_millis() as u64, "cannot open the upstream's UDP sessions");
                if state.attachment.is_none() {
                    state.publish(&myself);
                }
                let me = myself.clone();
                state.udp_opening = Some(TaskGuard::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = me.send_message(UpstreamMsg::RetryUdp);
                }));
            }
            UpstreamMsg::RetryUdp => {
                state.udp_opening = Some(open_udp(
                    &state.slot,
                    state.udp_servers.clone(),
                    &state.tasks,
                    &myself,
                ));
            }
            UpstreamMsg::UdpReady(Ok(opened)) => {
                state.udp_opening = None;
                state.udp_failures = 0;
                let new = Arc::new(opened);
                let old = std::mem::replace(&mut state.udp, new);
                state.publish(&myself);
                // Queries in flight on the sessions being replaced go again
                // on the new ones, once.
                for (old, new) in old.iter().zip(state.udp.iter()) {
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
            UpstreamMsg::DialerDown => {
                // The dialer under the UDP sessions went down and its group
                // has another member up: move there. The old sessions serve
                // until the new ones are ready.
                if state.udp_opening.is_none() {
                    state.udp_opening = Some(open_udp(
                        &state.slot,
                        state.udp_servers.clone(),
                        &state.tasks,
                        &myself,
                    ));
                }
            }
            UpstreamMsg::TransportFailed(reason) => {
                return Err(format!("UDP socket failed: {reason}").into())
            }
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
            state.conn_ended(&myself, id, reason).await;
        }
        Ok(())
    }
}

/// Opens UDP sessions to `servers` (concurrently) in a task; the actor
/// hears `UdpReady`.
fn open_udp(
    slot: &Arc<UpstreamSlot>,
    servers: Vec<SocketAddr>,
    tasks: &TaskScope,
    myself: &ActorRef<UpstreamMsg>,
) -> TaskGuard {
    let (slot, tasks, me) = (slot.clone(), tasks.clone(), myself.clone());
    TaskGuard::spawn(async move {
        let opening = servers
            .iter()
            .map(|addr| UdpTransport::open(*addr, &slot.via, &tasks, &slot.name, &me));
        let opened = futures::future::try_join_all(opening).await;
        let _ = me.send_message(UpstreamMsg::UdpReady(opened));
    })
}

/// The UDP servers and the stream setup of a transport.
fn transports(transport: &Transport) -> Result<(Vec<SocketAddr>, Streams), ActorProcessingErr> {
    Ok(match transport {
        Transport::Udp(addr) => (vec![*addr], Streams::None),
        Transport::Tcp(addr) => (vec![], Streams::Dns(vec![StreamTarget::Tcp(*addr)])),
        Transport::TcpUdp(addr) => (vec![*addr], Streams::Dns(vec![StreamTarget::Tcp(*addr)])),
        Transport::System(path) => {
            let servers = read_resolv_conf(path)?;
            let streams = servers.iter().map(|a| StreamTarget::Tcp(*a)).collect();
            (servers, Streams::Dns(streams))
        }
        Transport::Tls(target) => {
            let config = tls::client_config(target.ca_file.as_deref(), &[])?;
            let target = StreamTarget::Tls {
                addr: target.addr,
                name: tls::server_name(&target.server_name)?,
                config,
            };
            (vec![], Streams::Dns(vec![target]))
        }
        Transport::Https(https) => {
            let config = tls::client_config(https.tls.ca_file.as_deref(), &[b"h2"])?;
            let target = StreamTarget::Tls {
                addr: https.tls.addr,
                name: tls::server_name(&https.tls.server_name)?,
                config,
            };
            let uri = format!("https://{}{}", https.authority, https.path);
            (vec![], Streams::Https { target, uri })
        }
    })
}

/// The nameservers of a resolv.conf (port 53).
pub fn read_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, ActorProcessingErr> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let servers = resolv_conf_servers(&text);
    if servers.is_empty() {
        return Err(format!("{}: no usable nameserver lines", path.display()).into());
    }
    Ok(servers)
}

impl UpstreamState {
    /// Publishes this incarnation and its current UDP transports: from now
    /// on the resolver sends it queries.
    fn publish(&mut self, myself: &ActorRef<UpstreamMsg>) {
        let handle = UpstreamHandle {
            actor: myself.clone(),
            udp: Arc::clone(&self.udp),
        };
        match &self.attachment {
            Some(attachment) => attachment.update(handle),
            None => {
                let live = self.slot.live();
                self.attachment = Some(live.attach(myself.get_id(), handle));
            }
        }
    }

    fn name(&self) -> &str {
        &self.slot.name
    }

    /// With several servers (system), move on after each run of failures.
    fn server_index(&self, servers: usize) -> usize {
        let failures = self.slot.health.consecutive_failures();
        (failures / DOWN_AFTER) as usize % servers.max(1)
    }

    async fn dispatch(&mut self, myself: &ActorRef<UpstreamMsg>, query: UpstreamQuery) {
        let over_stream =
            !matches!(self.streams, Streams::None) && (query.use_tcp || self.udp.is_empty());
        if over_stream {
            self.send_stream(myself, query).await;
        } else if !self.udp.is_empty() {
            let index = self.server_index(self.udp.len());
            self.udp[index].send(query);
        } else {
            query.fail(UpstreamError::Unavailable);
        }
    }

    /// Files the query with the active connection (opening one if needed)
    /// and queues its bytes. A connection whose task has just ended is
    /// replaced at once; its exit event comes later.
    async fn send_stream(&mut self, myself: &ActorRef<UpstreamMsg>, mut query: UpstreamQuery) {
        for _ in 0..2 {
            if self.retry_after.is_some_and(|at| Instant::now() < at) {
                return query.fail(UpstreamError::Unavailable);
            }
            let id = match self.active {
                Some(id) => id,
                None => match self.open_conn(myself).await {
                    Ok(id) => id,
                    Err(e) => {
                        warn_throttled!(self.name(), upstream = %self.name(), error = %e, "cannot start an upstream connection");
                        return query.fail(UpstreamError::Unavailable);
                    }
                },
            };
            let Some(conn) = self.conns.get(&id) else {
                return query.fail(UpstreamError::Unavailable);
            };
            let framed = conn.framed;
            let (key, wire) = match conn
                .pending
                .insert(query, |id, q| Conn::encode(framed, id, q))
            {
                Ok(filed) => filed,
                Err(query) => return query.fail(UpstreamError::Unavailable),
            };
            let deadline = conn.pending.deadline_of(key).unwrap_or_else(Instant::now);
            match conn.outgoing.try_send(Outgoing {
                key,
                wire,
                deadline,
            }) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if let Some(query) = conn.pending.take(key) {
                        query.fail(UpstreamError::Unavailable);
                    }
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    let Some(taken) = conn.pending.take(key) else {
                        return;
                    };
                    query = taken;
                    self.active = None;
                }
            }
        }
        query.fail(UpstreamError::Unavailable);
    }

    /// Starts a connection child; it connects in its own task.
    async fn open_conn(
        &mut self,
        myself: &ActorRef<UpstreamMsg>,
    ) -> Result<ActorId, ActorProcessingErr> {
        let conn_id = self.next_conn_id;
        self.next_conn_id += 1;
        let pending = Arc::new(Pending::default());
        let (outgoing, queue) = outgoing_queue();
        let supervisor = myself.get_cell();
        let exclude: Vec<&str> = self.avoid.as_deref().into_iter().collect();
        let dialer = self
            .slot
            .via
            .select(Track::Tcp, &exclude)
            .or_else(|| self.slot.via.select(Track::Tcp, &[]))
            .ok_or("no dialer to reach the upstream")?;
        let conn_dialer = dialer.clone();
        let (cell, join, framed) = match &self.streams {
            Streams::None => return Err("no stream transport".into()),
            Streams::Dns(targets) => {
                let target = targets[self.server_index(targets.len())].clone();
                let args = StreamConnArgs {
                    target,
                    dialer,
                    pending: pending.clone(),
                    outgoing: queue,
                    owner: myself.clone(),
                    conn_id,
                    idle: CONN_IDLE,
                };
                let (actor, join) = Actor::spawn_linked(None, StreamConn, args, supervisor).await?;
                (actor.get_cell(), join, true)
            }
            Streams::Https { target, uri } => {
                let args = DohConnArgs {
                    target: target.clone(),
                    dialer,
                    uri: uri.clone(),
                    pending: pending.clone(),
                    outgoing: queue,
                    owner: myself.clone(),
                    conn_id,
                    idle: CONN_IDLE,
                };
                let (actor, join) = Actor::spawn_linked(None, DohConn, args, supervisor).await?;
                (actor.get_cell(), join, false)
            }
        };
        let id = cell.get_id();
        self.children
            .add(format!("conn-{conn_id}"), "dns-upstream-conn", cell, join);
        self.conns.insert(
            id,
            Conn {
                conn_id,
                dialer: conn_dialer,
                outgoing,
                pending,
                framed,
                ready: false,
            },
        );
        self.active = Some(id);
        Ok(id)
    }

    fn conn_ready(&mut self, conn_id: u64) {
        if let Some(conn) = self.conns.values_mut().find(|c| c.conn_id == conn_id) {
            conn.ready = true;
            self.connect_failures = 0;
            self.retry_after = None;
            self.avoid = None;
        }
    }

    /// A connection child ended: forget it, back off if it never came up,
    /// and send its queries again once.
    async fn conn_ended(
        &mut self,
        myself: &ActorRef<UpstreamMsg>,
        id: ActorId,
        reason: ExitReason,
    ) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        self.children.remove(&id);
        if self.active == Some(id) {
            self.active = None;
        }
        if !reason.is_normal() {
            // Where a group has another member, the retry goes there.
            self.avoid = Some(conn.dialer.name.clone());
            if conn.ready {
                warn_throttled!(self.name(), upstream = %self.name(), %reason, "upstream connection lost");
            } else if !conn.dialer.health(Track::Tcp).is_up()
                && self.slot.via.has_other_up(Track::Tcp, &conn.dialer.name)
            {
                // The path failed, not the upstream: the next connection
                // goes through another member at once.
                warn_throttled!(self.name(), upstream = %self.name(), dialer = %conn.dialer.name, %reason,
                    "cannot reach upstream through this dialer; trying another");
            } else {
                self.connect_failures = self.connect_failures.saturating_add(1);
                let delay = RECONNECT_MIN
                    .saturating_mul(1 << self.connect_failures.min(10))
                    .min(RECONNECT_MAX);
                self.retry_after = Some(Instant::now() + delay);
                warn_throttled!(self.name(), upstream = %self.name(), %reason,
                    retry_in_ms = delay.as_millis() as u64, "cannot connect to upstream");
            }
        }
        let now = Instant::now();
        for mut query in conn.pending.take_all() {
            if query.retried || query.deadline <= now {
                query.fail(UpstreamError::ConnectionLost);
            } else {
                query.retried = true;
                self.send_stream(myself, query).await;
            }
        }
    }

    fn schedule_probe(&mut self, myself: &ActorRef<UpstreamMsg>) {
        let target = myself.clone();
        let delay = self.probe_delay;
        self.probe_task = Some(TaskGuard::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = target.send_message(UpstreamMsg::Probe);
        }));
    }

    async fn probe(&mut self, myself: &ActorRef<UpstreamMsg>) {
        if self.slot.health.is_up() {
            self.probing = false;
            return;
        }
        let (reply, answer) = oneshot::channel();
        let query = UpstreamQuery {
            question: Arc::from(&PROBE_QUESTION[..]),
            checking_disabled: false,
            dnssec_ok: false,
            use_tcp: false,
            deadline: Instant::now() + PROBE_TIMEOUT,
            retried: true,
            reply,
        };
        self.dispatch(myself, query).await;
        let target = myself.clone();
        self.probe_task = Some(TaskGuard::spawn(async move {
            let answered = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, answer).await,
                Ok(Ok(Ok(_)))
            );
            let _ = target.send_message(UpstreamMsg::ProbeResult(answered));
        }));
    }

    fn probe_result(&mut self, myself: &ActorRef<UpstreamMsg>, answered: bool) {
        if answered {
            self.slot.health.record_success();
            self.probing = false;
            tracing::info!(upstream = %self.name(), "upstream answers again; marked up");
        } else {
            self.probe_delay = (self.probe_delay * 2).min(PROBE_MAX);
            self.schedule_probe(myself);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let dir = std::env::temp_dir().join(format!("ward-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            "# x\nsearch lan\nnameserver 127.0.0.53\nnameserver fe80::1%lo\nnameserver fe80::2%nonexistent0\noptions edns0\n",
        )
        .unwrap();
        let servers = read_resolv_conf(&path).unwrap();
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        let link_local = std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, lo);
        assert_eq!(
            servers,
            vec!["127.0.0.53:53".parse().unwrap(), link_local.into()]
        );
        std::fs::write(&path, "search lan\n").unwrap();
        assert!(read_resolv_conf(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Inbounds (kind `udp-inbound`, children of `udp/inbounds`): sockets
//! where clients' datagrams enter. Each runs one receive loop that owns the
//! table of its flows: a datagram goes into its flow's endpoint queue
//! (bounded, drop-oldest) or starts a new endpoint; the loop never waits on
//! an endpoint. Endpoints report back on a channel the loop also reads:
//! gone (the entry is forgotten), or failed (the datagrams that failed go
//! again through a new endpoint that avoids the dialers that failed them).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use ward_supervision::{TaskGuard, TaskScope};

use super::endpoint::{Reply, MAX_RETRIES};
use super::flow::{is_quic_initial, FlowKey, FlowKind};
use super::metrics::Dropped;
use super::queue::{Datagram, Pushed};
use super::settings::InboundSpec;
use super::socks5_inbound::{self, Associations};
use super::tproxy;
use super::{Event, Handle, NewFlow, Relay};
use crate::dialer::socks5::{self, TargetAddr};
use crate::dialer::UdpSession;
use crate::io_class::{classify_io_error, IoClass, IoSide};
use crate::socket_drops::{SocketDrops, Watched};
use crate::udp_batch::{Datagrams, RecvBatch, BATCH};
use crate::warn_throttled;

/// Endpoint (and association) events queued for an inbound at most (they are rare: one or
/// two per flow).
pub(crate) const EVENTS: usize = 4096;
/// How long a failed flow's exclusions are kept for its next endpoint.
const FAILED_MEMORY: Duration = Duration::from_secs(30);
/// Failed flows remembered at most before the old ones are forgotten.
const FAILED_MAX: usize = 4096;
/// Batches read per wake-up before endpoint events get their turn.
const BATCHES_PER_TURN: usize = 8;
/// The largest UDP payload (IPv4: 65,535 minus the IP and UDP headers).
const MAX_DATAGRAM: usize = 65_507;

/// Datagrams of one receive batch going straight into their endpoints'
/// open sessions, sent together when the batch is done.
#[derive(Default)]
struct Outbox {
    /// Their bytes, one after another.
    bytes: Vec<u8>,
    /// Per flow, in the order flows first appeared in the batch.
    flows: Vec<Outgoing>,
    /// Where a flow's datagrams are laid out for sending.
    scratch: Datagrams,
}

struct Outgoing {
    key: FlowKey,
    session: Arc<UdpSession>,
    queue: Arc<super::queue::Queue>,
    datagrams: Vec<(SocketAddr, std::ops::Range<usize>)>,
}

impl Outbox {
    /// Takes a datagram for `key` when its flow already has some here (its
    /// order is kept) or its session is open with nothing queued.
    fn add(&mut self, key: FlowKey, handle: &Handle, dst: SocketAddr, bytes: &[u8]) -> bool {
        let index = match self.flows.iter().position(|f| f.key == key) {
            Some(index) => index,
            None => {
                let Some(session) = handle.queue.direct() else {
                    return false;
                };
                self.flows.push(Outgoing {
                    key,
                    session,
                    queue: handle.queue.clone(),
                    datagrams: Vec::new(),
                });
                self.flows.len() - 1
            }
        };
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.flows[index]
            .datagrams
            .push((dst, start..self.bytes.len()));
        true
    }
}

/// The flows of one inbound, owned by its receive loop.
pub struct Flows {
    relay: Arc<Relay>,
    reply: Arc<dyn Reply>,
    table: HashMap<FlowKey, Handle, foldhash::fast::RandomState>,
    events: mpsc::Sender<Event>,
    /// Flows whose path failed lately: the dialers they must avoid and the
    /// retries they used, kept for whichever endpoint takes the flow next.
    failed: HashMap<FlowKey, (Vec<String>, u8, Instant)>,
    outbox: Outbox,
}

impl Flows {
    pub fn new(relay: Arc<Relay>, reply: Arc<dyn Reply>) -> (Flows, mpsc::Receiver<Event>) {
        let (events, rx) = mpsc::channel(EVENTS);
        let flows = Flows {
            relay,
            reply,
            table: HashMap::default(),
            events,
            failed: HashMap::new(),
            outbox: Outbox::default(),
        };
        (flows, rx)
    }

    /// A datagram from `client` to `dst`. One going straight into its
    /// endpoint's open session waits in the outbox until [`Flows::flush`],
    /// which the receive loop calls after every batch.
    pub fn datagram(&mut self, client: SocketAddr, dst: SocketAddr, bytes: &[u8]) {
        // A QUIC connection keeps its own endpoint; everything else from a
        // source shares one (full-cone).
        let quic = FlowKey {
            client,
            dst: Some(dst),
        };
        let cone = FlowKey { client, dst: None };
        let key = if self.table.contains_key(&quic) {
            quic
        } else if self.table.contains_key(&cone) || !is_quic_initial(bytes) {
            cone
        } else {
            quic
        };
        if let Some(handle) = self.table.get(&key) {
            if self.outbox.add(key, handle, dst, bytes) {
                return;
            }
        }
        let datagram = Datagram {
            dst,
            bytes: bytes.to_vec(),
        };
        self.deliver(key, datagram, None);
    }

    /// Sends what the outbox holds, a few system calls per flow. What
    /// cannot go now goes through the endpoint's queue: a full socket
    /// buffer waits there; a failure is the endpoint's to judge (it
    /// never writes into a failed path again).
    pub fn flush(&mut self) {
        if self.outbox.flows.is_empty() {
            return;
        }
        let mut outbox = std::mem::take(&mut self.outbox);
        for flow in outbox.flows.drain(..) {
            let datagrams: Vec<(SocketAddr, &[u8])> = flow
                .datagrams
                .iter()
                .map(|(dst, range)| (*dst, &outbox.bytes[range.clone()]))
                .collect();
            let sent = match flow.session.send_many(&datagrams, &mut outbox.scratch) {
                Ok(()) => datagrams.len(),
                Err((sent, error)) => {
                    let mut left = datagrams[sent..].iter().map(|(dst, bytes)| Datagram {
                        dst: *dst,
                        bytes: bytes.to_vec(),
                    });
                    let error = (error.kind() != io::ErrorKind::WouldBlock).then_some(error);
                    if let Some(first) = left.next() {
                        self.deliver(flow.key, first, error);
                    }
                    for datagram in left {
                        self.deliver(flow.key, datagram, None);
                    }
                    sent
                }
            };
            if sent > 0 {
                flow.queue.touch();
                self.relay.metrics.upstream.inc_by(sent as u64);
            }
        }
        outbox.bytes.clear();
        self.outbox = outbox;
    }

    /// Hands a datagram to its flow's endpoint queue (with the error of a
    /// direct send that failed), or starts an endpoint for it.
    fn deliver(&mut self, key: FlowKey, datagram: Datagram, error: Option<io::Error>) {
        let datagram = match self.table.get(&key) {
            Some(handle) => {
                let pushed = match error {
                    Some(error) => handle.queue.push_failed(datagram, error),
                    None => handle.queue.push(datagram),
                };
                match pushed {
                    Pushed::Queued => return,
                    Pushed::DroppedOldest => {
                        self.relay.metrics.dropped(Dropped::QueueFull);
                        return;
                    }
                    Pushed::OverBudget => {
                        self.relay.metrics.dropped(Dropped::OverBudget);
                        return;
                    }
                    // Its endpoint just ended: start another.
                    Pushed::Closed(datagram) => datagram,
                }
            }
            None => datagram,
        };
        let kind = FlowKind::of(&datagram.bytes, datagram.dst);
        let (exclude, retries) = self.failed_lately(&key);
        self.start(key, kind, vec![datagram], exclude, retries);
    }

    /// What a flow that failed lately must avoid, and the retries it used.
    fn failed_lately(&mut self, key: &FlowKey) -> (Vec<String>, u8) {
        match self.failed.get(key) {
            Some((exclude, retries, at)) if at.elapsed() < FAILED_MEMORY => {
                (exclude.clone(), *retries)
            }
            _ => (Vec::new(), 0),
        }
    }

    fn start(
        &mut self,
        key: FlowKey,
        kind: FlowKind,
        datagrams: Vec<Datagram>,
        exclude: Vec<String>,
        retries: u8,
    ) {
        if retries > MAX_RETRIES {
            for _ in &datagrams {
                self.relay.metrics.dropped(Dropped::RetriesExhausted);
            }
            return;
        }
        let flow = NewFlow {
            key,
            kind,
            datagrams,
            exclude,
            retries,
            reply: self.reply.clone(),
            events: self.events.clone(),
        };
        match self.relay.start(flow) {
            Ok(handle) => {
                self.table.insert(key, handle);
            }
            Err((why, lost)) => {
                self.table.remove(&key);
                self.relay.metrics.refused(why);
                warn_throttled!("udp-refused", client = %key.client, reason = ?why, lost = lost.len(),
                    "UDP flow refused");
            }
        }
    }

    pub fn event(&mut self, event: Event) {
        match event {
            Event::Gone { key, id } => {
                if self.table.get(&key).is_some_and(|h| h.id == id) {
                    self.table.remove(&key);
                }
            }
            Event::Failed {
                key,
                id,
                datagrams,
                exclude,
                retries,
            } => {
                if retries > MAX_RETRIES {
                    if self.table.get(&key).is_some_and(|h| h.id == id) {
                        self.table.remove(&key);
                    }
                    for _ in &datagrams {
                        self.relay.metrics.dropped(Dropped::RetriesExhausted);
                    }
                    return;
                }
                self.relay.metrics.failovers.inc();
                if self.failed.len() >= FAILED_MAX {
                    self.failed
                        .retain(|_, (_, _, at)| at.elapsed() < FAILED_MEMORY);
                }
                self.failed
                    .insert(key, (exclude.clone(), retries, Instant::now()));
                match self.table.get(&key) {
                    // A datagram that arrived after the failed endpoint
                    // closed its queue already started the flow again:
                    // what failed goes there.
                    Some(handle) if handle.id != id => {
                        for datagram in datagrams {
                            match handle.queue.push(datagram) {
                                Pushed::Queued => {}
                                Pushed::OverBudget => {
                                    self.relay.metrics.dropped(Dropped::OverBudget)
                                }
                                _ => self.relay.metrics.dropped(Dropped::QueueFull),
                            }
                        }
                    }
                    _ => {
                        self.table.remove(&key);
                        if datagrams.is_empty() {
                            // Nothing to resend: the next datagram starts
                            // the flow again, through what health says.
                            return;
                        }
                        let kind = FlowKind::of(&datagrams[0].bytes, datagrams[0].dst);
                        self.start(key, kind, datagrams, exclude, retries);
                    }
                }
            }
            Event::FdLimit => self.relay.fd_exhausted(),
        }
    }

    /// The client's association ended: so do its flows.
    pub fn end_client(&mut self, client: SocketAddr) {
        self.table.retain(|key, handle| {
            let keep = key.client != client;
            if !keep {
                handle.queue.close();
            }
            keep
        });
    }

    pub fn metrics(&self) -> &super::metrics::UdpMetrics {
        &self.relay.metrics
    }

    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }
}

impl Drop for Flows {
    fn drop(&mut self) {
        // The inbound is gone: its endpoints end with it.
        for handle in self.table.values() {
            handle.queue.close();
        }
    }
}

/// Replies from an inbound's own socket: as they are for a forward
/// inbound, with the SOCKS5 UDP header naming their source for a SOCKS5
/// one. Weak: an endpoint must not keep the socket bound after its inbound
/// died.
pub(crate) struct SocketReply {
    socket: Weak<UdpSocket>,
    socks5: bool,
    /// Runs of answers may still leave as one segmented send.
    gso: AtomicBool,
}

impl SocketReply {
    pub(crate) fn new(socket: &Arc<UdpSocket>, socks5: bool) -> Arc<SocketReply> {
        Arc::new(SocketReply {
            socket: Arc::downgrade(socket),
            socks5,
            gso: AtomicBool::new(true),
        })
    }

    fn socket(&self) -> io::Result<Arc<UdpSocket>> {
        self.socket
            .upgrade()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    fn write(&self, from: SocketAddr, payload: &[u8], out: &mut Vec<u8>) {
        if self.socks5 {
            socks5::encapsulate(&TargetAddr::Ip(from), payload, out);
        } else {
            out.extend_from_slice(payload);
        }
    }
}

impl Reply for SocketReply {
    fn send_many(
        &self,
        client: SocketAddr,
        answers: &[(SocketAddr, &[u8])],
        out: &mut Datagrams,
    ) -> Result<(), (usize, io::Error)> {
        let socket = self.socket().map_err(|e| (0, e))?;
        out.clear();
        for (from, payload) in answers {
            out.push(Some(client), |bytes| self.write(*from, payload, bytes));
        }
        out.send(socket.as_raw_fd(), &self.gso)
    }
}

pub struct UdpInbound;

pub struct InboundArgs {
    pub spec: InboundSpec,
    /// The inbound's path in the tree (its socket's drops are counted
    /// under it).
    pub path: String,
    pub relay: Arc<Relay>,
    pub tasks: TaskScope,
}

pub enum InboundMsg {
    /// The receive loop ended: the socket is unusable.
    SocketDead(String),
}

pub struct InboundState {
    _loop: TaskGuard,
    /// A SOCKS5 inbound's accept loop (and its control connections).
    _accept: Option<TaskGuard>,
}

impl Actor for UdpInbound {
    type Msg = InboundMsg;
    type State = InboundState;
    type Arguments = InboundArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<InboundMsg>,
        args: InboundArgs,
    ) -> Result<InboundState, ActorProcessingErr> {
        let receive = match args.spec {
            InboundSpec::Forward { listen, to } => {
                let socket = bind(listen)?;
                watch_drops(&args.path, &socket);
                tracing::info!(%listen, %to, "UDP forward inbound listening");
                let reply = SocketReply::new(&socket, false);
                let (flows, events) = Flows::new(args.relay, reply);
                args.tasks.spawn(forward(socket, to, flows, events, myself))
            }
            InboundSpec::Tproxy { listen } => {
                let socket = tproxy::bind_listener(listen)?;
                watch_drops(&args.path, &socket);
                tracing::info!(%listen, "UDP tproxy inbound listening");
                let reply = Arc::new(tproxy::TproxyReply {
                    pool: Arc::default(),
                    inbound: Arc::downgrade(&socket),
                    gso: AtomicBool::new(true),
                });
                let (flows, events) = Flows::new(args.relay, reply);
                args.tasks
                    .spawn(tproxy::receive_loop(socket, flows, events, myself))
            }
            InboundSpec::Socks5 {
                listen,
                credentials,
            } => {
                let socket = bind(listen)?;
                watch_drops(&args.path, &socket);
                let relay_addr = socket.local_addr()?;
                // The same family rules as the relay socket (IPv6-only on
                // `[::]`), so `0.0.0.0:p` and `[::]:p` can both be served.
                let listener = crate::dns::sockets::bind_tcp(relay_addr)?;
                tracing::info!(%listen, "SOCKS5 inbound listening (UDP ASSOCIATE)");
                let associations = Arc::new(Associations::default());
                let (ended_tx, ended) = mpsc::channel(EVENTS);
                let (flows, events) = Flows::new(args.relay, SocketReply::new(&socket, true));
                let relay = args.tasks.spawn(socks5_inbound::relay_loop(
                    socket,
                    associations.clone(),
                    flows,
                    events,
                    ended,
                    myself.clone(),
                ));
                let accept = args.tasks.spawn(socks5_inbound::accept_loop(
                    listener,
                    relay_addr,
                    credentials,
                    associations,
                    ended_tx,
                    myself,
                ));
                return Ok(InboundState {
                    _loop: relay,
                    _accept: Some(accept),
                });
            }
        };
        Ok(InboundState {
            _loop: receive,
            _accept: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<InboundMsg>,
        message: InboundMsg,
        _state: &mut InboundState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            InboundMsg::SocketDead(reason) => Err(format!("socket unusable: {reason}").into()),
        }
    }
}

/// A forward inbound's loop: every datagram goes to `to`. Datagrams are
/// taken in batches (`recvmmsg`).
async fn forward(
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    mut flows: Flows,
    mut events: mpsc::Receiver<Event>,
    inbound: ActorRef<InboundMsg>,
) {
    let fd = socket.as_raw_fd();
    let mut batch = RecvBatch::with_slot(MAX_DATAGRAM);
    loop {
        tokio::select! {
            ready = socket.readable() => {
                if let Err(e) = ready {
                    let _ = inbound.send_message(InboundMsg::SocketDead(e.to_string()));
                    return;
                }
                for _ in 0..BATCHES_PER_TURN {
                    match socket.try_io(Interest::READABLE, || batch.recv(fd)) {
                        Ok(n) => {
                            for i in 0..n {
                                if let Some((bytes, client)) = batch.get(i) {
                                    flows.datagram(client, to, bytes);
                                }
                            }
                            flows.flush();
                            if n < BATCH {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            if classify_io_error(&e, IoSide::Listener) == IoClass::SocketDead {
                                let _ = inbound.send_message(InboundMsg::SocketDead(e.to_string()));
                                return;
                            }
                            break;
                        }
                    }
                }
            }
            Some(event) = events.recv() => flows.event(event),
        }
    }
}

/// Counts what the kernel drops at `socket` under `path`.
fn watch_drops(path: &str, socket: &Arc<UdpSocket>) {
    let watched: Watched = socket.clone();
    SocketDrops::global().watch(path, &watched);
}

/// A UDP socket for an inbound: a large receive buffer for bursts.
pub(crate) fn bind(listen: SocketAddr) -> io::Result<Arc<UdpSocket>> {
    Ok(Arc::new(UdpSocket::from_std(
        crate::dns::sockets::bind_udp(listen)?,
    )?))
}

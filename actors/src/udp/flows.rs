//! The flow table of one inbound, owned by its receive loop: a datagram
//! goes into its flow's endpoint queue (bounded, drop-oldest) or starts a
//! new endpoint; the loop never waits on an endpoint. Datagrams for flows
//! whose sessions are open leave straight from the loop, a batch at a
//! time. Endpoints report back on a channel the loop also reads: gone (the
//! entry is forgotten), or failed (the datagrams that failed go again
//! through a new endpoint that avoids the dialers that failed them).

use std::collections::HashMap;

use crate::lru::Lru;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::endpoint::{Reply, MAX_RETRIES};
use super::flow::{is_quic_initial, FlowKey, FlowKind};
use super::metrics::Dropped;
use super::queue::{Datagram, Pushed};
use super::{Event, Handle, NewFlow, Relay};
use crate::dialer::UdpSession;
use crate::net::udp_batch::Datagrams;
use crate::warn_throttled;

/// Endpoint (and association) events queued for an inbound at most (they are rare: one or
/// two per flow).
pub(crate) const EVENTS: usize = 4096;
/// How long a failed flow's exclusions are kept for its next endpoint.
const FAILED_MEMORY: Duration = Duration::from_secs(30);
/// Failed flows remembered at most before the old ones are forgotten.
const FAILED_MAX: usize = 4096;

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
    flow: Arc<super::live_flows::FlowInfo>,
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
                    flow: handle.flow.clone(),
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
    inbound: &'static str,
    table: HashMap<FlowKey, Handle, foldhash::fast::RandomState>,
    events: mpsc::Sender<Event>,
    /// Flows whose path failed lately: the dialers they must avoid and the
    /// retries they used, kept for whichever endpoint takes the flow next.
    failed: Lru<FlowKey, (Vec<String>, u8, Instant)>,
    outbox: Outbox,
}

impl Flows {
    /// The flows of an inbound of kind `inbound` (`forward`, `tproxy`,
    /// `socks5`), answered through `reply`.
    pub fn new(
        relay: Arc<Relay>,
        reply: Arc<dyn Reply>,
        inbound: &'static str,
    ) -> (Flows, mpsc::Receiver<Event>) {
        let (events, rx) = mpsc::channel(EVENTS);
        let flows = Flows {
            relay,
            reply,
            inbound,
            table: HashMap::default(),
            events,
            failed: Lru::new(FAILED_MAX),
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
                let bytes = datagrams[..sent].iter().map(|(_, b)| b.len());
                flow.flow.sent(bytes.sum());
                let (dst, last) = datagrams[sent - 1];
                flow.queue.sent_directly(dst, last);
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
        match self.failed.peek(key) {
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
            inbound: self.inbound,
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
                self.remember_failed(key, exclude.clone(), retries);
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

    /// Remembers what a failed flow must avoid, for its next endpoint; at
    /// the cap the one remembered longest ago goes.
    fn remember_failed(&mut self, key: FlowKey, exclude: Vec<String>, retries: u8) {
        self.failed.insert(key, (exclude, retries, Instant::now()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::metrics::UdpMetrics;
    use crate::udp::tests::{relay, NoReply};

    #[tokio::test]
    async fn failed_flows_remembered_stay_under_the_cap_the_oldest_going_first() {
        let (mut flows, _events) = Flows::new(
            relay(&Arc::new(UdpMetrics::default())),
            Arc::new(NoReply),
            "forward",
        );
        let key = |port| FlowKey {
            client: SocketAddr::from(([127, 0, 0, 1], port)),
            dst: None,
        };
        flows.remember_failed(key(0), vec!["n1".into()], 1);
        for port in 1..=FAILED_MAX as u16 {
            flows.remember_failed(key(port), vec!["n1".into()], 1);
        }
        assert_eq!(flows.failed.len(), FAILED_MAX);
        assert!(flows.failed.peek(&key(0)).is_none(), "the oldest went");
        assert!(flows.failed.peek(&key(FAILED_MAX as u16)).is_some());
        // One already remembered is refreshed, not counted twice.
        flows.remember_failed(key(7), vec!["n2".into()], 2);
        assert_eq!(flows.failed.len(), FAILED_MAX);
        assert_eq!(flows.failed.peek(&key(7)).map(|f| f.1), Some(2));
    }
}

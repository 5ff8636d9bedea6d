//! One flow's endpoint (kind `udp-endpoint`, a temporary task child of
//! `udp/endpoints`, shown as `<client>#<id> via <dialer>`): it goes through
//! the dialer picked from its route when it was asked for, owns
//! its session (a direct socket, or a SOCKS5 UDP association), carries the
//! client's datagrams out and the answers back.
//!
//! It ends normally when the flow idles. When the path fails (a write or a
//! read error that blames it, the association's control connection
//! closing) it reports the failure to its dialer, hands the datagram that
//! failed back to its inbound to be sent again through another dialer, and
//! fails with the path's classified failure: it never writes into that
//! path again.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use ward_supervision::{ChildFailure, ChildSpec, Classify, Restart};

use super::flow::FlowKey;
use super::metrics::{Dropped, Refused, UdpMetrics};
use super::queue::{Datagram, Queue};
use super::Event;
use crate::dialer::{socks5, Blame, Dialer, Failure, Stage, Track, UdpSession};
use crate::io_class::IoClass;
use crate::net::udp_batch::{Datagrams, RecvBatch};
use crate::warn_throttled;

/// How long opening a session may take.
const SESSION_TIMEOUT: Duration = Duration::from_secs(3);
/// A datagram sent this recently is sent again when the path fails under
/// it (it was most likely lost with the path).
const IN_FLIGHT: Duration = Duration::from_secs(1);
/// Retries of a failed flow through other dialers, at most.
pub const MAX_RETRIES: u8 = 2;

/// How answers go back to the client: the inbound's socket (with a SOCKS5
/// header for a SOCKS5 client).
pub trait Reply: Send + Sync {
    /// Sends `answers` (each with where it came from) to `client` in
    /// order, laid out in `out`: how many went before the first that
    /// could not, and why. `NotConnected` when the inbound is gone (the
    /// endpoint then ends).
    fn send_many(
        &self,
        client: SocketAddr,
        answers: &[(SocketAddr, &[u8])],
        out: &mut Datagrams,
    ) -> Result<(), (usize, io::Error)>;
}

pub struct EndpointArgs {
    /// Its entry in the relay's live flows (bytes, start).
    pub flow: Arc<super::live_flows::FlowInfo>,
    pub key: FlowKey,
    pub id: u64,
    /// The first datagram's destination (its family picks the socket's
    /// where a direct flow cannot have a dual-stack one).
    pub first: SocketAddr,
    /// The path, picked from the flow's route when it was asked for.
    pub dialer: Arc<Dialer>,
    /// Dialers that already failed this flow.
    pub exclude: Vec<String>,
    pub retries: u8,
    pub queue: Arc<Queue>,
    pub reply: Arc<dyn Reply>,
    pub events: mpsc::Sender<Event>,
    pub idle: Duration,
    /// Live endpoints; this one is counted already.
    pub live: Arc<AtomicUsize>,
    pub metrics: Arc<UdpMetrics>,
    /// Set by whoever takes the flow first: this endpoint when it starts,
    /// or the relay giving it up because its start was never answered.
    pub owned: Arc<AtomicBool>,
    /// Told when a session opened (descriptors are there again).
    pub relay: Weak<super::Relay>,
}

/// Why an endpoint ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Its path failed under it (classed as the failure was).
    #[error("path through {dialer} failed: {failure}")]
    PathFailed { dialer: String, failure: Failure },
    /// Its start came after the flow was given up (its supervisor was
    /// restarting).
    #[error("the flow was given up before its endpoint started")]
    GivenUp,
}

impl Classify for EndpointError {
    fn class(&self) -> &'static str {
        match self {
            EndpointError::PathFailed { failure, .. } => failure.class.label(),
            EndpointError::GivenUp => "normal",
        }
    }
}

/// The endpoint's child: a temporary task child running the flow.
pub fn child_spec(name: String, args: Arc<EndpointArgs>) -> ChildSpec {
    let detail = format!("via {}", args.dialer.name);
    ChildSpec::task(name, "udp-endpoint", Restart::Temporary, move |_| {
        let args = args.clone();
        async move {
            if args.owned.swap(true, Ordering::AcqRel) {
                return Err(ChildFailure::of(EndpointError::GivenUp));
            }
            // Nothing can fail after this: the count is the endpoint's now,
            // and the flow ends however the task does (a kill included).
            let live = Live(args);
            Ok(async move { run(&live.0).await.map_err(ChildFailure::of) })
        }
    })
    .with_detail(detail)
}

impl EndpointArgs {
    /// Takes the flow out of the live count and closes its queue: what
    /// waited there, for whoever ends the flow to count.
    pub(super) fn uncount(&self) -> Vec<Datagram> {
        self.live.fetch_sub(1, Ordering::AcqRel);
        if let Some(relay) = self.relay.upgrade() {
            relay.live_flows.remove(self.id);
        }
        self.metrics.endpoints.dec();
        self.queue.close()
    }

    /// The flow is over: uncounts it, drops what waits in its queue and
    /// tells the inbound. Whoever owns the flow calls it, once.
    pub(super) fn end(&self) {
        for _ in self.uncount() {
            self.metrics.dropped(Dropped::SendFailed);
        }
        let gone = Event::Gone {
            key: self.key,
            id: self.id,
        };
        if self.events.try_send(gone).is_err() {
            self.metrics.dropped(Dropped::EventLost);
        }
    }
}

/// Ends the flow however the endpoint ends (a kill included).
struct Live(Arc<EndpointArgs>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The flow, until it idles or its path fails.
async fn run(a: &EndpointArgs) -> Result<(), EndpointError> {
    let dialer = &a.dialer;
    // Boxed: opening (a SOCKS5 handshake) takes more room than the rest of
    // the flow's life, and an idle flow should not keep it.
    let session = match Box::pin(dialer.udp_flow(a.first, SESSION_TIMEOUT)).await {
        Ok(session) => {
            if let Some(relay) = a.relay.upgrade() {
                relay.fd_available();
            }
            session
        }
        Err(failure) if failure.blame == Blame::Nobody => {
            // Out of descriptors or buffers here: not the path's doing.
            if failure.class == IoClass::Transient {
                let _ = a.events.try_send(Event::FdLimit);
            }
            a.metrics.refused(Refused::FdLimit);
            for _ in a.queue.close() {
                a.metrics.dropped(Dropped::SendFailed);
            }
            return Ok(());
        }
        Err(failure) => return Err(failed(a, dialer, &failure, Vec::new())),
    };
    // A SOCKS5 association's control connection, watched for its end.
    // Boxed (once): a direct flow, most of them, keeps no room for it.
    // The session goes into its Arc through a function, so the flow's
    // future keeps no room for it inline either.
    let (session, control) = share(session);
    let mut control = control.map(|control| Box::pin(watch(control)));
    // From now on the inbound may send straight into the session.
    a.queue.set_direct(Some(session.clone()));
    let mut last = Instant::now();
    // The datagram this endpoint sent last since the session last
    // answered (the inbound's direct sends keep theirs in the queue).
    let mut sent: Option<(Instant, Datagram)> = None;
    // The one most likely lost with a failed path: the newer of the two,
    // if recent.
    let recent = |sent: &mut Option<(Instant, Datagram)>| {
        let direct = a.queue.take_unanswered();
        let newest = match (sent.take(), direct) {
            (Some(s), Some(d)) => Some(if d.0 > s.0 { d } else { s }),
            (s, d) => s.or(d),
        };
        newest
            .filter(|(at, _)| at.elapsed() < IN_FLIGHT)
            .map(|(_, d)| d)
            .into_iter()
            .collect::<Vec<_>>()
    };
    loop {
        tokio::select! {
            item = a.queue.pop() => {
                let Some((datagram, direct_failure)) = item else { return Ok(()) };
                // A direct send by the inbound that failed: judged here,
                // and never written again.
                let sent_now = match direct_failure {
                    Some(e) => Err(e),
                    // Boxed: a datagram waits here only while the socket
                    // buffer is full, and its room is half the flow's.
                    None => Box::pin(session.send_to(&datagram.bytes, datagram.dst)).await,
                };
                match sent_now {
                    Ok(()) => {
                        a.metrics.upstream.inc();
                        a.flow.sent(datagram.bytes.len());
                        last = Instant::now();
                        sent = Some((last, datagram));
                    }
                    Err(e) => {
                        let failure = Failure::io(&e, Stage::Session, dialer.hop(), true);
                        dialer.report_failure(Track::Udp, &failure);
                        if failure.blames_path() {
                            return Err(failed(a, dialer, &failure, vec![datagram]));
                        }
                        a.metrics.dropped(Dropped::SendFailed);
                    }
                }
            }
            readable = session.readable() => {
                let received = match readable {
                    Ok(()) => relay_answers(a, &session),
                    Err(e) => Err(e),
                };
                match received {
                    Ok(Answers::Some) => {
                        last = Instant::now();
                        sent = None;
                        a.queue.answered();
                    }
                    Ok(Answers::None) => {}
                    // The inbound is gone: so is the flow.
                    Ok(Answers::InboundGone) => return Ok(()),
                    Err(e) => {
                        let failure = Failure::io(&e, Stage::Session, dialer.hop(), true);
                        dialer.report_failure(Track::Udp, &failure);
                        // A session over a stream that ended carries
                        // nothing more, whoever is to blame.
                        if failure.blames_path() || session.is_over() {
                            return Err(failed(a, dialer, &failure, recent(&mut sent)));
                        }
                    }
                }
            },
            closed = closed(&mut control) => {
                let failure = Failure::association_closed(closed.as_ref());
                dialer.report_failure(Track::Udp, &failure);
                return Err(failed(a, dialer, &failure, recent(&mut sent)));
            }
            () = tokio::time::sleep_until((last + a.idle).into()) => {
                // The inbound may have kept the flow busy on its own.
                match a.queue.touched() {
                    Some(touched) if touched > last => last = touched,
                    _ => return Ok(()),
                }
            }
        }
    }
}

/// The session shared (with the inbound, which sends into it), and its
/// control connection taken out.
fn share(mut session: UdpSession) -> (Arc<UdpSession>, Option<TcpStream>) {
    let control = session.take_control();
    (Arc::new(session), control)
}

/// What one wake-up of the session's socket brought.
enum Answers {
    Some,
    None,
    InboundGone,
}

/// Batches of answers taken per wake-up at most, before the endpoint's
/// other work gets its turn.
const ANSWER_BATCHES: usize = 8;

thread_local! {
    /// The receive batch and send buffer of every endpoint on this thread:
    /// an idle endpoint holds none of its own.
    static ANSWERS: std::cell::RefCell<(RecvBatch, Datagrams)> =
        std::cell::RefCell::new((RecvBatch::with_slot(65_535), Datagrams::default()));
}

/// Sends the answers waiting on the session back to the client, a batch
/// at a time (`recvmmsg` in, runs of one size as one segmented send out).
fn relay_answers(a: &EndpointArgs, session: &UdpSession) -> io::Result<Answers> {
    ANSWERS.with_borrow_mut(|(batch, out)| {
        let mut got = Answers::None;
        for _ in 0..ANSWER_BATCHES {
            let n = match session.try_recv_batch(batch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
                Err(e) => return Err(e),
            };
            got = Answers::Some;
            let answers: Vec<(SocketAddr, &[u8])> =
                (0..n).filter_map(|i| session.received(batch, i)).collect();
            let mut start = 0;
            while start < answers.len() {
                match a.reply.send_many(a.key.client, &answers[start..], out) {
                    Ok(()) => {
                        a.metrics.downstream.inc_by((answers.len() - start) as u64);
                        a.flow
                            .received(answers[start..].iter().map(|(_, b)| b.len()).sum());
                        break;
                    }
                    Err((_, e)) if e.kind() == io::ErrorKind::NotConnected => {
                        return Ok(Answers::InboundGone)
                    }
                    // The one that failed is dropped; the rest go on.
                    Err((sent, _)) => {
                        a.metrics.downstream.inc_by(sent as u64);
                        let bytes = answers[start..start + sent].iter().map(|(_, b)| b.len());
                        a.flow.received(bytes.sum());
                        a.metrics.dropped(Dropped::ReplyFailed);
                        start += sent + 1;
                    }
                }
            }
        }
        Ok(got)
    })
}

/// Ends with the association's control connection (which it keeps open
/// until then).
async fn watch(mut control: TcpStream) -> Option<io::Error> {
    socks5::control_closed(&mut control).await
}

/// Ends when the association's control connection does; never without one.
async fn closed<F: Future<Output = Option<io::Error>>>(
    watch: &mut Option<Pin<Box<F>>>,
) -> Option<io::Error> {
    match watch {
        Some(watch) => watch.await,
        None => std::future::pending().await,
    }
}

/// The path failed: hand what is left of the flow back to the inbound, to
/// go again through another dialer, and say why the endpoint ends.
fn failed(
    a: &EndpointArgs,
    dialer: &Dialer,
    failure: &Failure,
    mut again: Vec<Datagram>,
) -> EndpointError {
    again.extend(a.queue.close());
    let mut exclude = a.exclude.clone();
    exclude.push(dialer.name.clone());
    warn_throttled!(&format!("udp-path:{}", dialer.name), dialer = %dialer.name,
        client = %a.key.client, %failure, "UDP flow's path failed; moving it to another dialer");
    let failed = Event::Failed {
        key: a.key,
        id: a.id,
        datagrams: again,
        exclude,
        retries: a.retries + 1,
    };
    if let Err(lost) = a.events.try_send(failed) {
        if let Event::Failed { datagrams, .. } = lost.into_inner() {
            for _ in datagrams {
                a.metrics.dropped(Dropped::EventLost);
            }
        }
    }
    EndpointError::PathFailed {
        dialer: dialer.name.clone(),
        failure: failure.clone(),
    }
}

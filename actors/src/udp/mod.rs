//! The UDP relay: inbounds receive datagrams, one endpoint actor per flow
//! carries them over a dialer and sends the answers back.
//!
//! - [`inbound`]: the receive loops (kind `udp-inbound`); each owns the
//!   table of its flows and never waits on an endpoint.
//! - [`endpoint`]: one temporary child of `udp/endpoints` per flow (kind
//!   `udp-endpoint`), owning its session on a dialer.
//! - [`Relay`]: what inbounds share: settings, dialers, the live-endpoint
//!   cap, and the way to the endpoints supervisor.
//! - [`LocalDns`]: what the relay needs of ward's own DNS (the application
//!   provides it; the relay does not know the DNS module).

pub mod endpoint;
pub mod flow;
pub mod flows;
pub mod inbound;
pub mod live_flows;
pub mod metrics;
pub mod queue;
pub mod reply_pool;
pub mod settings;
pub mod socks5_inbound;
pub mod tproxy;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::mpsc;
use ward_supervision::{Backoff, BackoffPolicy, ChildSpec, SupervisorMsg, SupervisorView};

use crate::dialer::{Dialers, Track};
use endpoint::{EndpointArgs, Reply};
use flow::{FlowKey, FlowKind};
use live_flows::{FlowInfo, LiveFlows};
use metrics::{Dropped, Refused, UdpMetrics};
use queue::{Budget, Datagram, Pushed, Queue};
use settings::UdpSettings;

/// Where the endpoints live in the tree.
pub const ENDPOINTS_PATH: &str = "udp/endpoints";
/// How long new flows are refused after running out of file descriptors:
/// 100 ms, doubling to 5 s for each time in a row, jittered. A session
/// that opens starts it over.
const FD_BACKOFF: BackoffPolicy =
    BackoffPolicy::doubling(Duration::from_millis(100), Duration::from_secs(5));

/// What an endpoint tells its inbound.
#[derive(Debug)]
pub enum Event {
    /// The endpoint ended (idle, killed, its inbound's socket gone).
    Gone { key: FlowKey, id: u64 },
    /// Its path failed: these datagrams go again through another dialer,
    /// never one in `exclude`.
    Failed {
        key: FlowKey,
        id: u64,
        datagrams: Vec<Datagram>,
        exclude: Vec<String>,
        retries: u8,
    },
    /// The endpoint could not open a session for lack of file descriptors.
    FdLimit,
}

/// An inbound's handle on one of its endpoints.
pub struct Handle {
    pub id: u64,
    pub queue: Arc<Queue>,
    /// Its entry in the live flows, for the bytes sent straight through.
    pub flow: Arc<FlowInfo>,
}

/// A flow to start.
pub struct NewFlow {
    pub key: FlowKey,
    pub kind: FlowKind,
    pub datagrams: Vec<Datagram>,
    pub exclude: Vec<String>,
    pub retries: u8,
    pub reply: Arc<dyn Reply>,
    pub events: mpsc::Sender<Event>,
    /// The kind of inbound it came in through.
    pub inbound: &'static str,
}

/// ward's own DNS, as the relay sees it. A tproxy inbound may capture
/// queries on their way to one of its UDP listen addresses (when the
/// firewall does not leave the router's own addresses alone): those are
/// answered by ward's DNS through that listener's socket, because binding
/// the listen address again for the answer would fail, and they make no
/// flow.
pub trait LocalDns: Send + Sync {
    /// Answers `query` from `client`, captured on its way to `listen`,
    /// through that listener's socket (now, or when resolved): true when
    /// `listen` is one of its UDP listen addresses with a live socket
    /// (it took the query), false when the relay should carry it.
    fn answer(&self, listen: SocketAddr, query: &[u8], client: SocketAddr) -> bool;
}

/// What every inbound shares.
pub struct Relay {
    /// This generation's settings, swapped by a reload.
    settings: ArcSwap<UdpSettings>,
    pub metrics: Arc<UdpMetrics>,
    /// Every live flow, for the API to list.
    pub live_flows: LiveFlows,
    /// ward's DNS, which answers what is captured for its own listeners.
    local_dns: Option<Arc<dyn LocalDns>>,
    dialers: Arc<Dialers>,
    root: SupervisorView,
    endpoints: ArcSwapOption<ActorRef<SupervisorMsg>>,
    live: Arc<AtomicUsize>,
    next_id: AtomicU64,
    epoch: Instant,
    /// No new flow before this (ms since `epoch`), after EMFILE or ENFILE:
    /// every new flow reads it, without a lock.
    fd_until_ms: AtomicU64,
    /// The refusals' delays, shared by every inbound's flows.
    fd_backoff: Mutex<Backoff>,
    /// `fd_backoff` has failures to forget: only then does an opened
    /// session take its lock.
    fd_backing_off: AtomicBool,
    /// The bytes every flow's queue holds together.
    budget: Arc<Budget>,
}

impl Relay {
    pub fn new(
        settings: UdpSettings,
        dialers: Arc<Dialers>,
        metrics: Arc<UdpMetrics>,
        root: SupervisorView,
        local_dns: Option<Arc<dyn LocalDns>>,
    ) -> Arc<Relay> {
        let settings_queue_bytes = settings.queue_bytes;
        Arc::new(Relay {
            settings: ArcSwap::from_pointee(settings),
            metrics,
            live_flows: LiveFlows::default(),
            local_dns,
            dialers,
            root,
            endpoints: ArcSwapOption::empty(),
            live: Arc::default(),
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
            fd_until_ms: AtomicU64::new(0),
            fd_backoff: Mutex::new(Backoff::new(FD_BACKOFF)),
            fd_backing_off: AtomicBool::new(false),
            budget: Arc::new(Budget::new(settings_queue_bytes)),
        })
    }

    /// The settings of this generation.
    pub fn settings(&self) -> Arc<UdpSettings> {
        self.settings.load_full()
    }

    /// Swaps in `settings` (a reload): new flows take the new routes,
    /// caps and timeouts; live flows keep their path. The total queue
    /// budget (`queue_bytes`) is fixed at start.
    pub fn reconfigure(&self, settings: UdpSettings) {
        self.settings.store(Arc::new(settings));
    }

    /// Live endpoints.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Hands `query` from `client` to ward's own DNS when `dst` is one of
    /// its listen addresses: true when it took it (see [`LocalDns`]).
    pub fn answer_locally(&self, dst: SocketAddr, query: &[u8], client: SocketAddr) -> bool {
        self.local_dns
            .as_ref()
            .is_some_and(|dns| dns.answer(dst, query, client))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn fd_backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.fd_backoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A session opened: descriptors are there again.
    pub(crate) fn fd_available(&self) {
        if self.fd_backing_off.swap(false, Ordering::AcqRel) {
            self.fd_backoff().succeed();
        }
    }

    /// Out of file descriptors: refuse new flows for a while, longer each
    /// time in a row.
    pub(crate) fn fd_exhausted(&self) {
        let delay = self.fd_backoff().fail();
        self.fd_backing_off.store(true, Ordering::Release);
        let until = self.now_ms() + delay.as_millis() as u64;
        self.fd_until_ms.store(until, Ordering::Relaxed);
    }

    /// Starts an endpoint for a flow: a temporary child of
    /// `udp/endpoints`, asked for without waiting. Refused when the cap is
    /// reached, while backing off after EMFILE, or when no dialer is left.
    pub fn start(self: &Arc<Self>, flow: NewFlow) -> Result<Handle, (Refused, Vec<Datagram>)> {
        let refuse = |why, flow: NewFlow| Err((why, flow.datagrams));
        if self.now_ms() < self.fd_until_ms.load(Ordering::Relaxed) {
            return refuse(Refused::FdLimit, flow);
        }
        let Some(first) = flow.datagrams.first().map(|d| d.dst) else {
            return refuse(Refused::NoPath, flow);
        };
        let settings = self.settings.load();
        let route = settings.route(flow.key.client, first);
        let Some(via) = self.dialers.via(route) else {
            return refuse(Refused::NoPath, flow);
        };
        let exclude: Vec<&str> = flow.exclude.iter().map(String::as_str).collect();
        let Some(dialer) = via.select(Track::Udp, &exclude) else {
            // Every dialer of the route already failed this flow.
            for _ in &flow.datagrams {
                self.metrics.dropped(Dropped::RetriesExhausted);
            }
            return refuse(Refused::NoPath, flow);
        };
        // Count the endpoint now: the cap holds even while children start.
        let live = self.live.fetch_add(1, Ordering::AcqRel);
        if live >= settings.max_endpoints {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return refuse(Refused::MaxEndpoints, flow);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Queue::new(settings.queue, self.budget.clone()));
        let owned = Arc::new(AtomicBool::new(false));
        for datagram in flow.datagrams {
            match queue.push(datagram) {
                Pushed::Queued | Pushed::Closed(_) => {}
                Pushed::DroppedOldest => self.metrics.dropped(Dropped::QueueFull),
                Pushed::OverBudget => self.metrics.dropped(Dropped::OverBudget),
            }
        }
        let info = FlowInfo::new(id, flow.key, first, route, &dialer.name);
        let info = Arc::new(info.came_through(flow.inbound));
        self.live_flows.add(info.clone());
        let args = Arc::new(EndpointArgs {
            flow: info.clone(),
            key: flow.key,
            id,
            first,
            dialer: dialer.clone(),
            exclude: flow.exclude,
            retries: flow.retries,
            queue: queue.clone(),
            reply: flow.reply,
            events: flow.events,
            idle: flow.kind.idle(&settings.idle),
            live: self.live.clone(),
            metrics: self.metrics.clone(),
            owned: owned.clone(),
            relay: Arc::downgrade(self),
        });
        let unstarted = Unstarted(args.clone());
        let spec = endpoint::child_spec(flow.key.name(id), args);
        self.metrics.endpoints.inc();
        if let Err(unstarted) = self.add_child(spec, unstarted) {
            // No endpoints supervisor (it is restarting): the flow's first
            // datagrams are lost, the next ones try again.
            return Err((Refused::Restarting, unstarted.refuse()));
        }
        self.metrics.created.inc();
        Ok(Handle {
            id,
            queue,
            flow: info,
        })
    }

    /// Asks the endpoints supervisor to start `spec`, without waiting for
    /// its answer. The flow back when there is no supervisor to ask.
    fn add_child(&self, spec: ChildSpec, unstarted: Unstarted) -> Result<(), Unstarted> {
        for _ in 0..2 {
            let supervisor = match self.endpoints.load_full() {
                Some(supervisor) => supervisor,
                None => match self.root.find(ENDPOINTS_PATH) {
                    Some(found) => {
                        let actor = Arc::new(ActorRef::<SupervisorMsg>::from(found.cell));
                        self.endpoints.store(Some(actor.clone()));
                        actor
                    }
                    None => break,
                },
            };
            let (reply, answer) = ractor::concurrency::oneshot();
            match supervisor.send_message(SupervisorMsg::AddChild(
                spec.clone(),
                RpcReplyPort::from(reply),
            )) {
                Ok(()) => {
                    // A child that never started gives the flow up here.
                    tokio::spawn(async move {
                        if !matches!(answer.await, Ok(Ok(_))) {
                            unstarted.give_up();
                        }
                    });
                    return Ok(());
                }
                // A supervisor from an earlier incarnation: look it up again.
                Err(_) => self.endpoints.store(None),
            }
        }
        Err(unstarted)
    }
}

/// A flow whose endpoint was asked for but may never start (its
/// supervisor died first). Whoever comes first owns the flow: the
/// endpoint's `pre_start`, or `give_up`, which ends it, exactly once.
struct Unstarted(Arc<EndpointArgs>);

impl Unstarted {
    fn give_up(self) {
        if !self.0.owned.swap(true, Ordering::AcqRel) {
            self.0.end();
        }
    }

    /// Never asked for: uncounts the flow and hands back its datagrams,
    /// for the refusal to count (the inbound forgets the flow itself).
    fn refuse(self) -> Vec<Datagram> {
        if self.0.owned.swap(true, Ordering::AcqRel) {
            return Vec::new();
        }
        self.0.uncount()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dialer::metrics::DialerMetrics;
    use crate::dialer::settings::DialerSettings;
    use crate::net::udp_batch::Datagrams;
    use settings::IdleTimeouts;

    /// Answers go nowhere.
    pub(crate) struct NoReply;

    impl Reply for NoReply {
        fn send_many(
            &self,
            _: SocketAddr,
            _: &[(SocketAddr, &[u8])],
            _: &mut Datagrams,
        ) -> Result<(), (usize, std::io::Error)> {
            Ok(())
        }
    }

    /// A relay over the direct dialer, with no endpoints supervisor.
    pub(crate) fn relay(metrics: &Arc<UdpMetrics>) -> Arc<Relay> {
        let dialers = Dialers::new(
            DialerSettings::direct_only(),
            Arc::new(DialerMetrics::default()),
        );
        let settings = UdpSettings {
            inbounds: vec![],
            routes: vec![],
            default: "direct".into(),
            max_endpoints: 10,
            idle: IdleTimeouts::default(),
            queue: 8,
            queue_bytes: 1 << 20,
            reply_sockets: 16,
        };
        Relay::new(
            settings,
            dialers,
            metrics.clone(),
            SupervisorView::new(),
            None,
        )
    }

    fn flow(events: mpsc::Sender<Event>) -> NewFlow {
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
        NewFlow {
            key: FlowKey { client, dst: None },
            kind: FlowKind::of(b"hello", dst),
            datagrams: vec![Datagram {
                dst,
                bytes: b"hello".to_vec(),
            }],
            exclude: vec![],
            retries: 0,
            reply: Arc::new(NoReply),
            events,
            inbound: "forward",
        }
    }

    /// With no `udp/endpoints` in the tree (it is restarting) a new flow is
    /// refused as `restarting`, its datagram handed back for the refusal to
    /// count, and nothing stays counted as live or created.
    #[tokio::test]
    async fn a_flow_without_an_endpoints_supervisor_is_refused_as_restarting() {
        let metrics = Arc::new(UdpMetrics::default());
        let relay = relay(&metrics);
        let (events, mut gone) = mpsc::channel(4);
        let Err((why, lost)) = relay.start(flow(events)) else {
            panic!("started without an endpoints supervisor");
        };
        assert_eq!(why, Refused::Restarting);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].bytes, b"hello");
        assert_eq!(relay.live(), 0);
        assert_eq!(metrics.endpoints.get(), 0);
        assert_eq!(metrics.created.get(), 0);
        assert_eq!(metrics.dropped_count(Dropped::SendFailed), 0);
        assert!(gone.try_recv().is_err(), "the inbound forgets it itself");
    }

    /// Running out of descriptors refuses new flows for the policy's delay,
    /// longer each time in a row; a session that opens starts it over.
    #[tokio::test]
    async fn out_of_descriptors_refuses_flows_for_a_growing_jittered_while() {
        let relay = relay(&Arc::new(UdpMetrics::default()));
        let refused_for = |relay: &Relay| {
            relay.fd_exhausted();
            let left = relay.fd_until_ms.load(Ordering::Relaxed) - relay.now_ms();
            Duration::from_millis(left)
        };
        let within = |d: Duration, min: Duration| {
            // Jitter stretches by at most a fifth; a millisecond may pass.
            d + Duration::from_millis(2) >= min && d < min.mul_f64(1.2)
        };
        let first = refused_for(&relay);
        assert!(within(first, FD_BACKOFF.min), "{first:?}");
        let (events, _gone) = mpsc::channel(4);
        let Err((why, _)) = relay.start(flow(events)) else {
            panic!("a flow started while out of descriptors");
        };
        assert_eq!(why, Refused::FdLimit);
        let second = refused_for(&relay);
        assert!(within(second, FD_BACKOFF.min * 2), "{second:?}");
        relay.fd_available();
        let again = refused_for(&relay);
        assert!(within(again, FD_BACKOFF.min), "{again:?}");
    }
}

//! Builds ward's actor tree from a validated config and runs it until a
//! shutdown signal, in the mini-redis shape: `run(config, shutdown)`.
//!
//! ```text
//! root (one_for_one)
//! ├── admin          ├── telemetry     ├── api (when configured)
//! ├── dialers (one_for_one)
//! ├── dns (rest_for_one)
//! │   ├── upstreams (one_for_one): one dns-upstream per upstream
//! │   └── listeners (one_for_one): udp:<addr> and tcp:<addr> per listen address
//! └── udp (rest_for_one): inbounds, endpoints (one_for_one each)
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use ward_actors::dialer::actor::{DialerActor, DialerArgs};
use ward_actors::dialer::settings::DialerSpec;
use ward_actors::dialer::{Dialer, Dialers};
use ward_actors::dns::listener_tcp;
use ward_actors::dns::listener_udp::{self, UdpListenerHeld};
use ward_actors::dns::resolver::Resolver;
use ward_actors::dns::tcp_clients::TcpClients;
use ward_actors::dns::upstream::{UpstreamActor, UpstreamArgs, UpstreamSlot};
use ward_actors::net::socket::{bind_tcp, bind_udp};
use ward_actors::net::{Held, Release};
use ward_actors::udp::inbound::{self, InboundHeld};
use ward_actors::udp::settings::InboundSpec;
use ward_actors::udp::{LocalDns, Relay};
use ward_supervision::{
    BackoffPolicy, ChildSpec, Restart, Strategy, Supervisor, SupervisorConfig, SupervisorMsg,
    SupervisorView,
};

use crate::admin::{AdminArgs, AdminSocket};
use crate::config::Config;
use crate::context::ServiceContext;
use crate::local_dns::ResolverDns;
use crate::readiness::{self, Serving, Starts};
use crate::reload::Reloader;
use crate::systemd;
use crate::telemetry::process::{self, NofileLimit};
use crate::telemetry::{Metrics, MetricsObserver};

/// How long a graceful stop may take before the tree is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_millis(4500);

/// Restart delays of the front door (DNS listeners) and of the supervisors
/// above everything. A listener that can bind again should do so at once:
/// every client depends on it, and a retry after a second must find it back.
/// A supervisor fails only when killed or when its children exceed their
/// intensity, which already bounds a crash loop.
pub const QUICK_RESTART: BackoffPolicy = BackoffPolicy {
    min: Duration::from_millis(10),
    max: Duration::from_millis(250),
    reset_after: Duration::from_secs(5),
    jitter: 0.2,
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the root supervisor failed to start: {0}")]
    Start(#[from] ractor::SpawnErr),
    #[error(transparent)]
    AdminSocket(#[from] crate::admin::socket_file::SocketFileError),
    #[error("the root supervisor exited: the tree could not be kept up")]
    RootExited,
}

/// A started tree.
pub struct Service {
    pub root: ActorRef<SupervisorMsg>,
    pub ctx: Arc<ServiceContext>,
    join: JoinHandle<()>,
    held: Arc<Holds>,
    /// The tree's observer, which hears each child start.
    starts: Arc<Starts>,
}

/// The sockets held across their children's restarts (the admin socket
/// and its file, metrics, DNS listeners, UDP inbounds), released when ward
/// stops.
#[derive(Default)]
pub(crate) struct Holds {
    admin: Held<AdminSocket>,
    metrics: Held<TcpListener>,
    api: Held<std::net::TcpListener>,
    /// The sockets of DNS listeners and UDP inbounds by what names them in
    /// the tree (`udp:<addr>`, `forward:<addr>`): a reload that removes one
    /// releases its socket.
    others: std::sync::Mutex<HashMap<String, Box<dyn Release>>>,
}

impl Holds {
    /// Keeps `held`, named `name`, to release when ward stops or a reload
    /// removes it.
    fn keep<S: Send + 'static>(&self, name: &str, held: &Held<S>) -> Held<S> {
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        others.insert(name.to_string(), Box::new(held.clone()));
        held.clone()
    }

    /// Releases and forgets what `name` held.
    pub(crate) fn release_one(&self, name: &str) {
        let held = self
            .others
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(held) = held {
            held.release();
        }
    }

    fn release(&self) {
        self.admin.release();
        self.metrics.release();
        self.api.release();
        for held in self
            .others
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            held.release();
        }
    }
}

impl Service {
    /// Starts the tree for `config`.
    pub async fn start(config: &Config) -> Result<Service, RunError> {
        // Two wards on one admin socket is a mistake to refuse up front, not
        // a child to retry forever.
        crate::admin::socket_file::ensure_not_live(&config.admin.socket)?;
        let nofile = raise_nofile();
        check_nofile(config, &nofile);
        let metrics = Arc::new(Metrics::new());
        let view = SupervisorView::new();
        let dialers = Dialers::new(config.dialers.clone(), metrics.dialers.clone());
        let resolver = config
            .dns
            .clone()
            .map(|dns| Resolver::new(dns, metrics.dns.clone(), &dialers));
        let relay = config.udp.clone().map(|udp| {
            Relay::new(
                udp,
                dialers.clone(),
                metrics.udp.clone(),
                view.clone(),
                resolver
                    .clone()
                    .map(|dns| Arc::new(ResolverDns(dns)) as Arc<dyn LocalDns>),
            )
        });
        let ctx = ServiceContext::new(
            view.clone(),
            metrics.clone(),
            nofile,
            config.source.clone(),
            dialers,
            resolver,
            relay,
        );
        let mut sup = SupervisorConfig::new(Strategy::OneForOne);
        sup.intensity = config.supervision.intensity;
        sup.backoff = config.supervision.backoff;
        let starts = Starts::around(Arc::new(MetricsObserver(metrics)));
        sup.observer = starts.clone();
        let held = Arc::new(Holds::default());
        let children = root_children(config, &ctx, &sup, &held);
        let (root, join) = Supervisor::spawn_root(sup, children, view).await?;
        ctx.set_reloader(Arc::new(Reloader::new(config.clone(), held.clone())));
        tracing::info!(version = crate::admin::protocol::VERSION, config = %config.source, "ward started");
        Ok(Service {
            root,
            ctx,
            join,
            held,
            starts,
        })
    }

    /// Completes once every front door (DNS listeners, UDP inbounds, the
    /// admin socket, metrics) is bound: at once, unless one failed its
    /// first start and waits for its retry.
    pub fn serving(&self) -> impl Future<Output = Serving> + 'static {
        let (root, starts) = (self.ctx.root.clone(), self.starts.clone());
        async move { readiness::serving(&root, &starts).await }
    }

    /// Stops the tree gracefully (children in reverse start order), killing
    /// it if that takes longer than [`STOP_TIMEOUT`].
    pub async fn stop(self) {
        let Service {
            root, join, held, ..
        } = self;
        if root
            .stop_and_wait(Some("shutdown".to_string()), Some(STOP_TIMEOUT))
            .await
            .is_err()
        {
            tracing::warn!("graceful stop timed out; killing the tree");
            root.kill();
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), join).await;
        held.release();
        tracing::info!("ward stopped");
    }
}

/// Runs ward until `shutdown` completes; an error when the tree dies first.
/// Under systemd it says READY=1 (and what it serves) once every front
/// door is bound, STOPPING=1 when shutdown begins, and keeps the watchdog
/// fed while the root supervisor answers.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    // Caught before the tree starts: SIGHUP's default ends the process.
    let mut hangups = hangups();
    let mut service = Service::start(&config).await?;
    let _watchdog = systemd::watchdog(service.root.clone());
    let serving = service.serving();
    tokio::pin!(serving, shutdown);
    let mut announced = false;
    loop {
        tokio::select! {
            serving = &mut serving, if !announced => {
                announced = true;
                tracing::info!("{serving}");
                systemd::ready();
                systemd::status(&serving.to_string());
            }
            () = &mut shutdown => {
                systemd::stopping();
                tracing::info!("shutting down");
                service.stop().await;
                return Ok(());
            }
            _ = &mut service.join => return Err(RunError::RootExited),
            Some(()) = hangups.recv() => {
                // An invalid file changes nothing; its errors are logged
                // once, here.
                if let Err(e) = service.ctx.reload().await {
                    tracing::error!("reload on SIGHUP refused, the running configuration stays:\n{e}");
                }
            }
        }
    }
}

/// SIGHUP, one message each (none where it cannot be caught).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut signal) => {
            tokio::spawn(async move {
                while signal.recv().await.is_some() {
                    // One waiting is enough: a reload reads the latest file.
                    let _ = tx.try_send(());
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot catch SIGHUP: reload with `ward ctl reload`"),
    }
    rx
}

fn raise_nofile() -> NofileLimit {
    match process::raise_nofile_limit() {
        Ok((before, after)) => {
            tracing::info!(
                soft_before = before.soft,
                soft = after.soft,
                hard = after.hard,
                "RLIMIT_NOFILE"
            );
            after
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise RLIMIT_NOFILE");
            NofileLimit { soft: 0, hard: 0 }
        }
    }
}

/// Descriptors kept for listeners, the admin and metrics sockets, upstream
/// connections, logs.
const NOFILE_RESERVE: u64 = 64;

/// Warns once when the descriptor limit is below what the configuration
/// may hold at once: past it, upstream queries fail over (SERVFAIL at the
/// end of the chain) and new flows are refused, for want of a socket.
fn check_nofile(config: &Config, nofile: &NofileLimit) {
    if nofile.soft == 0 {
        return; // unknown: raise_nofile already warned
    }
    let dns = config.dns.as_ref().map_or(0, |dns| {
        dns.upstream_sockets_at_most(&config.dialers) as u64
    });
    // Each DNS listen address holds up to `tcp_clients` connections.
    let dns_tcp = config
        .dns
        .as_ref()
        .map_or(0, |dns| (dns.limits.tcp_clients * dns.listen.len()) as u64);
    // A flow through a SOCKS5 node also holds its association's control
    // connection.
    let nodes = config
        .dialers
        .dialers
        .values()
        .any(|d| matches!(d, DialerSpec::Socks5 { .. }));
    let per_flow = if nodes { 2 } else { 1 };
    let udp = config
        .udp
        .as_ref()
        .map_or(0, |udp| (udp.max_endpoints * per_flow) as u64);
    let need = dns + dns_tcp + udp + NOFILE_RESERVE;
    if nofile.soft < need {
        tracing::warn!(
            limit = nofile.soft,
            need,
            dns_upstream_sockets = dns,
            dns_tcp_clients = dns_tcp,
            udp_flows = udp,
            "RLIMIT_NOFILE is below the descriptors this configuration may hold at once: \
             past it upstream queries fail and new flows are refused; raise the hard limit \
             (systemd: LimitNOFILE=) or lower dns.limits.in_flight, dns.limits.tcp_clients \
             or udp.max_endpoints"
        );
    }
}

fn root_children(
    config: &Config,
    ctx: &Arc<ServiceContext>,
    sup: &SupervisorConfig,
    held: &Holds,
) -> Vec<ChildSpec> {
    let group = |name: &str, strategy: Strategy, children: Vec<ChildSpec>| {
        Supervisor::spec(
            name,
            Restart::Permanent,
            sup.with_strategy(strategy),
            children,
        )
        .with_backoff(QUICK_RESTART)
    };
    let mut children = vec![
        admin_spec(config, ctx, held),
        telemetry_spec(config, ctx, held),
    ];
    if let Some(api) = &config.api {
        let args = crate::api::ApiArgs {
            listen: api.listen,
            secret: api.secret.clone(),
            ctx: ctx.clone(),
            picks: crate::api::picks::Picks::open(api.state.clone(), &ctx.dialers),
        };
        children.push(crate::api::child_spec(args, held.api.clone()));
    }
    children.extend([
        group("dialers", Strategy::OneForOne, dialer_specs(ctx)),
        group(
            "dns",
            Strategy::RestForOne,
            vec![
                group("upstreams", Strategy::OneForOne, upstream_specs(ctx)),
                group("listeners", Strategy::OneForOne, listener_specs(ctx, held)),
            ],
        ),
        group(
            "udp",
            Strategy::RestForOne,
            vec![
                group("inbounds", Strategy::OneForOne, inbound_specs(ctx, held)),
                group("endpoints", Strategy::OneForOne, vec![]),
            ],
        ),
    ]);
    children
}

fn dialer_specs(ctx: &Arc<ServiceContext>) -> Vec<ChildSpec> {
    ctx.dialers
        .dialers()
        .into_iter()
        .map(|dialer| {
            let periodic = ctx.dialers.in_a_group(&dialer.name);
            dialer_spec(dialer, periodic)
        })
        .collect()
}

/// The child spec of one dialer's actor; `periodic` when a group has it
/// (it is probed every interval).
pub(crate) fn dialer_spec(dialer: Arc<Dialer>, periodic: bool) -> ChildSpec {
    ChildSpec::worker(
        dialer.name.clone(),
        "dialer",
        Restart::Permanent,
        move |_| {
            let args = DialerArgs {
                dialer: dialer.clone(),
                periodic,
            };
            (DialerActor, args)
        },
    )
}

fn inbound_specs(ctx: &Arc<ServiceContext>, holds: &Holds) -> Vec<ChildSpec> {
    let Some(relay) = &ctx.udp else {
        return Vec::new();
    };
    relay
        .settings()
        .inbounds
        .iter()
        .map(|spec| inbound_spec(spec, relay, holds))
        .collect()
}

/// The child spec of one inbound, its socket held in `holds`.
pub(crate) fn inbound_spec(spec: &InboundSpec, relay: &Arc<Relay>, holds: &Holds) -> ChildSpec {
    let name = spec.name();
    let (spec, held) = inbound_hold(spec, relay);
    let held = holds.keep(&name, &held);
    inbound::child_spec(name, spec, relay.clone(), held).with_backoff(QUICK_RESTART)
}

/// An inbound on port 0 is bound at start, so its port stays the one the
/// kernel chose should its socket be rebuilt; others bind when they start.
fn inbound_hold(spec: &InboundSpec, relay: &Arc<Relay>) -> (InboundSpec, Held<InboundHeld>) {
    let mut spec = spec.clone();
    if spec.listen().port() != 0 {
        return (spec, Held::default());
    }
    match InboundHeld::bind(&spec, relay) {
        Ok(held) => {
            if let Ok(bound) = held.socket().local_addr() {
                spec.set_listen(bound);
            }
            (spec, Held::with(held))
        }
        // The child tries again, and says why.
        Err(_) => (spec, Held::default()),
    }
}

fn upstream_specs(ctx: &Arc<ServiceContext>) -> Vec<ChildSpec> {
    let Some(resolver) = &ctx.dns else {
        return Vec::new();
    };
    resolver
        .settings()
        .upstreams
        .keys()
        .filter_map(|name| resolver.upstream(name))
        .map(upstream_spec)
        .collect()
}

/// The child spec of one upstream's actor, on its slot.
pub(crate) fn upstream_spec(slot: Arc<UpstreamSlot>) -> ChildSpec {
    let name = slot.name.clone();
    ChildSpec::worker_with_children(
        name,
        "dns-upstream",
        Restart::Permanent,
        move |start, children| {
            let args = UpstreamArgs {
                slot: slot.clone(),
                children,
                tasks: start.tasks.clone(),
            };
            (UpstreamActor, args)
        },
    )
}

fn listener_specs(ctx: &Arc<ServiceContext>, holds: &Holds) -> Vec<ChildSpec> {
    let Some(resolver) = &ctx.dns else {
        return Vec::new();
    };
    resolver
        .settings()
        .listen
        .iter()
        .flat_map(|addr| listener_pair(*addr, resolver, holds))
        .collect()
}

/// The UDP and TCP listeners of one DNS listen address, their sockets
/// held in `holds` (named `udp:<addr>` and `tcp:<addr>`, as in the tree).
pub(crate) fn listener_pair(
    addr: SocketAddr,
    resolver: &Arc<Resolver>,
    holds: &Holds,
) -> [ChildSpec; 2] {
    let limits = resolver.settings().limits;
    let (bind, udp, tcp) = listen_holds(addr, resolver);
    let udp = holds.keep(&format!("udp:{addr}"), &udp);
    let tcp = holds.keep(&format!("tcp:{addr}"), &tcp);
    let clients = TcpClients::new(
        limits.tcp_clients_per_ip,
        limits.tcp_clients,
        resolver.metrics.clone(),
    );
    [
        listener_udp::child_spec(addr, bind, resolver.clone(), udp).with_backoff(QUICK_RESTART),
        listener_tcp::child_spec(addr, bind, resolver.clone(), tcp, clients)
            .with_backoff(QUICK_RESTART),
    ]
}

/// Binds of one DNS listen address made at start: with port 0, one port the
/// kernel chose for both UDP and TCP (tried a few times, as the TCP port
/// may be taken); otherwise none, and each listener binds when it starts.
/// The address to bind (again, should a socket die) and the holds.
fn listen_holds(
    addr: SocketAddr,
    resolver: &Resolver,
) -> (SocketAddr, Held<UdpListenerHeld>, Held<TcpListener>) {
    const TRIES: usize = 16;
    if addr.port() == 0 {
        for _ in 0..TRIES {
            let Ok(udp) = bind_udp(addr) else { break };
            let Ok(bound) = udp.local_addr() else { break };
            if let Ok(tcp) = bind_tcp(bound) {
                let udp = Held::with(UdpListenerHeld::with(udp, resolver));
                return (bound, udp, Held::with(tcp));
            }
        }
    }
    (addr, Held::default(), Held::default())
}

fn admin_spec(config: &Config, ctx: &Arc<ServiceContext>, held: &Holds) -> ChildSpec {
    let args = AdminArgs {
        socket: config.admin.socket.clone(),
        gid: config.admin.group.as_ref().map(|g| g.gid),
        max_clients: config.admin.max_clients,
        ctx: ctx.clone(),
    };
    crate::admin::child_spec(args, held.admin.clone())
}

fn telemetry_spec(config: &Config, ctx: &Arc<ServiceContext>, held: &Holds) -> ChildSpec {
    crate::telemetry::child_spec(config.metrics.listen, ctx.clone(), held.metrics.clone())
}

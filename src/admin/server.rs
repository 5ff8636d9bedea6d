//! The admin server (kind `admin`): a task child whose task is the accept
//! loop of the admin socket.
//!
//! Each client connection is served by a task of the accept loop, so
//! nothing waits on a client. Clients past `max_clients` get an error line
//! and are closed. The listening socket and its file are held across the
//! actor's restarts (killing it, which a client may ask for, loses no
//! connection attempt); they are released when ward stops.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorCell;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use ward_actors::net::{accept_each, Connections, Held, Lease};
use ward_actors::{warn_throttled, Throttle};
use ward_supervision::{ChildFailure, ChildSpec, Restart};

use super::protocol::{
    DialerInfo, DnsStats, FailureInfo, GroupInfo, Killed, Request, Stats, TrackInfo, UdpStats,
    UpstreamStats, VERSION,
};
use super::socket_file::{self, SocketFile};
use crate::context::ServiceContext;
use crate::telemetry::process;
use ward_actors::dialer::{Dialer, Track, Via};
use ward_actors::dns::resolver::Resolver;
use ward_actors::udp::Relay;

/// The longest request line accepted.
const MAX_LINE: usize = 64 * 1024;
/// A client idle this long is disconnected.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A client that takes longer than this to accept a reply is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin socket and its file, held across the server's restarts.
pub type AdminSocket = (UnixListener, SocketFile);

/// Where and how the admin socket is served.
#[derive(Clone)]
pub struct AdminArgs {
    pub socket: PathBuf,
    pub gid: Option<u32>,
    pub max_clients: usize,
    pub ctx: Arc<ServiceContext>,
}

/// The admin server's child spec.
pub fn child_spec(args: AdminArgs, held: Held<AdminSocket>) -> ChildSpec {
    ChildSpec::task("admin", "admin", Restart::Permanent, move |_| {
        let (args, held) = (args.clone(), held.clone());
        async move {
            let lease = held
                .lease(|| socket_file::bind(&args.socket, args.gid))
                .await
                .map_err(ChildFailure::of)?;
            tracing::info!(socket = %args.socket.display(), "admin socket ready");
            Ok(async move { held.guard(accept(lease, args)).await })
        }
    })
}

async fn accept(socket: Lease<AdminSocket>, args: AdminArgs) -> Result<(), ChildFailure> {
    let mut clients = Connections::new(args.max_clients);
    let dead = accept_each(&socket.0, "admin socket", |stream, _| {
        if !clients.has_room() {
            return refuse(stream);
        }
        let ctx = args.ctx.clone();
        clients.serve(async move { serve_client(stream, &ctx).await });
    })
    .await;
    Err(dead.into())
}

fn refuse(stream: UnixStream) {
    warn_throttled!(
        "admin clients",
        "admin socket: too many clients; refusing one"
    );
    let line = format!("{}\n", error_reply("too many admin clients; try again"));
    // Best effort: a fresh socket has room for one short line.
    let _ = stream.try_write(line.as_bytes());
}

async fn serve_client(stream: UnixStream, ctx: &ServiceContext) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        // `take` on the buffered reader itself, so bytes after the newline
        // stay buffered for the next request.
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        let read = tokio::time::timeout(IDLE_TIMEOUT, limited.read_until(b'\n', &mut line));
        match read.await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        if line.len() > MAX_LINE && line.last() != Some(&b'\n') {
            let reply = error_reply(&format!("request longer than {MAX_LINE} bytes"));
            let _ = tokio::time::timeout(
                WRITE_TIMEOUT,
                write.write_all(format!("{reply}\n").as_bytes()),
            )
            .await;
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let (reply, to_kill) = if is_reload(text) {
            (reload(ctx).await, None)
        } else {
            handle_request(text, ctx)
        };
        // A client that does not read its replies gives its slot back.
        let sent = tokio::time::timeout(
            WRITE_TIMEOUT,
            write.write_all(format!("{reply}\n").as_bytes()),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        if let Some(cell) = to_kill {
            cell.kill();
        }
    }
}

/// A reload waits for children to start and stop: it is served here, not
/// in [`handle_request`].
fn is_reload(line: &str) -> bool {
    matches!(serde_json::from_str(line), Ok(Request::Reload))
}

async fn reload(ctx: &ServiceContext) -> Value {
    match ctx.reload().await {
        Ok(report) => json!({"ok": true, "reload": report}),
        Err(e) => json!({"ok": false, "error": e.to_string(), "invalid": true}),
    }
}

fn error_reply(message: &str) -> Value {
    json!({"ok": false, "error": message})
}

/// The reply to one request line, and an actor to kill once it is sent.
pub fn handle_request(line: &str, ctx: &ServiceContext) -> (Value, Option<ActorCell>) {
    let request: Request = match serde_json::from_str(line) {
        Ok(request) => request,
        Err(e) => return (error_reply(&format!("bad request: {e}")), None),
    };
    match request {
        Request::Tree => (json!({"ok": true, "tree": ctx.tree()}), None),
        Request::Kill { path } => kill(&path, ctx),
        Request::Stats => (json!({"ok": true, "stats": stats(ctx)}), None),
        Request::Version => (json!({"ok": true, "version": VERSION}), None),
        Request::CacheFlush => match &ctx.dns {
            Some(resolver) => {
                let flushed = resolver.cache.flush();
                tracing::info!(flushed, "DNS cache flushed on admin request");
                (json!({"ok": true, "flushed": flushed}), None)
            }
            None => (error_reply("DNS is not configured"), None),
        },
        Request::Dialers => {
            let (dialers, groups) = dialers(ctx);
            (
                json!({"ok": true, "dialers": dialers, "groups": groups}),
                None,
            )
        }
        Request::Probe { name } => probe(&name, ctx),
        Request::Reload => (error_reply("reload is served by the connection loop"), None),
    }
}

fn dialers(ctx: &ServiceContext) -> (Vec<DialerInfo>, Vec<GroupInfo>) {
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    let track = |dialer: &Dialer, track: Track| {
        let view = dialer.health(track).view();
        TrackInfo {
            up: view.up,
            last_ms: ms(view.last),
            avg10_ms: ms(view.avg10),
            moving_avg_ms: ms(view.moving_avg),
            consecutive_failures: view.consecutive_failures,
            traffic_failures: view.traffic_failures,
            probe_failures: view.probe_failures,
            last_failure: view.last_failure.map(|last| FailureInfo {
                class: last.failure.class.label().to_string(),
                stage: last.failure.stage.label().to_string(),
                reason: last.failure.reason,
                source: last.source.label().to_string(),
                at_unix_ms: last.at_unix_ms,
            }),
            selected_by: ctx.dialers.selected_by(&dialer.name, track),
        }
    };
    let dialers = ctx
        .dialers
        .dialers()
        .iter()
        .map(|d| DialerInfo {
            name: d.name.clone(),
            kind: d.spec.kind().to_string(),
            tcp: track(d, Track::Tcp),
            udp: track(d, Track::Udp),
        })
        .collect();
    let groups = ctx
        .dialers
        .groups()
        .iter()
        .map(|g| GroupInfo {
            name: g.name.clone(),
            policy: format!("{:?}", g.policy),
            dialers: g.members.iter().map(|d| d.name.clone()).collect(),
            tcp: g.current(Track::Tcp).map(|d| d.name.clone()),
            udp: g.current(Track::Udp).map(|d| d.name.clone()),
        })
        .collect();
    (dialers, groups)
}

fn probe(name: &str, ctx: &ServiceContext) -> (Value, Option<ActorCell>) {
    let probed: Vec<String> = match ctx.dialers.via(name) {
        Some(Via::Dialer(dialer)) => vec![dialer.name.clone()],
        Some(Via::Group(group)) => group.members.iter().map(|d| d.name.clone()).collect(),
        None => {
            return (
                error_reply(&format!("no dialer or group named {name:?}")),
                None,
            )
        }
    };
    let probed: Vec<String> = probed
        .into_iter()
        .filter(|name| ctx.dialers.dialer(name).is_some_and(|d| d.probe_now()))
        .collect();
    if probed.is_empty() {
        return (
            error_reply("nothing to probe with: set health.tcp_url or health.udp_dns"),
            None,
        );
    }
    tracing::info!(?probed, "probe requested on admin request");
    (json!({"ok": true, "probed": probed}), None)
}

fn kill(path: &str, ctx: &ServiceContext) -> (Value, Option<ActorCell>) {
    let Some(found) = ctx.root.find(path) else {
        return (error_reply(&format!("no running actor at {path:?}")), None);
    };
    if found.path.is_empty() {
        return (
            error_reply("refusing to kill the root; stop the service instead"),
            None,
        );
    }
    let killed = Killed {
        path: found.path,
        kind: found.kind,
        id: found.cell.get_id().to_string(),
    };
    tracing::warn!(path = %killed.path, kind = %killed.kind, id = %killed.id, "killing actor on admin request");
    (json!({"ok": true, "killed": killed}), Some(found.cell))
}

fn stats(ctx: &ServiceContext) -> Stats {
    let tree = ctx.tree();
    let mut actors = std::collections::BTreeMap::new();
    for node in tree.walk().into_iter().filter(|n| n.id.is_some()) {
        *actors.entry(node.kind.clone()).or_insert(0) += 1;
    }
    Stats {
        version: VERSION.to_string(),
        config: ctx.config_source.clone(),
        uptime_ms: u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        actors,
        restarts_total: ctx.metrics.restarts_total(),
        open_fds: process::open_fds(),
        rss_bytes: process::rss_bytes(),
        nofile_soft: ctx.nofile.soft,
        nofile_hard: ctx.nofile.hard,
        log_suppressed: Throttle::global().suppressed_total(),
        metrics_addr: ctx.metrics_addr().map(|a| a.to_string()),
        dns: ctx.dns.as_deref().map(dns_stats),
        udp: ctx.udp.as_deref().map(udp_stats),
    }
}

fn udp_stats(relay: &Relay) -> UdpStats {
    use ward_actors::udp::metrics::Refused;
    let m = &relay.metrics;
    UdpStats {
        endpoints: relay.live() as u64,
        max_endpoints: relay.settings().max_endpoints as u64,
        created: m.created.get(),
        failovers: m.failovers.get(),
        refused: Refused::ALL
            .into_iter()
            .map(|why| m.refused_count(why))
            .sum(),
    }
}

fn dns_stats(resolver: &Resolver) -> DnsStats {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = &resolver.cache.counters;
    let upstreams = resolver
        .upstream_slots()
        .iter()
        .map(|slot| {
            let (answers, failures) = slot.health.totals();
            let stats = UpstreamStats {
                up: slot.health.is_up(),
                answers,
                failures,
            };
            (slot.name.clone(), stats)
        })
        .collect();
    DnsStats {
        answered: resolver.metrics.answered_total(),
        in_flight: resolver.in_flight() as u64,
        cache_entries: resolver.cache.len() as u64,
        cache_capacity: resolver.cache.capacity() as u64,
        cache_hits: counters.hits.load(Relaxed),
        cache_misses: counters.misses.load(Relaxed),
        cache_stale: counters.stale.load(Relaxed),
        upstreams,
    }
}

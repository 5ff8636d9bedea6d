//! What the admin socket and the HTTP API both do, one function each:
//! every function takes the service context and returns the admin
//! protocol's JSON reply (`{"ok":true,...}` or `{"ok":false,"error":...}`),
//! so `ward ctl` and `/tree`, `/dns/stats`, ... answer alike. How a reply
//! travels (a line on the socket, an HTTP body) is the callers' business.

use ractor::ActorCell;
use serde_json::{json, Value};
use ward_actors::dialer::{Dialer, Track, Via};
use ward_actors::dns::resolver::Resolver;
use ward_actors::udp::Relay;
use ward_actors::Throttle;

use super::protocol::{
    DialerInfo, DnsStats, FailureInfo, GroupInfo, Killed, Stats, TrackInfo, UdpStats,
    UpstreamStats, VERSION,
};
use crate::context::ServiceContext;
use crate::telemetry::process;

/// Reads the configuration file again and applies what changed.
pub async fn reload(ctx: &ServiceContext) -> Value {
    match ctx.reload().await {
        Ok(report) => json!({"ok": true, "reload": report}),
        Err(e) => json!({"ok": false, "error": e.to_string(), "invalid": true}),
    }
}

/// `{"ok":false,"error":message}`.
pub fn error_reply(message: &str) -> Value {
    json!({"ok": false, "error": message})
}

/// `{"ok":true,"tree":...}`: the live tree.
pub fn tree(ctx: &ServiceContext) -> Value {
    json!({"ok": true, "tree": ctx.tree()})
}

/// `{"ok":true,"dialers":[...],"groups":[...]}`.
pub fn dialers(ctx: &ServiceContext) -> Value {
    let (dialers, groups) = dialer_infos(ctx);
    json!({"ok": true, "dialers": dialers, "groups": groups})
}

/// `{"ok":true,"stats":...}`.
pub fn stats(ctx: &ServiceContext) -> Value {
    json!({"ok": true, "stats": stats_of(ctx)})
}

/// Forgets every cached DNS answer: `{"ok":true,"flushed":n}`.
pub fn cache_flush(ctx: &ServiceContext) -> Value {
    match &ctx.dns {
        Some(resolver) => {
            let flushed = resolver.cache.flush();
            tracing::info!(flushed, "DNS cache flushed on request");
            json!({"ok": true, "flushed": flushed})
        }
        None => error_reply("DNS is not configured"),
    }
}

/// Every dialer's health per track, and the groups.
pub fn dialer_infos(ctx: &ServiceContext) -> (Vec<DialerInfo>, Vec<GroupInfo>) {
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

/// Probes a dialer, or every member of a group, now:
/// `{"ok":true,"probed":[...]}`.
pub fn probe(name: &str, ctx: &ServiceContext) -> Value {
    let probed: Vec<String> = match ctx.dialers.via(name) {
        Some(Via::Dialer(dialer)) => vec![dialer.name.clone()],
        Some(Via::Group(group)) => group.members.iter().map(|d| d.name.clone()).collect(),
        None => return error_reply(&format!("no dialer or group named {name:?}")),
    };
    let probed: Vec<String> = probed
        .into_iter()
        .filter(|name| ctx.dialers.dialer(name).is_some_and(|d| d.probe_now()))
        .collect();
    if probed.is_empty() {
        return error_reply("nothing to probe with: set health.tcp_url or health.udp_dns");
    }
    tracing::info!(?probed, "probe requested");
    json!({"ok": true, "probed": probed})
}

/// Finds the actor at `path`: the reply, and the actor to kill once the
/// reply is sent (never the root).
pub fn kill(path: &str, ctx: &ServiceContext) -> (Value, Option<ActorCell>) {
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
    tracing::warn!(path = %killed.path, kind = %killed.kind, id = %killed.id, "killing actor on request");
    (json!({"ok": true, "killed": killed}), Some(found.cell))
}

fn stats_of(ctx: &ServiceContext) -> Stats {
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

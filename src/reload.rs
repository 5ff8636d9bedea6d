//! Hot reload (`ward ctl reload`, SIGHUP): the configuration file is read
//! and validated first; when it is invalid nothing changes. When it is
//! valid, the difference is applied to the live tree:
//!
//! - dialers and groups whose settings did not change are the same
//!   objects afterwards (health, latency history, a group's choice kept);
//!   changed ones are built anew and their actors replaced;
//! - the resolver swaps its configuration whole, keeping the upstreams
//!   whose spec and path did not change (their actors untouched) and its
//!   cache (resized; flushed when upstreams, routes or records changed);
//! - DNS listeners whose address stayed keep their sockets; new addresses
//!   are bound before removed ones are closed;
//! - UDP inbounds that stayed keep running with their flows; flows through
//!   a dialer that was replaced or removed end, and their next datagram
//!   takes the new path;
//! - what cannot change without a restart (the admin socket, metrics
//!   address, logging, supervision settings, the user ward runs as, a
//!   whole DNS or UDP section added or removed) is named, not applied.
//!
//! Every reload that applies counts a new configuration generation, shown
//! at the root of the tree.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::sync::Mutex;
use ward_actors::reload::Changes;
use ward_supervision::{ChildSpec, SupervisorMsg};

use crate::app::{dialer_spec, inbound_spec, listener_pair, upstream_spec, Holds};
use crate::config::{Config, ConfigErrors, DEFAULT_NAME};
use crate::context::ServiceContext;

/// How long one child's start or stop may take during a reload.
const CHILD_CALL: Duration = Duration::from_secs(10);

/// What a reload did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadReport {
    /// The configuration generation now running (1 at start).
    pub generation: u64,
    #[serde(flatten)]
    pub changes: Changes,
    /// Settings that changed but take effect only at the next start.
    pub needs_restart: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is invalid: nothing changed.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The new file needs a capability ward gave up at start: nothing
    /// changed (a restart as root, or with the capability, applies it).
    #[error("{0}")]
    Capability(String),
}

/// Applies reloads, one at a time, to the service it was made for.
pub struct Reloader {
    /// The configuration running now.
    config: Mutex<Config>,
    holds: Arc<Holds>,
    generation: AtomicU64,
}

impl Reloader {
    pub(crate) fn new(config: Config, holds: Arc<Holds>) -> Self {
        Self {
            config: Mutex::new(config),
            holds,
            generation: AtomicU64::new(1),
        }
    }

    /// The configuration generation running now.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Reads the configuration again from where it came from and applies
    /// the difference (see the module's documentation).
    /// Under systemd, RELOADING=1 comes first and READY=1 once the reload
    /// is applied or refused (before the `ward ctl` client hears back).
    pub async fn reload(&self, ctx: &ServiceContext) -> Result<ReloadReport, ReloadError> {
        let mut current = self.config.lock().await;
        crate::systemd::reloading();
        let result = self.apply(ctx, &mut current).await;
        if let Err(e) = &result {
            crate::systemd::status(&format!("reload refused: {e}"));
        }
        crate::systemd::ready();
        result
    }

    async fn apply(
        &self,
        ctx: &ServiceContext,
        current: &mut Config,
    ) -> Result<ReloadReport, ReloadError> {
        let mut new = if current.source == DEFAULT_NAME {
            Config::default_config()
        } else {
            Config::load(std::path::Path::new(&current.source))
        }
        .map_err(ReloadError::Invalid)?;
        missing_capabilities(&new)?;
        let mut report = ReloadReport {
            needs_restart: fixed_at_start(current, &new),
            ..ReloadReport::default()
        };
        // What is not applied stays as it runs, so the next reload is
        // measured against what really runs (and says so again).
        new.admin = current.admin.clone();
        new.log = current.log.clone();
        new.metrics = current.metrics.clone();
        new.api = current.api.clone();
        new.supervision = current.supervision;
        new.run_as = current.run_as.clone();
        if new.dns.is_some() != current.dns.is_some() {
            new.dns = current.dns.clone();
            report.needs_restart.push("dns".to_string());
        }
        if new.udp.is_some() != current.udp.is_some() {
            new.udp = current.udp.clone();
            report.needs_restart.push("udp".to_string());
        }
        let changes = &mut report.changes;
        let gone_dialers = self.dialers(ctx, &new, changes).await;
        if new.dns.is_some() {
            self.dns(ctx, current, &new, changes).await;
        }
        if new.udp.is_some() {
            self.udp(ctx, &new, &gone_dialers, changes).await;
        }
        *current = new;
        report.generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let c = &report.changes;
        tracing::info!(
            generation = report.generation,
            added = c.added.len(),
            replaced = c.replaced.len(),
            kept = c.kept.len(),
            removed = c.removed.len(),
            needs_restart = ?report.needs_restart,
            "configuration reloaded"
        );
        Ok(report)
    }

    /// Swaps the dialers and groups, and the actors of those that changed.
    /// The dialers replaced or removed.
    async fn dialers(
        &self,
        ctx: &ServiceContext,
        new: &Config,
        changes: &mut Changes,
    ) -> Vec<String> {
        let periodic_before: BTreeMap<String, bool> = ctx
            .dialers
            .dialers()
            .iter()
            .map(|d| (d.name.clone(), ctx.dialers.in_a_group(&d.name)))
            .collect();
        let changed = ctx.dialers.reconfigure(new.dialers.clone());
        let sup = supervisor(ctx, "dialers");
        let name_of = |path: &String| path.trim_start_matches("dialers/").to_string();
        let gone: Vec<String> = changed
            .replaced
            .iter()
            .chain(&changed.removed)
            .filter(|p| p.starts_with("dialers/"))
            .map(name_of)
            .collect();
        for name in &gone {
            remove(&sup, name).await;
        }
        for dialer in ctx.dialers.dialers() {
            let path = format!("dialers/{}", dialer.name);
            let periodic = ctx.dialers.in_a_group(&dialer.name);
            let fresh = changed.added.contains(&path) || changed.replaced.contains(&path);
            // A kept dialer whose group membership changed keeps its
            // health; only its actor starts again, probing as it now must.
            let restart = !fresh && periodic_before.get(&dialer.name) != Some(&periodic);
            if restart {
                remove(&sup, &dialer.name).await;
            }
            if fresh || restart {
                add(&sup, dialer_spec(dialer, periodic)).await;
            }
        }
        changes.extend(changed);
        gone
    }

    /// Swaps the resolver's configuration, then the upstream actors and
    /// listeners that changed.
    async fn dns(&self, ctx: &ServiceContext, old: &Config, new: &Config, changes: &mut Changes) {
        let (Some(resolver), Some(dns)) = (&ctx.dns, &new.dns) else {
            return;
        };
        let old_listen = old
            .dns
            .as_ref()
            .map(|d| d.listen.clone())
            .unwrap_or_default();
        let changed = resolver.reconfigure(dns.clone(), &ctx.dialers);
        let ups = supervisor(ctx, "dns/upstreams");
        let name_of = |path: &String| path.trim_start_matches("dns/upstreams/").to_string();
        for name in changed.replaced.iter().chain(&changed.removed).map(name_of) {
            remove(&ups, &name).await;
        }
        for name in changed.replaced.iter().chain(&changed.added).map(name_of) {
            if let Some(slot) = resolver.upstream(&name) {
                add(&ups, upstream_spec(slot)).await;
            }
        }
        changes.extend(changed);
        // New addresses first, so there is never a moment with fewer.
        let listeners = supervisor(ctx, "dns/listeners");
        for addr in dns.listen.iter().filter(|a| !old_listen.contains(a)) {
            for spec in listener_pair(*addr, resolver, &self.holds) {
                changes.added.push(format!("dns/listeners/{}", spec.name));
                add(&listeners, spec).await;
            }
        }
        for addr in &old_listen {
            for name in [format!("udp:{addr}"), format!("tcp:{addr}")] {
                let path = format!("dns/listeners/{name}");
                if dns.listen.contains(addr) {
                    changes.kept.push(path);
                } else {
                    remove(&listeners, &name).await;
                    self.holds.release_one(&name);
                    changes.removed.push(path);
                }
            }
        }
    }

    /// Swaps the relay's settings, then the inbounds that changed; ends
    /// the flows through dialers that are gone.
    async fn udp(
        &self,
        ctx: &ServiceContext,
        new: &Config,
        gone: &[String],
        changes: &mut Changes,
    ) {
        let (Some(relay), Some(udp)) = (&ctx.udp, &new.udp) else {
            return;
        };
        let by_name = |specs: &[ward_actors::udp::settings::InboundSpec]| {
            specs
                .iter()
                .map(|s| (s.name(), s.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        let old = by_name(&relay.settings().inbounds);
        let next = by_name(&udp.inbounds);
        relay.reconfigure(udp.clone());
        let mut changed = Changes::default();
        changed.compare("udp/inbounds", &old, &next, |a, b| a == b);
        let inbounds = supervisor(ctx, "udp/inbounds");
        let name_of = |path: &String| path.trim_start_matches("udp/inbounds/").to_string();
        for name in changed.replaced.iter().chain(&changed.removed).map(name_of) {
            remove(&inbounds, &name).await;
            self.holds.release_one(&name);
        }
        for name in changed.replaced.iter().chain(&changed.added).map(name_of) {
            if let Some(spec) = next.get(&name) {
                add(&inbounds, inbound_spec(spec, relay, &self.holds)).await;
            }
        }
        changes.extend(changed);
        // Flows through a dialer that is gone end; the next datagram of
        // each starts a flow on the path the new configuration gives it.
        let endpoints = supervisor(ctx, "udp/endpoints");
        let tree = ctx.tree();
        let ending: Vec<String> = tree
            .find("udp/endpoints")
            .map(|node| {
                node.children
                    .iter()
                    .filter(|flow| {
                        let via = flow.detail.as_deref().and_then(|d| d.strip_prefix("via "));
                        via.is_some_and(|via| gone.iter().any(|g| g == via))
                    })
                    .map(|flow| flow.name().to_string())
                    .collect()
            })
            .unwrap_or_default();
        for name in ending {
            remove(&endpoints, &name).await;
        }
    }
}

/// Refuses a configuration that needs a capability this process does not
/// hold (dropped at start, when the configuration then needed less).
fn missing_capabilities(config: &Config) -> Result<(), ReloadError> {
    use crate::privileges::needs;
    let missing: Vec<String> = needs::needs(config, needs::unprivileged_port_start())
        .into_iter()
        .filter(|need| !caps::has_cap(None, caps::CapSet::Effective, need.cap).unwrap_or(false))
        .map(|need| format!("{} needs {}", need.reasons.join(", "), need.cap))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ReloadError::Capability(format!(
        "the new configuration needs what ward gave up at start, so nothing changed \
         (restart ward to apply it): {}",
        missing.join("; ")
    )))
}

/// The settings read only at start that differ between `old` and `new`.
fn fixed_at_start(old: &Config, new: &Config) -> Vec<String> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut fixed = Vec::new();
    if differs(&old.admin, &new.admin) {
        fixed.push("admin".to_string());
    }
    if differs(&old.log, &new.log) {
        fixed.push("log".to_string());
    }
    if differs(&old.metrics, &new.metrics) {
        fixed.push("metrics".to_string());
    }
    if old.api != new.api {
        fixed.push("api".to_string());
    }
    if differs(&old.supervision, &new.supervision) {
        fixed.push("supervision".to_string());
    }
    if differs(&old.run_as, &new.run_as) {
        fixed.push("user/group".to_string());
    }
    if let (Some(old), Some(new)) = (&old.dns, &new.dns) {
        let tcp = |d: &ward_actors::dns::settings::DnsSettings| {
            (d.limits.tcp_clients, d.limits.tcp_clients_per_ip)
        };
        if tcp(old) != tcp(new) {
            fixed.push("dns.limits.tcp_clients (for listeners kept)".to_string());
        }
    }
    if let (Some(old), Some(new)) = (&old.udp, &new.udp) {
        if old.queue_bytes != new.queue_bytes {
            fixed.push("udp.queue_bytes".to_string());
        }
    }
    fixed
}

/// The supervisor at `path` (it always exists: the tree's shape is fixed).
fn supervisor(ctx: &ServiceContext, path: &str) -> Option<ActorRef<SupervisorMsg>> {
    ctx.root.find(path).map(|found| ActorRef::from(found.cell))
}

async fn add(sup: &Option<ActorRef<SupervisorMsg>>, spec: ChildSpec) {
    let Some(sup) = sup else { return };
    let name = spec.name.clone();
    let result = sup
        .call(
            |reply| SupervisorMsg::AddChild(spec, reply),
            Some(CHILD_CALL),
        )
        .await;
    if !matches!(result, Ok(ractor::rpc::CallResult::Success(Ok(_)))) {
        tracing::warn!(child = %name, ?result, "reload: a child did not start");
    }
}

async fn remove(sup: &Option<ActorRef<SupervisorMsg>>, name: &str) {
    let Some(sup) = sup else { return };
    let name = name.to_string();
    let call = |reply: RpcReplyPort<_>| SupervisorMsg::RemoveChild(name.clone(), reply);
    let result = sup.call(call, Some(CHILD_CALL)).await;
    if !matches!(result, Ok(ractor::rpc::CallResult::Success(Ok(())))) {
        tracing::warn!(child = %name, ?result, "reload: a child did not stop");
    }
}

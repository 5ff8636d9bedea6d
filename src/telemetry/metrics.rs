//! Prometheus metrics (prometheus-client): the registry and every metric in
//! it, and the supervision observer that counts restarts and escalations.
//! Gauges about the tree and the process are refreshed when scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use ward_actors::dialer::metrics::DialerMetrics;
use ward_actors::dns::metrics::DnsMetrics;
use ward_actors::net::socket_drops::SocketDrops;
use ward_actors::udp::metrics::UdpMetrics;
use ward_actors::Throttle;
use ward_supervision::{ExitReason, SupervisionObserver, TreeNode};

use super::process;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SupervisorLabel {
    pub supervisor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExitLabel {
    pub kind: String,
    pub class: &'static str,
}

/// Every metric ward exports.
pub struct Metrics {
    registry: Registry,
    restarts: Family<KindLabel, Counter>,
    escalations: Family<SupervisorLabel, Counter>,
    exits: Family<ExitLabel, Counter>,
    actors: Family<KindLabel, Gauge>,
    open_fds: Gauge,
    resident_memory: Gauge,
    log_suppressed: Counter,
    log_suppressed_seen: AtomicU64,
    socket_drops: Family<PathLabel, Counter>,
    restarts_total: AtomicU64,
    rendering: std::sync::Mutex<()>,
    /// The DNS forwarder's metrics (registered even when DNS is off).
    pub dns: std::sync::Arc<DnsMetrics>,
    pub dialers: std::sync::Arc<DialerMetrics>,
    pub udp: std::sync::Arc<UdpMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ward");
        let restarts = Family::<KindLabel, Counter>::default();
        registry.register(
            "restarts",
            "Children restarted by their supervisor, by kind",
            restarts.clone(),
        );
        let escalations = Family::<SupervisorLabel, Counter>::default();
        registry.register(
            "escalations",
            "Supervisors that exceeded their restart intensity and failed",
            escalations.clone(),
        );
        let exits = Family::<ExitLabel, Counter>::default();
        registry.register(
            "child_exits",
            "Supervised children that ended, by kind and class",
            exits.clone(),
        );
        let actors = Family::<KindLabel, Gauge>::default();
        registry.register("actors", "Live actors in the tree, by kind", actors.clone());
        let open_fds = Gauge::default();
        registry.register(
            "open_fds",
            "Open file descriptors of the process",
            open_fds.clone(),
        );
        let resident_memory = Gauge::default();
        registry.register(
            "resident_memory_bytes",
            "Resident set size of the process",
            resident_memory.clone(),
        );
        let log_suppressed = Counter::default();
        registry.register(
            "log_suppressed",
            "Repeated log lines folded into summaries by the throttle",
            log_suppressed.clone(),
        );
        let socket_drops = Family::<PathLabel, Counter>::default();
        registry.register(
            "socket_drops",
            "Datagrams the kernel dropped at a full receiving socket (a DNS listener or UDP inbound that fell behind), by tree path",
            socket_drops.clone(),
        );
        let dns = DnsMetrics::register(&mut registry);
        let dialers = DialerMetrics::register(&mut registry);
        let udp = UdpMetrics::register(&mut registry);
        Self {
            dns,
            dialers,
            udp,
            registry,
            restarts,
            escalations,
            exits,
            actors,
            open_fds,
            resident_memory,
            log_suppressed,
            log_suppressed_seen: AtomicU64::new(0),
            socket_drops,
            restarts_total: AtomicU64::new(0),
            rendering: std::sync::Mutex::new(()),
        }
    }

    /// Restarts scheduled since start, over all kinds.
    pub fn restarts_total(&self) -> u64 {
        self.restarts_total.load(Ordering::Relaxed)
    }

    /// The text exposition, with tree and process gauges refreshed from `tree`.
    pub fn render(&self, tree: &TreeNode) -> String {
        // Two scrapes at once must not see each other's half-refreshed gauges.
        let _rendering = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        self.actors.clear();
        for node in tree.walk() {
            if node.id.is_some() {
                self.actors
                    .get_or_create(&KindLabel {
                        kind: node.kind.clone(),
                    })
                    .inc();
            }
        }
        self.open_fds.set(process::open_fds() as i64);
        self.resident_memory.set(process::rss_bytes() as i64);
        self.dns.refresh();
        for (path, total) in SocketDrops::global().totals() {
            let counter = self.socket_drops.get_or_create(&PathLabel { path });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let suppressed = Throttle::global().suppressed_total();
        let seen = self.log_suppressed_seen.swap(suppressed, Ordering::Relaxed);
        self.log_suppressed.inc_by(suppressed.saturating_sub(seen));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Counts supervision events into [`Metrics`].
pub struct MetricsObserver(pub std::sync::Arc<Metrics>);

impl SupervisionObserver for MetricsObserver {
    fn child_exited(&self, _path: &str, kind: &str, reason: &ExitReason) {
        self.0
            .exits
            .get_or_create(&ExitLabel {
                kind: kind.to_string(),
                class: reason.class(),
            })
            .inc();
    }

    fn child_restarting(&self, _path: &str, kind: &str, _delay: Duration) {
        self.0.restarts_total.fetch_add(1, Ordering::Relaxed);
        self.0
            .restarts
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    fn escalated(&self, path: &str) {
        let supervisor = if path.is_empty() { "root" } else { path };
        self.0
            .escalations
            .get_or_create(&SupervisorLabel {
                supervisor: supervisor.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn node(path: &str, kind: &str, running: bool, children: Vec<TreeNode>) -> TreeNode {
        TreeNode {
            path: path.into(),
            kind: kind.into(),
            detail: None,
            id: running.then(|| "0.1".to_string()),
            status: if running { "running" } else { "backoff" }.into(),
            restarts: 0,
            last_exit: None,
            last_exit_class: None,
            uptime_ms: 0,
            children,
        }
    }

    #[test]
    fn render_counts_live_actors_restarts_and_process_figures() {
        let metrics = Arc::new(Metrics::new());
        let observer = MetricsObserver(metrics.clone());
        observer.child_restarting("admin", "admin", Duration::ZERO);
        observer.child_exited("admin", "admin", &ExitReason::Killed);
        #[derive(Debug, thiserror::Error)]
        #[error("gone")]
        struct Gone;
        let dead = ward_supervision::ChildFailure::new("socket_dead", Gone);
        observer.child_exited(
            "dns/listeners/udp",
            "dns-listener-udp",
            &ExitReason::Failed(dead),
        );
        observer.escalated("dns");
        let tree = node(
            "",
            "supervisor",
            true,
            vec![
                node("admin", "admin", true, vec![]),
                node("dns", "supervisor", false, vec![]),
            ],
        );
        let text = metrics.render(&tree);
        assert!(
            text.contains("ward_restarts_total{kind=\"admin\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ward_child_exits_total{kind=\"admin\",class=\"killed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "ward_child_exits_total{kind=\"dns-listener-udp\",class=\"socket_dead\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("ward_escalations_total{supervisor=\"dns\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ward_actors{kind=\"supervisor\"} 1"),
            "{text}"
        );
        assert!(text.contains("ward_actors{kind=\"admin\"} 1"), "{text}");
        assert!(text.contains("ward_open_fds "), "{text}");
        assert!(text.contains("ward_resident_memory_bytes "), "{text}");
        assert_eq!(metrics.restarts_total(), 1);
    }
}

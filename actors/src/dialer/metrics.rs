//! Dialer metrics: per dialer and track up or down, a latency histogram,
//! failures by class and blame; group switches.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::failure::{Blame, Failure};
use super::health::Track;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrackLabels {
    dialer: String,
    track: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    dialer: String,
    track: &'static str,
    class: &'static str,
    blame: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    dialer: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

pub struct DialerMetrics {
    up: Family<TrackLabels, Gauge>,
    latency: Family<TrackLabels, Histogram>,
    failures: Family<FailureLabels, Counter>,
    switches: Family<GroupLabel, Counter>,
    dropped: Family<DropLabels, Counter>,
}

impl Default for DialerMetrics {
    fn default() -> Self {
        Self {
            up: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
            failures: Family::default(),
            switches: Family::default(),
            dropped: Family::default(),
        }
    }
}

fn blame_label(blame: Blame) -> &'static str {
    match blame {
        Blame::Path => "path",
        Blame::Target => "target",
        Blame::Nobody => "nobody",
    }
}

impl DialerMetrics {
    /// Creates the metrics and registers them under `dialer_`.
    pub fn register(registry: &mut Registry) -> Arc<DialerMetrics> {
        let metrics = DialerMetrics::default();
        let sub = registry.sub_registry_with_prefix("dialer");
        sub.register("up", "1 while the dialer's track is up", metrics.up.clone());
        sub.register(
            "latency_seconds",
            "Connect and probe latency per dialer and track",
            metrics.latency.clone(),
        );
        sub.register(
            "failures",
            "Failures reported on a dialer, by class and blame",
            metrics.failures.clone(),
        );
        sub.register(
            "group_switches",
            "Times a group's choice changed",
            metrics.switches.clone(),
        );
        sub.register(
            "dropped_replies",
            "Datagrams from a node dropped unread: replayed, too old, or not opened by its key",
            metrics.dropped.clone(),
        );
        Arc::new(metrics)
    }

    /// The counter of replies from `dialer`'s node dropped for `reason`,
    /// for the codec that drops them to count on.
    pub fn dropped(&self, dialer: &str, reason: &'static str) -> Counter {
        self.dropped
            .get_or_create(&DropLabels {
                dialer: dialer.to_string(),
                reason,
            })
            .clone()
    }

    fn labels(dialer: &str, track: Track) -> TrackLabels {
        TrackLabels {
            dialer: dialer.to_string(),
            track: track.label(),
        }
    }

    pub fn set_up(&self, dialer: &str, track: Track, up: bool) {
        self.up
            .get_or_create(&Self::labels(dialer, track))
            .set(i64::from(up));
    }

    pub fn latency(&self, dialer: &str, track: Track, latency: Duration) {
        self.latency
            .get_or_create(&Self::labels(dialer, track))
            .observe(latency.as_secs_f64());
    }

    pub fn failure(&self, dialer: &str, track: Track, failure: &Failure) {
        self.failures
            .get_or_create(&FailureLabels {
                dialer: dialer.to_string(),
                track: track.label(),
                class: failure.class.label(),
                blame: blame_label(failure.blame),
            })
            .inc();
    }

    pub fn switched(&self, group: &str) {
        self.switches
            .get_or_create(&GroupLabel {
                group: group.to_string(),
            })
            .inc();
    }
}

//! The admin protocol: requests and the replies they get.
//!
//! Each request is one JSON object on one line (`{"cmd":"tree"}`); each reply
//! is one JSON object on one line, `{"ok":true, ...}` or
//! `{"ok":false,"error":"..."}`. A malformed request gets an error reply and
//! the connection stays open.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::telemetry::process::NofileLimit;

/// ward's version, as `ward ctl version` reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The live tree.
    Tree,
    /// Kill the actor at a path.
    Kill { path: String },
    /// Counters and process figures.
    Stats,
    /// The server's version.
    Version,
    /// Forget every cached DNS answer.
    CacheFlush,
    /// Every dialer's health, per track, and the groups.
    Dialers,
    /// Probe a dialer (or every member of a group) now.
    Probe { name: String },
    /// Read the configuration file again and apply what changed.
    Reload,
}

/// One dialer in `dialers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DialerInfo {
    pub name: String,
    /// `direct` or `socks5`.
    pub kind: String,
    pub tcp: TrackInfo,
    pub udp: TrackInfo,
}

/// One track (TCP or UDP) of a dialer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub up: bool,
    pub last_ms: Option<f64>,
    pub avg10_ms: Option<f64>,
    pub moving_avg_ms: Option<f64>,
    pub consecutive_failures: u32,
    pub traffic_failures: u64,
    pub probe_failures: u64,
    pub last_failure: Option<FailureInfo>,
    /// The groups whose current choice on this track is this dialer.
    pub selected_by: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureInfo {
    /// `peer_gone`, `path_failed`, ...
    pub class: String,
    /// Where it happened: `proxy_connect`, `session`, ...
    pub stage: String,
    pub reason: String,
    /// `traffic` or `probe`.
    pub source: String,
    pub at_unix_ms: u64,
}

/// One group in `dialers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub policy: String,
    pub dialers: Vec<String>,
    pub tcp: Option<String>,
    pub udp: Option<String>,
}

/// What `stats` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub version: String,
    pub config: String,
    pub uptime_ms: u64,
    /// Live actors by kind.
    pub actors: BTreeMap<String, u64>,
    pub restarts_total: u64,
    pub open_fds: u64,
    pub rss_bytes: u64,
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    pub log_suppressed: u64,
    /// Where `/metrics` is served, when it is.
    pub metrics_addr: Option<String>,
    /// The DNS forwarder, when configured.
    pub dns: Option<DnsStats>,
    /// The UDP relay, when configured.
    #[serde(default)]
    pub udp: Option<UdpStats>,
}

/// UDP relay figures in `stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpStats {
    pub endpoints: u64,
    pub max_endpoints: u64,
    pub created: u64,
    pub failovers: u64,
    pub refused: u64,
}

/// DNS figures in `stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DnsStats {
    pub answered: u64,
    pub in_flight: u64,
    pub cache_entries: u64,
    pub cache_capacity: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_stale: u64,
    pub upstreams: BTreeMap<String, UpstreamStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamStats {
    pub up: bool,
    pub answers: u64,
    pub failures: u64,
}

impl Stats {
    pub fn nofile(&self) -> NofileLimit {
        NofileLimit {
            soft: self.nofile_soft,
            hard: self.nofile_hard,
        }
    }
}

/// What a `kill` hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Killed {
    pub path: String,
    pub kind: String,
    pub id: String,
}

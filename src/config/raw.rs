//! The configuration as written: serde structs that reject unknown fields
//! and default everything optional. `validate` turns them into a ready
//! [`super::Config`]; nothing else reads these. Containers are renamed so
//! serde's messages say `in admin`, not the Rust type name.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "config")]
pub struct RawConfig {
    /// Switch to this user after start (as root).
    pub user: Option<String>,
    /// ...and this group; the user's primary group when unset.
    pub group: Option<String>,
    pub admin: RawAdmin,
    pub log: RawLog,
    pub metrics: RawMetrics,
    /// The HTTP API; off when absent.
    pub api: Option<RawApi>,
    pub supervision: RawSupervision,
    pub dialers: std::collections::BTreeMap<String, super::dialers::RawDialer>,
    pub groups: std::collections::BTreeMap<String, super::dialers::RawGroup>,
    pub health: super::dialers::RawHealth,
    pub dns: Option<super::dns::RawDns>,
    pub udp: Option<super::udp::RawUdp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "admin")]
pub struct RawAdmin {
    pub socket: Option<String>,
    pub group: Option<String>,
    pub max_clients: usize,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            socket: None,
            group: None,
            max_clients: 16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename = "format")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "log")]
pub struct RawLog {
    pub level: String,
    pub format: LogFormat,
    pub file: Option<String>,
    pub throttle_window_s: u64,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".to_string(),
            format: LogFormat::Text,
            file: None,
            throttle_window_s: 10,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "metrics")]
pub struct RawMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "api")]
pub struct RawApi {
    pub listen: String,
    #[serde(default)]
    pub secret: Option<super::dialers::RawSecret>,
    #[serde(default)]
    pub state: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "supervision")]
pub struct RawSupervision {
    pub max_restarts: u32,
    pub within_s: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    pub backoff_reset_s: u64,
}

impl Default for RawSupervision {
    fn default() -> Self {
        Self {
            max_restarts: 10,
            within_s: 30,
            backoff_min_ms: 100,
            backoff_max_ms: 30_000,
            backoff_reset_s: 60,
        }
    }
}

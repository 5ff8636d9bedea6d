//! Dialers: outbound paths (direct, or a SOCKS5, Shadowsocks or Trojan
//! node) and the groups that choose among them.
//!
//! - [`path::Dialer`]: one path's handle. Opens streams and UDP sessions
//!   through its [`Outbound`]; their owners report successes and
//!   classified failures back ([`failure`]); health per track ([`health`])
//!   is published in atomics.
//! - [`outbound::Outbound`]: the one interface of every outbound protocol
//!   ("a stream to X", "a UDP session"), each in its own module:
//!   [`direct`], [`socks5`] (client and server side), [`shadowsocks`],
//!   [`trojan`] (TLS, requests, UDP frames).
//! - [`session::UdpSession`]: a UDP session over a path, on a socket of
//!   its own (wrapped by a [`session::DatagramCodec`] through a node) or
//!   framed in a stream to the node: sends, receives, batches.
//! - [`group::Group`]: picks a healthy member by policy, with tolerance.
//! - [`actor::DialerActor`]: probes a dialer and brings down tracks back up.
//! - [`Dialers`]: every dialer and group by name, built once from config.

pub mod actor;
pub mod direct;
pub mod failure;
pub mod group;
pub mod health;
pub mod metrics;
pub mod outbound;
pub mod path;
pub mod session;
pub mod settings;
pub mod shadowsocks;
pub mod socks5;
pub mod trojan;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use failure::{Blame, Failure, Hop, Stage};
pub use group::{Group, Via};
pub use health::Track;
use metrics::DialerMetrics;
pub use outbound::{Outbound, ProxyStream};
pub use path::Dialer;
pub use session::UdpSession;
use settings::{DialerSettings, DialerSpec, DIRECT};

/// The outbound a dialer's spec describes. One that cannot be built (a
/// CA file gone since `ward check`) is [`outbound::Unusable`]: the dialer
/// is down with why.
fn build_outbound(name: &str, spec: &DialerSpec, metrics: &DialerMetrics) -> Box<dyn Outbound> {
    match spec.clone() {
        DialerSpec::Direct { mark, interface } => Box::new(direct::Direct { mark, interface }),
        DialerSpec::Socks5 {
            server,
            credentials,
            mark,
        } => Box::new(socks5::Socks5Node {
            server,
            credentials,
            mark,
        }),
        DialerSpec::Shadowsocks {
            server,
            method,
            password,
            mark,
        } => {
            let key = method
                .parse()
                .and_then(|method| shadowsocks::Key::new(method, password.expose()));
            let drops = shadowsocks::Drops {
                replayed: metrics.dropped(name, "replayed"),
                unopened: metrics.dropped(name, "unopened"),
            };
            match key {
                Ok(key) => Box::new(shadowsocks::ShadowsocksNode::new(server, key, mark, drops)),
                Err(e) => Box::new(outbound::Unusable(e.to_string())),
            }
        }
        DialerSpec::Trojan {
            server,
            password,
            sni,
            ca,
            skip_verify,
            mark,
        } => {
            if skip_verify {
                tracing::warn!(
                    dialer = name,
                    "skip_verify: the node's certificate is not checked; \
                     anyone between ward and the node can read and change this traffic"
                );
            }
            let node = trojan::TrojanNode::new(
                &server,
                password.expose(),
                sni.as_deref(),
                ca.as_deref(),
                skip_verify,
            );
            match node {
                Ok(node) => Box::new(trojan::TrojanOutbound::new(server, node, mark)),
                Err(e) => Box::new(outbound::Unusable(e.to_string())),
            }
        }
    }
}

/// Every dialer and group, by name. The set is fixed by the config; the
/// dialers' actors come and go.
pub struct Dialers {
    dialers: BTreeMap<String, Arc<Dialer>>,
    groups: BTreeMap<String, Arc<Group>>,
    pub settings: DialerSettings,
}

impl Dialers {
    /// Builds every dialer and group; `direct` is added when missing.
    pub fn new(mut settings: DialerSettings, metrics: Arc<DialerMetrics>) -> Arc<Dialers> {
        if !settings.dialers.contains_key(DIRECT) {
            let direct = DialerSettings::direct_only().dialers;
            settings.dialers.extend(direct);
        }
        let health = Arc::new(settings.health.clone());
        let dialers: BTreeMap<String, Arc<Dialer>> = settings
            .dialers
            .iter()
            .map(|(name, spec)| {
                let dialer =
                    Dialer::new(name.clone(), spec.clone(), health.clone(), metrics.clone());
                (name.clone(), Arc::new(dialer))
            })
            .collect();
        let groups = settings
            .groups
            .iter()
            .map(|(name, spec)| {
                let members = spec
                    .dialers
                    .iter()
                    .filter_map(|m| dialers.get(m).cloned())
                    .collect();
                let group = Group::new(
                    name.clone(),
                    members,
                    spec.policy,
                    spec.tolerance,
                    metrics.clone(),
                );
                (name.clone(), Arc::new(group))
            })
            .collect();
        Arc::new(Dialers {
            dialers,
            groups,
            settings,
        })
    }

    /// A dialer or a group by name.
    pub fn via(&self, name: &str) -> Option<Via> {
        if let Some(dialer) = self.dialers.get(name) {
            return Some(Via::Dialer(dialer.clone()));
        }
        self.groups.get(name).map(|g| Via::Group(g.clone()))
    }

    /// The `direct` dialer (always there).
    pub fn direct(&self) -> Via {
        Via::Dialer(self.dialers[DIRECT].clone())
    }

    pub fn dialer(&self, name: &str) -> Option<&Arc<Dialer>> {
        self.dialers.get(name)
    }

    pub fn dialers(&self) -> impl Iterator<Item = &Arc<Dialer>> {
        self.dialers.values()
    }

    pub fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.groups.values()
    }

    /// True when some group has `name` as a member (it is probed
    /// periodically).
    pub fn in_a_group(&self, name: &str) -> bool {
        self.groups
            .values()
            .any(|g| g.members.iter().any(|d| d.name == name))
    }

    /// The groups whose current choice on `track` is `name`.
    pub fn selected_by(&self, name: &str, track: Track) -> Vec<String> {
        self.groups
            .values()
            .filter(|g| g.current(track).is_some_and(|d| d.name == name))
            .map(|g| g.name.clone())
            .collect()
    }
}

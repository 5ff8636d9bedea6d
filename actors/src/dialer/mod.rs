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
pub mod dialers;
pub mod direct;
pub mod failure;
pub mod group;
pub mod health;
pub mod http_probe;
pub mod metrics;
pub mod outbound;
pub mod path;
pub mod session;
pub mod settings;
pub mod shadowsocks;
pub mod socks5;
pub mod trojan;

pub use dialers::Dialers;
pub use failure::{Blame, Failure, Hop, Stage};
pub use group::{Group, Via};
pub use health::Track;
use metrics::DialerMetrics;
pub use outbound::{Outbound, ProxyStream};
pub use path::Dialer;
pub use session::UdpSession;
use settings::DialerSpec;

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

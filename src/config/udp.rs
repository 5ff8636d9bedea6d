//! The `udp` section: raw serde types and their validation into
//! [`ward_actors::udp::settings::UdpSettings`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use ward_actors::dialer::settings::DialerSettings;
use ward_actors::dialer::socks5::Credentials;
use ward_actors::udp::settings::{IdleTimeouts, InboundSpec, PortRange, UdpRoute, UdpSettings};

use super::Checker;

/// Live endpoints at most, whatever the config says.
pub const MAX_ENDPOINTS: usize = 1_000_000;
/// Datagrams queued per endpoint at most.
pub const MAX_QUEUE: usize = 4096;
/// The relay's queued bytes: at least one largest datagram, at most 1 GiB.
pub const QUEUE_BYTES: std::ops::RangeInclusive<usize> = 65_536..=(1 << 30);
/// Reply sockets per tproxy inbound at most. Each is a file descriptor
/// held up to a minute after its last answer: past this many the pool is
/// no longer a working set of the sources clients hear from, only a way to
/// run ward out of descriptors.
pub const MAX_REPLY_SOCKETS: usize = 65_536;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "udp")]
pub struct RawUdp {
    pub inbounds: Vec<RawInbound>,
    pub routes: Vec<RawUdpRoute>,
    pub default: String,
    pub max_endpoints: usize,
    pub idle: RawIdle,
    pub queue: usize,
    pub queue_bytes: usize,
    pub reply_sockets: usize,
}

impl Default for RawUdp {
    fn default() -> Self {
        Self {
            inbounds: Vec::new(),
            routes: Vec::new(),
            default: "direct".to_string(),
            max_endpoints: 10_000,
            idle: RawIdle::default(),
            queue: 64,
            queue_bytes: 16 << 20,
            reply_sockets: 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename = "inbound")]
pub enum RawInbound {
    Forward(RawForward),
    Socks5(RawSocks5Inbound),
    Tproxy(RawTproxy),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "forward")]
pub struct RawForward {
    pub listen: String,
    pub to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "socks5")]
pub struct RawSocks5Inbound {
    pub listen: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "tproxy")]
pub struct RawTproxy {
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, rename = "port")]
pub enum RawPort {
    One(u16),
    Range(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "route")]
pub struct RawUdpRoute {
    #[serde(default)]
    pub dst: Vec<String>,
    #[serde(default)]
    pub dst_port: Vec<RawPort>,
    #[serde(default)]
    pub src: Vec<String>,
    pub to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "idle")]
pub struct RawIdle {
    pub dns_s: u64,
    pub quic_s: u64,
    pub other_s: u64,
}

impl Default for RawIdle {
    fn default() -> Self {
        let d = IdleTimeouts::default();
        Self {
            dns_s: d.dns.as_secs(),
            quic_s: d.quic.as_secs(),
            other_s: d.other.as_secs(),
        }
    }
}

impl Checker<'_> {
    pub(super) fn udp(
        &mut self,
        raw: RawUdp,
        dialers: &DialerSettings,
        dns_listen: &[SocketAddr],
    ) -> UdpSettings {
        let mut seen = BTreeSet::new();
        let mut inbounds = Vec::new();
        for (i, inbound) in raw.inbounds.into_iter().enumerate() {
            let path = format!("udp.inbounds[{i}]");
            let Some(spec) = self.inbound(&path, inbound) else {
                continue;
            };
            let listen = spec.listen();
            if !seen.insert(listen) {
                self.error(
                    &format!("{path}.listen"),
                    format!("{listen} is listed twice"),
                );
            } else if dns_listen.contains(&listen) {
                self.error(
                    &format!("{path}.listen"),
                    format!("{listen} is a DNS listener (dns.listen)"),
                );
            } else {
                inbounds.push(spec);
            }
        }
        let mut routes = Vec::new();
        for (i, route) in raw.routes.into_iter().enumerate() {
            let path = format!("udp.routes[{i}]");
            let dst = self.nets(&format!("{path}.dst"), &route.dst);
            let src = self.nets(&format!("{path}.src"), &route.src);
            let dst_port = self.ports(&format!("{path}.dst_port"), &route.dst_port);
            self.via_name(&format!("{path}.to"), &route.to, dialers);
            routes.push(UdpRoute {
                dst,
                dst_port,
                src,
                to: route.to,
            });
        }
        self.via_name("udp.default", &raw.default, dialers);
        if raw.max_endpoints == 0 || raw.max_endpoints > MAX_ENDPOINTS {
            self.error("udp.max_endpoints", format!("must be 1 to {MAX_ENDPOINTS}"));
        }
        if raw.queue == 0 || raw.queue > MAX_QUEUE {
            self.error("udp.queue", format!("must be 1 to {MAX_QUEUE}"));
        }
        if !QUEUE_BYTES.contains(&raw.queue_bytes) {
            self.error(
                "udp.queue_bytes",
                format!("must be {} to {}", QUEUE_BYTES.start(), QUEUE_BYTES.end()),
            );
        }
        if raw.reply_sockets == 0 || raw.reply_sockets > MAX_REPLY_SOCKETS {
            self.error(
                "udp.reply_sockets",
                format!("must be 1 to {MAX_REPLY_SOCKETS}"),
            );
        }
        for (field, value) in [
            ("dns_s", raw.idle.dns_s),
            ("quic_s", raw.idle.quic_s),
            ("other_s", raw.idle.other_s),
        ] {
            if value == 0 {
                self.error(&format!("udp.idle.{field}"), "must be at least 1");
            }
        }
        UdpSettings {
            inbounds,
            routes,
            default: raw.default,
            max_endpoints: raw.max_endpoints.clamp(1, MAX_ENDPOINTS),
            idle: IdleTimeouts {
                dns: Duration::from_secs(raw.idle.dns_s.max(1)),
                quic: Duration::from_secs(raw.idle.quic_s.max(1)),
                other: Duration::from_secs(raw.idle.other_s.max(1)),
            },
            queue: raw.queue.clamp(1, MAX_QUEUE),
            queue_bytes: raw
                .queue_bytes
                .clamp(*QUEUE_BYTES.start(), *QUEUE_BYTES.end()),
            reply_sockets: raw.reply_sockets.clamp(1, MAX_REPLY_SOCKETS),
        }
    }

    fn inbound(&mut self, path: &str, raw: RawInbound) -> Option<InboundSpec> {
        match raw {
            RawInbound::Forward(forward) => {
                let listen = self.socket_addr(&format!("{path}.listen"), &forward.listen);
                let to = self.socket_addr(&format!("{path}.to"), &forward.to);
                Some(InboundSpec::Forward {
                    listen: listen?,
                    to: to?,
                })
            }
            RawInbound::Socks5(socks) => {
                let listen = self.socket_addr(&format!("{path}.listen"), &socks.listen)?;
                let credentials = match (socks.username, socks.password) {
                    (None, None) => None,
                    (Some(username), Some(password)) => Some(Credentials { username, password }),
                    _ => {
                        self.error(path, "username and password go together");
                        return None;
                    }
                };
                Some(InboundSpec::Socks5 {
                    listen,
                    credentials,
                })
            }
            RawInbound::Tproxy(tproxy) => {
                let listen = self.socket_addr(&format!("{path}.listen"), &tproxy.listen)?;
                Some(InboundSpec::Tproxy { listen })
            }
        }
    }

    fn ports(&mut self, path: &str, raw: &[RawPort]) -> Vec<PortRange> {
        let mut out = Vec::new();
        for (i, port) in raw.iter().enumerate() {
            match port {
                RawPort::One(port) => out.push(PortRange {
                    first: *port,
                    last: *port,
                }),
                RawPort::Range(text) => {
                    let range = text
                        .split_once('-')
                        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
                        .filter(|(first, last)| first <= last);
                    match range {
                        Some((first, last)) => out.push(PortRange { first, last }),
                        None => self.error(
                            &format!("{path}[{i}]"),
                            format!("{text:?} is not a port or a range like \"3478-3481\""),
                        ),
                    }
                }
            }
        }
        out
    }

    fn via_name(&mut self, path: &str, name: &str, dialers: &DialerSettings) {
        if !dialers.dialers.contains_key(name) && !dialers.groups.contains_key(name) {
            self.error(path, format!("no dialer or group named {name:?}"));
        }
    }
}

//! Validated UDP relay settings (built by ward's config).

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::dialer::socks5::Credentials;

/// Where datagrams enter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundSpec {
    /// Every datagram to `listen` goes to `to` (WireGuard, games).
    Forward { listen: SocketAddr, to: SocketAddr },
    /// A SOCKS5 server offering UDP ASSOCIATE on `listen` (TCP for the
    /// control connections, UDP for the relay, same address).
    Socks5 {
        listen: SocketAddr,
        credentials: Option<Credentials>,
    },
    /// A transparent proxy socket (TPROXY): datagrams keep their original
    /// destination, answers come back from it.
    Tproxy { listen: SocketAddr },
}

impl InboundSpec {
    pub fn listen(&self) -> SocketAddr {
        match self {
            InboundSpec::Forward { listen, .. }
            | InboundSpec::Socks5 { listen, .. }
            | InboundSpec::Tproxy { listen } => *listen,
        }
    }

    /// The inbound's name in the tree (`forward:127.0.0.1:7000`).
    /// Sets the address it listens on (the port the kernel chose for 0).
    pub fn set_listen(&mut self, addr: SocketAddr) {
        match self {
            InboundSpec::Forward { listen, .. }
            | InboundSpec::Socks5 { listen, .. }
            | InboundSpec::Tproxy { listen } => *listen = addr,
        }
    }

    pub fn name(&self) -> String {
        match self {
            InboundSpec::Forward { listen, .. } => format!("forward:{listen}"),
            InboundSpec::Socks5 { listen, .. } => format!("socks5:{listen}"),
            InboundSpec::Tproxy { listen } => format!("tproxy:{listen}"),
        }
    }
}

/// A port or an inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// One routing rule: a flow matching every non-empty list goes `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpRoute {
    pub dst: Vec<IpNet>,
    pub dst_port: Vec<PortRange>,
    pub src: Vec<IpNet>,
    /// A dialer or group.
    pub to: String,
}

impl UdpRoute {
    pub fn matches(&self, src: SocketAddr, dst: SocketAddr) -> bool {
        let any_net = |nets: &[IpNet], addr: SocketAddr| {
            nets.is_empty() || nets.iter().any(|n| n.contains(&addr.ip().to_canonical()))
        };
        any_net(&self.dst, dst)
            && any_net(&self.src, src)
            && (self.dst_port.is_empty() || self.dst_port.iter().any(|p| p.contains(dst.port())))
    }
}

/// How long an endpoint may sit without traffic, by protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleTimeouts {
    pub dns: Duration,
    pub quic: Duration,
    pub other: Duration,
}

impl Default for IdleTimeouts {
    fn default() -> Self {
        Self {
            dns: Duration::from_secs(17),
            quic: Duration::from_secs(120),
            other: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpSettings {
    pub inbounds: Vec<InboundSpec>,
    pub routes: Vec<UdpRoute>,
    /// The dialer or group of flows no route matches.
    pub default: String,
    /// Live endpoints at most; new flows past it are refused.
    pub max_endpoints: usize,
    pub idle: IdleTimeouts,
    /// Datagrams waiting for one endpoint at most (the oldest is dropped).
    pub queue: usize,
    /// Bytes of datagrams waiting in every endpoint's queue together, at
    /// most.
    pub queue_bytes: usize,
    /// Transparent reply sockets each tproxy inbound keeps open at most;
    /// past it the least recently used is closed.
    pub reply_sockets: usize,
}

impl UdpSettings {
    /// The dialer or group for a new flow.
    pub fn route(&self, src: SocketAddr, dst: SocketAddr) -> &str {
        self.routes
            .iter()
            .find(|r| r.matches(src, dst))
            .map_or(&self.default, |r| &r.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_route_wins() {
        let route = |dst: &[&str], ports: &[(u16, u16)], src: &[&str], to: &str| UdpRoute {
            dst: dst.iter().map(|n| n.parse().unwrap()).collect(),
            dst_port: ports
                .iter()
                .map(|&(first, last)| PortRange { first, last })
                .collect(),
            src: src.iter().map(|n| n.parse().unwrap()).collect(),
            to: to.into(),
        };
        let settings = UdpSettings {
            inbounds: vec![],
            routes: vec![
                route(&["10.0.0.0/8"], &[], &[], "lan"),
                route(
                    &[],
                    &[(443, 443), (3478, 3481)],
                    &["192.168.1.0/24"],
                    "fast",
                ),
            ],
            default: "proxy".into(),
            max_endpoints: 10,
            idle: IdleTimeouts::default(),
            queue: 8,
            queue_bytes: 1 << 20,
            reply_sockets: 16,
        };
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            settings.route(a("192.168.1.5:1000"), a("10.1.2.3:53")),
            "lan"
        );
        assert_eq!(
            settings.route(a("192.168.1.5:1000"), a("8.8.8.8:443")),
            "fast"
        );
        assert_eq!(
            settings.route(a("192.168.1.5:1000"), a("8.8.8.8:3480")),
            "fast"
        );
        assert_eq!(
            settings.route(a("192.168.2.5:1000"), a("8.8.8.8:443")),
            "proxy"
        );
        assert_eq!(
            settings.route(a("192.168.1.5:1000"), a("8.8.8.8:80")),
            "proxy"
        );
        // IPv4-mapped IPv6 sources match IPv4 rules.
        assert_eq!(
            settings.route(a("[::ffff:192.168.1.5]:1"), a("[::ffff:10.0.0.1]:9")),
            "lan"
        );
    }
}

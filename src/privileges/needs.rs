//! The capabilities a configuration needs beyond an ordinary user's
//! rights, each with what needs it (named in errors and logs). Not how
//! they are kept or checked: that is [`super`].
//!
//! - CAP_NET_BIND_SERVICE: a listen address (DNS, UDP inbound, metrics)
//!   on a port below `net.ipv4.ip_unprivileged_port_start`; a TPROXY
//!   inbound, whose answers come from their original destination's port
//!   (53, 443: a bind like any other).
//! - CAP_NET_ADMIN: a TPROXY inbound (IP_TRANSPARENT, which takes
//!   CAP_NET_ADMIN or CAP_NET_RAW: the first works on every kernel); a
//!   dialer's `mark` (SO_MARK, CAP_NET_ADMIN before Linux 5.17).
//! - CAP_NET_RAW: a dialer's `interface` (SO_BINDTODEVICE; Linux 5.7 and
//!   later ask for it only to change a socket's device, older ones always).

use std::net::SocketAddr;

use caps::Capability;
use ward_actors::dialer::settings::DialerSpec;
use ward_actors::udp::settings::InboundSpec;

use crate::config::Config;

/// Where the kernel's per-namespace threshold is kept (used for IPv6 too).
const PORT_START_SYSCTL: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// One capability and the parts of the configuration that need it, in
/// the order the configuration names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    pub cap: Capability,
    /// "binding 127.0.0.1:53 (dns.listen)", ...
    pub reasons: Vec<String>,
}

/// Ports below this need CAP_NET_BIND_SERVICE to bind: the network
/// namespace's `net.ipv4.ip_unprivileged_port_start`, 1024 unless lowered.
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string(PORT_START_SYSCTL)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(1024)
}

/// What `config` needs, with ports below `port_start` privileged:
/// CAP_NET_BIND_SERVICE, CAP_NET_ADMIN, CAP_NET_RAW, those it needs only.
pub fn needs(config: &Config, port_start: u16) -> Vec<Need> {
    let mut needs = Needs::default();
    let low = |addr: &SocketAddr| addr.port() != 0 && addr.port() < port_start;
    for addr in config.dns.iter().flat_map(|dns| &dns.listen) {
        if low(addr) {
            needs.add(
                Capability::CAP_NET_BIND_SERVICE,
                format!("binding {addr} (dns.listen)"),
            );
        }
    }
    for inbound in config.udp.iter().flat_map(|udp| &udp.inbounds) {
        let listen = inbound.listen();
        if low(&listen) {
            needs.add(
                Capability::CAP_NET_BIND_SERVICE,
                format!("binding {listen} (udp.inbounds, {})", inbound.name()),
            );
        }
        if let InboundSpec::Tproxy { .. } = inbound {
            tproxy(&mut needs, listen, port_start);
        }
    }
    if let Some(addr) = config.metrics.listen.filter(low) {
        needs.add(
            Capability::CAP_NET_BIND_SERVICE,
            format!("binding {addr} (metrics.listen)"),
        );
    }
    for (name, spec) in &config.dialers.dialers {
        dialer(&mut needs, name, spec);
    }
    needs.0
}

fn tproxy(needs: &mut Needs, listen: SocketAddr, port_start: u16) {
    needs.add(
        Capability::CAP_NET_ADMIN,
        format!("the TPROXY inbound {listen} (IP_TRANSPARENT)"),
    );
    // Port 0 is never asked for: every other port below the threshold
    // may be an original destination.
    if port_start > 1 {
        needs.add(
            Capability::CAP_NET_BIND_SERVICE,
            format!(
                "the TPROXY inbound {listen} (answers come from their original \
                 destination's port, 53 or 443 as often as not)"
            ),
        );
    }
}

fn dialer(needs: &mut Needs, name: &str, spec: &DialerSpec) {
    let (mark, interface) = match spec {
        DialerSpec::Direct { mark, interface } => (*mark, interface.as_deref()),
        DialerSpec::Socks5 { mark, .. }
        | DialerSpec::Shadowsocks { mark, .. }
        | DialerSpec::Trojan { mark, .. } => (*mark, None),
    };
    if let Some(mark) = mark {
        needs.add(
            Capability::CAP_NET_ADMIN,
            format!("the mark {mark} of dialer {name} (SO_MARK)"),
        );
    }
    if let Some(interface) = interface {
        needs.add(
            Capability::CAP_NET_RAW,
            format!("the interface {interface} of dialer {name} (SO_BINDTODEVICE)"),
        );
    }
}

/// Needs kept in the order of [`ORDER`], each capability once.
#[derive(Default)]
struct Needs(Vec<Need>);

const ORDER: [Capability; 3] = [
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_RAW,
];

impl Needs {
    fn add(&mut self, cap: Capability, reason: String) {
        if let Some(need) = self.0.iter_mut().find(|n| n.cap == cap) {
            need.reasons.push(reason);
            return;
        }
        self.0.push(Need {
            cap,
            reasons: vec![reason],
        });
        let rank = |c: &Capability| ORDER.iter().position(|o| o == c);
        self.0.sort_by_key(|n| rank(&n.cap));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps_of(ron: &str, port_start: u16) -> Vec<Need> {
        let config = crate::config::parse(ron, "test.ron").unwrap();
        needs(&config, port_start)
    }

    fn names(needs: &[Need]) -> Vec<String> {
        needs.iter().map(|n| n.cap.to_string()).collect()
    }

    #[test]
    fn unprivileged_ports_need_nothing() {
        let ron = r#"(metrics: (listen: "127.0.0.1:0"),
            dns: (listen: ["127.0.0.1:5353", "[::1]:0"], records: [(name: "a.lan", type: A, value: "192.0.2.1")]),
            udp: (inbounds: [Forward((listen: "127.0.0.1:51820", to: "192.0.2.9:51820"))]))"#;
        assert_eq!(caps_of(ron, 1024), vec![]);
    }

    #[test]
    fn a_port_below_the_threshold_needs_to_bind_it() {
        let ron = r#"(metrics: (listen: "127.0.0.1:80"),
            dns: (listen: ["127.0.0.1:53"], records: [(name: "a.lan", type: A, value: "192.0.2.1")]))"#;
        let needs = caps_of(ron, 1024);
        assert_eq!(names(&needs), ["CAP_NET_BIND_SERVICE"]);
        assert_eq!(
            needs[0].reasons,
            [
                "binding 127.0.0.1:53 (dns.listen)",
                "binding 127.0.0.1:80 (metrics.listen)"
            ]
        );
        // A host that lowered net.ipv4.ip_unprivileged_port_start.
        assert_eq!(caps_of(ron, 53), vec![]);
    }

    #[test]
    fn tproxy_marks_and_interfaces_need_their_capabilities() {
        let ron = r#"(dialers: { "direct": Direct((mark: Some(255))), "wan2": Direct((interface: Some("ppp1"))) },
            udp: (inbounds: [Tproxy((listen: "0.0.0.0:12345"))]))"#;
        let needs = caps_of(ron, 1024);
        assert_eq!(
            names(&needs),
            ["CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN", "CAP_NET_RAW"]
        );
        assert_eq!(needs[1].reasons.len(), 2, "{needs:?}");
        assert!(needs[2].reasons[0].contains("ppp1"), "{needs:?}");
    }

    #[test]
    fn a_node_with_a_mark_needs_net_admin_only() {
        let ron = r#"(dialers: { "n1": Socks5((server: "192.0.2.7:1080", mark: Some(1))) })"#;
        assert_eq!(names(&caps_of(ron, 1024)), ["CAP_NET_ADMIN"]);
    }
}

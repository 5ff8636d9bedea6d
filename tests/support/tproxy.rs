//! A router namespace set up as docs/operations.md tells a router to be
//! for ward's tproxy inbounds: forwarding on, policy routing that delivers
//! marked datagrams locally, and nftables rules that hand UDP for other
//! hosts to the tproxy port (local destinations are left alone). Only the
//! firewall: the links, addresses and ward are the test's.

use super::netns::Netns;

/// Turns `router` into a TPROXY router for IPv4 and IPv6 whose captured
/// UDP goes to `port`.
pub fn route_to_tproxy(router: &Netns, port: u16) {
    router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    router.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    router.exec(&["ip", "rule", "add", "fwmark", "1", "lookup", "100"]);
    router.exec(&["ip", "-6", "rule", "add", "fwmark", "1", "lookup", "100"]);
    router.exec(&[
        "ip", "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100",
    ]);
    router.exec(&[
        "ip",
        "route",
        "add",
        "local",
        "0.0.0.0/0",
        "dev",
        "lo",
        "table",
        "100",
    ]);
    let rules = format!(
        "table inet ward {{\n chain prerouting {{\n  type filter hook prerouting priority mangle; policy accept;\n\
         fib daddr type local accept\n  meta l4proto udp tproxy ip to :{port} meta mark set 1 accept\n\
         meta l4proto udp tproxy ip6 to :{port} meta mark set 1 accept\n }}\n}}\n"
    );
    let rules_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rules_file.path(), rules).unwrap();
    router.exec(&["nft", "-f", rules_file.path().to_str().unwrap()]);
}

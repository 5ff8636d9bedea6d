//! The DNS settings the actors run with: typed, validated values built by
//! the binary's config module. Nothing here parses user text except the
//! upstream URL, whose rules live with the transports they name.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::answer::TtlPolicy;
use crate::dialer::settings::DialerSettings;

/// Everything the DNS subtree needs.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    /// Each address gets a UDP and a TCP listener.
    pub listen: Vec<SocketAddr>,
    /// Clients allowed to query; others get REFUSED.
    pub allow: Vec<IpNet>,
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    pub routes: Vec<Route>,
    /// The chain for queries no route matches.
    pub default: Chain,
    /// No query waits longer than this in total.
    pub timeout: Duration,
    pub limits: Limits,
    pub cache: CacheSettings,
    pub statics: Vec<StaticRecord>,
}

impl DnsSettings {
    /// Sockets that upstream queries may hold at once: none unless some
    /// upstream is asked over UDP directly (each such query has a socket of
    /// its own); then one per query in flight, two when a chain races its
    /// first two.
    pub fn upstream_sockets_at_most(&self, dialers: &DialerSettings) -> usize {
        let per_query = self.upstreams.values().any(|u| {
            matches!(
                u.transport,
                Transport::Udp(_) | Transport::TcpUdp(_) | Transport::System(_)
            ) && dialers.may_go_direct(&u.via)
        });
        if !per_query {
            return 0;
        }
        let races = std::iter::once(&self.default)
            .chain(self.routes.iter().map(|r| &r.chain))
            .any(|c| c.strategy == Strategy::Race);
        self.limits.in_flight * if races { 2 } else { 1 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Queries being resolved at once; past it, REFUSED.
    pub in_flight: usize,
    /// Queries per second per client, when set; excess is dropped.
    pub per_client_qps: Option<u32>,
    /// TCP connections per client address.
    pub tcp_clients_per_ip: usize,
    /// TCP connections per listen address in total; past it the idlest
    /// is closed.
    pub tcp_clients: usize,
    /// A TCP client idle this long is disconnected.
    pub tcp_idle: Duration,
    /// A query must arrive whole within this of its first byte (the
    /// first query: of the connection's start).
    pub tcp_query: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            in_flight: 4096,
            per_client_qps: None,
            tcp_clients_per_ip: 32,
            tcp_clients: 256,
            tcp_idle: Duration::from_secs(10),
            tcp_query: Duration::from_secs(3),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// Answers held at most.
    pub size: usize,
    pub ttl: TtlPolicy,
    /// Expired answers may be served this long past their TTL when every
    /// upstream fails (RFC 8767); 0 turns serve-stale off.
    pub serve_stale_s: u32,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            size: 100_000,
            ttl: TtlPolicy::default(),
            serve_stale_s: 86_400,
        }
    }
}

/// How a chain of upstreams is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    /// One after another, on failure.
    #[default]
    Sequential,
    /// The first two at once; the first good answer wins; then the rest in order.
    Race,
}

/// Upstream names in fallback order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub upstreams: Vec<String>,
    pub strategy: Strategy,
}

/// Sends matching queries to a chain. Empty conditions match everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Lowercased names without the trailing dot; a name matches itself and
    /// everything below it.
    pub qname_suffix: Vec<String>,
    pub qtype: Vec<u16>,
    pub client: Vec<IpNet>,
    pub chain: Chain,
}

impl Route {
    /// True when the query matches every condition of the route.
    pub fn matches(&self, qname: &str, qtype: u16, client: IpAddr) -> bool {
        let name = qname.trim_end_matches('.');
        (self.qname_suffix.is_empty() || self.qname_suffix.iter().any(|s| name_within(name, s)))
            && (self.qtype.is_empty() || self.qtype.contains(&qtype))
            && (self.client.is_empty() || self.client.iter().any(|net| net.contains(&client)))
    }
}

/// `name` equals `suffix` or lies below it, label-wise, ignoring case.
pub fn name_within(name: &str, suffix: &str) -> bool {
    if suffix.is_empty() {
        return true;
    }
    if name.len() < suffix.len() {
        return false;
    }
    let tail = &name[name.len() - suffix.len()..];
    tail.eq_ignore_ascii_case(suffix)
        && (name.len() == suffix.len() || name.as_bytes()[name.len() - suffix.len() - 1] == b'.')
}

/// One upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamSpec {
    pub transport: Transport,
    /// The dialer or group the upstream's traffic goes through.
    pub via: String,
}

/// How an upstream is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp(SocketAddr),
    Tcp(SocketAddr),
    /// UDP first; TCP when the answer is truncated or UDP fails.
    TcpUdp(SocketAddr),
    /// DNS over TLS (RFC 7858).
    Tls(TlsTarget),
    /// DNS over HTTPS (RFC 8484), HTTP/2.
    Https(HttpsTarget),
    /// The nameservers of a resolv.conf, in order, over UDP with TCP fallback.
    System(PathBuf),
}

impl Transport {
    /// A short label for metrics and logs.
    pub fn scheme(&self) -> &'static str {
        match self {
            Transport::Udp(_) => "udp",
            Transport::Tcp(_) => "tcp",
            Transport::TcpUdp(_) => "tcp+udp",
            Transport::Tls(_) => "tls",
            Transport::Https(_) => "https",
            Transport::System(_) => "system",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsTarget {
    pub addr: SocketAddr,
    /// The name the server's certificate must carry.
    pub server_name: String,
    /// Extra trusted roots (PEM), beside the bundled web PKI roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsTarget {
    pub tls: TlsTarget,
    /// Host header / :authority.
    pub authority: String,
    pub path: String,
}

/// Options an upstream entry may carry besides its URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlOptions {
    /// TLS server name when the URL's host is an address.
    pub sni: Option<String>,
    /// Address to connect to when the URL's host is a name.
    pub addr: Option<SocketAddr>,
    pub ca_file: Option<PathBuf>,
    /// resolv.conf for `system` (default /etc/resolv.conf).
    pub resolv_conf: Option<PathBuf>,
}

/// Parses an upstream URL: `udp://host:port`, `tcp://`, `tcp+udp://`,
/// `tls://host:port`, `https://host[:port]/path`, or `system`. Ports default
/// to 53, 853 and 443. Hosts are addresses, or names with `addr` given.
pub fn parse_upstream_url(url: &str, options: &UrlOptions) -> Result<Transport, String> {
    if url == "system" {
        let path = options
            .resolv_conf
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/resolv.conf"));
        return Ok(Transport::System(path));
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!(
            "{url:?} is not an upstream URL (udp://, tcp://, tcp+udp://, tls://, https://, system)"
        )
    })?;
    match scheme {
        "udp" | "tcp" | "tcp+udp" => {
            let addr = parse_host_port(rest, 53)?;
            Ok(match scheme {
                "udp" => Transport::Udp(addr),
                "tcp" => Transport::Tcp(addr),
                _ => Transport::TcpUdp(addr),
            })
        }
        "tls" => Ok(Transport::Tls(tls_target(
            rest.trim_end_matches('/'),
            853,
            options,
        )?)),
        "https" => {
            let (authority, path) = match rest.find('/') {
                Some(at) => (&rest[..at], &rest[at..]),
                None => (rest, "/dns-query"),
            };
            let tls = tls_target(authority, 443, options)?;
            Ok(Transport::Https(HttpsTarget {
                tls,
                authority: authority.to_string(),
                path: path.to_string(),
            }))
        }
        other => Err(format!(
            "unknown upstream scheme {other:?} (udp, tcp, tcp+udp, tls, https)"
        )),
    }
}

/// The nameservers a resolv.conf lists, in order, at port 53. A link-local
/// address keeps its zone (`fe80::1%eth0`); one whose interface does not
/// exist is left out, since it cannot be reached.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|entry| {
            let (ip, zone) = match entry.split_once('%') {
                Some((ip, zone)) => (ip, Some(zone)),
                None => (entry, None),
            };
            let ip: IpAddr = ip.parse().ok()?;
            match (ip, zone) {
                (IpAddr::V6(v6), Some(zone)) => {
                    let scope = zone
                        .parse::<u32>()
                        .ok()
                        .or_else(|| nix::net::if_::if_nametoindex(zone).ok())?;
                    Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                        v6, 53, 0, scope,
                    )))
                }
                _ => Some(SocketAddr::new(ip, 53)),
            }
        })
        .collect()
}

fn split_host_port(text: &str) -> (&str, Option<&str>) {
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            return (host, tail.strip_prefix(':'));
        }
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (text, None),
    }
}

fn parse_port(port: Option<&str>, default: u16) -> Result<u16, String> {
    port.map_or(Ok(default), |p| {
        p.parse().map_err(|_| format!("{p:?} is not a port"))
    })
}

fn parse_host_port(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    let (host, port) = split_host_port(text);
    let ip: IpAddr = host.parse().map_err(|_| {
        format!("{host:?} is not an IP address (names need a tls:// or https:// URL with addr)")
    })?;
    Ok(SocketAddr::new(ip, parse_port(port, default_port)?))
}

fn tls_target(
    authority: &str,
    default_port: u16,
    options: &UrlOptions,
) -> Result<TlsTarget, String> {
    let (host, port) = split_host_port(authority);
    let port = parse_port(port, default_port)?;
    let (addr, name) = match host.parse::<IpAddr>() {
        Ok(ip) => (
            SocketAddr::new(ip, port),
            options.sni.clone().unwrap_or_else(|| ip.to_string()),
        ),
        Err(_) => {
            let addr = options.addr.ok_or_else(|| {
                format!("{host:?} is a name: give the address to connect to with addr")
            })?;
            (
                addr,
                options.sni.clone().unwrap_or_else(|| host.to_string()),
            )
        }
    };
    Ok(TlsTarget {
        addr,
        server_name: name,
        ca_file: options.ca_file.clone(),
    })
}

/// A record answered without an upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticRecord {
    /// Lowercased, without the trailing dot.
    pub name: String,
    pub ttl: u32,
    pub data: StaticData,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StaticData {
    A(std::net::Ipv4Addr),
    Aaaa(std::net::Ipv6Addr),
    Cname(String),
    Ptr(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Transport, String> {
        parse_upstream_url(url, &UrlOptions::default())
    }

    #[test]
    fn plain_schemes_take_addresses_and_default_ports() {
        assert_eq!(
            parse("udp://127.0.0.10:53"),
            Ok(Transport::Udp("127.0.0.10:53".parse().unwrap()))
        );
        assert_eq!(
            parse("tcp://[::1]"),
            Ok(Transport::Tcp("[::1]:53".parse().unwrap()))
        );
        assert_eq!(
            parse("tcp+udp://10.0.0.1:5353"),
            Ok(Transport::TcpUdp("10.0.0.1:5353".parse().unwrap()))
        );
        assert!(parse("udp://dns.example:53")
            .unwrap_err()
            .contains("not an IP address"));
        assert!(parse("quic://1.1.1.1")
            .unwrap_err()
            .contains("unknown upstream scheme"));
        assert!(parse("1.1.1.1").is_err());
        assert!(parse("udp://1.1.1.1:99999")
            .unwrap_err()
            .contains("not a port"));
    }

    #[test]
    fn tls_and_https_need_a_name_and_an_address() {
        let Transport::Tls(t) = parse("tls://1.1.1.1").unwrap() else {
            panic!()
        };
        assert_eq!(t.addr, "1.1.1.1:853".parse().unwrap());
        assert_eq!(t.server_name, "1.1.1.1");
        let options = UrlOptions {
            addr: Some("127.0.0.1:8443".parse().unwrap()),
            ..UrlOptions::default()
        };
        let Transport::Https(h) = parse_upstream_url("https://dns.test/q", &options).unwrap()
        else {
            panic!()
        };
        assert_eq!(h.tls.addr, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(h.tls.server_name, "dns.test");
        assert_eq!((h.authority.as_str(), h.path.as_str()), ("dns.test", "/q"));
        assert!(parse("https://dns.test/dns-query")
            .unwrap_err()
            .contains("addr"));
        let Transport::Https(h) = parse("https://[::1]:8443").unwrap() else {
            panic!()
        };
        assert_eq!(h.path, "/dns-query");
        assert_eq!(h.tls.addr, "[::1]:8443".parse().unwrap());
    }

    #[test]
    fn routes_match_suffixes_label_wise() {
        assert!(name_within("a.lan", "lan"));
        assert!(name_within("LAN", "lan"));
        assert!(!name_within("plan", "lan"));
        assert!(name_within("anything", ""));
        let route = Route {
            qname_suffix: vec!["corp.example".into()],
            qtype: vec![1],
            client: vec!["10.0.0.0/8".parse().unwrap()],
            chain: Chain {
                upstreams: vec!["x".into()],
                strategy: Strategy::Sequential,
            },
        };
        assert!(route.matches("db.corp.example.", 1, "10.1.2.3".parse().unwrap()));
        assert!(!route.matches("db.corp.example.", 28, "10.1.2.3".parse().unwrap()));
        assert!(!route.matches("db.corp.example.", 1, "192.168.1.2".parse().unwrap()));
        assert!(!route.matches("example.", 1, "10.1.2.3".parse().unwrap()));
    }
}

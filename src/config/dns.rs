//! The `dns` section: raw serde types and their validation into
//! [`ward_actors::dns::settings::DnsSettings`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};
use ipnet::IpNet;
use serde::Deserialize;
use ward_actors::dialer::settings::DialerSettings;
use ward_actors::dns::answer::TtlPolicy;
use ward_actors::dns::settings::{
    parse_upstream_url, resolv_conf_servers, CacheSettings, Chain, DnsSettings, Limits, Route,
    StaticData, StaticRecord, Strategy, Transport, UpstreamSpec, UrlOptions,
};
use ward_actors::dns::statics::parse_hosts;
use ward_actors::dns::upstream::tls::client_config;

use super::Checker;

/// Queries in flight at most (a semaphore's permits; each holds a buffer).
pub const MAX_IN_FLIGHT: usize = 1_000_000;
/// The most TCP clients one listen address may hold (each a descriptor).
pub const MAX_TCP_CLIENTS: usize = 65_536;

/// Who may query by default: loopback, private and link-local ranges.
pub const DEFAULT_ALLOW: [&str; 8] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "dns")]
pub struct RawDns {
    pub listen: Vec<String>,
    pub allow: Vec<String>,
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub default: Vec<String>,
    pub strategy: RawStrategy,
    pub routes: Vec<RawRoute>,
    pub timeout_ms: u64,
    pub hosts_file: Option<String>,
    pub records: Vec<RawRecord>,
    pub limits: RawLimits,
    pub cache: RawCache,
}

impl Default for RawDns {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:53".to_string()],
            allow: DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect(),
            upstreams: BTreeMap::new(),
            default: Vec::new(),
            strategy: RawStrategy::Sequential,
            routes: Vec::new(),
            timeout_ms: 2000,
            hosts_file: None,
            records: Vec::new(),
            limits: RawLimits::default(),
            cache: RawCache::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename = "strategy")]
pub enum RawStrategy {
    #[default]
    Sequential,
    Race,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "upstream")]
pub struct RawUpstream {
    pub url: String,
    #[serde(default = "direct")]
    pub via: String,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub addr: Option<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub resolv_conf: Option<String>,
}

fn direct() -> String {
    "direct".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "route")]
pub struct RawRoute {
    #[serde(default)]
    pub qname_suffix: Vec<String>,
    #[serde(default)]
    pub qtype: Vec<String>,
    #[serde(default)]
    pub client: Vec<String>,
    pub to: Vec<String>,
    #[serde(default)]
    pub strategy: RawStrategy,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename = "record type")]
pub enum RawRecordType {
    A,
    AAAA,
    CNAME,
    PTR,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "record")]
pub struct RawRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: RawRecordType,
    pub value: String,
    #[serde(default = "default_record_ttl")]
    pub ttl: u32,
}

fn default_record_ttl() -> u32 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "limits")]
pub struct RawLimits {
    pub in_flight: usize,
    pub per_client_qps: Option<u32>,
    pub tcp_clients_per_ip: usize,
    pub tcp_clients: usize,
    pub tcp_idle_s: u64,
    pub tcp_query_s: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        let d = Limits::default();
        Self {
            in_flight: d.in_flight,
            per_client_qps: d.per_client_qps,
            tcp_clients_per_ip: d.tcp_clients_per_ip,
            tcp_clients: d.tcp_clients,
            tcp_idle_s: d.tcp_idle.as_secs(),
            tcp_query_s: d.tcp_query.as_secs(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "cache")]
pub struct RawCache {
    pub size: usize,
    pub min_ttl_s: u32,
    pub max_ttl_s: u32,
    pub negative_max_ttl_s: u32,
    pub servfail_ttl_s: u32,
    pub serve_stale_s: u32,
}

impl Default for RawCache {
    fn default() -> Self {
        let d = CacheSettings::default();
        Self {
            size: d.size,
            min_ttl_s: d.ttl.min_ttl,
            max_ttl_s: d.ttl.max_ttl,
            negative_max_ttl_s: d.ttl.negative_max_ttl,
            servfail_ttl_s: d.ttl.servfail_ttl,
            serve_stale_s: d.serve_stale_s,
        }
    }
}

fn strategy(raw: RawStrategy) -> Strategy {
    match raw {
        RawStrategy::Sequential => Strategy::Sequential,
        RawStrategy::Race => Strategy::Race,
    }
}

impl Checker<'_> {
    pub(super) fn dns(&mut self, raw: RawDns, dialers: &DialerSettings) -> DnsSettings {
        if raw.timeout_ms == 0 {
            self.error("dns.timeout_ms", "must be at least 1");
        }
        let listen = self.listen(&raw.listen);
        let allow = self.nets("dns.allow", &raw.allow);
        let mut upstreams = raw.upstreams;
        if upstreams.is_empty() {
            upstreams.insert(
                "system".to_string(),
                RawUpstream {
                    url: "system".to_string(),
                    via: direct(),
                    sni: None,
                    addr: None,
                    ca_file: None,
                    resolv_conf: None,
                },
            );
        }
        // Chains are checked against every configured name, so one bad
        // upstream is one error, not one more per chain that names it.
        let names: BTreeSet<String> = upstreams.keys().cloned().collect();
        let upstreams: BTreeMap<String, UpstreamSpec> = upstreams
            .into_iter()
            .filter_map(|(name, up)| self.upstream(&name, up, dialers).map(|spec| (name, spec)))
            .collect();
        self.no_loops(&listen, &upstreams);
        let default_names = if raw.default.is_empty() && names.len() == 1 {
            names.iter().cloned().collect()
        } else {
            raw.default
        };
        let default = self.chain("dns.default", default_names, strategy(raw.strategy), &names);
        let routes = raw
            .routes
            .into_iter()
            .enumerate()
            .filter_map(|(i, route)| self.route(i, route, &names))
            .collect();
        let statics = self.statics(raw.hosts_file, raw.records);
        DnsSettings {
            listen,
            allow,
            upstreams,
            routes,
            default,
            timeout: Duration::from_millis(raw.timeout_ms.max(1)),
            limits: self.limits(raw.limits),
            cache: self.cache(raw.cache),
            statics,
        }
    }

    fn listen(&mut self, raw: &[String]) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for (i, text) in raw.iter().enumerate() {
            let path = format!("dns.listen[{i}]");
            if let Some(addr) = self.socket_addr(&path, text) {
                if out.contains(&addr) {
                    self.error(&path, format!("{addr} is listed twice"));
                } else {
                    out.push(addr);
                }
            }
        }
        out
    }

    pub(super) fn nets(&mut self, path: &str, raw: &[String]) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (i, text) in raw.iter().enumerate() {
            match text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
            {
                Ok(net) => out.push(net),
                Err(_) => self.error(
                    &format!("{path}[{i}]"),
                    format!("{text:?} is not an address or CIDR"),
                ),
            }
        }
        out
    }

    fn upstream(
        &mut self,
        name: &str,
        raw: RawUpstream,
        dialers: &DialerSettings,
    ) -> Option<UpstreamSpec> {
        let path = format!("dns.upstreams.{name}");
        if name.is_empty() || name.contains('/') {
            self.error(
                &path,
                format!("{name:?}: upstream names are non-empty and contain no '/'"),
            );
            return None;
        }
        if !dialers.dialers.contains_key(&raw.via) && !dialers.groups.contains_key(&raw.via) {
            self.error(
                &format!("{path}.via"),
                format!("no dialer or group named {:?}", raw.via),
            );
        }
        let is = |schemes: &[&str]| {
            schemes
                .iter()
                .any(|scheme| raw.url.starts_with(&format!("{scheme}://")))
        };
        let tls = is(&["tls", "https"]);
        for (field, set) in [
            ("sni", raw.sni.is_some()),
            ("addr", raw.addr.is_some()),
            ("ca_file", raw.ca_file.is_some()),
        ] {
            if set && !tls {
                self.error(
                    &format!("{path}.{field}"),
                    "only for tls:// and https:// upstreams",
                );
            }
        }
        if raw.resolv_conf.is_some() && raw.url != "system" {
            self.error(
                &format!("{path}.resolv_conf"),
                "only for the system upstream",
            );
        }
        let addr = raw
            .addr
            .as_deref()
            .and_then(|a| self.socket_addr(&format!("{path}.addr"), a));
        let ca_file = raw.ca_file.as_deref().map(|f| self.file_path(f));
        if let (Some(file), true) = (&ca_file, tls) {
            if let Err(e) = client_config(Some(file), &[]) {
                self.error(&format!("{path}.ca_file"), e.to_string());
            }
        }
        let options = UrlOptions {
            sni: raw.sni,
            addr,
            ca_file,
            resolv_conf: raw.resolv_conf.as_deref().map(|f| self.file_path(f)),
        };
        match parse_upstream_url(&raw.url, &options) {
            Ok(transport) => {
                if let Transport::System(file) = &transport {
                    // Checked now so a missing file is a config error, and
                    // read again at every start so a changed one is followed.
                    let at = match options.resolv_conf {
                        Some(_) => format!("{path}.resolv_conf"),
                        None => format!("{path}.url"),
                    };
                    match std::fs::read_to_string(file) {
                        Ok(text) if resolv_conf_servers(&text).is_empty() => self.error(
                            &at,
                            format!("{} has no usable nameserver lines", file.display()),
                        ),
                        Ok(_) => {}
                        Err(e) => self.error(&at, format!("cannot read {}: {e}", file.display())),
                    }
                }
                Some(UpstreamSpec {
                    transport,
                    via: raw.via,
                })
            }
            Err(message) => {
                self.error(&format!("{path}.url"), message);
                None
            }
        }
    }

    /// An upstream at one of ward's own listening addresses would send
    /// every miss back to ward until the timeout.
    fn no_loops(&mut self, listen: &[SocketAddr], upstreams: &BTreeMap<String, UpstreamSpec>) {
        let ours = |addr: &SocketAddr| {
            listen.iter().any(|l| {
                l.port() == addr.port()
                    && (l.ip() == addr.ip()
                        || (l.ip().is_unspecified()
                            && (addr.ip().is_loopback() || addr.ip().is_unspecified())))
            })
        };
        for (name, spec) in upstreams {
            let servers = match &spec.transport {
                Transport::Udp(a) | Transport::Tcp(a) | Transport::TcpUdp(a) => vec![*a],
                Transport::Tls(t) => vec![t.addr],
                Transport::Https(h) => vec![h.tls.addr],
                Transport::System(file) => std::fs::read_to_string(file)
                    .map(|text| resolv_conf_servers(&text))
                    .unwrap_or_default(),
            };
            if let Some(addr) = servers.iter().find(|a| ours(a)) {
                self.error(
                    &format!("dns.upstreams.{name}.url"),
                    format!(
                        "{addr} is one of ward's own listeners (dns.listen): queries would loop"
                    ),
                );
            }
        }
    }

    fn chain(
        &mut self,
        path: &str,
        names: Vec<String>,
        strategy: Strategy,
        upstreams: &BTreeSet<String>,
    ) -> Chain {
        if names.is_empty() {
            self.error(path, "name at least one upstream");
        }
        for (i, name) in names.iter().enumerate() {
            if !upstreams.contains(name) {
                self.error(
                    &format!("{path}[{i}]"),
                    format!("no upstream named {name:?}"),
                );
            }
        }
        if strategy == Strategy::Race && names.len() < 2 {
            self.error(path, "Race needs at least two upstreams");
        }
        Chain {
            upstreams: names,
            strategy,
        }
    }

    fn route(
        &mut self,
        index: usize,
        raw: RawRoute,
        upstreams: &BTreeSet<String>,
    ) -> Option<Route> {
        let path = format!("dns.routes[{index}]");
        let mut qname_suffix = Vec::new();
        for (i, suffix) in raw.qname_suffix.iter().enumerate() {
            let trimmed = suffix.trim_end_matches('.').to_ascii_lowercase();
            if trimmed.is_empty() || Name::from_ascii(&trimmed).is_ok() {
                qname_suffix.push(trimmed);
            } else {
                self.error(
                    &format!("{path}.qname_suffix[{i}]"),
                    format!("{suffix:?} is not a domain name"),
                );
            }
        }
        let mut qtype = Vec::new();
        for (i, name) in raw.qtype.iter().enumerate() {
            match name.to_ascii_uppercase().parse::<RecordType>() {
                Ok(RecordType::Unknown(_)) | Err(_) => self.error(
                    &format!("{path}.qtype[{i}]"),
                    format!("{name:?} is not a record type"),
                ),
                Ok(t) => qtype.push(u16::from(t)),
            }
        }
        let client = self.nets(&format!("{path}.client"), &raw.client);
        let chain = self.chain(
            &format!("{path}.to"),
            raw.to,
            strategy(raw.strategy),
            upstreams,
        );
        Some(Route {
            qname_suffix,
            qtype,
            client,
            chain,
        })
    }

    fn statics(
        &mut self,
        hosts_file: Option<String>,
        records: Vec<RawRecord>,
    ) -> Vec<StaticRecord> {
        let mut out = Vec::new();
        if let Some(file) = hosts_file {
            let file = self.file_path(&file).display().to_string();
            match std::fs::read_to_string(&file) {
                Ok(text) => match parse_hosts(&text) {
                    Ok(records) => out.extend(records),
                    Err((line, message)) => {
                        self.error("dns.hosts_file", format!("{file}:{line}: {message}"))
                    }
                },
                Err(e) => self.error("dns.hosts_file", format!("cannot read {file}: {e}")),
            }
        }
        for (i, raw) in records.into_iter().enumerate() {
            let path = format!("dns.records[{i}]");
            let name = raw.name.trim_end_matches('.').to_ascii_lowercase();
            if Name::from_ascii(&name).is_err() || name.is_empty() {
                self.error(
                    &format!("{path}.name"),
                    format!("{:?} is not a domain name", raw.name),
                );
                continue;
            }
            let data = match raw.rtype {
                RawRecordType::A => raw.value.parse().ok().map(StaticData::A),
                RawRecordType::AAAA => raw.value.parse().ok().map(StaticData::Aaaa),
                RawRecordType::CNAME | RawRecordType::PTR => {
                    let target = raw.value.trim_end_matches('.').to_ascii_lowercase();
                    Name::from_ascii(&target).ok().map(|_| match raw.rtype {
                        RawRecordType::CNAME => StaticData::Cname(target),
                        _ => StaticData::Ptr(target),
                    })
                }
            };
            match data {
                Some(data) => out.push(StaticRecord {
                    name,
                    ttl: raw.ttl,
                    data,
                }),
                None => self.error(
                    &format!("{path}.value"),
                    format!("{:?} is not a valid {:?} value", raw.value, raw.rtype),
                ),
            }
        }
        out
    }

    fn limits(&mut self, raw: RawLimits) -> Limits {
        for (field, value) in [
            ("in_flight", raw.in_flight),
            ("tcp_clients_per_ip", raw.tcp_clients_per_ip),
            ("tcp_clients", raw.tcp_clients),
            ("tcp_idle_s", raw.tcp_idle_s as usize),
            ("tcp_query_s", raw.tcp_query_s as usize),
        ] {
            if value == 0 {
                self.error(&format!("dns.limits.{field}"), "must be at least 1");
            }
        }
        if raw.in_flight > MAX_IN_FLIGHT {
            self.error(
                "dns.limits.in_flight",
                format!("{} is above the limit of {MAX_IN_FLIGHT}", raw.in_flight),
            );
        }
        if raw.tcp_clients > MAX_TCP_CLIENTS {
            self.error(
                "dns.limits.tcp_clients",
                format!(
                    "{} is above the limit of {MAX_TCP_CLIENTS}",
                    raw.tcp_clients
                ),
            );
        }
        if raw.per_client_qps == Some(0) {
            self.error("dns.limits.per_client_qps", "must be at least 1 (or None)");
        }
        Limits {
            in_flight: raw.in_flight.clamp(1, MAX_IN_FLIGHT),
            per_client_qps: raw.per_client_qps.filter(|&q| q > 0),
            tcp_clients_per_ip: raw.tcp_clients_per_ip.max(1),
            tcp_clients: raw.tcp_clients.clamp(1, MAX_TCP_CLIENTS),
            tcp_idle: Duration::from_secs(raw.tcp_idle_s.max(1)),
            tcp_query: Duration::from_secs(raw.tcp_query_s.max(1)),
        }
    }

    fn cache(&mut self, raw: RawCache) -> CacheSettings {
        if raw.size == 0 {
            self.error("dns.cache.size", "must be at least 1");
        }
        if raw.min_ttl_s > raw.max_ttl_s {
            self.error(
                "dns.cache.min_ttl_s",
                format!("{} is above max_ttl_s ({})", raw.min_ttl_s, raw.max_ttl_s),
            );
        }
        CacheSettings {
            size: raw.size.max(1),
            ttl: TtlPolicy {
                min_ttl: raw.min_ttl_s,
                max_ttl: raw.max_ttl_s,
                negative_max_ttl: raw.negative_max_ttl_s,
                servfail_ttl: raw.servfail_ttl_s,
            },
            serve_stale_s: raw.serve_stale_s,
        }
    }
}

//! Validated dialer, group and health settings (built by ward's config).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::socks5::Credentials;

/// The dialer every config has, whether it names it or not.
pub const DIRECT: &str = "direct";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DialerSpec {
    /// Straight out of this host. `mark` sets SO_MARK on every socket (so a
    /// router's tproxy rules can let them pass); `interface` binds them to a
    /// device (SO_BINDTODEVICE). Both need CAP_NET_ADMIN / CAP_NET_RAW.
    Direct {
        mark: Option<u32>,
        interface: Option<String>,
    },
    /// A SOCKS5 node: CONNECT for TCP, UDP ASSOCIATE for UDP.
    Socks5 {
        /// `host:port`; a host name is looked up when dialing.
        server: String,
        credentials: Option<Credentials>,
        /// SO_MARK on the sockets that reach the node.
        mark: Option<u32>,
    },
    /// A Shadowsocks node: AEAD (classic) or 2022, TCP and UDP.
    Shadowsocks {
        server: String,
        /// A method name `ward check` accepted (see
        /// `shadowsocks::Method`).
        method: String,
        /// The password (classic) or base64 key (2022).
        password: Secret,
        mark: Option<u32>,
    },
    /// A Trojan node over TLS: CONNECT, and UDP ASSOCIATE inside the TLS
    /// connection.
    Trojan {
        server: String,
        password: Secret,
        /// The TLS server name; the server's host when `None`.
        sni: Option<String>,
        /// A PEM file of the CA that signed the node's certificate,
        /// instead of the system's roots.
        ca: Option<PathBuf>,
        /// Accept any certificate (warned about once at start).
        skip_verify: bool,
        mark: Option<u32>,
    },
}

impl DialerSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            DialerSpec::Direct { .. } => "direct",
            DialerSpec::Socks5 { .. } => "socks5",
            DialerSpec::Shadowsocks { .. } => "shadowsocks",
            DialerSpec::Trojan { .. } => "trojan",
        }
    }
}

/// A password or key: never shown by `Debug`, so no log, error or
/// `ward ctl` output can carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How a group picks among its healthy members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Member `i` while it is up; the next up member in order otherwise.
    Fixed(usize),
    Random,
    RoundRobin,
    /// The lowest last latency.
    MinLast,
    /// The lowest average of the last 10 latencies.
    MinAvg10,
    /// The lowest exponentially weighted moving average.
    MinMovingAvg,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    pub dialers: Vec<String>,
    pub policy: Policy,
    /// A latency policy switches only when the new best beats the current
    /// choice by more than this.
    pub tolerance: Duration,
}

/// Probes and how health reacts to them and to traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    /// Time between probes of a group's members.
    pub interval: Duration,
    /// One probe's deadline.
    pub timeout: Duration,
    /// TCP probe: HTTP GET of this URL through the dialer; 2xx passes.
    /// `None`: the TCP track learns from traffic only.
    pub tcp_url: Option<HttpUrl>,
    /// UDP probe: a DNS query to this server through the dialer.
    pub udp_dns: Option<SocketAddr>,
    /// Consecutive traffic failures that mark a track down.
    pub traffic_failures: u32,
    /// Consecutive successes that bring a down track back up (doubled for
    /// each flap, see `flap_window`).
    pub up_after: u32,
    /// A track that goes down again within this time after coming up is
    /// flapping: it needs twice as many successes next time.
    pub flap_window: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            tcp_url: None,
            udp_dns: None,
            traffic_failures: 1,
            up_after: 2,
            flap_window: Duration::from_secs(60),
        }
    }
}

/// A plain-HTTP URL for the TCP probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// The Host header.
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl HttpUrl {
    /// Parses `http://host[:port][/path]`.
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("{text:?}: only http:// URLs can be probed"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let invalid = || format!("{text:?} is not a valid http:// URL");
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(invalid)?;
                match after.strip_prefix(':') {
                    Some(port) => (host, port.parse().map_err(|_| invalid())?),
                    None if after.is_empty() => (host, 80),
                    None => return Err(invalid()),
                }
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, port.parse().map_err(|_| invalid())?),
                None => (authority, 80),
            },
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(invalid());
        }
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// Every dialer and group, with the health settings they share.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DialerSettings {
    /// Always holds `direct`.
    pub dialers: BTreeMap<String, DialerSpec>,
    pub groups: BTreeMap<String, GroupSpec>,
    pub health: HealthSettings,
}

impl DialerSettings {
    /// Only the implicit `direct` dialer.
    pub fn direct_only() -> Self {
        let mut dialers = BTreeMap::new();
        dialers.insert(
            DIRECT.to_string(),
            DialerSpec::Direct {
                mark: None,
                interface: None,
            },
        );
        Self {
            dialers,
            ..Self::default()
        }
    }

    /// Whether traffic `via` a dialer or group may go out directly.
    pub fn may_go_direct(&self, via: &str) -> bool {
        let direct = |name: &str| matches!(self.dialers.get(name), Some(DialerSpec::Direct { .. }));
        direct(via)
            || self
                .groups
                .get(via)
                .is_some_and(|group| group.dialers.iter().any(|d| direct(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        let url = HttpUrl::parse("http://127.0.0.1:8080/generate_204").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("127.0.0.1", 8080, "/generate_204")
        );
        let url = HttpUrl::parse("http://example.test").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("example.test", 80, "/")
        );
        let url = HttpUrl::parse("http://[::1]:81/x").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 81));
        assert!(HttpUrl::parse("https://example.test/").is_err());
        assert!(HttpUrl::parse("http:///x").is_err());
    }
}

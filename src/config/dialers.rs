//! The `dialers`, `groups` and `health` sections: raw serde types and
//! their validation into [`ward_actors::dialer::settings::DialerSettings`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use ward_actors::dialer::settings::{
    DialerSettings, DialerSpec, GroupSpec, HealthSettings, HttpUrl, Policy, Secret, DIRECT,
};
use ward_actors::dialer::shadowsocks::{Key, Method};
use ward_actors::dialer::socks5::Credentials;
use ward_actors::dialer::trojan::{TrojanError, TrojanNode};

use super::links::{parse_link, Link};
use super::Checker;

/// Longest interface name the kernel takes (IFNAMSIZ minus the NUL).
const IFNAME_MAX: usize = 15;

#[derive(Debug, Deserialize)]
#[serde(rename = "dialer")]
pub enum RawDialer {
    Direct(RawDirect),
    Socks5(RawSocks5),
    Shadowsocks(RawShadowsocks),
    Trojan(RawTrojan),
    /// A share link as providers hand them out: `ss://` or `trojan://`.
    Link(RawSecret),
}

/// A password, key or link: never printed.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct RawSecret(pub String);

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "shadowsocks")]
pub struct RawShadowsocks {
    pub server: String,
    pub method: String,
    pub password: RawSecret,
    #[serde(default)]
    pub mark: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "trojan")]
pub struct RawTrojan {
    pub server: String,
    pub password: RawSecret,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub ca: Option<String>,
    #[serde(default)]
    pub skip_verify: bool,
    #[serde(default)]
    pub mark: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "direct")]
pub struct RawDirect {
    pub mark: Option<u32>,
    pub interface: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "socks5")]
pub struct RawSocks5 {
    pub server: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub mark: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename = "policy")]
pub enum RawPolicy {
    Fixed(usize),
    Random,
    RoundRobin,
    MinLast,
    MinAvg10,
    #[default]
    MinMovingAvg,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "group")]
pub struct RawGroup {
    pub dialers: Vec<String>,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default = "default_tolerance_ms")]
    pub tolerance_ms: u64,
}

fn default_tolerance_ms() -> u64 {
    50
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "health")]
pub struct RawHealth {
    pub interval_s: u64,
    pub timeout_ms: u64,
    pub tcp_url: Option<String>,
    pub udp_dns: Option<String>,
    pub traffic_failures: u32,
    pub up_after: u32,
    pub flap_window_s: u64,
}

impl Default for RawHealth {
    fn default() -> Self {
        let d = HealthSettings::default();
        Self {
            interval_s: d.interval.as_secs(),
            timeout_ms: d.timeout.as_millis() as u64,
            tcp_url: None,
            udp_dns: None,
            traffic_failures: d.traffic_failures,
            up_after: d.up_after,
            flap_window_s: d.flap_window.as_secs(),
        }
    }
}

impl Checker<'_> {
    pub(super) fn dialer_settings(
        &mut self,
        dialers: BTreeMap<String, RawDialer>,
        groups: BTreeMap<String, RawGroup>,
        health: RawHealth,
    ) -> DialerSettings {
        let mut settings = DialerSettings::direct_only();
        for (name, raw) in dialers {
            if let Some(spec) = self.dialer(&name, raw) {
                settings.dialers.insert(name, spec);
            }
        }
        for (name, raw) in groups {
            let path = format!("groups.{name}");
            if !self.path_name(&path, &name, "group") {
                continue;
            }
            if settings.dialers.contains_key(&name) {
                self.error(&path, format!("{name:?} is already a dialer's name"));
                continue;
            }
            if let Some(spec) = self.group(&path, raw, &settings.dialers, &settings.groups) {
                settings.groups.insert(name, spec);
            }
        }
        settings.health = self.health(health);
        settings
    }

    /// Names become tree paths (`dialers/<name>`).
    fn path_name(&mut self, path: &str, name: &str, what: &str) -> bool {
        let ok = !name.is_empty() && !name.contains('/');
        if !ok {
            self.error(
                path,
                format!("{name:?}: {what} names are non-empty and contain no '/'"),
            );
        }
        ok
    }

    fn dialer(&mut self, name: &str, raw: RawDialer) -> Option<DialerSpec> {
        let path = format!("dialers.{name}");
        if !self.path_name(&path, name, "dialer") {
            return None;
        }
        match raw {
            RawDialer::Direct(direct) => {
                if let Some(interface) = &direct.interface {
                    if interface.is_empty() || interface.len() > IFNAME_MAX {
                        self.error(
                            &format!("{path}.interface"),
                            format!(
                                "{interface:?} is not an interface name (1 to {IFNAME_MAX} bytes)"
                            ),
                        );
                    }
                }
                Some(DialerSpec::Direct {
                    mark: direct.mark,
                    interface: direct.interface,
                })
            }
            _ if name == DIRECT => {
                self.error(
                    &path,
                    "\"direct\" is the direct dialer; name this node otherwise",
                );
                None
            }
            RawDialer::Socks5(socks) => {
                self.server(&format!("{path}.server"), &socks.server);
                let credentials = match (socks.username, socks.password) {
                    (None, None) => None,
                    (Some(username), Some(password)) => {
                        for (field, value) in [("username", &username), ("password", &password)] {
                            if value.is_empty() || value.len() > 255 {
                                self.error(
                                    &format!("{path}.{field}"),
                                    "must be 1 to 255 bytes (RFC 1929)",
                                );
                            }
                        }
                        Some(Credentials { username, password })
                    }
                    _ => {
                        self.error(&path, "username and password go together");
                        None
                    }
                };
                Some(DialerSpec::Socks5 {
                    server: socks.server,
                    credentials,
                    mark: socks.mark,
                })
            }
            RawDialer::Shadowsocks(ss) => self.shadowsocks(&path, ss),
            RawDialer::Trojan(trojan) => self.trojan(&path, trojan),
            RawDialer::Link(link) => match parse_link(&link.0) {
                Ok(Link::Shadowsocks {
                    server,
                    method,
                    password,
                }) => self.shadowsocks(
                    &path,
                    RawShadowsocks {
                        server,
                        method,
                        password: RawSecret(password),
                        mark: None,
                    },
                ),
                Ok(Link::Trojan {
                    server,
                    password,
                    sni,
                    skip_verify,
                }) => self.trojan(
                    &path,
                    RawTrojan {
                        server,
                        password: RawSecret(password),
                        sni,
                        ca: None,
                        skip_verify,
                        mark: None,
                    },
                ),
                Err(why) => {
                    self.error(&path, why);
                    None
                }
            },
        }
    }

    /// A node's `host:port`.
    fn server(&mut self, path: &str, server: &str) -> bool {
        let valid = server
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            self.error(
                path,
                format!("{server:?} is not host:port, like \"127.0.0.1:1080\""),
            );
        }
        valid
    }

    fn shadowsocks(&mut self, path: &str, raw: RawShadowsocks) -> Option<DialerSpec> {
        let server = self.server(&format!("{path}.server"), &raw.server);
        let method = match raw.method.parse::<Method>() {
            Ok(method) => method,
            Err(_) => {
                let known: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
                self.error(
                    &format!("{path}.method"),
                    format!("{:?} is not one of {}", raw.method, known.join(", ")),
                );
                return None;
            }
        };
        // The key is made once here to tell a bad one now; the message
        // never holds the password.
        if let Err(e) = Key::new(method, &raw.password.0) {
            self.error(&format!("{path}.password"), e.to_string());
            return None;
        }
        server.then(|| DialerSpec::Shadowsocks {
            server: raw.server,
            method: method.name().to_string(),
            password: Secret::new(raw.password.0),
            mark: raw.mark,
        })
    }

    fn trojan(&mut self, path: &str, raw: RawTrojan) -> Option<DialerSpec> {
        if !self.server(&format!("{path}.server"), &raw.server) {
            return None;
        }
        if raw.password.0.is_empty() {
            self.error(&format!("{path}.password"), "must not be empty");
            return None;
        }
        let ca = raw.ca.as_deref().map(|ca| self.file_path(ca));
        // Built once to tell a CA file or server name that cannot work now;
        // the dialer builds its own at start.
        let built = TrojanNode::new(
            &raw.server,
            &raw.password.0,
            raw.sni.as_deref(),
            ca.as_deref(),
            raw.skip_verify,
        );
        if let Err(e) = built {
            let field = match e {
                TrojanError::Ca(_) => "ca",
                TrojanError::ServerName(_) if raw.sni.is_some() => "sni",
                _ => "server",
            };
            self.error(&format!("{path}.{field}"), e.to_string());
            return None;
        }
        Some(DialerSpec::Trojan {
            server: raw.server,
            password: Secret::new(raw.password.0),
            sni: raw.sni,
            ca,
            skip_verify: raw.skip_verify,
            mark: raw.mark,
        })
    }

    fn group(
        &mut self,
        path: &str,
        raw: RawGroup,
        dialers: &BTreeMap<String, DialerSpec>,
        groups: &BTreeMap<String, GroupSpec>,
    ) -> Option<GroupSpec> {
        if raw.dialers.is_empty() {
            self.error(
                &format!("{path}.dialers"),
                "a group needs at least one dialer",
            );
            return None;
        }
        let mut seen = BTreeSet::new();
        let mut ok = true;
        for (i, member) in raw.dialers.iter().enumerate() {
            let at = format!("{path}.dialers[{i}]");
            if !dialers.contains_key(member) {
                let why = if groups.contains_key(member) {
                    format!("{member:?} is a group; groups hold dialers, not groups")
                } else {
                    format!("no dialer named {member:?}")
                };
                self.error(&at, why);
                ok = false;
            } else if !seen.insert(member) {
                self.error(&at, format!("{member:?} is listed twice"));
                ok = false;
            }
        }
        let policy = match raw.policy {
            RawPolicy::Fixed(i) if i >= raw.dialers.len() => {
                self.error(
                    &format!("{path}.policy"),
                    format!(
                        "Fixed({i}): the group has {} dialers, counted from 0",
                        raw.dialers.len()
                    ),
                );
                ok = false;
                Policy::Fixed(0)
            }
            RawPolicy::Fixed(i) => Policy::Fixed(i),
            RawPolicy::Random => Policy::Random,
            RawPolicy::RoundRobin => Policy::RoundRobin,
            RawPolicy::MinLast => Policy::MinLast,
            RawPolicy::MinAvg10 => Policy::MinAvg10,
            RawPolicy::MinMovingAvg => Policy::MinMovingAvg,
        };
        ok.then(|| GroupSpec {
            dialers: raw.dialers,
            policy,
            tolerance: Duration::from_millis(raw.tolerance_ms),
        })
    }

    fn health(&mut self, raw: RawHealth) -> HealthSettings {
        for (field, value) in [
            ("interval_s", raw.interval_s),
            ("timeout_ms", raw.timeout_ms),
            ("traffic_failures", u64::from(raw.traffic_failures)),
            ("up_after", u64::from(raw.up_after)),
        ] {
            if value == 0 {
                self.error(&format!("health.{field}"), "must be at least 1");
            }
        }
        if raw.timeout_ms > raw.interval_s.saturating_mul(1000) && raw.interval_s > 0 {
            self.error(
                "health.timeout_ms",
                format!(
                    "{} ms is longer than interval_s ({} s)",
                    raw.timeout_ms, raw.interval_s
                ),
            );
        }
        let tcp_url = raw.tcp_url.and_then(|url| match HttpUrl::parse(&url) {
            Ok(url) => Some(url),
            Err(e) => {
                self.error("health.tcp_url", e);
                None
            }
        });
        let udp_dns = raw
            .udp_dns
            .and_then(|text| self.socket_addr("health.udp_dns", &text));
        HealthSettings {
            interval: Duration::from_secs(raw.interval_s.max(1)),
            timeout: Duration::from_millis(raw.timeout_ms.max(1)),
            tcp_url,
            udp_dns,
            traffic_failures: raw.traffic_failures.max(1),
            up_after: raw.up_after.max(1),
            flap_window: Duration::from_secs(raw.flap_window_s),
        }
    }
}

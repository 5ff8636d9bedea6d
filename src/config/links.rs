//! Share links of proxy nodes, as subscription services and other clients
//! hand them out, read into a [`Link`]: `ss://` in SIP002 form (userinfo
//! in URL-safe base64, or plain and percent-encoded as the 2022 methods
//! use it) and in the legacy form with everything in base64, and
//! `trojan://`. Tags (`#name`) are ignored. This reads links only: it does
//! not check that a node works, and turns no link into config text.
//! No error message carries the password, nor anything it could be in.

use std::fmt;
use std::net::Ipv6Addr;

use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};
use base64::Engine;
use percent_encoding::percent_decode_str;

/// The Shadowsocks methods a link may name: the AEAD ciphers and the
/// 2022 ones (SIP022).
pub const SHADOWSOCKS_METHODS: [&str; 6] = [
    "aes-128-gcm",
    "aes-256-gcm",
    "chacha20-ietf-poly1305",
    "2022-blake3-aes-128-gcm",
    "2022-blake3-aes-256-gcm",
    "2022-blake3-chacha20-poly1305",
];

/// A node read from a share link. `server` is `host:port`, an IPv6 host
/// in brackets, as the config writes it.
#[derive(Clone, PartialEq, Eq)]
pub enum Link {
    Shadowsocks {
        server: String,
        method: String,
        password: String,
    },
    Trojan {
        server: String,
        password: String,
        sni: Option<String>,
        skip_verify: bool,
    },
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Shadowsocks { server, method, .. } => f
                .debug_struct("Shadowsocks")
                .field("server", server)
                .field("method", method)
                .field("password", &"<redacted>")
                .finish(),
            Link::Trojan {
                server,
                sni,
                skip_verify,
                ..
            } => f
                .debug_struct("Trojan")
                .field("server", server)
                .field("password", &"<redacted>")
                .field("sni", sni)
                .field("skip_verify", skip_verify)
                .finish(),
        }
    }
}

/// Reads one share link (surrounding whitespace ignored).
pub fn parse_link(s: &str) -> Result<Link, String> {
    let s = s.trim();
    let (scheme, rest) = s
        .split_once("://")
        .ok_or("not a share link (no scheme://)")?;
    let parts = UrlParts::split(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "ss" => shadowsocks(parts),
        "trojan" => trojan(parts),
        other => Err(format!(
            "unsupported link scheme {:?} (ss:// and trojan:// are)",
            shown(other)
        )),
    }
}

/// What follows `scheme://`, cut at the fragment and the query.
struct UrlParts<'a> {
    /// Up to the query, a trailing `/` removed.
    authority: &'a str,
    query: Vec<(&'a str, &'a str)>,
}

impl<'a> UrlParts<'a> {
    fn split(rest: &'a str) -> UrlParts<'a> {
        let rest = rest.split_once('#').map_or(rest, |(before, _tag)| before);
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let query = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .collect();
        UrlParts {
            authority: authority.strip_suffix('/').unwrap_or(authority),
            query,
        }
    }

    /// The percent-decoded value of the last `key` in the query.
    fn param(&self, key: &str) -> Result<Option<String>, String> {
        let Some(&(_, value)) = self.query.iter().rev().find(|(k, _)| *k == key) else {
            return Ok(None);
        };
        decode(value)
            .map(Some)
            .map_err(|_| format!("the {key} parameter is not UTF-8 once percent-decoded"))
    }
}

fn shadowsocks(parts: UrlParts<'_>) -> Result<Link, String> {
    if parts.param("plugin")?.is_some_and(|p| !p.is_empty()) {
        return Err("plugins are not supported".into());
    }
    let (credentials, host_port) = match parts.authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (sip002_userinfo(userinfo)?, host_port.to_string()),
        None => legacy(parts.authority)?,
    };
    let (method, password) = credentials
        .split_once(':')
        .ok_or("no method:password in the link")?;
    let method = method.to_ascii_lowercase();
    if !SHADOWSOCKS_METHODS.contains(&method.as_str()) {
        return Err(unsupported_method(&method));
    }
    if password.is_empty() {
        return Err("the link has an empty password".into());
    }
    Ok(Link::Shadowsocks {
        server: server(&host_port)?,
        method,
        password: password.to_string(),
    })
}

/// Names the method only when it looks like a cipher: with the method and
/// the password swapped, the "method" is the password.
fn unsupported_method(method: &str) -> String {
    const CIPHER_PREFIXES: [&str; 11] = [
        "aes-",
        "chacha",
        "xchacha",
        "rc4",
        "camellia-",
        "bf-",
        "salsa20",
        "2022-",
        "none",
        "plain",
        "table",
    ];
    let supported = SHADOWSOCKS_METHODS.join(", ");
    if CIPHER_PREFIXES.iter().any(|p| method.starts_with(p)) {
        format!(
            "unsupported Shadowsocks method {:?} (supported: {supported})",
            shown(method)
        )
    } else {
        format!("the link names no Shadowsocks method (supported: {supported})")
    }
}

/// SIP002 userinfo: `method:password` percent-encoded, or both in
/// URL-safe base64 (base64 has no `:`, so a `:` tells the forms apart).
fn sip002_userinfo(userinfo: &str) -> Result<String, String> {
    let plain = decode(userinfo).map_err(|_| "the userinfo is not UTF-8 once percent-decoded")?;
    if plain.contains(':') {
        return Ok(plain);
    }
    base64_text(&plain).ok_or_else(|| "the userinfo is neither method:password nor base64".into())
}

/// The legacy form: base64 of `method:password@host:port`.
fn legacy(encoded: &str) -> Result<(String, String), String> {
    let decoded = base64_text(encoded).ok_or("no @ in the link, and it is not base64 either")?;
    let (credentials, host_port) = decoded
        .rsplit_once('@')
        .ok_or("the base64 part holds no method:password@host:port")?;
    Ok((credentials.to_string(), host_port.to_string()))
}

fn trojan(parts: UrlParts<'_>) -> Result<Link, String> {
    let (userinfo, host_port) = parts
        .authority
        .rsplit_once('@')
        .ok_or("no password@ in the link")?;
    let password =
        decode(userinfo).map_err(|_| "the password is not UTF-8 once percent-decoded")?;
    if password.is_empty() {
        return Err("the link has an empty password".into());
    }
    if let Some(security) = parts.param("security")? {
        if !matches!(security.as_str(), "" | "tls") {
            return Err(format!(
                "security {:?} is not supported (only tls)",
                shown(&security)
            ));
        }
    }
    if let Some(transport) = parts.param("type")? {
        if !matches!(transport.as_str(), "" | "tcp") {
            return Err(format!(
                "transport {:?} is not supported (only tcp)",
                shown(&transport)
            ));
        }
    }
    let sni = match parts.param("sni")? {
        Some(sni) if !sni.is_empty() => Some(sni),
        _ => parts.param("peer")?.filter(|peer| !peer.is_empty()),
    };
    let skip_verify = flag(&parts, "allowInsecure")? || flag(&parts, "insecure")?;
    Ok(Link::Trojan {
        server: server(host_port)?,
        password,
        sni,
        skip_verify,
    })
}

/// A boolean parameter: `1`/`true` or `0`/`false`; absent is false.
fn flag(parts: &UrlParts<'_>, key: &str) -> Result<bool, String> {
    match parts.param(key)?.as_deref() {
        None | Some("" | "0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(other) => Err(format!(
            "{key}={:?} is not 0, 1, true or false",
            shown(other)
        )),
    }
}

/// `host:port` checked: a port in 1..=65535, a host name or an IPv4
/// address, or an IPv6 address in brackets.
fn server(host_port: &str) -> Result<String, String> {
    let (host, port) = match host_port.strip_prefix('[') {
        Some(rest) => {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or("no port after the bracketed address")?;
            v6.parse::<Ipv6Addr>()
                .map_err(|_| format!("[{}] is not an IPv6 address", shown(v6)))?;
            (&host_port[..v6.len() + 2], port)
        }
        None => {
            let (host, port) = host_port
                .rsplit_once(':')
                .ok_or_else(|| format!("no port in the server {:?}", shown(host_port)))?;
            if host.contains(':') {
                return Err("an IPv6 server address must be in brackets".into());
            }
            let name_chars = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
            if host.is_empty() || !host.chars().all(name_chars) {
                return Err(format!("{:?} is not a server host", shown(host)));
            }
            (host, port)
        }
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(format!("{host}:{port}")),
        _ => Err(format!("{:?} is not a port", shown(port))),
    }
}

fn decode(s: &str) -> Result<String, std::str::Utf8Error> {
    percent_decode_str(s).decode_utf8().map(|c| c.into_owned())
}

/// Base64 text (URL-safe or standard alphabet, padding optional) decoded
/// to UTF-8.
fn base64_text(s: &str) -> Option<String> {
    let bytes = URL_SAFE_PAD_INDIFFERENT
        .decode(s)
        .or_else(|_| STANDARD_PAD_INDIFFERENT.decode(s))
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// A value of the link fit to quote in an error: a short word of the
/// characters names, methods and ports use; anything else might be part
/// of a password that landed in the wrong place, and is not shown.
fn shown(value: &str) -> &str {
    let word = value.len() <= 40
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if word {
        value
    } else {
        "…"
    }
}

#[cfg(test)]
mod tests;

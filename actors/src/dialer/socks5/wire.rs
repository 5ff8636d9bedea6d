//! The bytes both sides of SOCKS5 (RFC 1928, RFC 1929) share: protocol
//! constants, credentials, addresses (ATYP, address, port) as they are
//! encoded and read, reply codes, and the UDP request header that every
//! relayed datagram carries. No exchange happens here: the client's
//! handshakes are in [`super::client`], the server's in [`super::server`].

use std::fmt;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::Socks5Error;

pub(super) const VERSION: u8 = 0x05;
pub(super) const AUTH_VERSION: u8 = 0x01;
pub(super) const METHOD_NONE: u8 = 0x00;
pub(super) const METHOD_USER_PASS: u8 = 0x02;
pub(super) const CMD_CONNECT: u8 = 0x01;
pub(super) const CMD_UDP_ASSOCIATE: u8 = 0x03;
pub(in crate::dialer) const ATYP_IPV4: u8 = 0x01;
pub(in crate::dialer) const ATYP_DOMAIN: u8 = 0x03;
pub(in crate::dialer) const ATYP_IPV6: u8 = 0x04;
pub(super) const REPLY_SUCCEEDED: u8 = 0x00;
/// The method selection that accepts none of the offered methods.
pub(super) const METHOD_UNACCEPTABLE: u8 = 0xFF;
/// The longest encoded address: ATYP, length, 255 bytes of name, port.
pub(in crate::dialer) const MAX_ADDR_LEN: usize = 1 + 1 + 255 + 2;

/// Username/password (RFC 1929); None means "no authentication" only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where a SOCKS5 request goes: an address, or a domain name with a port
/// (ATYP 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetAddr {
    Ip(SocketAddr),
    Domain(String, u16),
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(addr) => addr.fmt(f),
            TargetAddr::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// A SOCKS5 reply code other than success (RFC 1928 section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyCode {
    GeneralFailure,
    NotAllowed,
    NetworkUnreachable,
    HostUnreachable,
    ConnectionRefused,
    TtlExpired,
    CommandNotSupported,
    AddressTypeNotSupported,
    /// A code RFC 1928 leaves unassigned.
    Other(u8),
}

impl From<u8> for ReplyCode {
    fn from(code: u8) -> Self {
        match code {
            0x01 => ReplyCode::GeneralFailure,
            0x02 => ReplyCode::NotAllowed,
            0x03 => ReplyCode::NetworkUnreachable,
            0x04 => ReplyCode::HostUnreachable,
            0x05 => ReplyCode::ConnectionRefused,
            0x06 => ReplyCode::TtlExpired,
            0x07 => ReplyCode::CommandNotSupported,
            0x08 => ReplyCode::AddressTypeNotSupported,
            other => ReplyCode::Other(other),
        }
    }
}

impl From<ReplyCode> for u8 {
    fn from(code: ReplyCode) -> u8 {
        match code {
            ReplyCode::GeneralFailure => 0x01,
            ReplyCode::NotAllowed => 0x02,
            ReplyCode::NetworkUnreachable => 0x03,
            ReplyCode::HostUnreachable => 0x04,
            ReplyCode::ConnectionRefused => 0x05,
            ReplyCode::TtlExpired => 0x06,
            ReplyCode::CommandNotSupported => 0x07,
            ReplyCode::AddressTypeNotSupported => 0x08,
            ReplyCode::Other(other) => other,
        }
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ReplyCode::GeneralFailure => "general SOCKS server failure",
            ReplyCode::NotAllowed => "connection not allowed by ruleset",
            ReplyCode::NetworkUnreachable => "network unreachable",
            ReplyCode::HostUnreachable => "host unreachable",
            ReplyCode::ConnectionRefused => "connection refused",
            ReplyCode::TtlExpired => "TTL expired",
            ReplyCode::CommandNotSupported => "command not supported",
            ReplyCode::AddressTypeNotSupported => "address type not supported",
            ReplyCode::Other(code) => return write!(f, "unassigned reply code {code:#04x}"),
        };
        f.write_str(text)
    }
}

/// Appends the UDP request header (RSV 0x0000, FRAG 0, ATYP, DST.ADDR,
/// DST.PORT) and `payload` to `out`. A domain name that cannot be encoded
/// (empty, or longer than 255 bytes) appends nothing.
pub fn encapsulate(target: &TargetAddr, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0]);
    if put_addr(target, out).is_err() {
        out.truncate(start);
        return;
    }
    out.extend_from_slice(payload);
}

/// Parses a datagram from the relay: the source address and the payload.
/// Fragmented datagrams (FRAG != 0) and malformed headers are errors.
pub fn decapsulate(datagram: &[u8]) -> Result<(TargetAddr, &[u8]), Socks5Error> {
    let (&[_, _, frag], rest) = datagram.split_first_chunk::<3>().ok_or_else(truncated)?;
    if frag != 0 {
        return Err(Socks5Error::Protocol(format!(
            "fragmented datagram (FRAG {frag})"
        )));
    }
    parse_addr(rest)
}

/// The one-byte length of a field that must be 1..=255 bytes long.
pub(super) fn field_len(what: &str, bytes: &[u8]) -> Result<u8, Socks5Error> {
    u8::try_from(bytes.len())
        .ok()
        .filter(|&len| len > 0)
        .ok_or_else(|| {
            Socks5Error::Protocol(format!(
                "{what} must be 1 to 255 bytes long, not {}",
                bytes.len()
            ))
        })
}

/// Appends ATYP, the address and the port; fails, appending nothing, on a
/// domain name that cannot be encoded. Shadowsocks encodes its target
/// addresses the same way.
pub(in crate::dialer) fn put_addr(
    target: &TargetAddr,
    out: &mut Vec<u8>,
) -> Result<(), Socks5Error> {
    match target {
        TargetAddr::Ip(addr) => put_socket_addr(*addr, out),
        TargetAddr::Domain(name, port) => {
            let len = field_len("domain name", name.as_bytes())?;
            out.push(ATYP_DOMAIN);
            out.push(len);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&port.to_be_bytes());
        }
    }
    Ok(())
}

/// Appends ATYP, an IP address and the port.
pub(super) fn put_socket_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(v4) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&v6.ip().octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Reads the address and port that follow `atyp` on a stream, and no more.
pub(super) async fn read_addr<R: AsyncRead + Unpin>(
    reader: &mut R,
    atyp: u8,
) -> Result<TargetAddr, Socks5Error> {
    let mut buf = [0u8; MAX_ADDR_LEN];
    buf[0] = atyp;
    let (start, len) = match atyp {
        ATYP_IPV4 => (1, 1 + 4 + 2),
        ATYP_IPV6 => (1, 1 + 16 + 2),
        ATYP_DOMAIN => {
            read_exact(reader, &mut buf[1..2]).await?;
            (2, 2 + usize::from(buf[1]) + 2)
        }
        other => return Err(unknown_atyp(other)),
    };
    read_exact(reader, &mut buf[start..len]).await?;
    parse_addr(&buf[..len]).map(|(addr, _)| addr)
}

/// Parses ATYP, an address and a port; returns what follows them. The
/// Shadowsocks headers carry the same encoding.
pub(in crate::dialer) fn parse_addr(buf: &[u8]) -> Result<(TargetAddr, &[u8]), Socks5Error> {
    let (&atyp, rest) = buf.split_first().ok_or_else(truncated)?;
    match atyp {
        ATYP_IPV4 => {
            let (ip, rest) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
            let (port, rest) = split_port(rest)?;
            Ok((TargetAddr::Ip(SocketAddr::from((*ip, port))), rest))
        }
        ATYP_IPV6 => {
            let (ip, rest) = rest.split_first_chunk::<16>().ok_or_else(truncated)?;
            let (port, rest) = split_port(rest)?;
            Ok((TargetAddr::Ip(SocketAddr::from((*ip, port))), rest))
        }
        ATYP_DOMAIN => {
            let (&len, rest) = rest.split_first().ok_or_else(truncated)?;
            let (name, rest) = rest
                .split_at_checked(usize::from(len))
                .ok_or_else(truncated)?;
            let (port, rest) = split_port(rest)?;
            if name.is_empty() {
                return Err(Socks5Error::Protocol("empty domain name".into()));
            }
            let name = std::str::from_utf8(name)
                .map_err(|_| Socks5Error::Protocol("domain name is not UTF-8".into()))?;
            Ok((TargetAddr::Domain(name.to_owned(), port), rest))
        }
        other => Err(unknown_atyp(other)),
    }
}

fn split_port(buf: &[u8]) -> Result<(u16, &[u8]), Socks5Error> {
    let (port, rest) = buf.split_first_chunk::<2>().ok_or_else(truncated)?;
    Ok((u16::from_be_bytes(*port), rest))
}

fn truncated() -> Socks5Error {
    Socks5Error::Protocol("truncated address".into())
}

fn unknown_atyp(atyp: u8) -> Socks5Error {
    Socks5Error::Protocol(format!("unknown address type {atyp}"))
}

/// `read_exact` with EOF reported as the peer having closed.
pub(super) async fn read_exact<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<(), Socks5Error> {
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Err(Socks5Error::Closed),
        Err(err) => Err(Socks5Error::Io(err)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn creds(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    #[test]
    fn encapsulate_round_trips() {
        let targets = [
            TargetAddr::Ip(SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 53))),
            TargetAddr::Ip(SocketAddr::from((
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
                853,
            ))),
            TargetAddr::Domain("dns.example".into(), 5353),
        ];
        for target in targets {
            let mut out = vec![0xAA];
            encapsulate(&target, b"payload", &mut out);
            assert_eq!(out[0], 0xAA, "existing bytes are kept");
            let (source, payload) = decapsulate(&out[1..]).unwrap();
            assert_eq!(source, target);
            assert_eq!(payload, b"payload");
        }
    }

    #[test]
    fn encapsulate_writes_the_rfc_header() {
        let mut out = Vec::new();
        let target = TargetAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 0x1234)));
        encapsulate(&target, b"x", &mut out);
        assert_eq!(out, [0, 0, 0, 1, 127, 0, 0, 1, 0x12, 0x34, b'x']);

        out.clear();
        encapsulate(&TargetAddr::Domain("ab".into(), 80), b"", &mut out);
        assert_eq!(out, [0, 0, 0, 3, 2, b'a', b'b', 0, 80]);
    }

    #[test]
    fn encapsulate_skips_names_it_cannot_encode() {
        for name in [String::new(), "a".repeat(256)] {
            let mut out = vec![1, 2];
            encapsulate(&TargetAddr::Domain(name, 53), b"payload", &mut out);
            assert_eq!(out, [1, 2]);
        }
    }

    #[test]
    fn decapsulate_rejects_bad_datagrams() {
        let mut good = Vec::new();
        encapsulate(
            &TargetAddr::Domain("example.org".into(), 53),
            b"",
            &mut good,
        );
        for len in 0..good.len() {
            assert!(
                matches!(decapsulate(&good[..len]), Err(Socks5Error::Protocol(_))),
                "truncated to {len} bytes"
            );
        }
        let mut v6 = Vec::new();
        encapsulate(&TargetAddr::Ip("[::1]:53".parse().unwrap()), b"", &mut v6);
        assert!(decapsulate(&v6[..v6.len() - 1]).is_err());

        let fragmented = [0, 0, 1, 1, 127, 0, 0, 1, 0, 53, b'x'];
        assert!(matches!(
            decapsulate(&fragmented),
            Err(Socks5Error::Protocol(_))
        ));
        let unknown_atyp = [0, 0, 0, 2, 127, 0, 0, 1, 0, 53];
        assert!(matches!(
            decapsulate(&unknown_atyp),
            Err(Socks5Error::Protocol(_))
        ));
        let not_utf8 = [0, 0, 0, 3, 1, 0xFF, 0, 53];
        assert!(matches!(
            decapsulate(&not_utf8),
            Err(Socks5Error::Protocol(_))
        ));
    }

    #[test]
    fn reply_codes_round_trip() {
        for byte in 1..=u8::MAX {
            assert_eq!(u8::from(ReplyCode::from(byte)), byte);
        }
        assert_eq!(ReplyCode::from(5), ReplyCode::ConnectionRefused);
        assert_eq!(ReplyCode::from(9), ReplyCode::Other(9));
    }

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", creds("ward", "s3cret"));
        assert!(
            shown.contains("ward") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}

//! The frames of a Trojan UDP association, both ways inside the TLS
//! stream: ATYP, address, port (as in SOCKS5), a big-endian u16 payload
//! length, CRLF, the payload. Frames are written by [`encode_udp`] and
//! read back by [`decode_udp`], which says when it needs more bytes.
//! Nothing here does I/O.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use super::error::TrojanError;
use crate::dialer::socks5::{put_addr, TargetAddr, ATYP_DOMAIN, ATYP_IPV4, ATYP_IPV6};

/// The largest payload a frame carries: its length is a u16.
pub const MAX_UDP_PAYLOAD: usize = u16::MAX as usize;

const CRLF: [u8; 2] = *b"\r\n";

/// One frame read from the front of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpFrame {
    /// Where the datagram came from (the node relays replies from an
    /// address, never from a name).
    pub from: SocketAddr,
    /// The payload's bytes within the buffer given to [`decode_udp`].
    pub payload: Range<usize>,
    /// How many bytes of the buffer the frame took.
    pub len: usize,
}

/// Appends one frame carrying `payload` to `target`. Returns false, and
/// appends nothing, when the frame cannot be written: a payload over
/// [`MAX_UDP_PAYLOAD`] bytes, or a domain name that is empty or longer
/// than 255 bytes.
pub fn encode_udp(target: &TargetAddr, payload: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(len) = u16::try_from(payload.len()) else {
        return false;
    };
    // put_addr appends nothing when it fails.
    if put_addr(target, out).is_err() {
        return false;
    }
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&CRLF);
    out.extend_from_slice(payload);
    true
}

/// Reads the frame at the front of `buf`: `Ok(None)` when `buf` holds
/// only part of it (read more and call again), `Err(Frame)` when the bytes
/// are not a frame: an unknown address type, a source that is a domain
/// name, or no CRLF after the length. The stream cannot be resynchronised
/// after an error.
pub fn decode_udp(buf: &[u8]) -> Result<Option<UdpFrame>, TrojanError> {
    let Some((&atyp, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let header = match atyp {
        ATYP_IPV4 => split_header::<4>(rest),
        ATYP_IPV6 => split_header::<16>(rest),
        ATYP_DOMAIN => return Err(TrojanError::Frame("the source is a name, not an address")),
        _ => return Err(TrojanError::Frame("unknown address type")),
    };
    let Some(header) = header else {
        return Ok(None);
    };
    if header.crlf != CRLF {
        return Err(TrojanError::Frame("no CRLF after the length"));
    }
    if header.rest.len() < header.payload_len {
        return Ok(None);
    }
    let start = buf.len() - header.rest.len();
    let end = start + header.payload_len;
    Ok(Some(UdpFrame {
        from: SocketAddr::new(header.ip, header.port),
        payload: start..end,
        len: end,
    }))
}

/// The fields after ATYP, up to the payload.
struct Header<'a> {
    ip: IpAddr,
    port: u16,
    payload_len: usize,
    crlf: [u8; 2],
    rest: &'a [u8],
}

/// Splits an `N`-byte address, the port, the length and the CRLF off
/// `buf`; None when `buf` is shorter than that.
fn split_header<const N: usize>(buf: &[u8]) -> Option<Header<'_>>
where
    IpAddr: From<[u8; N]>,
{
    let (ip, rest) = buf.split_first_chunk::<N>()?;
    let (port, rest) = rest.split_first_chunk::<2>()?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let (crlf, rest) = rest.split_first_chunk::<2>()?;
    Some(Header {
        ip: IpAddr::from(*ip),
        port: u16::from_be_bytes(*port),
        payload_len: usize::from(u16::from_be_bytes(*len)),
        crlf: *crlf,
        rest,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 53))
    }

    fn v6() -> SocketAddr {
        SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 853))
    }

    #[test]
    fn frames_round_trip_back_to_back() {
        let mut out = vec![];
        for (from, payload) in [(v4(), &b"query"[..]), (v6(), b""), (v4(), &[7u8; 1200])] {
            assert!(encode_udp(&TargetAddr::Ip(from), payload, &mut out));
        }
        let mut rest = &out[..];
        let mut seen = vec![];
        while let Some(frame) = decode_udp(rest).unwrap() {
            seen.push((frame.from, rest[frame.payload.clone()].to_vec()));
            rest = &rest[frame.len..];
        }
        assert!(rest.is_empty());
        assert_eq!(
            seen,
            [
                (v4(), b"query".to_vec()),
                (v6(), vec![]),
                (v4(), vec![7u8; 1200])
            ]
        );
    }

    #[test]
    fn encode_writes_the_documented_layout() {
        let mut out = vec![0xAA];
        let target = TargetAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 0x1234)));
        assert!(encode_udp(&target, b"xy", &mut out));
        assert_eq!(
            out,
            [0xAA, 1, 127, 0, 0, 1, 0x12, 0x34, 0, 2, b'\r', b'\n', b'x', b'y']
        );

        out.clear();
        assert!(encode_udp(
            &TargetAddr::Domain("ab".into(), 80),
            b"",
            &mut out
        ));
        assert_eq!(out, [3, 2, b'a', b'b', 0, 80, 0, 0, b'\r', b'\n']);
    }

    #[test]
    fn encode_refuses_what_it_cannot_write_and_appends_nothing() {
        let mut out = vec![1, 2];
        let big = vec![0u8; MAX_UDP_PAYLOAD + 1];
        assert!(!encode_udp(&TargetAddr::Ip(v4()), &big, &mut out));
        for name in [String::new(), "a".repeat(256)] {
            assert!(!encode_udp(&TargetAddr::Domain(name, 53), b"x", &mut out));
        }
        assert_eq!(out, [1, 2]);
        assert!(encode_udp(&TargetAddr::Ip(v4()), &big[1..], &mut out));
    }

    #[test]
    fn every_prefix_of_a_frame_asks_for_more() {
        for from in [v4(), v6()] {
            let mut out = vec![];
            assert!(encode_udp(&TargetAddr::Ip(from), b"payload", &mut out));
            for cut in 0..out.len() {
                assert_eq!(
                    decode_udp(&out[..cut]).unwrap(),
                    None,
                    "{from} cut at {cut}"
                );
            }
            let frame = decode_udp(&out).unwrap().unwrap();
            assert_eq!((frame.from, frame.len), (from, out.len()));
        }
    }

    #[test]
    fn malformed_frames_are_errors() {
        let bad_crlf = [1, 127, 0, 0, 1, 0, 53, 0, 1, b'\n', b'\r', b'x'];
        let unknown_atyp = [2, 127, 0, 0, 1, 0, 53, 0, 1, b'\r', b'\n', b'x'];
        let domain_source = [3, 1, b'a', 0, 53, 0, 1, b'\r', b'\n', b'x'];
        for bytes in [&bad_crlf[..], &unknown_atyp, &domain_source, &[0]] {
            assert!(
                matches!(decode_udp(bytes), Err(TrojanError::Frame(_))),
                "{bytes:?}"
            );
        }
    }
}

//! What a datagram says about its flow: whether it opens a QUIC connection
//! (which then keeps its own endpoint and path), and which idle timeout its
//! endpoint gets.

use std::net::SocketAddr;
use std::time::Duration;

use super::settings::IdleTimeouts;

/// QUIC versions recognised in a long header: v1 (RFC 9000), v2 (RFC
/// 9369), and the IETF drafts 29 to 34 still seen in the wild.
const QUIC_VERSIONS: [u32; 8] = [
    0x0000_0001,
    0x6b33_43cf,
    0xff00_001d,
    0xff00_001e,
    0xff00_001f,
    0xff00_0020,
    0xff00_0021,
    0xff00_0022,
];

/// True for a QUIC Initial packet in a long header (RFC 9000 17.2): header
/// form and fixed bit set, packet type Initial, a known version, and
/// connection ID lengths within bounds.
pub fn is_quic_initial(datagram: &[u8]) -> bool {
    let Some((&first, rest)) = datagram.split_first() else {
        return false;
    };
    // Header form (0x80) and fixed bit (0x40).
    if first & 0xc0 != 0xc0 {
        return false;
    }
    let Some(version) = rest.get(..4) else {
        return false;
    };
    let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
    if !QUIC_VERSIONS.contains(&version) {
        return false;
    }
    // Initial is type 0 in v1 and the drafts, 1 in v2.
    let packet_type = (first & 0x30) >> 4;
    let initial = if version == 0x6b33_43cf { 1 } else { 0 };
    if packet_type != initial {
        return false;
    }
    // Destination and source connection IDs: at most 20 bytes each.
    let Some(&dcid_len) = rest.get(4) else {
        return false;
    };
    let scid_at = 5 + usize::from(dcid_len);
    dcid_len <= 20 && rest.get(scid_at).is_some_and(|&scid_len| scid_len <= 20)
}

/// What kind of flow a first datagram opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowKind {
    Dns,
    Quic,
    Other,
}

impl FlowKind {
    pub fn of(first: &[u8], dst: SocketAddr) -> FlowKind {
        if dst.port() == 53 {
            FlowKind::Dns
        } else if is_quic_initial(first) {
            FlowKind::Quic
        } else {
            FlowKind::Other
        }
    }

    pub fn idle(self, timeouts: &IdleTimeouts) -> Duration {
        match self {
            FlowKind::Dns => timeouts.dns,
            FlowKind::Quic => timeouts.quic,
            FlowKind::Other => timeouts.other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            FlowKind::Dns => "dns",
            FlowKind::Quic => "quic",
            FlowKind::Other => "other",
        }
    }
}

/// Which endpoint a datagram belongs to: the client's source (full-cone
/// NAT), and for QUIC also the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub client: SocketAddr,
    pub dst: Option<SocketAddr>,
}

impl FlowKey {
    pub fn name(&self, id: u64) -> String {
        match self.dst {
            Some(dst) => format!("{}→{dst}#{id}", self.client),
            None => format!("{}#{id}", self.client),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initial(first: u8, version: u32, dcid: u8, scid: u8) -> Vec<u8> {
        let mut p = vec![first];
        p.extend_from_slice(&version.to_be_bytes());
        p.push(dcid);
        p.extend(std::iter::repeat_n(0xaa, dcid as usize));
        p.push(scid);
        p.extend(std::iter::repeat_n(0xbb, scid as usize));
        p.resize(1200, 0);
        p
    }

    #[test]
    fn quic_initials_are_recognised_and_look_alikes_are_not() {
        assert!(is_quic_initial(&initial(0xc3, 1, 8, 0)));
        assert!(
            is_quic_initial(&initial(0xd3, 0x6b33_43cf, 8, 8)),
            "v2 Initial is type 1"
        );
        assert!(is_quic_initial(&initial(0xc0, 0xff00_001d, 20, 20)));
        assert!(
            !is_quic_initial(&initial(0xe3, 1, 8, 0)),
            "Handshake, not Initial"
        );
        assert!(!is_quic_initial(&initial(0x83, 1, 8, 0)), "fixed bit clear");
        assert!(!is_quic_initial(&initial(0x43, 1, 8, 0)), "short header");
        assert!(
            !is_quic_initial(&initial(0xc3, 0x1234_5678, 8, 0)),
            "unknown version"
        );
        assert!(
            !is_quic_initial(&initial(0xc3, 1, 21, 0)),
            "connection id too long"
        );
        assert!(!is_quic_initial(&[0xc3, 0, 0, 0]), "truncated");
        assert!(!is_quic_initial(&[]));
    }

    #[test]
    fn kinds_and_their_idle_timeouts() {
        let t = IdleTimeouts::default();
        let dns: SocketAddr = "9.9.9.9:53".parse().unwrap();
        let web: SocketAddr = "1.1.1.1:443".parse().unwrap();
        assert_eq!(FlowKind::of(b"\x12\x34", dns), FlowKind::Dns);
        assert_eq!(FlowKind::of(&initial(0xc3, 1, 8, 0), web), FlowKind::Quic);
        assert_eq!(FlowKind::of(b"wireguard", web), FlowKind::Other);
        assert_eq!(FlowKind::Dns.idle(&t), Duration::from_secs(17));
        assert_eq!(FlowKind::Quic.idle(&t), Duration::from_secs(120));
        assert_eq!(FlowKind::Other.idle(&t), Duration::from_secs(60));
    }
}

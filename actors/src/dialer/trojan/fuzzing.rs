//! The UDP frame code driven by arbitrary bytes: what the cargo-fuzz
//! target `trojan` runs, and what the regression test replays over the
//! saved corpus. It checks properties, not just the absence of panics:
//! every frame read is written back to the same bytes, every prefix of a
//! frame asks for more, and any payload survives a round trip.

use std::net::{Ipv6Addr, SocketAddr};

use super::udp::{decode_udp, encode_udp, UdpFrame, MAX_UDP_PAYLOAD};
use crate::dialer::socks5::TargetAddr;

/// Reads frames from `data` until it runs out or they stop making sense,
/// then sends `data` as one payload; panics when a property does not hold.
pub fn udp_frames(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some(frame)) = decode_udp(rest) {
        check_frame(rest, &frame);
        rest = &rest[frame.len..];
    }
    payload_round_trips(data);
}

fn check_frame(buf: &[u8], frame: &UdpFrame) {
    assert!(frame.len <= buf.len(), "a frame within the buffer");
    assert_eq!(frame.payload.end, frame.len, "the payload ends the frame");
    assert!(frame.payload.start <= frame.payload.end);
    let payload = &buf[frame.payload.clone()];
    let mut again = Vec::new();
    assert!(encode_udp(&TargetAddr::Ip(frame.from), payload, &mut again));
    assert_eq!(again, &buf[..frame.len], "a frame is written back as read");
    // The header and the last byte are where a decoder gets it wrong.
    let cuts = (0..=frame.payload.start).chain(frame.len.checked_sub(1));
    for cut in cuts.filter(|&cut| cut < frame.len) {
        assert_eq!(decode_udp(&buf[..cut]).ok(), Some(None), "cut at {cut}");
    }
}

fn payload_round_trips(data: &[u8]) {
    let from = SocketAddr::from((Ipv6Addr::LOCALHOST, 5353));
    let mut out = vec![0xEE];
    let written = encode_udp(&TargetAddr::Ip(from), data, &mut out);
    assert_eq!(written, data.len() <= MAX_UDP_PAYLOAD);
    if !written {
        assert_eq!(out, [0xEE], "nothing appended");
        return;
    }
    let frame = decode_udp(&out[1..]).ok().flatten();
    let frame = frame.unwrap_or_else(|| panic!("its own frame does not decode"));
    assert_eq!((frame.from, frame.len), (from, out.len() - 1));
    assert_eq!(&out[1..][frame.payload], data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arbitrary_bytes_hold_the_properties() {
        let mut frames = Vec::new();
        let v4 = TargetAddr::Ip("127.0.0.1:53".parse().unwrap());
        assert!(encode_udp(&v4, b"one", &mut frames));
        assert!(encode_udp(&v4, b"", &mut frames));
        let inputs: [&[u8]; 6] = [
            b"",
            &frames,
            &[1, 127, 0, 0, 1, 0, 53, 0xFF, 0xFF, b'\r', b'\n'],
            &[4; 40],
            &[3, 0, 0],
            &[0xFF; 70_000],
        ];
        for input in inputs {
            udp_frames(input);
        }
    }

    /// Frames with bytes flipped, cut and spliced, from a fixed seed: a
    /// small fuzzer of its own for `cargo test`.
    #[test]
    fn mutated_frames_hold_the_properties() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut base = Vec::new();
        let v6 = TargetAddr::Ip("[::1]:853".parse().unwrap());
        let v4 = TargetAddr::Ip("127.0.0.1:53".parse().unwrap());
        assert!(encode_udp(&v4, b"first", &mut base));
        assert!(encode_udp(&v6, &[0xAB; 40], &mut base));
        assert!(encode_udp(&v4, b"", &mut base));
        for _ in 0..20_000 {
            let mut input = base.clone();
            for _ in 0..next() % 4 {
                let at = (next() as usize) % input.len();
                input[at] = next() as u8;
            }
            input.truncate((next() as usize) % (base.len() + 1));
            udp_frames(&input);
        }
    }
}

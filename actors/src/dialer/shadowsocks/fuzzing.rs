//! The client's decoders driven by arbitrary bytes: what the cargo-fuzz
//! target `shadowsocks` runs, and what the regression test replays over
//! the saved corpus. It checks properties, not only the absence of panics:
//! a reply the node sealed reads back exactly, and a damaged one never
//! yields bytes the node did not send.
//!
//! It holds the node's side too, for these checks and the unit tests:
//! [`ServerStream`] and [`ServerDatagram`] seal replies as a node would.
//! The first input byte chooses: below 0x80 the rest is a reply as it
//! came from the wire, tried with every method; from 0x80 it is the
//! plaintext of a reply to seal, split and damage (see [`sealed`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use tokio::io::ReadBuf;

use super::crypto::{NonceCounter, UdpHeaderCipher, TAG_LEN, XNONCE_LEN};
use super::method::{Key, Method};
use super::tcp_read::Decrypter;
use super::udp::UdpCodec;
use super::unix_now;
use crate::dialer::socks5::wire::put_addr;
use crate::dialer::socks5::TargetAddr;

/// The fuzzer's clock: 2022 replies in the corpus carry this time.
pub const FUZZ_UNIX_TIME: u64 = 1_750_000_000;
/// The request salt the fuzzer's replies echo.
pub const FUZZ_REQUEST_SALT: [u8; 32] = [0x5A; 32];
/// The client session the fuzzer's 2022 datagrams echo.
pub const FUZZ_SESSION_ID: u64 = 0x0102_0304_0506_0708;

fn fuzz_clock() -> u64 {
    FUZZ_UNIX_TIME
}

/// The fuzzer's key for each method, in [`Method::ALL`] order: the
/// password "ward-fuzz", or the PSK of bytes 0, 1, 2, ...
pub fn keys() -> &'static [Arc<Key>] {
    static KEYS: OnceLock<Vec<Arc<Key>>> = OnceLock::new();
    KEYS.get_or_init(|| {
        Method::ALL
            .into_iter()
            .filter_map(|method| {
                let password = if method.is_2022() {
                    let psk: Vec<u8> = (0..method.key_len() as u8).collect();
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, psk)
                } else {
                    "ward-fuzz".to_owned()
                };
                Key::new(method, &password).ok().map(Arc::new)
            })
            .collect()
    })
}

/// Runs the decoders on `data`; panics when a property does not hold.
pub fn shadowsocks(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    if control < 0x80 {
        for key in keys() {
            // Any end will do; read_reply checks what must hold.
            let _ = read_reply(key, rest, usize::from(control) + 1);
            decode_datagram(key, rest);
        }
    } else {
        sealed(control, rest);
    }
}

/// The rest of a sealed-reply input: the method (low 3 bits of the
/// control byte), then a big-endian u16 where to damage the reply
/// (0xFFFF: nowhere), a byte for the chunk size, and the payload.
pub fn sealed(control: u8, data: &[u8]) {
    let key = &keys()[usize::from(control & 7) % keys().len()];
    let Some((damage, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let Some((&size, payload)) = rest.split_first() else {
        return;
    };
    let damage = Some(usize::from(u16::from_be_bytes(*damage))).filter(|&d| d != 0xFFFF);
    let chunks: Vec<&[u8]> = payload.chunks(usize::from(size) + 1).collect();
    let mut stream = ServerStream::new(key, &FUZZ_REQUEST_SALT).sealed(&chunks);
    let mut datagram = ServerDatagram::new(FUZZ_SESSION_ID).sealed(key, payload);
    let source: SocketAddr = ([192, 0, 2, 1], 53).into();
    match damage {
        None => {
            let (read, end) = read_reply(key, &stream, usize::from(size) + 1);
            assert!(end.is_ok(), "a sealed reply fails: {end:?}");
            assert_eq!(read, payload, "a sealed reply reads back other bytes");
            let mut codec = UdpCodec::with_session_id(key.clone(), FUZZ_SESSION_ID);
            let decoded = codec.decode_at(&mut datagram, FUZZ_UNIX_TIME, std::time::Instant::now());
            let (from, range) = decoded.expect("a sealed datagram decodes");
            assert_eq!((from, &datagram[range]), (source, payload));
        }
        Some(at) => {
            // A flipped bit, or the reply cut at that point.
            if let Some(byte) = stream.get_mut(at / 2) {
                if at % 2 == 0 {
                    *byte ^= 0x10;
                } else {
                    stream.truncate(at / 2);
                }
            }
            let (read, _) = read_reply(key, &stream, usize::from(size) + 1);
            assert!(
                payload.starts_with(&read),
                "a damaged reply yields bytes never sent"
            );
            let at = at % datagram.len().max(1);
            if let Some(byte) = datagram.get_mut(at) {
                *byte ^= 0x01;
                let mut codec = UdpCodec::with_session_id(key.clone(), FUZZ_SESSION_ID);
                let decoded =
                    codec.decode_at(&mut datagram, FUZZ_UNIX_TIME, std::time::Instant::now());
                assert!(decoded.is_err(), "a damaged datagram decodes");
            }
        }
    }
}

/// Reads `reply` as a response stream, handed over `step` bytes at a
/// time; returns the payload read and how the stream ended.
fn read_reply(key: &Arc<Key>, reply: &[u8], step: usize) -> (Vec<u8>, io::Result<()>) {
    let mut decrypter = Decrypter::new(key.clone(), FUZZ_REQUEST_SALT).with_clock(fuzz_clock);
    let mut wire = Trickle { data: reply, step };
    let mut cx = Context::from_waker(Waker::noop());
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut out = ReadBuf::new(&mut buf);
        match decrypter.poll_read(&mut wire, &mut cx, &mut out) {
            Poll::Ready(Ok(())) if out.filled().is_empty() => return (read, Ok(())),
            Poll::Ready(Ok(())) => read.extend_from_slice(out.filled()),
            Poll::Ready(Err(err)) => {
                assert!(
                    super::ShadowsocksError::from_io(&err).is_some(),
                    "an error without its cause: {err}"
                );
                return (read, Err(err));
            }
            Poll::Pending => panic!("a reply in memory is never pending"),
        }
    }
}

/// Decodes `datagram` with a fresh session; a payload must lie inside.
fn decode_datagram(key: &Arc<Key>, datagram: &[u8]) {
    let mut codec = UdpCodec::with_session_id(key.clone(), FUZZ_SESSION_ID);
    let mut buf = datagram.to_vec();
    let now = std::time::Instant::now();
    if let Ok((_, range)) = codec.decode_at(&mut buf, FUZZ_UNIX_TIME, now) {
        assert!(
            range.start <= range.end && range.end <= buf.len(),
            "{range:?}"
        );
    }
}

/// A reply in memory, read at most `step` bytes at a time.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl tokio::io::AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let len = self.data.len().min(self.step).min(buf.remaining());
        let (now, later) = self.data.split_at(len);
        buf.put_slice(now);
        self.data = later;
        Poll::Ready(Ok(()))
    }
}

/// A node's response stream, sealed as the node would.
pub struct ServerStream<'a> {
    key: &'a Key,
    /// 2022: the header's type (1 for a response).
    pub kind: u8,
    /// 2022: the header's time.
    pub timestamp: u64,
    /// 2022: the request salt the header echoes.
    pub request_salt: Vec<u8>,
}

impl<'a> ServerStream<'a> {
    /// A valid response to the request with `request_salt`, at the
    /// fuzzer's time.
    pub fn new(key: &'a Key, request_salt: &[u8]) -> ServerStream<'a> {
        ServerStream {
            key,
            kind: 1,
            timestamp: FUZZ_UNIX_TIME,
            request_salt: request_salt[..key.method().key_len()].to_vec(),
        }
    }

    /// The same at the real time.
    pub fn now(mut self) -> ServerStream<'a> {
        self.timestamp = unix_now();
        self
    }

    /// The salt, the 2022 header, and `chunks` sealed one by one (a 2022
    /// header announces the first).
    pub fn sealed(&self, chunks: &[&[u8]]) -> Vec<u8> {
        let method = self.key.method();
        let mut salt = vec![0u8; method.key_len()];
        rand::fill(&mut salt[..]);
        let Ok(aead) = self.key.session(&salt) else {
            return Vec::new();
        };
        let mut nonce = NonceCounter::default();
        let mut out = salt;
        let mut seal = |out: &mut Vec<u8>, text: &[u8]| {
            let start = out.len();
            out.extend_from_slice(text);
            out.resize(out.len() + TAG_LEN, 0);
            let _ = aead.seal(&nonce.next(), &mut out[start..]);
        };
        let mut chunks = chunks.iter();
        if method.is_2022() {
            let first = chunks.next().copied().unwrap_or_default();
            let mut header = vec![self.kind];
            header.extend_from_slice(&self.timestamp.to_be_bytes());
            header.extend_from_slice(&self.request_salt);
            header.extend_from_slice(&(first.len() as u16).to_be_bytes());
            seal(&mut out, &header);
            seal(&mut out, first);
        }
        for chunk in chunks {
            seal(&mut out, &(chunk.len() as u16).to_be_bytes());
            seal(&mut out, chunk);
        }
        out
    }
}

/// A node's reply datagram, sealed as the node would; the fields are the
/// 2022 header's.
pub struct ServerDatagram {
    pub server_session: u64,
    pub packet_id: u64,
    pub kind: u8,
    pub timestamp: u64,
    pub client_session: u64,
    pub padding: usize,
    pub source: SocketAddr,
}

impl ServerDatagram {
    /// A valid reply to the session `client_session` from 192.0.2.1:53,
    /// at the fuzzer's time.
    pub fn new(client_session: u64) -> ServerDatagram {
        ServerDatagram {
            server_session: 0xAB,
            packet_id: 0,
            kind: 1,
            timestamp: FUZZ_UNIX_TIME,
            client_session,
            padding: 0,
            source: ([192, 0, 2, 1], 53).into(),
        }
    }

    /// The datagram that carries `payload` (empty if a key fails).
    pub fn sealed(&self, key: &Key, payload: &[u8]) -> Vec<u8> {
        let mut addr = Vec::new();
        let _ = put_addr(&TargetAddr::Ip(self.source), &mut addr);
        let mut body = Vec::new();
        if key.method().is_2022() {
            body.push(self.kind);
            body.extend_from_slice(&self.timestamp.to_be_bytes());
            body.extend_from_slice(&self.client_session.to_be_bytes());
            body.extend_from_slice(&(self.padding as u16).to_be_bytes());
            body.resize(body.len() + self.padding, 0);
        }
        body.extend_from_slice(&addr);
        body.extend_from_slice(payload);
        body.resize(body.len() + TAG_LEN, 0);
        self.seal(key, body).unwrap_or_default()
    }

    fn seal(&self, key: &Key, mut body: Vec<u8>) -> Option<Vec<u8>> {
        let mut separate = [0u8; 16];
        separate[..8].copy_from_slice(&self.server_session.to_be_bytes());
        separate[8..].copy_from_slice(&self.packet_id.to_be_bytes());
        let Some(header) = key.udp_header() else {
            let mut salt = vec![0u8; key.method().key_len()];
            rand::fill(&mut salt[..]);
            key.session(&salt).ok()?.seal(&[0; 12], &mut body).ok()?;
            salt.extend_from_slice(&body);
            return Some(salt);
        };
        if !matches!(header, UdpHeaderCipher::XChaCha(_)) {
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&separate[4..]);
            key.session(&separate[..8])
                .ok()?
                .seal(&nonce, &mut body)
                .ok()?;
            header.encrypt_header(&mut separate);
            let mut out = separate.to_vec();
            out.extend_from_slice(&body);
            Some(out)
        } else {
            let mut nonce = [0u8; XNONCE_LEN];
            rand::fill(&mut nonce);
            let mut text = separate.to_vec();
            text.extend_from_slice(&body);
            header.seal_packet(&nonce, &mut text).ok()?;
            let mut out = nonce.to_vec();
            out.extend_from_slice(&text);
            Some(out)
        }
    }
}

/// Seed inputs for the fuzz corpus: replies sealed for every method (as
/// raw inputs, which the fuzzer's keys and clock accept), cut and damaged
/// copies of them, and sealed-reply inputs.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let payload: &[u8] =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x04test\x00\x00\x01\x00\x01";
    for (i, key) in keys().iter().enumerate() {
        let stream = ServerStream::new(key, &FUZZ_REQUEST_SALT).sealed(&[payload, b"", b"tail"]);
        let datagram = ServerDatagram::new(FUZZ_SESSION_ID).sealed(key, payload);
        for reply in [stream, datagram] {
            let mut raw = vec![(i * 7) as u8 % 0x80];
            raw.extend_from_slice(&reply);
            seeds.push(raw.clone());
            seeds.push(raw[..raw.len() / 2].to_vec());
            let mut flipped = raw.clone();
            if let Some(byte) = flipped.get_mut(raw.len() * 3 / 4) {
                *byte ^= 0x40;
            }
            seeds.push(flipped);
        }
        for damage in [0xFFFFu16, 7, 40, 101] {
            let mut input = vec![0x80 | i as u8];
            input.extend_from_slice(&damage.to_be_bytes());
            input.push(i as u8 * 3);
            input.extend_from_slice(payload);
            seeds.push(input);
        }
    }
    seeds
}

//! The client against a node written here: requests and datagrams are
//! decrypted the way a node reads them, replies sealed the way a node
//! writes them ([`super::fuzzing`]'s `ServerStream`, `ServerDatagram`).
//! Every method round trips; replies that are forged, cut, too long,
//! stale, replayed or for another session are refused as such; a socket
//! that takes one byte at a time gets every byte once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::crypto::{Aead, NonceCounter, UdpHeaderCipher, XNONCE_LEN};
use super::fuzzing::{keys, ServerDatagram, ServerStream};
use super::*;
use crate::dialer::socks5::wire::parse_addr;
use crate::dialer::socks5::TargetAddr;

fn target() -> TargetAddr {
    TargetAddr::Domain("example.org".into(), 443)
}

/// A key of `method` other than the fuzzer's.
fn other_key(method: Method) -> Arc<Key> {
    let password = if method.is_2022() {
        let psk = vec![0xEE; method.key_len()];
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, psk)
    } else {
        "another password".into()
    };
    Arc::new(Key::new(method, &password).unwrap())
}

/// A node's socket in memory: it takes at most `max_write` bytes a write,
/// and with `stutter` says Pending before every write it takes.
struct Wire {
    sent: Vec<u8>,
    writes: usize,
    max_write: usize,
    stutter: bool,
    pending: bool,
    reply: Vec<u8>,
    read: usize,
}

impl Wire {
    fn new() -> Wire {
        Wire {
            sent: Vec::new(),
            writes: 0,
            max_write: usize::MAX,
            stutter: false,
            pending: false,
            reply: Vec::new(),
            read: 0,
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.stutter && !self.pending {
            self.pending = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.pending = false;
        let len = data.len().min(self.max_write);
        self.sent.extend_from_slice(&data[..len]);
        self.writes += 1;
        Poll::Ready(Ok(len))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let len = (self.reply.len() - self.read).min(buf.remaining());
        let start = self.read;
        buf.put_slice(&self.reply[start..start + len]);
        self.read += len;
        Poll::Ready(Ok(()))
    }
}

/// Opens a node's view of sealed chunks, one after another.
struct Opener<'a> {
    aead: Aead,
    nonce: NonceCounter,
    bytes: &'a [u8],
}

impl Opener<'_> {
    fn open(&mut self, len: usize) -> Vec<u8> {
        let (chunk, rest) = self.bytes.split_at(len + 16);
        self.bytes = rest;
        let mut chunk = chunk.to_vec();
        let len = self.aead.open(&self.nonce.next(), &mut chunk).unwrap();
        chunk.truncate(len);
        chunk
    }
}

/// What a node reads from a request stream.
struct Request {
    target: TargetAddr,
    payload: Vec<u8>,
    salt: Vec<u8>,
    padding: usize,
    chunks: Vec<usize>,
}

/// Reads a request stream as a node does; panics on anything wrong.
fn read_request(key: &Key, bytes: &[u8]) -> Request {
    let method = key.method();
    let (salt, rest) = bytes.split_at(method.key_len());
    let mut opener = Opener {
        aead: key.session(salt).unwrap(),
        nonce: NonceCounter::default(),
        bytes: rest,
    };
    let mut stream = Vec::new();
    let mut padding = 0;
    let mut target = None;
    if method.is_2022() {
        let fixed = opener.open(11);
        assert_eq!(fixed[0], 0, "a request stream");
        let timestamp = u64::from_be_bytes(fixed[1..9].try_into().unwrap());
        assert!(fresh(timestamp, unix_now()));
        let var = opener.open(usize::from(u16::from_be_bytes([fixed[9], fixed[10]])));
        let (addr, rest) = parse_addr(&var).unwrap();
        padding = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        stream.extend_from_slice(&rest[2 + padding..]);
        assert!(padding > 0 || !stream.is_empty(), "padding or payload");
        target = Some(addr);
    }
    let mut chunks = Vec::new();
    while !opener.bytes.is_empty() {
        let len = opener.open(2);
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        assert!(len <= method.max_chunk(), "a chunk of {len}");
        chunks.push(len);
        stream.extend_from_slice(&opener.open(len));
    }
    let (target, payload) = match target {
        Some(target) => (target, stream),
        None => {
            let (target, rest) = parse_addr(&stream).unwrap();
            (target, rest.to_vec())
        }
    };
    Request {
        target,
        payload,
        salt: salt.to_vec(),
        padding,
        chunks,
    }
}

fn stream_with(key: &Arc<Key>, wire: Wire) -> ShadowsocksStream<Wire> {
    ShadowsocksStream::new(wire, key.clone(), &target()).unwrap()
}

#[tokio::test]
async fn tcp_round_trips_with_every_method() {
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for key in keys() {
        let method = key.method();
        for data in [&b"x"[..], &big[..5000], &big] {
            let mut stream = client(Wire::new(), key.clone(), &target()).await.unwrap();
            stream.write_all(data).await.unwrap();
            stream.flush().await.unwrap();
            let request = read_request(key, &stream.get_ref().sent);
            assert_eq!(request.target, target(), "{method}");
            assert_eq!(request.payload, data, "{method}");
            assert_eq!(request.salt, stream.request_salt());
            if data.len() == big.len() {
                assert!(request.chunks.contains(&method.max_chunk()), "{method}");
            }
            let mut chunks: Vec<&[u8]> = vec![b"hello", b""];
            chunks.extend(data.chunks(method.max_chunk()));
            let reply = ServerStream::new(key, stream.request_salt())
                .now()
                .sealed(&chunks);
            stream.get_mut().reply = reply;
            let mut read = Vec::new();
            stream.read_to_end(&mut read).await.unwrap();
            assert_eq!(read, [b"hello", data].concat(), "{method}");
        }
    }
}

#[tokio::test]
async fn a_first_write_goes_out_with_the_header_in_one_write() {
    for key in keys() {
        let mut stream = stream_with(key, Wire::new());
        assert!(stream.get_ref().sent.is_empty(), "nothing before a write");
        assert_eq!(stream.write(b"GET / HTTP/1.1\r\n\r\n").await.unwrap(), 18);
        assert_eq!(stream.get_ref().writes, 1);
        let request = read_request(key, &stream.get_ref().sent);
        assert_eq!(request.payload, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(request.padding, 0);
    }
}

#[tokio::test]
async fn a_flush_with_nothing_written_sends_the_header_with_padding() {
    for key in keys() {
        let mut stream = stream_with(key, Wire::new());
        stream.flush().await.unwrap();
        let request = read_request(key, &stream.get_ref().sent);
        assert_eq!(request.target, target());
        assert!(request.payload.is_empty());
        assert_eq!(request.padding > 0, key.method().is_2022());
        // Later writes are chunks after the header.
        stream.write_all(b"later").await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(read_request(key, &stream.get_ref().sent).payload, b"later");
    }
}

#[tokio::test]
async fn a_socket_taking_one_byte_at_a_time_gets_every_byte_once() {
    let data: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
    for key in keys() {
        let mut wire = Wire::new();
        wire.max_write = 1;
        wire.stutter = true;
        let mut stream = stream_with(key, wire);
        stream.write_all(&data).await.unwrap();
        stream.write_all(b"end").await.unwrap();
        stream.shutdown().await.unwrap();
        let request = read_request(key, &stream.get_ref().sent);
        assert_eq!(
            request.payload,
            [&data[..], b"end"].concat(),
            "{}",
            key.method()
        );
    }
}

/// Reads `reply` through a stream of `key`; returns what was read before
/// the stream failed, and its error.
async fn read_failure(
    key: &Arc<Key>,
    reply: impl FnOnce(&[u8]) -> Vec<u8>,
) -> (Vec<u8>, io::Error) {
    let mut stream = stream_with(key, Wire::new());
    let bytes = reply(stream.request_salt());
    stream.get_mut().reply = bytes;
    let mut read = Vec::new();
    let err = stream.read_to_end(&mut read).await.unwrap_err();
    // The stream stays failed.
    let again = stream.read(&mut [0; 16]).await.unwrap_err();
    assert_eq!(
        ShadowsocksError::from_io(&again),
        ShadowsocksError::from_io(&err)
    );
    (read, err)
}

fn cause(err: &io::Error) -> ShadowsocksError {
    ShadowsocksError::from_io(err)
        .cloned()
        .expect("a Shadowsocks error")
}

#[tokio::test]
async fn a_reply_sealed_with_another_key_fails_its_tag() {
    for key in keys() {
        let other = other_key(key.method());
        let (read, err) = read_failure(key, |salt| {
            ServerStream::new(&other, salt).now().sealed(&[b"x"])
        })
        .await;
        assert!(read.is_empty());
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(cause(&err), ShadowsocksError::Tag);
    }
}

#[tokio::test]
async fn a_reply_cut_short_is_truncated_after_what_arrived_whole() {
    for key in keys() {
        let (read, err) = read_failure(key, |salt| {
            let mut reply = ServerStream::new(key, salt)
                .now()
                .sealed(&[b"first", b"second"]);
            reply.truncate(reply.len() - 3);
            reply
        })
        .await;
        assert_eq!(read, b"first");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(cause(&err), ShadowsocksError::Truncated);
    }
}

#[tokio::test]
async fn a_reply_that_ends_between_chunks_or_before_any_is_a_clean_end() {
    for key in keys() {
        let mut stream = stream_with(key, Wire::new());
        let mut read = Vec::new();
        assert_eq!(stream.read_to_end(&mut read).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn a_classic_chunk_over_0x3fff_is_too_long() {
    let chunk = vec![7u8; 0x4000];
    for key in keys().iter().filter(|k| !k.method().is_2022()) {
        let (read, err) = read_failure(key, |salt| {
            ServerStream::new(key, salt).sealed(&[b"ok", &chunk])
        })
        .await;
        assert_eq!(read, b"ok");
        assert_eq!(cause(&err), ShadowsocksError::TooLong(0x4000));
    }
}

#[tokio::test]
async fn a_2022_reply_header_must_be_fresh_of_the_right_type_and_for_this_request() {
    for key in keys().iter().filter(|k| k.method().is_2022()) {
        let now = unix_now();
        type Damage = fn(&mut ServerStream, u64);
        let cases: [(Damage, ShadowsocksError); 4] = [
            (|s, now| s.timestamp = now - 31, ShadowsocksError::Stale),
            (|s, now| s.timestamp = now + 31, ShadowsocksError::Stale),
            (
                |s, _| s.kind = 0,
                ShadowsocksError::BadHeader("not a response stream"),
            ),
            (
                |s, _| s.request_salt[0] ^= 1,
                ShadowsocksError::BadHeader("the response is for another request"),
            ),
        ];
        for (damage, expected) in cases {
            let (read, err) = read_failure(key, |salt| {
                let mut server = ServerStream::new(key, salt).now();
                damage(&mut server, now);
                server.sealed(&[b"x"])
            })
            .await;
            assert!(read.is_empty());
            assert_eq!(cause(&err), expected, "{}", key.method());
        }
        // Within 30 s either way is fine.
        for timestamp in [now - 29, now + 29] {
            let mut stream = stream_with(key, Wire::new());
            let mut server = ServerStream::new(key, stream.request_salt());
            server.timestamp = timestamp;
            stream.get_mut().reply = server.sealed(&[b"x"]);
            let mut read = Vec::new();
            stream.read_to_end(&mut read).await.unwrap();
            assert_eq!(read, b"x");
        }
    }
}

/// What a node reads from a client's datagram: the target, the payload,
/// and (2022) the session and packet IDs.
fn read_datagram(key: &Key, bytes: &[u8]) -> (TargetAddr, Vec<u8>, u64, u64) {
    let mut bytes = bytes.to_vec();
    let (body, session, packet) = match key.udp_header() {
        None => {
            let (salt, body) = bytes.split_at_mut(key.method().key_len());
            let len = key.session(salt).unwrap().open(&[0; 12], body).unwrap();
            let (addr, payload) = parse_addr(&body[..len]).unwrap();
            return (addr, payload.to_vec(), 0, 0);
        }
        Some(header @ UdpHeaderCipher::XChaCha(_)) => {
            let (nonce, body) = bytes.split_first_chunk_mut::<XNONCE_LEN>().unwrap();
            let len = header.open_packet(nonce, body).unwrap();
            let ids = &body[..16];
            let session = u64::from_be_bytes(ids[..8].try_into().unwrap());
            let packet = u64::from_be_bytes(ids[8..].try_into().unwrap());
            (body[16..len].to_vec(), session, packet)
        }
        Some(header) => {
            let (separate, body) = bytes.split_first_chunk_mut::<16>().unwrap();
            assert!(header.decrypt_header(separate));
            let aead = key.session(&separate[..8]).unwrap();
            let len = aead.open(separate[4..].try_into().unwrap(), body).unwrap();
            let session = u64::from_be_bytes(separate[..8].try_into().unwrap());
            let packet = u64::from_be_bytes(separate[8..].try_into().unwrap());
            (body[..len].to_vec(), session, packet)
        }
    };
    assert_eq!(body[0], 0, "a client packet");
    assert!(fresh(
        u64::from_be_bytes(body[1..9].try_into().unwrap()),
        unix_now()
    ));
    let padding = usize::from(u16::from_be_bytes([body[9], body[10]]));
    let (addr, payload) = parse_addr(&body[11 + padding..]).unwrap();
    (addr, payload.to_vec(), session, packet)
}

#[test]
fn udp_round_trips_with_every_method() {
    let targets = [
        TargetAddr::Ip(([192, 0, 2, 9], 53).into()),
        TargetAddr::Ip("[2001:db8::1]:853".parse().unwrap()),
        TargetAddr::Domain("a".repeat(255), 5353),
    ];
    for key in keys() {
        let codec = UdpCodec::new(key.clone());
        for (i, target) in targets.iter().enumerate() {
            let mut out = vec![0xAA];
            codec.encode(target, b"query", &mut out).unwrap();
            assert_eq!(out[0], 0xAA, "encode appends");
            assert!(out.len() - 1 - b"query".len() <= codec.overhead());
            let (to, payload, session, packet) = read_datagram(key, &out[1..]);
            assert_eq!((&to, &payload[..]), (target, &b"query"[..]));
            if key.method().is_2022() {
                assert_eq!((session, packet), (codec.session_id(), i as u64));
            }
        }
        let mut codec = codec;
        let mut server = ServerDatagram::new(codec.session_id());
        server.timestamp = unix_now();
        server.padding = 17;
        for payload in [&b"answer"[..], b""] {
            let mut reply = server.sealed(key, payload);
            let (from, range) = codec.decode(&mut reply).unwrap();
            assert_eq!((from, &reply[range]), (server.source, payload));
            server.packet_id += 1;
        }
    }
}

#[test]
fn udp_encode_refuses_an_address_it_cannot_encode_and_appends_nothing() {
    for key in keys() {
        let codec = UdpCodec::new(key.clone());
        let mut out = vec![1, 2];
        let target = TargetAddr::Domain("a".repeat(256), 53);
        assert_eq!(
            codec.encode(&target, b"x", &mut out),
            Err(ShadowsocksError::Address)
        );
        assert_eq!(out, [1, 2]);
    }
}

#[test]
fn udp_replies_with_another_key_or_cut_short_are_refused() {
    for key in keys() {
        let mut codec = UdpCodec::new(key.clone());
        let mut server = ServerDatagram::new(codec.session_id());
        server.timestamp = unix_now();
        let mut forged = server.sealed(&other_key(key.method()), b"x");
        assert!(matches!(
            codec.decode(&mut forged),
            Err(ShadowsocksError::Tag | ShadowsocksError::WrongSession)
        ));
        let reply = server.sealed(key, b"x");
        for len in [0, 10, 31] {
            assert_eq!(
                codec.decode(&mut reply[..len].to_vec()),
                Err(ShadowsocksError::Truncated),
                "{} bytes",
                len
            );
        }
        let mut cut = reply[..reply.len() - 1].to_vec();
        assert!(codec.decode(&mut cut).is_err());
    }
}

#[test]
fn udp_2022_refuses_replays_stale_replies_and_other_sessions() {
    for key in keys().iter().filter(|k| k.method().is_2022()) {
        let mut codec = UdpCodec::new(key.clone());
        let now = unix_now();
        let mut server = ServerDatagram::new(codec.session_id());
        server.timestamp = now;
        let mut decode =
            |server: &ServerDatagram| codec.decode(&mut server.sealed(key, b"x")).map(|_| ());
        server.packet_id = 5;
        assert_eq!(decode(&server), Ok(()));
        assert_eq!(decode(&server), Err(ShadowsocksError::Replay));
        server.packet_id = 3;
        assert_eq!(decode(&server), Ok(()));
        // Refused by its header: the ID is not used up.
        server.packet_id = 4;
        for timestamp in [now - 31, now + 31] {
            server.timestamp = timestamp;
            assert_eq!(decode(&server), Err(ShadowsocksError::Stale));
        }
        server.timestamp = now;
        server.kind = 0;
        assert_eq!(
            decode(&server),
            Err(ShadowsocksError::BadHeader("not a server packet"))
        );
        server.kind = 1;
        server.client_session ^= 1;
        assert_eq!(decode(&server), Err(ShadowsocksError::WrongSession));
        server.client_session ^= 1;
        assert_eq!(decode(&server), Ok(()));
        assert!(ShadowsocksError::Replay.is_replay_or_stale());
    }
}

#[test]
fn udp_2022_keeps_a_current_and_an_old_server_session() {
    for key in keys().iter().filter(|k| k.method().is_2022()) {
        let mut codec = UdpCodec::new(key.clone());
        let start = Instant::now();
        let unix = unix_now();
        let mut decode = |session: u64, packet: u64, after: u64| {
            let mut server = ServerDatagram::new(codec.session_id());
            server.timestamp = unix;
            server.server_session = session;
            server.packet_id = packet;
            let at = start + Duration::from_secs(after);
            codec
                .decode_at(&mut server.sealed(key, b"x"), unix, at)
                .map(|_| ())
        };
        assert_eq!(decode(0xA, 0, 0), Ok(()));
        // The node restarted: a new session, and the old one still counts.
        assert_eq!(decode(0xB, 0, 1), Ok(()));
        assert_eq!(decode(0xA, 1, 2), Ok(()));
        assert_eq!(decode(0xA, 1, 2), Err(ShadowsocksError::Replay));
        // A third while the old one spoke within a minute: refused.
        assert_eq!(decode(0xC, 0, 3), Err(ShadowsocksError::WrongSession));
        // A minute after the old one last spoke, the third takes its place.
        assert_eq!(decode(0xC, 0, 63), Ok(()));
        assert_eq!(decode(0xB, 1, 64), Ok(()));
        assert_eq!(decode(0xA, 2, 65), Err(ShadowsocksError::WrongSession));
    }
}

#[test]
fn the_fuzz_seeds_run_clean() {
    for seed in fuzzing::seeds() {
        fuzzing::shadowsocks(&seed);
    }
    fuzzing::shadowsocks(&[]);
    fuzzing::shadowsocks(&[0x85, 0xFF]);
}

#[test]
fn streams_and_codecs_can_move_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Key>();
    send_sync::<UdpCodec>();
    send_sync::<ShadowsocksStream<tokio::net::TcpStream>>();
}

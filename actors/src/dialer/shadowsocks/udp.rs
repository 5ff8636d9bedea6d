//! One UDP session through a Shadowsocks node: [`UdpCodec`] encrypts
//! datagrams to targets and decrypts the node's replies in place.
//!
//! Classic (SIP004): every datagram has its own salt, and its body (the
//! address and the payload) is sealed with a zero nonce. 2022 (SIP022
//! 3.2, 4.1): a session ID and a counting packet ID, sealed in a separate
//! header with AES keyed by the PSK (or, for ChaCha, inside a body sealed
//! by XChaCha20-Poly1305 with the PSK); replies carry the server's session,
//! our session's echo and a timestamp, and pass a replay window. No socket
//! here: the caller sends and receives.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::crypto::{Aead, UdpHeaderCipher, TAG_LEN, XNONCE_LEN};
use super::error::ShadowsocksError;
use super::method::Key;
use super::replay::ReplayWindow;
use super::{fresh, unix_now};
use crate::dialer::socks5::wire::{parse_addr, put_addr, MAX_ADDR_LEN};
use crate::dialer::socks5::TargetAddr;

/// SIP022's header types of datagrams.
const CLIENT_PACKET: u8 = 0;
const SERVER_PACKET: u8 = 1;
/// Bytes of the 2022 separate header: session ID and packet ID.
const SEPARATE_HEADER_LEN: usize = 16;
/// Bytes of a 2022 request's main header before the address: type,
/// timestamp, padding length (ward sends no padding).
const MAIN_HEADER_LEN: usize = 1 + 8 + 2;
/// How long a server session that sent nothing is remembered before a
/// newer one may take its place (SIP022 3.2.4: at least a NAT timeout).
const OLD_SESSION_HOLD: Duration = Duration::from_secs(60);

/// A server session this client session accepts replies from.
struct ServerSession {
    id: u64,
    /// AES methods: the session's body cipher.
    aead: Option<Aead>,
    window: ReplayWindow,
    last_seen: Instant,
}

/// Encrypts datagrams and decrypts replies for one UDP session.
pub struct UdpCodec {
    key: Arc<Key>,
    session_id: u64,
    next_packet: AtomicU64,
    /// 2022 AES methods: our session's body cipher.
    session_aead: Option<Aead>,
    /// 2022: the current server session, then the one before it.
    servers: [Option<ServerSession>; 2],
}

impl UdpCodec {
    /// A new session (for 2022, a new random session ID).
    pub fn new(key: Arc<Key>) -> UdpCodec {
        UdpCodec::with_session_id(key, rand::random())
    }

    /// A session with a chosen ID (the fuzzer's replies must echo it).
    pub(super) fn with_session_id(key: Arc<Key>, session_id: u64) -> UdpCodec {
        let session_aead = match key.udp_header() {
            Some(UdpHeaderCipher::Aes128(_) | UdpHeaderCipher::Aes256(_)) => {
                key.session(&session_id.to_be_bytes()).ok()
            }
            _ => None,
        };
        UdpCodec {
            key,
            session_id,
            next_packet: AtomicU64::new(0),
            session_aead,
            servers: [None, None],
        }
    }

    /// The most bytes [`encode`](Self::encode) adds to a payload (with the
    /// longest address).
    pub fn overhead(&self) -> usize {
        let body = MAX_ADDR_LEN + TAG_LEN;
        match self.key.udp_header() {
            None => self.key.method().key_len() + body,
            Some(UdpHeaderCipher::XChaCha(_)) => {
                XNONCE_LEN + SEPARATE_HEADER_LEN + MAIN_HEADER_LEN + body
            }
            Some(_) => SEPARATE_HEADER_LEN + MAIN_HEADER_LEN + body,
        }
    }

    /// Appends the datagram that carries `payload` to `target` to `out`.
    /// On an error nothing is appended.
    pub fn encode(
        &self,
        target: &TargetAddr,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ShadowsocksError> {
        let start = out.len();
        out.reserve(self.overhead() + payload.len());
        let sealed = match self.key.udp_header() {
            None => self.encode_classic(target, payload, out),
            Some(header) => self.encode_2022(header, target, payload, out),
        };
        if sealed.is_err() {
            out.truncate(start);
        }
        sealed
    }

    fn encode_classic(
        &self,
        target: &TargetAddr,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ShadowsocksError> {
        let salt_start = out.len();
        let salt_len = self.key.method().key_len();
        out.resize(salt_start + salt_len, 0);
        rand::fill(&mut out[salt_start..]);
        let aead = self.key.session(&out[salt_start..])?;
        let body = out.len();
        put_addr(target, out).map_err(|_| ShadowsocksError::Address)?;
        out.extend_from_slice(payload);
        out.resize(out.len() + TAG_LEN, 0);
        aead.seal(&[0; 12], &mut out[body..])
    }

    fn encode_2022(
        &self,
        header: &UdpHeaderCipher,
        target: &TargetAddr,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ShadowsocksError> {
        let mut separate = [0u8; SEPARATE_HEADER_LEN];
        separate[..8].copy_from_slice(&self.session_id.to_be_bytes());
        let packet_id = self.next_packet.fetch_add(1, Ordering::Relaxed);
        separate[8..].copy_from_slice(&packet_id.to_be_bytes());
        let xchacha = matches!(header, UdpHeaderCipher::XChaCha(_));
        let mut nonce = [0u8; XNONCE_LEN];
        if xchacha {
            rand::fill(&mut nonce);
            out.extend_from_slice(&nonce);
        }
        let start = out.len();
        out.extend_from_slice(&separate);
        let body = if xchacha { start } else { out.len() };
        out.push(CLIENT_PACKET);
        out.extend_from_slice(&unix_now().to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        put_addr(target, out).map_err(|_| ShadowsocksError::Address)?;
        out.extend_from_slice(payload);
        out.resize(out.len() + TAG_LEN, 0);
        if xchacha {
            return header.seal_packet(&nonce, &mut out[body..]);
        }
        let aead = self
            .session_aead
            .as_ref()
            .ok_or_else(|| ShadowsocksError::BadKey("no session key".into()))?;
        aead.seal(&nonce_of(&separate), &mut out[body..])?;
        header.encrypt_header(&mut separate);
        out[start..body].copy_from_slice(&separate);
        Ok(())
    }

    /// Decrypts a reply in place: returns where it came from and where its
    /// payload lies in `buf`.
    pub fn decode(
        &mut self,
        buf: &mut [u8],
    ) -> Result<(SocketAddr, Range<usize>), ShadowsocksError> {
        self.decode_at(buf, unix_now(), Instant::now())
    }

    /// Our session's ID (2022).
    #[cfg(test)]
    pub(super) fn session_id(&self) -> u64 {
        self.session_id
    }

    /// [`decode`](Self::decode) at a given time.
    pub(super) fn decode_at(
        &mut self,
        buf: &mut [u8],
        unix: u64,
        now: Instant,
    ) -> Result<(SocketAddr, Range<usize>), ShadowsocksError> {
        let key = self.key.clone();
        match key.udp_header() {
            None => self.decode_classic(buf),
            Some(header @ UdpHeaderCipher::XChaCha(_)) => {
                self.decode_xchacha(header, buf, unix, now)
            }
            Some(header) => self.decode_aes(header, buf, unix, now),
        }
    }

    fn decode_classic(
        &self,
        buf: &mut [u8],
    ) -> Result<(SocketAddr, Range<usize>), ShadowsocksError> {
        let salt_len = self.key.method().key_len();
        if buf.len() < salt_len + TAG_LEN {
            return Err(ShadowsocksError::Truncated);
        }
        let (salt, body) = buf.split_at_mut(salt_len);
        let len = self.key.session(salt)?.open(&[0; 12], body)?;
        source(buf, salt_len..salt_len + len)
    }

    fn decode_aes(
        &mut self,
        header: &UdpHeaderCipher,
        buf: &mut [u8],
        unix: u64,
        now: Instant,
    ) -> Result<(SocketAddr, Range<usize>), ShadowsocksError> {
        let (separate, body) = buf
            .split_first_chunk_mut::<SEPARATE_HEADER_LEN>()
            .filter(|(_, body)| body.len() >= TAG_LEN)
            .ok_or(ShadowsocksError::Truncated)?;
        header.decrypt_header(separate);
        let (server_id, packet_id) = ids(separate);
        let slot = self.server_slot(server_id, packet_id, now)?;
        let fresh_aead = match slot {
            Some(_) => None,
            None => Some(self.key.session(&separate[..8])?),
        };
        let aead = match (slot, &fresh_aead) {
            (Some(i), _) => self.servers[i].as_ref().and_then(|s| s.aead.as_ref()),
            (None, aead) => aead.as_ref(),
        }
        .ok_or(ShadowsocksError::WrongSession)?;
        let len = aead.open(&nonce_of(separate), body)?;
        let body = SEPARATE_HEADER_LEN..SEPARATE_HEADER_LEN + len;
        let reply = self.reply_header(buf, body, unix)?;
        self.admit(slot, server_id, packet_id, fresh_aead, now);
        Ok(reply)
    }

    fn decode_xchacha(
        &mut self,
        header: &UdpHeaderCipher,
        buf: &mut [u8],
        unix: u64,
        now: Instant,
    ) -> Result<(SocketAddr, Range<usize>), ShadowsocksError> {
        let (nonce, body) = buf
            .split_first_chunk_mut::<XNONCE_LEN>()
            .filter(|(_, body)| body.len() >= SEPARATE_HEADER_LEN + TAG_LEN)
            .ok_or(ShadowsocksError::Truncated)?;
        let len = header.open_packet(nonce, body)?;
        let separate = body
            .first_chunk::<SEPARATE_HEADER_LEN>()
            .ok_or(ShadowsocksError::Truncated)?;
        let (server_id, packet_id) = ids(separate);
        let slot = self.server_slot(server_id, packet_id, now)?;
        let body = XNONCE_LEN + SEPARATE_HEADER_LEN..XNONCE_LEN + len;
        let reply = self.reply_header(buf, body, unix)?;
        self.admit(slot, server_id, packet_id, None, now);
        Ok(reply)
    }

    /// Where the server session `id` is kept (None: a new one that may be
    /// admitted), after checking `packet_id` against its window.
    fn server_slot(
        &self,
        id: u64,
        packet_id: u64,
        now: Instant,
    ) -> Result<Option<usize>, ShadowsocksError> {
        let slot = self
            .servers
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.id == id));
        match slot {
            Some(i) => match &self.servers[i] {
                Some(server) if !server.window.check(packet_id) => Err(ShadowsocksError::Replay),
                _ => Ok(Some(i)),
            },
            // A third session while the older one still speaks: refused.
            None => match &self.servers[1] {
                Some(old) if now.saturating_duration_since(old.last_seen) < OLD_SESSION_HOLD => {
                    Err(ShadowsocksError::WrongSession)
                }
                _ => Ok(None),
            },
        }
    }

    /// Records a valid reply's packet ID; a new server session becomes
    /// the current one, and the current one the old one.
    fn admit(
        &mut self,
        slot: Option<usize>,
        id: u64,
        packet_id: u64,
        aead: Option<Aead>,
        now: Instant,
    ) {
        let i = match slot {
            Some(i) => i,
            None => {
                self.servers[1] = self.servers[0].take();
                self.servers[0] = Some(ServerSession {
                    id,
                    aead,
                    window: ReplayWindow::default(),
                    last_seen: now,
                });
                0
            }
        };
        if let Some(server) = &mut self.servers[i] {
            server.window.record(packet_id);
            server.last_seen = now;
        }
    }

    /// Checks a 2022 reply's main header (type, timestamp, our session,
    /// padding) in `buf[body]`; returns its source and payload.
    fn reply_header(
        &self,
        buf: &[u8],
        body: Range<usize>,
        unix: u64,
    ) -> Result<(SocketAddr, Range<usize>), ShadowsocksError> {
        let text = buf.get(body.clone()).ok_or(ShadowsocksError::Truncated)?;
        let (&kind, rest) = text.split_first().ok_or(ShadowsocksError::Truncated)?;
        let (timestamp, rest) = rest
            .split_first_chunk::<8>()
            .ok_or(ShadowsocksError::Truncated)?;
        let (session, rest) = rest
            .split_first_chunk::<8>()
            .ok_or(ShadowsocksError::Truncated)?;
        let (padding, rest) = rest
            .split_first_chunk::<2>()
            .ok_or(ShadowsocksError::Truncated)?;
        if kind != SERVER_PACKET {
            return Err(ShadowsocksError::BadHeader("not a server packet"));
        }
        if !fresh(u64::from_be_bytes(*timestamp), unix) {
            return Err(ShadowsocksError::Stale);
        }
        if u64::from_be_bytes(*session) != self.session_id {
            return Err(ShadowsocksError::WrongSession);
        }
        let padding = usize::from(u16::from_be_bytes(*padding));
        if padding > rest.len() {
            return Err(ShadowsocksError::Truncated);
        }
        source(buf, body.end - rest.len() + padding..body.end)
    }
}

/// The session and packet IDs of a separate header.
fn ids(separate: &[u8; SEPARATE_HEADER_LEN]) -> (u64, u64) {
    let (session, packet) = separate.split_at(8);
    let to_u64 = |b: &[u8]| b.iter().fold(0u64, |n, &byte| n << 8 | u64::from(byte));
    (to_u64(session), to_u64(packet))
}

/// The body nonce of a 2022 AES datagram: the separate header's last 12
/// bytes.
fn nonce_of(separate: &[u8; SEPARATE_HEADER_LEN]) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&separate[4..]);
    nonce
}

/// Reads the address at the start of `buf[range]`: the reply's source
/// (an IP address: nodes answer from addresses) and its payload.
fn source(buf: &[u8], range: Range<usize>) -> Result<(SocketAddr, Range<usize>), ShadowsocksError> {
    let text = buf.get(range.clone()).ok_or(ShadowsocksError::Truncated)?;
    let (addr, rest) = parse_addr(text)
        .map_err(|_| ShadowsocksError::BadHeader("an unreadable source address"))?;
    match addr {
        TargetAddr::Ip(addr) => Ok((addr, range.end - rest.len()..range.end)),
        TargetAddr::Domain(..) => Err(ShadowsocksError::BadHeader(
            "a source that is a name, not an address",
        )),
    }
}

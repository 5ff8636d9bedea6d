//! The Shadowsocks outbound: a stream is a TCP connection to the node
//! carrying the AEAD chunk stream ([`client`]); a UDP session is a socket
//! connected to the node, one AEAD packet per datagram ([`UdpCodec`]).
//!
//! The protocol answers nothing to a wrong key: the node closes, resets
//! or stays silent, which is all a failure can say ([`Outbound::silence_means`]).

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;

use super::{client, Key, ShadowsocksError, UdpCodec};
use crate::dialer::failure::{Failure, Hop, Stage};
use crate::dialer::outbound::{reach_node, Dial, Outbound, ProxyStream};
use crate::dialer::path::resolve;
use crate::dialer::session::{DatagramCodec, UdpSession};
use crate::dialer::socks5::TargetAddr;
use crate::net::socket::udp_socket;

/// A Shadowsocks node at `server`, with its key.
pub struct ShadowsocksNode {
    server: String,
    key: Arc<Key>,
    mark: Option<u32>,
    drops: Drops,
}

/// Where a UDP session counts the replies it drops.
#[derive(Clone, Default)]
pub struct Drops {
    /// A 2022 packet seen before, or older than the window allows.
    pub replayed: Counter,
    /// A packet the key does not open, or that does not parse once open.
    pub unopened: Counter,
}

impl ShadowsocksNode {
    pub fn new(server: String, key: Key, mark: Option<u32>, drops: Drops) -> Self {
        Self {
            server,
            key: Arc::new(key),
            mark,
            drops,
        }
    }
}

/// What a wrong key looks like from the client's side.
pub(crate) const SILENCE: &str =
    "no answer the node's key opens (a wrong password or method looks like this)";

impl Outbound for ShadowsocksNode {
    fn hop(&self) -> Hop {
        Hop::Proxy
    }

    fn stream<'a>(
        &'a self,
        target: &'a TargetAddr,
        deadline: tokio::time::Instant,
    ) -> Dial<'a, ProxyStream> {
        Box::pin(async move {
            let tcp = reach_node(&self.server, self.mark, deadline).await?;
            // The request header leaves with the first bytes written: the
            // protocol has no handshake to wait for.
            let stream = client(tcp, self.key.clone(), target)
                .await
                .map_err(|e| handshake_failure(&e))?;
            Ok(ProxyStream::new(stream))
        })
    }

    fn udp(&self, target: SocketAddr, connected: bool) -> Dial<'_, UdpSession> {
        Box::pin(async move {
            let io = |e: io::Error| Failure::io(&e, Stage::ProxyConnect, Hop::Proxy, false);
            let node = resolve(&self.server).await.map_err(io)?;
            let socket = udp_socket(node, self.mark, None).map_err(io)?;
            // Connected: a node that is gone answers with ICMP, which
            // fails the session's next receive at once.
            socket.connect(node).await.map_err(io)?;
            let codec = ShadowsocksDatagrams {
                codec: Mutex::new(UdpCodec::new(self.key.clone())),
                drops: self.drops.clone(),
            };
            Ok(UdpSession::through(
                socket,
                Box::new(codec),
                connected.then_some(target),
            ))
        })
    }

    fn silence_means(&self) -> Option<&'static str> {
        Some(SILENCE)
    }
}

fn handshake_failure(e: &ShadowsocksError) -> Failure {
    Failure::node(Stage::ProxyHandshake, e.to_string())
}

/// One AEAD packet per datagram. The 2022 codec keeps its session's
/// packet counter and replay window: one lock per datagram, never
/// contended but by a flow's own sends and receives.
struct ShadowsocksDatagrams {
    codec: Mutex<UdpCodec>,
    drops: Drops,
}

impl DatagramCodec for ShadowsocksDatagrams {
    fn encode(&self, dst: SocketAddr, payload: &[u8], out: &mut Vec<u8>) {
        let codec = self.codec.lock().unwrap_or_else(|e| e.into_inner());
        // An address always encodes; a payload too large for one packet
        // leaves an empty one, lost as an oversized datagram is.
        let start = out.len();
        if codec.encode(&TargetAddr::Ip(dst), payload, out).is_err() {
            out.truncate(start);
        }
    }

    fn decode(&self, packet: &mut [u8]) -> Option<(SocketAddr, Range<usize>)> {
        let mut codec = self.codec.lock().unwrap_or_else(|e| e.into_inner());
        match codec.decode(packet) {
            Ok(decoded) => Some(decoded),
            Err(e) if e.is_replay_or_stale() => {
                self.drops.replayed.inc();
                None
            }
            Err(_) => {
                self.drops.unopened.inc();
                None
            }
        }
    }
}

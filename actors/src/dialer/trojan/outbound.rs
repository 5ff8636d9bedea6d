//! The Trojan outbound: a stream is a TLS connection to the node that
//! opened with a CONNECT request; a UDP session is one TLS connection that
//! opened with UDP ASSOCIATE, every datagram framed inside it
//! ([`StreamDatagrams`]). When that connection breaks, the session fails
//! once and its owner moves on.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use super::{decode_udp, encode_udp, TrojanError, TrojanNode};
use crate::dialer::failure::{Failure, Hop, Stage};
use crate::dialer::outbound::{reach_node, Dial, Outbound, ProxyStream};
use crate::dialer::session::{StreamDatagrams, StreamFraming, UdpSession};
use crate::dialer::socks5::TargetAddr;

/// How long opening a UDP session may take at most when the caller gave
/// no deadline (its own timeout bounds it further).
const ASSOCIATE_WITHIN: Duration = Duration::from_secs(30);

/// A Trojan node, reached over TCP at its server address.
pub struct TrojanOutbound {
    server: String,
    node: TrojanNode,
    mark: Option<u32>,
}

impl TrojanOutbound {
    pub fn new(server: String, node: TrojanNode, mark: Option<u32>) -> Self {
        Self { server, node, mark }
    }

    /// A TCP connection to the node, kept alive so that a node gone
    /// without a FIN still ends what rides on it.
    async fn reach(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<tokio::net::TcpStream, Failure> {
        let tcp = reach_node(&self.server, self.mark, deadline).await?;
        let keepalive = TcpKeepalive::new()
            .with_time(Duration::from_secs(10))
            .with_interval(Duration::from_secs(5))
            .with_retries(3);
        SockRef::from(&tcp)
            .set_tcp_keepalive(&keepalive)
            .map_err(|e| Failure::io(&e, Stage::ProxyConnect, Hop::Proxy, false))?;
        Ok(tcp)
    }
}

/// A failure of the node's TLS or request: the path's, but for a
/// destination that cannot be written in a request (a name too long).
fn failure(e: TrojanError) -> Failure {
    match e {
        TrojanError::Io(e) => Failure::io(&e, Stage::ProxyHandshake, Hop::Proxy, true),
        TrojanError::Target(why) => Failure::local(why),
        e => Failure::node(Stage::ProxyHandshake, e.to_string()),
    }
}

impl Outbound for TrojanOutbound {
    fn hop(&self) -> Hop {
        Hop::Proxy
    }

    fn stream<'a>(
        &'a self,
        target: &'a TargetAddr,
        deadline: tokio::time::Instant,
    ) -> Dial<'a, ProxyStream> {
        Box::pin(async move {
            let tcp = self.reach(deadline).await?;
            let tls = tokio::time::timeout_at(deadline, self.node.connect(tcp, target))
                .await
                .map_err(|_| Failure::timeout(Stage::ProxyHandshake))?
                .map_err(failure)?;
            Ok(ProxyStream::new(tls))
        })
    }

    fn udp(&self, target: SocketAddr, connected: bool) -> Dial<'_, UdpSession> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + ASSOCIATE_WITHIN;
            let tcp = self.reach(deadline).await?;
            let tls = tokio::time::timeout_at(deadline, self.node.udp_associate(tcp))
                .await
                .map_err(|_| Failure::timeout(Stage::ProxyHandshake))?
                .map_err(failure)?;
            let datagrams = StreamDatagrams::new(ProxyStream::new(tls), Arc::new(TrojanFraming));
            Ok(UdpSession::framed(datagrams, connected.then_some(target)))
        })
    }

    fn silence_means(&self) -> Option<&'static str> {
        Some(
            "the node closed without a word (a wrong password looks like this: \
             the node hands the request to its fallback)",
        )
    }
}

/// Trojan's UDP frames: address, length, CRLF, payload.
struct TrojanFraming;

impl StreamFraming for TrojanFraming {
    fn encode(&self, dst: SocketAddr, payload: &[u8], out: &mut Vec<u8>) {
        // An IP address always encodes; a payload past a frame's length
        // field leaves nothing, lost as an oversized datagram is.
        let _ = encode_udp(&TargetAddr::Ip(dst), payload, out);
    }

    fn decode(&self, buf: &[u8]) -> io::Result<Option<(SocketAddr, Range<usize>, usize)>> {
        match decode_udp(buf) {
            Ok(Some(frame)) => Ok(Some((frame.from, frame.payload, frame.len))),
            Ok(None) => Ok(None),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}

//! The SOCKS5 outbound: CONNECT for streams, UDP ASSOCIATE for datagrams,
//! each datagram carrying the UDP request header ([`Socks5Datagrams`]).

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use super::client::{negotiate, request_connect, udp_associate};
use super::wire::{decapsulate, encapsulate, Credentials, TargetAddr};
use crate::dialer::failure::{Failure, Hop, Stage};
use crate::dialer::outbound::{reach_node, Dial, Outbound, ProxyStream};
use crate::dialer::session::{DatagramCodec, UdpSession};
use crate::net::socket::udp_socket;

/// A SOCKS5 node at `server`.
pub struct Socks5Node {
    pub server: String,
    pub credentials: Option<Credentials>,
    /// SO_MARK on the sockets that reach the node.
    pub mark: Option<u32>,
}

/// How long opening a UDP association may take at most when the caller
/// gave no deadline (its own timeout bounds it further).
const ASSOCIATE_WITHIN: Duration = Duration::from_secs(30);

impl Outbound for Socks5Node {
    fn hop(&self) -> Hop {
        Hop::Proxy
    }

    fn stream<'a>(
        &'a self,
        target: &'a TargetAddr,
        deadline: tokio::time::Instant,
    ) -> Dial<'a, ProxyStream> {
        let timed_out = |stage| move |_| Failure::timeout(stage);
        Box::pin(async move {
            let mut control = reach_node(&self.server, self.mark, deadline).await?;
            // A node that accepts but never negotiates is stuck itself.
            tokio::time::timeout_at(deadline, negotiate(&mut control, self.credentials.as_ref()))
                .await
                .map_err(timed_out(Stage::ProxyHandshake))?
                .map_err(|e| Failure::socks5(&e))?;
            let (stream, _bound) =
                tokio::time::timeout_at(deadline, request_connect(control, target))
                    .await
                    .map_err(timed_out(Stage::TargetConnect))?
                    .map_err(|e| Failure::socks5(&e))?;
            Ok(ProxyStream::from(stream))
        })
    }

    fn udp(&self, target: SocketAddr, connected: bool) -> Dial<'_, UdpSession> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + ASSOCIATE_WITHIN;
            let control = reach_node(&self.server, self.mark, deadline).await?;
            let io = |e: io::Error| Failure::io(&e, Stage::ProxyHandshake, Hop::Proxy, false);
            let node = control.peer_addr().map_err(io)?;
            let socket = udp_socket(node, self.mark, None).map_err(io)?;
            let local = socket.local_addr().map_err(io)?;
            let association = udp_associate(control, self.credentials.as_ref(), local)
                .await
                .map_err(|e| Failure::socks5(&e))?;
            socket.connect(association.relay).await.map_err(io)?;
            // A node that vanishes without a FIN (a partition) still ends
            // the association, after about 25 s.
            let keepalive = TcpKeepalive::new()
                .with_time(Duration::from_secs(10))
                .with_interval(Duration::from_secs(5))
                .with_retries(3);
            SockRef::from(&association.control)
                .set_tcp_keepalive(&keepalive)
                .map_err(io)?;
            Ok(UdpSession::through(
                socket,
                Box::new(Socks5Datagrams),
                connected.then_some(target),
            )
            .with_control(association.control))
        })
    }
}

/// The UDP request header around every datagram of an association.
pub struct Socks5Datagrams;

impl DatagramCodec for Socks5Datagrams {
    fn encode(&self, dst: SocketAddr, payload: &[u8], out: &mut Vec<u8>) {
        encapsulate(&TargetAddr::Ip(dst), payload, out);
    }

    fn decode(&self, packet: &mut [u8]) -> Option<(SocketAddr, Range<usize>)> {
        match decapsulate(packet) {
            Ok((TargetAddr::Ip(from), payload)) => {
                let start = packet.len() - payload.len();
                Some((from, start..packet.len()))
            }
            _ => None,
        }
    }
}

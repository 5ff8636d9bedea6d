//! The one interface every outbound protocol implements ([`Outbound`]):
//! "open a stream to X" and "open a UDP session". A [`super::Dialer`]
//! holds one and never asks which protocol it is; each protocol lives in
//! its own module (`direct`, `socks5`, `shadowsocks`, `trojan`) with its
//! implementation.
//!
//! What an outbound opens is a [`ProxyStream`] (a TCP connection, or a
//! stream wrapped in the node's framing or TLS) or a
//! [`super::UdpSession`]. Failures come back classified ([`Failure`]):
//! the stage they reached says whether the node or the destination is to
//! blame.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UdpSocket};

use super::failure::{Failure, Hop, Stage};
use super::path::resolve;
use super::session::UdpSession;
use super::socks5::TargetAddr;
use crate::net::socket::tcp_socket;

/// A dial's result, boxed: outbounds are trait objects, and a dial costs a
/// connection anyway.
pub type Dial<'a, T> = Pin<Box<dyn Future<Output = Result<T, Failure>> + Send + 'a>>;

/// One outbound protocol, configured for one path.
pub trait Outbound: Send + Sync + 'static {
    /// Whether a node sits in between.
    fn hop(&self) -> Hop;

    /// A stream to `target`, ready to carry its bytes, by `deadline`. A
    /// name is looked up locally when direct, by the node otherwise.
    fn stream<'a>(
        &'a self,
        target: &'a TargetAddr,
        deadline: tokio::time::Instant,
    ) -> Dial<'a, ProxyStream>;

    /// A UDP session: to `target` only, or (not `connected`) a full-cone
    /// flow to any destination of `target`'s family.
    fn udp(&self, target: SocketAddr, connected: bool) -> Dial<'_, UdpSession>;

    /// A connected UDP socket to `target` made at once, for one DNS query:
    /// only where datagrams need no handshake (direct).
    fn query_socket(&self, _target: SocketAddr) -> Option<io::Result<UdpSocket>> {
        None
    }

    /// What a failure that left no other trace may mean, for a user
    /// reading `ward ctl dialers`: a node that authenticates silently
    /// (Shadowsocks, Trojan) says nothing of a wrong password but silence.
    fn silence_means(&self) -> Option<&'static str> {
        None
    }
}

/// The bytes of a stream, whatever carries them.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + std::any::Any {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for T {}

/// A stream opened through an outbound: plain TCP, or TCP wrapped in a
/// node's framing or TLS. Boxed once per connection.
pub struct ProxyStream(Box<dyn ByteStream>);

impl ProxyStream {
    pub fn new(stream: impl ByteStream) -> Self {
        Self(Box::new(stream))
    }

    /// The TCP connection itself, when nothing wraps it (direct, SOCKS5).
    pub fn tcp(&self) -> Option<&TcpStream> {
        let any: &dyn std::any::Any = &*self.0;
        any.downcast_ref()
    }
}

impl std::fmt::Debug for ProxyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tcp() {
            Some(tcp) => write!(f, "ProxyStream({:?})", tcp.peer_addr()),
            None => f.write_str("ProxyStream(wrapped)"),
        }
    }
}

impl From<TcpStream> for ProxyStream {
    fn from(stream: TcpStream) -> Self {
        Self::new(stream)
    }
}

impl AsyncRead for ProxyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ProxyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// A TCP connection to a node at `server` (`host:port`), by `deadline`:
/// what every node protocol starts with. Reaching it is the node's
/// business.
pub(crate) async fn reach_node(
    server: &str,
    mark: Option<u32>,
    deadline: tokio::time::Instant,
) -> Result<TcpStream, Failure> {
    let io = |e: io::Error| Failure::io(&e, Stage::ProxyConnect, Hop::Proxy, false);
    let connect = async {
        let addr = resolve(server).await.map_err(io)?;
        let socket = tcp_socket(addr, mark, None).map_err(io)?;
        let stream = socket.connect(addr).await.map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        Ok(stream)
    };
    tokio::time::timeout_at(deadline, connect)
        .await
        .map_err(|_| Failure::timeout(Stage::ProxyConnect))?
}

/// An outbound that cannot be used: its configuration could not be made
/// real at start (a CA file gone since `ward check`). Every dial fails
/// with why, blamed on the path, so the dialer shows down with a reason.
pub struct Unusable(pub String);

impl Unusable {
    fn failure(&self) -> Failure {
        Failure::node(Stage::ProxyConnect, self.0.clone())
    }
}

impl Outbound for Unusable {
    fn hop(&self) -> Hop {
        Hop::Proxy
    }

    fn stream<'a>(&'a self, _: &'a TargetAddr, _: tokio::time::Instant) -> Dial<'a, ProxyStream> {
        let failure = self.failure();
        Box::pin(async move { Err(failure) })
    }

    fn udp(&self, _: SocketAddr, _: bool) -> Dial<'_, UdpSession> {
        let failure = self.failure();
        Box::pin(async move { Err(failure) })
    }
}

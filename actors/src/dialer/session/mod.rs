//! A UDP session over a dialer ([`UdpSession`]): datagrams to one
//! destination (a DNS query's, a probe's), or, a flow, to any.
//!
//! What carries the datagrams is the outbound's business, not this
//! file's: a UDP socket of the session's own, each datagram as it is
//! (direct) or wrapped by a [`DatagramCodec`] (a SOCKS5 header, a
//! Shadowsocks packet); or a byte stream to the node that frames them
//! ([`stream::StreamDatagrams`], Trojan). Sends go straight to the system
//! call, runs of datagrams to one destination as one segmented send;
//! receives come one at a time or a batch (`recvmmsg`) at a time, each
//! decoded in place.

mod stream;

use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::SockRef;
use tokio::net::{TcpStream, UdpSocket};

pub use stream::{StreamDatagrams, StreamFraming};

use crate::net::ready::readable_or_error;
use crate::net::udp_batch::{Datagrams, RecvBatch};

/// How a node's protocol wraps each datagram on a UDP socket to it.
pub trait DatagramCodec: Send + Sync + 'static {
    /// Appends the whole packet for `payload` to `dst` to `out`.
    fn encode(&self, dst: SocketAddr, payload: &[u8], out: &mut Vec<u8>);

    /// Unwraps a packet from the node in place: whom its payload is from
    /// and where it now lies in `packet`. `None` drops it (it does not
    /// parse, or does not verify: counted by the codec where that
    /// matters).
    fn decode(&self, packet: &mut [u8]) -> Option<(SocketAddr, Range<usize>)>;
}

/// A UDP session over a dialer: datagrams to one destination, or (a flow)
/// to any.
pub struct UdpSession {
    carrier: Carrier,
    /// The one destination of a session opened for it.
    target: Option<SocketAddr>,
    /// A SOCKS5 association's control connection: its close ends the
    /// association, so the owner watches it (see [`UdpSession::take_control`]).
    control: Option<TcpStream>,
}

enum Carrier {
    Socket(SocketCarrier),
    Stream(StreamDatagrams),
}

/// A UDP socket of the session's own.
struct SocketCarrier {
    socket: UdpSocket,
    /// Through a node: how each datagram is wrapped. The socket is then
    /// connected to the node's relay.
    codec: Option<Box<dyn DatagramCodec>>,
    /// An IPv6 socket that also reaches IPv4 (as v4-mapped addresses): a
    /// direct flow may send to either family, whatever its first
    /// destination was.
    dual_stack: bool,
    /// Runs of datagrams may still leave as one segmented send (cleared
    /// when this socket's path turns out unable to segment).
    gso: AtomicBool,
}

fn no_target() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "a flow session needs a destination",
    )
}

impl UdpSession {
    /// A direct session on `socket`: to `target` only (the socket is
    /// connected to it), or a flow; `dual_stack` when the flow's socket
    /// reaches both families.
    pub(crate) fn direct(socket: UdpSocket, target: Option<SocketAddr>, dual_stack: bool) -> Self {
        Self::on_socket(socket, None, target, dual_stack)
    }

    /// A session through a node's relay: `socket` is connected to it and
    /// every datagram is wrapped by `codec`; to `target` only, or a flow.
    pub(crate) fn through(
        socket: UdpSocket,
        codec: Box<dyn DatagramCodec>,
        target: Option<SocketAddr>,
    ) -> Self {
        Self::on_socket(socket, Some(codec), target, false)
    }

    /// A session whose datagrams are framed in a stream to the node.
    pub(crate) fn framed(datagrams: StreamDatagrams, target: Option<SocketAddr>) -> Self {
        Self {
            carrier: Carrier::Stream(datagrams),
            target,
            control: None,
        }
    }

    fn on_socket(
        socket: UdpSocket,
        codec: Option<Box<dyn DatagramCodec>>,
        target: Option<SocketAddr>,
        dual_stack: bool,
    ) -> Self {
        Self {
            carrier: Carrier::Socket(SocketCarrier {
                socket,
                codec,
                dual_stack,
                gso: AtomicBool::new(true),
            }),
            target,
            control: None,
        }
    }

    /// The session's own socket and whether it is dual-stack, when it has
    /// one (not framed in a stream).
    #[cfg(test)]
    fn socket(&self) -> Option<(&UdpSocket, bool)> {
        match &self.carrier {
            Carrier::Socket(c) => Some((&c.socket, c.dual_stack)),
            Carrier::Stream(_) => None,
        }
    }

    /// True once the session can carry nothing more: the stream that
    /// framed its datagrams failed or ended. A session on a socket of its
    /// own is never over (an ICMP error fails one receive, not the next);
    /// an owner that sees an error on a session that is over ends.
    pub fn is_over(&self) -> bool {
        match &self.carrier {
            Carrier::Socket(_) => false,
            Carrier::Stream(stream) => stream.is_over(),
        }
    }

    /// The session with a control connection for its owner to watch.
    pub(crate) fn with_control(mut self, control: TcpStream) -> Self {
        self.control = Some(control);
        self
    }

    /// Sends one datagram to the session's destination without waiting
    /// (`WouldBlock`: the socket buffer is full). Straight to the system
    /// call, as [`Self::send_many`]: tokio's `try_send` tries only once the
    /// reactor has seen the socket writable, which a session just opened
    /// has not.
    pub fn try_send(&self, payload: &[u8]) -> io::Result<()> {
        let target = self.target.ok_or_else(no_target)?;
        match &self.carrier {
            Carrier::Socket(s) => {
                let socket = SockRef::from(&s.socket);
                let Some(codec) = &s.codec else {
                    return socket.send(payload).map(drop);
                };
                let mut packet = Vec::with_capacity(payload.len() + 64);
                codec.encode(target, payload, &mut packet);
                socket.send(&packet).map(drop)
            }
            Carrier::Stream(stream) => stream.try_send(target, payload),
        }
    }

    /// Sends `datagrams` in order now, without waiting, runs to one
    /// destination as one segmented send where the path takes it (see
    /// [`Datagrams::send`]): how many went before the first that could
    /// not, and why (`WouldBlock`: the socket buffer is full).
    pub fn send_many(
        &self,
        datagrams: &[(SocketAddr, &[u8])],
        out: &mut Datagrams,
    ) -> Result<(), (usize, io::Error)> {
        let s = match &self.carrier {
            Carrier::Socket(s) => s,
            Carrier::Stream(stream) => {
                for (i, (dst, payload)) in datagrams.iter().enumerate() {
                    stream.try_send(*dst, payload).map_err(|e| (i, e))?;
                }
                return Ok(());
            }
        };
        out.clear();
        // Through a node or to the one target, the socket is connected.
        let unconnected = s.codec.is_none() && self.target.is_none();
        for (dst, payload) in datagrams {
            out.push(unconnected.then(|| s.wire(*dst)), |bytes| match &s.codec {
                Some(codec) => codec.encode(*dst, payload, bytes),
                None => bytes.extend_from_slice(payload),
            });
        }
        out.send(s.socket.as_raw_fd(), &s.gso)
    }

    /// Sends one datagram to `dst` (waiting for room).
    pub async fn send_to(&self, payload: &[u8], dst: SocketAddr) -> io::Result<()> {
        let s = match &self.carrier {
            Carrier::Socket(s) => s,
            Carrier::Stream(stream) => return stream.send(dst, payload).await,
        };
        if let Some(codec) = &s.codec {
            let mut packet = Vec::with_capacity(payload.len() + 64);
            codec.encode(dst, payload, &mut packet);
            return s.socket.send(&packet).await.map(drop);
        }
        match &self.target {
            Some(_) => s.socket.send(payload).await.map(drop),
            None => s.socket.send_to(payload, s.wire(dst)).await.map(drop),
        }
    }

    /// Receives one datagram's payload into the start of `buf`. Datagrams
    /// from the node that do not decode are dropped.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_from(buf).await.map(|(_, n)| n)
    }

    /// Receives one datagram's payload into the start of `buf`, with the
    /// address it came from (through a node, the source the node
    /// reports).
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(SocketAddr, usize)> {
        let s = match &self.carrier {
            Carrier::Socket(s) => s,
            Carrier::Stream(stream) => return stream.recv(buf).await,
        };
        loop {
            readable_or_error(&s.socket).await?;
            let (n, from) = match s.socket.try_recv_from(buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            let Some(codec) = &s.codec else {
                return Ok((self.target.unwrap_or_else(|| s.unwire(from)), n));
            };
            let Some((from, payload)) = codec.decode(&mut buf[..n]) else {
                continue;
            };
            let len = payload.len();
            buf.copy_within(payload, 0);
            return Ok((from, len));
        }
    }

    /// Takes the datagrams waiting (up to a batch, `recvmmsg`) without
    /// waiting, decoded: `WouldBlock` when there are none. Read them with
    /// [`Self::received`].
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let s = match &self.carrier {
            Carrier::Socket(s) => s,
            Carrier::Stream(stream) => return stream.try_fill(batch),
        };
        let fd = s.socket.as_raw_fd();
        let n = s
            .socket
            .try_io(tokio::io::Interest::READABLE, || batch.recv(fd))?;
        match &s.codec {
            Some(codec) => batch.decode(|packet, _| codec.decode(packet)),
            None => batch.decode(|packet, from| {
                let from = self.target.unwrap_or_else(|| s.unwire(from));
                Some((from, 0..packet.len()))
            }),
        }
        Ok(n)
    }

    /// Datagram `i` of a batch taken by [`Self::try_recv_batch`]: where it
    /// came from (through a node, the source the node reports) and its
    /// payload. `None` for a datagram from the node that did not decode.
    pub fn received<'b>(&self, batch: &'b RecvBatch, i: usize) -> Option<(SocketAddr, &'b [u8])> {
        batch.view(i)
    }

    /// Waits until a datagram may be waiting (see [`Self::try_recv_batch`]),
    /// or fails with the error an ICMP message left on a connected socket
    /// (see [`readable_or_error`]), or with the error that ended the
    /// stream carrying the datagrams.
    pub async fn readable(&self) -> io::Result<()> {
        match &self.carrier {
            Carrier::Socket(s) => readable_or_error(&s.socket).await,
            Carrier::Stream(stream) => stream.readable().await,
        }
    }

    /// The control connection of a SOCKS5 association, for the owner to
    /// watch with [`super::socks5::control_closed`] (and to keep open).
    pub fn take_control(&mut self) -> Option<TcpStream> {
        self.control.take()
    }

    /// True while runs of datagrams may still leave as one segmented send
    /// (false once this session's path turned out unable to segment, and
    /// for datagrams framed in a stream).
    pub fn segments(&self) -> bool {
        match &self.carrier {
            Carrier::Socket(s) => s.gso.load(Ordering::Relaxed),
            Carrier::Stream(_) => false,
        }
    }
}

impl SocketCarrier {
    /// `dst` as this socket addresses it: v4-mapped on a dual-stack one.
    fn wire(&self, dst: SocketAddr) -> SocketAddr {
        match dst {
            SocketAddr::V4(v4) if self.dual_stack => {
                SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0).into()
            }
            _ => dst,
        }
    }

    /// A source as the flow names it: plain IPv4 for a v4-mapped one.
    fn unwire(&self, from: SocketAddr) -> SocketAddr {
        match from {
            SocketAddr::V6(v6) if self.dual_stack => {
                SocketAddr::new(v6.ip().to_canonical(), v6.port())
            }
            _ => from,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::time::Duration;

    use crate::dialer::metrics::DialerMetrics;
    use crate::dialer::settings::{DialerSpec, HealthSettings};
    use crate::dialer::Dialer;

    fn dialer(spec: DialerSpec) -> Dialer {
        Dialer::new(
            "d".into(),
            spec,
            Arc::new(HealthSettings::default()),
            Arc::new(DialerMetrics::default()),
        )
    }

    /// A port nobody listens on: ICMP port unreachable to whoever sends there.
    fn closed_udp_port() -> SocketAddr {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// A session sends the moment it is open, and the ICMP error its peer
    /// sends back reaches its receiver at once (EPOLLERR alone never made
    /// the socket readable), through both ways of receiving, and is
    /// cleared once read.
    #[tokio::test]
    async fn a_connected_session_hears_port_unreachable_while_it_waits() {
        let direct = dialer(DialerSpec::Direct {
            mark: None,
            interface: None,
        });
        let within = Duration::from_secs(2);
        let mut buf = [0u8; 512];
        let session = direct.open_udp(closed_udp_port(), true).await.unwrap();
        session.try_send(b"anyone?").unwrap();
        let woke = tokio::time::timeout(within, session.readable()).await;
        let error = woke.expect("woken at once").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ECONNREFUSED));
        session.try_send(b"anyone?").unwrap();
        let received = tokio::time::timeout(within, session.recv(&mut buf)).await;
        let error = received.expect("woken at once").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ECONNREFUSED));
        // Read once, the error is gone: the session waits again.
        let again = tokio::time::timeout(Duration::from_millis(200), session.readable()).await;
        assert!(again.is_err(), "{again:?}");
    }

    /// A SOCKS5 client's flow may go to both families whatever its first
    /// destination; answers name their sources as the client sent to them
    /// (plain IPv4, not v4-mapped).
    #[tokio::test]
    async fn a_direct_flow_reaches_both_families() {
        let echo = |bind: &str| {
            let socket = std::net::UdpSocket::bind(bind).unwrap();
            let addr = socket.local_addr().unwrap();
            std::thread::spawn(move || {
                socket
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut buf = [0u8; 64];
                while let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            });
            addr
        };
        let (v4, v6) = (echo("127.0.0.1:0"), echo("[::1]:0"));
        let d = dialer(DialerSpec::Direct {
            mark: None,
            interface: None,
        });
        let session = d.udp_flow(v4, Duration::from_secs(2)).await.unwrap();
        assert!(session.socket().unwrap().1, "this host has IPv6");
        let mut buf = [0u8; 64];
        for dst in [v6, v4] {
            session.send_to(b"one", dst).await.unwrap();
            let (from, n) =
                tokio::time::timeout(Duration::from_secs(2), session.recv_from(&mut buf))
                    .await
                    .expect("an answer in time")
                    .unwrap();
            assert_eq!((from, &buf[..n]), (dst, &b"one"[..]));
        }
        let datagrams: [(SocketAddr, &[u8]); 2] = [(v4, b"two"), (v6, b"two")];
        session
            .send_many(&datagrams, &mut Datagrams::default())
            .unwrap();
        let mut batch = RecvBatch::with_slot(64);
        let mut answers = Vec::new();
        while answers.len() < 2 {
            tokio::time::timeout(Duration::from_secs(2), session.readable())
                .await
                .expect("answers in time")
                .unwrap();
            let Ok(n) = session.try_recv_batch(&mut batch) else {
                continue;
            };
            for i in 0..n {
                let (from, payload) = session.received(&batch, i).unwrap();
                answers.push((from, payload.to_vec()));
            }
        }
        answers.sort();
        assert_eq!(answers, [(v4, b"two".to_vec()), (v6, b"two".to_vec())]);
    }

    #[tokio::test]
    async fn direct_sets_the_mark() {
        // SO_MARK needs CAP_NET_ADMIN.
        if !crate::skip::require(&[], true) {
            return;
        }
        // Connecting needs only a listening socket: the kernel completes
        // the handshake before anyone accepts.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = listener.local_addr().unwrap();
        let d = dialer(DialerSpec::Direct {
            mark: Some(0x2a),
            interface: None,
        });
        let stream = d.connect_tcp(peer, Duration::from_secs(2)).await.unwrap();
        let tcp = stream.tcp().expect("a direct stream is plain TCP");
        assert_eq!(socket2::SockRef::from(tcp).mark().unwrap(), 0x2a);
        let session = d.udp_session(peer, Duration::from_secs(2)).await.unwrap();
        assert_eq!(
            socket2::SockRef::from(session.socket().unwrap().0)
                .mark()
                .unwrap(),
            0x2a
        );
    }
}

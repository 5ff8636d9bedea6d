//! A UDP session over a dialer ([`UdpSession`]): datagrams to one
//! destination (a DNS query's, a probe's), or, a flow, to any. Direct it is
//! a socket of its own; through a SOCKS5 node a UDP association, every
//! datagram carrying the request header, its control connection handed to
//! the owner to watch. Sends go straight to the system call, runs of
//! datagrams to one destination as one segmented send; receives come one
//! at a time or a batch (`recvmmsg`) at a time. Opening a session is the
//! path's job ([`super::path`]), not this file's.

use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::SockRef;
use tokio::net::{TcpStream, UdpSocket};

use super::socks5::{self, TargetAddr};
use crate::net::ready::readable_or_error;
use crate::net::udp_batch::{Datagrams, RecvBatch};

/// A UDP session over a dialer: datagrams to one destination, or (a flow)
/// to any.
pub struct UdpSession {
    socket: UdpSocket,
    /// Through a SOCKS5 relay: every datagram carries a UDP request header.
    relayed: bool,
    /// An IPv6 socket that also reaches IPv4 (as v4-mapped addresses): a
    /// direct flow may send to either family, whatever its first
    /// destination was.
    dual_stack: bool,
    /// The one destination of a session opened for it, with its header
    /// when relayed.
    target: Option<(SocketAddr, Vec<u8>)>,
    /// A SOCKS5 association's control connection: its close ends the
    /// association, so the owner watches it (see [`UdpSession::take_control`]).
    control: Option<TcpStream>,
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
        Self {
            socket,
            relayed: false,
            dual_stack,
            target: target.map(|target| (target, Vec::new())),
            control: None,
            gso: AtomicBool::new(true),
        }
    }

    /// A session through a SOCKS5 association: `socket` is connected to
    /// the node's relay, `control` is the association's control
    /// connection; to `target` only, or a flow.
    pub(crate) fn relayed(
        socket: UdpSocket,
        control: TcpStream,
        target: Option<SocketAddr>,
    ) -> Self {
        let target = target.map(|target| {
            let mut header = Vec::with_capacity(22);
            socks5::encapsulate(&TargetAddr::Ip(target), &[], &mut header);
            (target, header)
        });
        Self {
            socket,
            relayed: true,
            dual_stack: false,
            target,
            control: Some(control),
            gso: AtomicBool::new(true),
        }
    }

    /// Sends one datagram to the session's destination without waiting
    /// (`WouldBlock`: the socket buffer is full). Straight to the system
    /// call, as [`Self::send_many`]: tokio's `try_send` tries only once the
    /// reactor has seen the socket writable, which a session just opened
    /// has not.
    pub fn try_send(&self, payload: &[u8]) -> io::Result<()> {
        let Some((_, header)) = &self.target else {
            return Err(no_target());
        };
        let socket = SockRef::from(&self.socket);
        if !self.relayed {
            return socket.send(payload).map(drop);
        }
        let mut datagram = Vec::with_capacity(header.len() + payload.len());
        datagram.extend_from_slice(header);
        datagram.extend_from_slice(payload);
        socket.send(&datagram).map(drop)
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
        out.clear();
        // Through a node or to the one target, the socket is connected.
        let unconnected = !self.relayed && self.target.is_none();
        for (dst, payload) in datagrams {
            out.push(unconnected.then(|| self.wire(*dst)), |bytes| {
                if self.relayed {
                    socks5::encapsulate(&TargetAddr::Ip(*dst), payload, bytes);
                } else {
                    bytes.extend_from_slice(payload);
                }
            });
        }
        out.send(self.socket.as_raw_fd(), &self.gso)
    }

    /// Sends one datagram to `dst` (waiting for room in the socket buffer).
    pub async fn send_to(&self, payload: &[u8], dst: SocketAddr) -> io::Result<()> {
        if self.relayed {
            let mut datagram = Vec::with_capacity(payload.len() + 22);
            socks5::encapsulate(&TargetAddr::Ip(dst), payload, &mut datagram);
            return self.socket.send(&datagram).await.map(drop);
        }
        match &self.target {
            Some(_) => self.socket.send(payload).await.map(drop),
            None => self.socket.send_to(payload, self.wire(dst)).await.map(drop),
        }
    }

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

    /// Receives one datagram's payload into the start of `buf`. Datagrams
    /// from the relay that do not parse are dropped.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_from(buf).await.map(|(_, n)| n)
    }

    /// Receives one datagram's payload into the start of `buf`, with the
    /// address it came from (for a relayed one, the source the relay
    /// reports).
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(SocketAddr, usize)> {
        loop {
            self.readable().await?;
            let (n, from) = match self.socket.try_recv_from(buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if !self.relayed {
                let from = match &self.target {
                    Some((target, _)) => *target,
                    None => self.unwire(from),
                };
                return Ok((from, n));
            }
            let Ok((TargetAddr::Ip(from), payload)) = socks5::decapsulate(&buf[..n]) else {
                continue;
            };
            let (start, len) = (n - payload.len(), payload.len());
            buf.copy_within(start..n, 0);
            return Ok((from, len));
        }
    }

    /// Takes the datagrams waiting (up to a batch, `recvmmsg`) without
    /// waiting: `WouldBlock` when there are none. Read them with
    /// [`Self::received`].
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let fd = self.socket.as_raw_fd();
        self.socket
            .try_io(tokio::io::Interest::READABLE, || batch.recv(fd))
    }

    /// Datagram `i` of a batch taken by [`Self::try_recv_batch`]: where it
    /// came from (for a relayed one, the source the relay reports) and its
    /// payload. `None` for a datagram from the relay that does not parse.
    pub fn received<'b>(&self, batch: &'b RecvBatch, i: usize) -> Option<(SocketAddr, &'b [u8])> {
        let (bytes, from) = batch.get(i)?;
        if !self.relayed {
            let from = self
                .target
                .as_ref()
                .map_or_else(|| self.unwire(from), |(target, _)| *target);
            return Some((from, bytes));
        }
        match socks5::decapsulate(bytes) {
            Ok((TargetAddr::Ip(from), payload)) => Some((from, payload)),
            _ => None,
        }
    }

    /// Waits until a datagram may be waiting (see [`Self::try_recv_batch`]),
    /// or fails with the error an ICMP message left on a connected socket
    /// (see [`readable_or_error`]).
    pub async fn readable(&self) -> io::Result<()> {
        readable_or_error(&self.socket).await
    }

    /// The control connection of a SOCKS5 association, for the owner to
    /// watch with [`socks5::control_closed`] (and to keep open).
    pub fn take_control(&mut self) -> Option<TcpStream> {
        self.control.take()
    }

    /// True while runs of datagrams may still leave as one segmented send
    /// (false once this session's path turned out unable to segment).
    pub fn segments(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
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
        assert!(session.dual_stack, "this host has IPv6");
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
        assert_eq!(socket2::SockRef::from(&stream).mark().unwrap(), 0x2a);
        let session = d.udp_session(peer, Duration::from_secs(2)).await.unwrap();
        assert_eq!(
            socket2::SockRef::from(&session.socket).mark().unwrap(),
            0x2a
        );
    }
}

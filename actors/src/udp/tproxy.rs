//! Transparent proxy inbounds (Linux TPROXY): the router's firewall hands
//! datagrams for other hosts to this socket unchanged; the original
//! destination comes with each datagram as a control message
//! (IP_RECVORIGDSTADDR / IPV6_RECVORIGDSTADDR). Answers must reach the
//! client from that original destination, so they go out through
//! transparent sockets bound to it, pooled ([`super::reply_pool`]).

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
use socket2::{Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::endpoint::Reply;
use super::flows::Flows;
use super::reply_pool::ReplyPool;
use super::Event;
use crate::io_class::{classify_io_error, IoClass, IoSide, SocketFailure};
use crate::net::socket::{new_socket, setsockopt_int};
use crate::net::udp_batch::{Datagrams, BATCH};
use crate::warn_throttled;

const BUFFER: usize = 4 << 20;

/// A UDP socket that may bind addresses that are not this host's and
/// receive datagrams for them (needs CAP_NET_ADMIN).
pub(super) fn transparent(addr: SocketAddr) -> io::Result<Socket> {
    let socket = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    socket.set_reuse_address(true)?;
    let fd = socket.as_raw_fd();
    match addr {
        SocketAddr::V4(_) => setsockopt_int(fd, libc::SOL_IP, libc::IP_TRANSPARENT, 1)?,
        SocketAddr::V6(_) => {
            socket.set_only_v6(true)?;
            setsockopt_int(fd, libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1)?;
        }
    }
    Ok(socket)
}

/// The listening socket of a tproxy inbound.
pub fn bind_listener(listen: SocketAddr) -> io::Result<Arc<UdpSocket>> {
    let socket = transparent(listen)?;
    let fd = socket.as_raw_fd();
    match listen {
        SocketAddr::V4(_) => setsockopt_int(fd, libc::SOL_IP, libc::IP_RECVORIGDSTADDR, 1)?,
        SocketAddr::V6(_) => setsockopt_int(fd, libc::SOL_IPV6, libc::IPV6_RECVORIGDSTADDR, 1)?,
    }
    let _ = socket.set_recv_buffer_size(BUFFER);
    socket.bind(&listen.into())?;
    Ok(Arc::new(UdpSocket::from_std(socket.into())?))
}

/// One datagram: its length, the client, and where the client sent it.
// nix's recvmsg wants the control buffer as a Vec.
#[allow(clippy::ptr_arg)]
fn recv_one(
    fd: RawFd,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> io::Result<(usize, SocketAddr, SocketAddr)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(cmsg), MsgFlags::MSG_DONTWAIT)
        .map_err(io::Error::from)?;
    let client = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::V4(SocketAddrV4::from(*v4)))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
                })
        })
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let original = msg
        .cmsgs()
        .map_err(io::Error::from)?
        .find_map(|c| match c {
            ControlMessageOwned::Ipv4OrigDstAddr(sin) => Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(sin.sin_addr.s_addr).into(),
                u16::from_be(sin.sin_port),
            ))),
            ControlMessageOwned::Ipv6OrigDstAddr(sin6) => Some(SocketAddr::V6(SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            ))),
            _ => None,
        })
        .ok_or_else(|| io::Error::other("datagram without its original destination"))?;
    Ok((msg.bytes, client, original))
}

/// A tproxy inbound's loop, until its socket dies.
pub async fn receive_loop(
    socket: &UdpSocket,
    flows: &mut Flows,
    events: &mut mpsc::Receiver<Event>,
) -> Result<(), SocketFailure> {
    let fd = socket.as_raw_fd();
    let mut buf = vec![0u8; 65_535];
    let mut cmsg = nix::cmsg_space!(libc::sockaddr_in6);
    loop {
        tokio::select! {
            ready = socket.readable() => {
                ready.map_err(|e| SocketFailure::new("wait", IoSide::Listener, e))?;
                // A bounded turn: endpoint events must not starve. Direct
                // sends leave a batch at a time.
                for received in 1..=256 {
                    match socket.try_io(Interest::READABLE, || recv_one(fd, &mut buf, &mut cmsg)) {
                        Ok((n, client, original)) => {
                            // Captured on its way to one of ward's own DNS
                            // listeners: answered by ward, not relayed.
                            if !flows.relay().answer_locally(original, &buf[..n], client) {
                                flows.datagram(client, original, &buf[..n]);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => match classify_io_error(&e, IoSide::Listener) {
                            IoClass::SocketDead => {
                                // What this turn already took still goes.
                                flows.flush();
                                return Err(SocketFailure::classed("receive", IoClass::SocketDead, e));
                            }
                            _ => {
                                warn_throttled!("tproxy-recv", error = %e, "tproxy receive failed");
                                break;
                            }
                        },
                    }
                    if received % BATCH == 0 {
                        flows.flush();
                    }
                }
                flows.flush();
            }
            Some(event) = events.recv() => flows.event(event),
        }
    }
}

/// The reply sink of a tproxy inbound. It holds the inbound's socket only
/// weakly, to know when the inbound is gone.
pub struct TproxyReply {
    pub pool: Arc<ReplyPool>,
    pub inbound: std::sync::Weak<UdpSocket>,
    /// Runs of answers may still leave as one segmented send.
    pub gso: std::sync::atomic::AtomicBool,
}

impl Reply for TproxyReply {
    /// Answers from one source leave together through its socket.
    fn send_many(
        &self,
        client: SocketAddr,
        answers: &[(SocketAddr, &[u8])],
        out: &mut Datagrams,
    ) -> Result<(), (usize, io::Error)> {
        if self.inbound.strong_count() == 0 {
            return Err((0, io::Error::from(io::ErrorKind::NotConnected)));
        }
        let mut start = 0;
        while start < answers.len() {
            let from = answers[start].0;
            let end = answers[start..]
                .iter()
                .position(|(f, _)| *f != from)
                .map_or(answers.len(), |n| start + n);
            let socket = self.pool.socket(from).map_err(|e| (start, e))?;
            out.clear();
            for (_, payload) in &answers[start..end] {
                out.push(Some(client), |bytes| bytes.extend_from_slice(payload));
            }
            out.send(socket.as_raw_fd(), &self.gso)
                .map_err(|(sent, e)| (start + sent, e))?;
            start = end;
        }
        Ok(())
    }
}

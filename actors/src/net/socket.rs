//! Building sockets, the one way: every socket ward makes is nonblocking
//! and close-on-exec from the `socket()` call itself.
//!
//! Listening sockets (DNS listeners, relay inbounds) are IPv6-only on IPv6
//! (so `[::]:53` and `0.0.0.0:53` can both be bound); UDP ones get large
//! buffers for bursts, TCP ones reuse addresses in TIME_WAIT. Outbound
//! sockets (a dialer's) carry the dialer's mark and device. Waiting on a
//! socket is not here (see [`super::ready`]), nor transparent sockets (the
//! tproxy inbound builds those on `new_socket`).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use nix::errno::Errno;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, UdpSocket};

/// Buffers asked for UDP listeners (the kernel may cap them).
const UDP_BUFFER: usize = 4 << 20;
const TCP_BACKLOG: i32 = 1024;

/// A socket of `kind` for `addr`'s family, nonblocking and close-on-exec
/// from the one system call (socket2 adds SOCK_CLOEXEC): no window in
/// which a forked child could inherit it.
pub(crate) fn new_socket(addr: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    Socket::new(
        Domain::for_address(addr),
        kind.nonblocking(),
        Some(protocol),
    )
}

/// The unspecified address of `addr`'s family, port 0.
fn any_of(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Sets an int socket option socket2 does not offer.
pub(crate) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the caller's fd, and an int option value of the declared size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A listening socket: IPv6-only on IPv6.
fn listening(addr: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = new_socket(addr, kind, protocol)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// A nonblocking UDP socket bound to `addr`, with large buffers.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = listening(addr, Type::DGRAM, Protocol::UDP)?;
    // Best effort: smaller buffers still work. With CAP_NET_ADMIN the
    // *FORCE options pass the system caps (net.core.rmem_max is often
    // 208 KiB, a few hundred datagrams).
    if force_buffer(&socket, libc::SO_RCVBUFFORCE).is_err() {
        let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    }
    if force_buffer(&socket, libc::SO_SNDBUFFORCE).is_err() {
        let _ = socket.set_send_buffer_size(UDP_BUFFER);
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn force_buffer(socket: &Socket, option: libc::c_int) -> io::Result<()> {
    setsockopt_int(
        socket.as_raw_fd(),
        libc::SOL_SOCKET,
        option,
        UDP_BUFFER as libc::c_int,
    )
}

/// A TCP listener bound to `addr`.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(bind_tcp_std(addr)?)
}

/// A nonblocking TCP listener bound to `addr`, not yet registered with
/// any runtime (to be served on a thread of its own).
pub fn bind_tcp_std(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = listening(addr, Type::STREAM, Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(TCP_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// An outbound socket of `kind` for `peer`'s family, with a dialer's mark
/// and device.
pub(crate) fn marked_socket(
    peer: SocketAddr,
    kind: Type,
    protocol: Protocol,
    mark: Option<u32>,
    interface: Option<&str>,
) -> io::Result<Socket> {
    let socket = new_socket(peer, kind, protocol)?;
    if let Some(mark) = mark {
        socket.set_mark(mark)?;
    }
    if let Some(interface) = interface {
        socket.bind_device(Some(interface.as_bytes()))?;
    }
    Ok(socket)
}

/// An outbound TCP socket for `peer`, to connect.
pub(crate) fn tcp_socket(
    peer: SocketAddr,
    mark: Option<u32>,
    iface: Option<&str>,
) -> io::Result<TcpSocket> {
    let socket = marked_socket(peer, Type::STREAM, Protocol::TCP, mark, iface)?;
    Ok(TcpSocket::from_std_stream(socket.into()))
}

/// An outbound UDP socket of `peer`'s family, bound to an ephemeral port.
pub(crate) fn udp_socket(
    peer: SocketAddr,
    mark: Option<u32>,
    iface: Option<&str>,
) -> io::Result<UdpSocket> {
    let socket = marked_socket(peer, Type::DGRAM, Protocol::UDP, mark, iface)?;
    socket.bind(&any_of(peer).into())?;
    UdpSocket::from_std(socket.into())
}

/// A UDP socket connected to `peer`, made at once: `connect` binds it to a
/// random ephemeral port, as `bind` to port 0 would.
pub(crate) fn connected_udp_socket(
    peer: SocketAddr,
    mark: Option<u32>,
    iface: Option<&str>,
) -> io::Result<UdpSocket> {
    let socket = marked_socket(peer, Type::DGRAM, Protocol::UDP, mark, iface)?;
    socket.connect(&peer.into())?;
    UdpSocket::from_std(socket.into())
}

/// The socket of a direct flow, which may send to destinations of both
/// families: a dual-stack IPv6 socket, or where IPv6 is off (a kernel
/// booted with `ipv6.disable=1`) one of `first`'s family. The flag says
/// which.
pub(crate) fn flow_socket(
    first: SocketAddr,
    mark: Option<u32>,
    iface: Option<&str>,
) -> io::Result<(UdpSocket, bool)> {
    let any: SocketAddr = (Ipv6Addr::UNSPECIFIED, 0).into();
    let dual = marked_socket(any, Type::DGRAM, Protocol::UDP, mark, iface).and_then(|socket| {
        socket.set_only_v6(false)?;
        socket.bind(&any.into())?;
        Ok(socket)
    });
    match dual {
        Ok(socket) => Ok((UdpSocket::from_std(socket.into())?, true)),
        Err(e) if e.raw_os_error() == Some(Errno::EAFNOSUPPORT as i32) => {
            Ok((udp_socket(first, mark, iface)?, false))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// Every socket is nonblocking and close-on-exec as it is made.
    #[test]
    fn sockets_are_nonblocking_and_close_on_exec() {
        let v4: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listener = bind_udp(v4).unwrap();
        let outbound = marked_socket(v4, Type::DGRAM, Protocol::UDP, None, None).unwrap();
        for fd in [listener.as_fd(), outbound.as_fd()] {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
            assert_ne!(flags & libc::O_NONBLOCK, 0, "nonblocking");
            let fd_flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
            assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "close-on-exec");
        }
    }
}

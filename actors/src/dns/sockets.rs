//! Listening sockets with the options a DNS server wants: IPv6 sockets are
//! IPv6-only (so `[::]:53` and `0.0.0.0:53` can both be bound), UDP gets a
//! large receive buffer for bursts, TCP reuses addresses in TIME_WAIT. The
//! UDP relay's inbounds use the same sockets.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Receive buffer asked for UDP listeners (the kernel may cap it).
const UDP_RECV_BUFFER: usize = 4 << 20;
const TCP_BACKLOG: i32 = 1024;

fn socket(addr: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A non-blocking UDP socket bound to `addr`.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = socket(addr, Type::DGRAM, Protocol::UDP)?;
    // Best effort: smaller buffers still work. With CAP_NET_ADMIN the
    // *FORCE options pass the system caps (net.core.rmem_max is often
    // 208 KiB, a few hundred datagrams).
    if force_buffer(&socket, libc::SO_RCVBUFFORCE).is_err() {
        let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    }
    if force_buffer(&socket, libc::SO_SNDBUFFORCE).is_err() {
        let _ = socket.set_send_buffer_size(UDP_RECV_BUFFER);
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn force_buffer(socket: &Socket, option: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    setsockopt_int(
        socket.as_raw_fd(),
        libc::SOL_SOCKET,
        option,
        UDP_RECV_BUFFER as libc::c_int,
    )
}

/// Sets an int socket option socket2 does not offer.
pub(crate) fn setsockopt_int(
    fd: std::os::fd::RawFd,
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

/// A TCP listener bound to `addr`.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = socket(addr, Type::STREAM, Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(TCP_BACKLOG)?;
    tokio::net::TcpListener::from_std(socket.into())
}

//! Waiting on a connected UDP socket for a datagram or an error. A peer's
//! ICMP "port unreachable" raises EPOLLERR alone, which a wait for
//! readability never sees: its owner would learn of it only at its next
//! send, or at its deadline. Used by a DNS query's socket, a probe's, and a
//! dialer's UDP sessions; building sockets is [`super::socket`]'s job.

use std::io;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Waits until `socket` may have a datagram, or fails with the error an
/// ICMP message left on it, read (and cleared) with `SO_ERROR`.
pub async fn readable_or_error(socket: &UdpSocket) -> io::Result<()> {
    loop {
        let ready = socket.ready(Interest::READABLE | Interest::ERROR).await?;
        if ready.is_readable() || ready.is_read_closed() {
            return Ok(());
        }
        // No error left clears the readiness: the next wait is a real one.
        let pending = socket.try_io(Interest::ERROR, || {
            socket
                .take_error()?
                .ok_or_else(|| io::ErrorKind::WouldBlock.into())
        });
        match pending {
            Ok(error) => return Err(error),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

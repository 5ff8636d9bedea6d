//! What an I/O error means, decided once at the socket that saw it.
//!
//! The same errno means different things on different sockets: ECONNREFUSED
//! on a listening UDP socket is an ICMP echo of an earlier reply (ignore it),
//! on a dial it means the path is broken. So classification takes the side of
//! the socket. Callers act on the class, never on the errno.
//!
//! A socket error that ends its actor travels to the supervisor as a
//! [`SocketFailure`]: the error itself, what the socket was doing, and the
//! class decided here.

use std::io;

use nix::errno::Errno;
use ward_supervision::{ChildFailure, Classify};

/// Which socket saw the error, and what it was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoSide {
    /// ward's own listening or receiving socket (a DNS listener, an inbound,
    /// the admin socket).
    Listener,
    /// `accept()` on a listening socket: errors about the connection being
    /// accepted (a client that gave up) are not the listener's.
    Accept,
    /// Establishing an outbound path: connecting to an upstream or a proxy,
    /// a proxy handshake.
    Dial,
    /// I/O on an established outbound session or tunnel.
    Session,
    /// Closing something we are done with.
    Teardown,
}

/// What the error means for the actor that owns the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoClass {
    /// The other end went away (EPIPE, ECONNRESET, EOF from a tunnel,
    /// ECONNABORTED): this session is over.
    PeerGone,
    /// Our socket is unusable (ENOTCONN, EBADF): rebuild it.
    SocketDead,
    /// Pressure or a passing condition (EAGAIN, ENOBUFS, EINTR, EMFILE): back
    /// off, do not blame the path.
    Transient,
    /// The outbound path is broken (timeout, refused by a proxy,
    /// unreachable): blame the dialer.
    PathFailed,
    /// Nothing went wrong that anyone should hear about (cancelled, closed
    /// by us).
    Normal,
}

impl IoClass {
    /// True when the actor owning the socket should end (abnormally).
    pub fn ends_owner(self) -> bool {
        matches!(
            self,
            IoClass::PeerGone | IoClass::SocketDead | IoClass::PathFailed
        )
    }

    /// A short stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            IoClass::PeerGone => "peer_gone",
            IoClass::SocketDead => "socket_dead",
            IoClass::Transient => "transient",
            IoClass::PathFailed => "path_failed",
            IoClass::Normal => "normal",
        }
    }
}

/// A socket error that ends the actor owning the socket.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SocketFailure {
    /// What the socket was doing (`bind udp 127.0.0.1:53`, `receive`).
    pub what: String,
    pub class: IoClass,
    #[source]
    pub source: io::Error,
}

impl SocketFailure {
    /// The error classified for the side of the socket that saw it.
    pub fn new(what: impl Into<String>, side: IoSide, source: io::Error) -> Self {
        let class = classify_io_error(&source, side);
        Self::classed(what, class, source)
    }

    /// An error whose class the caller already decided.
    pub fn classed(what: impl Into<String>, class: IoClass, source: io::Error) -> Self {
        Self {
            what: what.into(),
            class,
            source,
        }
    }
}

impl Classify for SocketFailure {
    fn class(&self) -> &'static str {
        self.class.label()
    }
}

impl From<SocketFailure> for ChildFailure {
    fn from(failure: SocketFailure) -> Self {
        ChildFailure::of(failure)
    }
}

/// Classifies an I/O error seen on a socket of the given side.
pub fn classify_io_error(err: &io::Error, side: IoSide) -> IoClass {
    if side == IoSide::Teardown {
        return IoClass::Normal;
    }
    match err.raw_os_error().map(Errno::from_raw) {
        Some(errno) => classify_errno(errno, side),
        None => classify_kind(err.kind(), side),
    }
}

fn classify_errno(errno: Errno, side: IoSide) -> IoClass {
    use Errno::*;
    if side == IoSide::Accept {
        return match errno {
            EBADF | ENOTSOCK | EINVAL | EOPNOTSUPP => IoClass::SocketDead,
            _ => IoClass::Transient,
        };
    }
    match errno {
        EAGAIN | EINTR | ENOBUFS | ENOMEM | EMFILE | ENFILE => IoClass::Transient,
        ENOTCONN | EBADF | ENOTSOCK => IoClass::SocketDead,
        ECONNABORTED if side == IoSide::Listener => IoClass::SocketDead,
        EPIPE | ECONNRESET | ECONNABORTED => match side {
            IoSide::Dial => IoClass::PathFailed,
            _ => IoClass::PeerGone,
        },
        // On a listener this is ICMP port-unreachable for an earlier reply.
        ECONNREFUSED => match side {
            IoSide::Listener => IoClass::Transient,
            IoSide::Dial => IoClass::PathFailed,
            _ => IoClass::PeerGone,
        },
        ETIMEDOUT | EHOSTUNREACH | ENETUNREACH | EHOSTDOWN | ENETDOWN => match side {
            IoSide::Listener => IoClass::Transient,
            _ => IoClass::PathFailed,
        },
        // Local ports or addresses exhausted: ours, not the path's.
        EADDRINUSE | EADDRNOTAVAIL => match side {
            IoSide::Listener => IoClass::SocketDead,
            _ => IoClass::Transient,
        },
        // A datagram to a family the flow's socket cannot send to (IPv6
        // off on this host): that datagram is lost, the flow is not. On a
        // dial the path cannot reach the family at all.
        EAFNOSUPPORT => match side {
            IoSide::Dial => IoClass::PathFailed,
            _ => IoClass::Transient,
        },
        // A firewall rule refused the packet: not the path's fault, not fatal.
        EPERM | EACCES => match side {
            IoSide::Listener => IoClass::SocketDead,
            IoSide::Dial => IoClass::PathFailed,
            _ => IoClass::Transient,
        },
        _ => match side {
            IoSide::Listener => IoClass::Transient,
            _ => IoClass::PathFailed,
        },
    }
}

fn classify_kind(kind: io::ErrorKind, side: IoSide) -> IoClass {
    use io::ErrorKind::*;
    if side == IoSide::Accept {
        return IoClass::Transient;
    }
    match kind {
        WouldBlock | Interrupted | OutOfMemory => IoClass::Transient,
        UnexpectedEof | BrokenPipe | ConnectionReset | ConnectionAborted => match side {
            IoSide::Dial => IoClass::PathFailed,
            IoSide::Listener => IoClass::SocketDead,
            _ => IoClass::PeerGone,
        },
        NotConnected => IoClass::SocketDead,
        TimedOut | ConnectionRefused | HostUnreachable | NetworkUnreachable => match side {
            IoSide::Listener => IoClass::Transient,
            _ => IoClass::PathFailed,
        },
        // Malformed data from the other end ends that session, nothing more.
        InvalidData => match side {
            IoSide::Listener => IoClass::Transient,
            IoSide::Dial => IoClass::PathFailed,
            _ => IoClass::PeerGone,
        },
        _ => match side {
            IoSide::Listener => IoClass::Transient,
            _ => IoClass::PathFailed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IoClass::*;
    use IoSide::*;

    fn os(errno: Errno) -> io::Error {
        io::Error::from_raw_os_error(errno as i32)
    }

    #[test]
    fn errno_table_by_side() {
        let table: &[(Errno, [IoClass; 3])] = &[
            //            Listener      Dial        Session
            (Errno::EPIPE, [PeerGone, PathFailed, PeerGone]),
            (Errno::ECONNRESET, [PeerGone, PathFailed, PeerGone]),
            (Errno::ECONNABORTED, [SocketDead, PathFailed, PeerGone]),
            (Errno::ENOTCONN, [SocketDead, SocketDead, SocketDead]),
            (Errno::EBADF, [SocketDead, SocketDead, SocketDead]),
            (Errno::EAGAIN, [Transient, Transient, Transient]),
            (Errno::EINTR, [Transient, Transient, Transient]),
            (Errno::ENOBUFS, [Transient, Transient, Transient]),
            (Errno::EMFILE, [Transient, Transient, Transient]),
            (Errno::ENFILE, [Transient, Transient, Transient]),
            (Errno::ECONNREFUSED, [Transient, PathFailed, PeerGone]),
            (Errno::ETIMEDOUT, [Transient, PathFailed, PathFailed]),
            (Errno::EHOSTUNREACH, [Transient, PathFailed, PathFailed]),
            (Errno::ENETUNREACH, [Transient, PathFailed, PathFailed]),
            (Errno::EADDRINUSE, [SocketDead, Transient, Transient]),
            (Errno::EAFNOSUPPORT, [Transient, PathFailed, Transient]),
        ];
        for (errno, expected) in table {
            for (side, want) in [Listener, Dial, Session].into_iter().zip(expected) {
                assert_eq!(
                    classify_io_error(&os(*errno), side),
                    *want,
                    "{errno} on {side:?}"
                );
            }
        }
    }

    #[test]
    fn accept_survives_everything_but_a_dead_listener() {
        for errno in [
            Errno::ECONNABORTED,
            Errno::EMFILE,
            Errno::ENFILE,
            Errno::ENOBUFS,
            Errno::EPROTO,
            Errno::EPERM,
        ] {
            assert_eq!(classify_io_error(&os(errno), Accept), Transient, "{errno}");
        }
        for errno in [Errno::EBADF, Errno::EINVAL, Errno::ENOTSOCK] {
            assert_eq!(classify_io_error(&os(errno), Accept), SocketDead, "{errno}");
        }
    }

    #[test]
    fn teardown_is_never_a_failure() {
        for errno in [
            Errno::EPIPE,
            Errno::ECONNRESET,
            Errno::ETIMEDOUT,
            Errno::EBADF,
        ] {
            assert_eq!(classify_io_error(&os(errno), Teardown), Normal);
        }
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(classify_io_error(&eof, Teardown), Normal);
    }

    #[test]
    fn errors_without_errno_classify_by_kind() {
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(classify_io_error(&eof, Session), PeerGone);
        assert_eq!(classify_io_error(&eof, Dial), PathFailed);
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(classify_io_error(&timeout, Dial), PathFailed);
        assert_eq!(classify_io_error(&timeout, Listener), Transient);
    }

    #[test]
    fn only_fatal_classes_end_the_owner() {
        assert!(PeerGone.ends_owner() && SocketDead.ends_owner() && PathFailed.ends_owner());
        assert!(!Transient.ends_owner() && !Normal.ends_owner());
    }
}

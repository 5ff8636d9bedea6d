//! Who is to blame for a failure seen on a path: the dialer (its health
//! hears of it), the destination behind it, or nobody.
//!
//! The socket that saw the error classifies it once ([`IoClass`]); this
//! adds what that socket cannot know: how far the dial had got, and whether
//! a proxy sat in between. A reset through a SOCKS5 node with queries in
//! flight is the node dying; the same reset on a direct connection is the
//! server's doing. Teardown errors, cancellations and short writes are
//! never failures (dae marked healthy nodes dead from exactly those).

use std::fmt;
use std::io;

use nix::errno::Errno;

use super::socks5::Socks5Error;
use crate::io_class::{classify_io_error, IoClass, IoSide};

/// How far a use of the path had got when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Reaching the proxy node itself (TCP connect to it).
    ProxyConnect,
    /// The proxy protocol's handshake, up to and including its reply.
    ProxyHandshake,
    /// Connecting to the destination (direct), or the proxy's reply about
    /// the destination.
    TargetConnect,
    /// I/O on an established connection or association.
    Session,
    /// Closing something we are done with.
    Teardown,
    /// The owner gave up on it (deadline, shutdown).
    Cancelled,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::ProxyConnect => "proxy_connect",
            Stage::ProxyHandshake => "proxy_handshake",
            Stage::TargetConnect => "target_connect",
            Stage::Session => "session",
            Stage::Teardown => "teardown",
            Stage::Cancelled => "cancelled",
        }
    }

    /// A failure that reaching the node itself failed: every track of the
    /// dialer shares it (a UDP association needs the same TCP connection).
    pub fn reaches_node(self) -> bool {
        matches!(self, Stage::ProxyConnect | Stage::ProxyHandshake)
    }
}

/// Whose fault a failure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The dialer's path is broken: its health counts it.
    Path,
    /// The destination refused or closed; the path works.
    Target,
    /// Nothing anyone should count (teardown, cancellation, local pressure).
    Nobody,
}

/// Whether the path goes through a proxy node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    Direct,
    Proxy,
}

/// The reason of a dial whose deadline passed.
const TIMED_OUT: &str = "timed out";

/// A classified failure, as an owner reports it to its dialer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub class: IoClass,
    pub stage: Stage,
    pub blame: Blame,
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {} ({})",
            self.reason,
            self.stage.label(),
            self.class.label()
        )
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// An I/O error seen at `stage` on a path of kind `hop`.
    /// `in_flight`: work was outstanding on the session when it broke (an
    /// idle connection closed by the server is no failure of the path).
    pub fn io(err: &io::Error, stage: Stage, hop: Hop, in_flight: bool) -> Failure {
        let side = match stage {
            Stage::Session => IoSide::Session,
            Stage::Teardown | Stage::Cancelled => IoSide::Teardown,
            _ => IoSide::Dial,
        };
        let class = match err.kind() {
            io::ErrorKind::UnexpectedEof if side != IoSide::Teardown => IoClass::PeerGone,
            _ => classify_io_error(err, side),
        };
        let refused = err.raw_os_error() == Some(Errno::ECONNREFUSED as i32)
            || err.kind() == io::ErrorKind::ConnectionRefused;
        let timed_out = err.raw_os_error() == Some(Errno::ETIMEDOUT as i32)
            || err.kind() == io::ErrorKind::TimedOut;
        let blame = match (stage, class) {
            (Stage::Teardown | Stage::Cancelled, _) => Blame::Nobody,
            (_, IoClass::Transient | IoClass::Normal) => Blame::Nobody,
            // A short write is the encapsulating protocol's business.
            _ if err.kind() == io::ErrorKind::WriteZero => Blame::Nobody,
            (Stage::ProxyConnect | Stage::ProxyHandshake, _) => Blame::Path,
            // Direct: a refusal comes from the destination itself, and a
            // destination that does not answer says nothing of the path.
            (Stage::TargetConnect, _) if hop == Hop::Direct && (refused || timed_out) => {
                Blame::Target
            }
            (Stage::TargetConnect, _) => Blame::Path,
            (Stage::Session, _) => {
                return Failure::session(class, err.to_string(), hop, in_flight);
            }
        };
        Failure {
            class,
            stage,
            blame,
            reason: err.to_string(),
        }
    }

    /// An established session that broke, as its owner classified it.
    pub fn session(class: IoClass, reason: String, hop: Hop, in_flight: bool) -> Failure {
        let blame = match class {
            IoClass::Transient | IoClass::Normal | IoClass::SocketDead => Blame::Nobody,
            _ if hop == Hop::Proxy && in_flight => Blame::Path,
            _ => Blame::Target,
        };
        Failure {
            class,
            stage: Stage::Session,
            blame,
            reason,
        }
    }

    /// A UDP session framed in a stream to the node ended. The stream is
    /// the node's alone (no destination sits at its other end): the path's
    /// fault when it sent what does not parse or answers were awaited,
    /// nobody's when an idle session was closed.
    pub fn node_stream_ended(err: &io::Error, in_flight: bool) -> Failure {
        let mut failure = Failure::io(err, Stage::Session, Hop::Proxy, in_flight);
        if err.kind() == io::ErrorKind::InvalidData {
            failure.blame = Blame::Path;
        } else if failure.blame == Blame::Target {
            failure.blame = Blame::Nobody;
        }
        failure
    }

    /// A SOCKS5 handshake or request that failed.
    pub fn socks5(err: &Socks5Error) -> Failure {
        let (stage, blame) = match err {
            Socks5Error::Io(e) => return Failure::io(e, Stage::ProxyHandshake, Hop::Proxy, true),
            Socks5Error::Reply(_) if err.class() == IoClass::PeerGone => {
                (Stage::TargetConnect, Blame::Target)
            }
            Socks5Error::Reply(_) => (Stage::TargetConnect, Blame::Path),
            _ => (Stage::ProxyHandshake, Blame::Path),
        };
        Failure {
            class: err.class(),
            stage,
            blame,
            reason: err.to_string(),
        }
    }

    /// The deadline of a dial passed. A destination that does not answer
    /// in time says nothing against the path (the re-probe it triggers
    /// checks the path); a node that does not is the path.
    pub fn timeout(stage: Stage) -> Failure {
        let blame = match stage {
            Stage::Cancelled | Stage::Teardown => Blame::Nobody,
            Stage::TargetConnect => Blame::Target,
            _ => Blame::Path,
        };
        Failure {
            class: IoClass::PathFailed,
            stage,
            blame,
            reason: TIMED_OUT.to_string(),
        }
    }

    /// True for a failure made by [`Failure::timeout`].
    pub fn is_timeout(&self) -> bool {
        self.reason == TIMED_OUT
    }

    /// A node's protocol went wrong (a reply that does not decrypt, a
    /// certificate that does not verify, a node that cannot be set up):
    /// the path's.
    pub fn node(stage: Stage, reason: String) -> Failure {
        Failure {
            class: IoClass::PathFailed,
            stage,
            blame: Blame::Path,
            reason,
        }
    }

    /// Something on this host failed (a name lookup): nobody's path.
    pub fn local(reason: String) -> Failure {
        Failure {
            class: IoClass::Transient,
            stage: Stage::Cancelled,
            blame: Blame::Nobody,
            reason,
        }
    }

    /// A SOCKS5 association's control connection closed: the node ended it.
    pub fn association_closed(err: Option<&io::Error>) -> Failure {
        Failure {
            class: IoClass::PeerGone,
            stage: Stage::Session,
            blame: Blame::Path,
            reason: match err {
                Some(e) => format!("UDP association control connection failed: {e}"),
                None => "UDP association control connection closed by the node".to_string(),
            },
        }
    }

    pub fn blames_path(&self) -> bool {
        self.blame == Blame::Path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialer::socks5::ReplyCode;
    use Blame::*;
    use Hop::*;
    use Stage::*;

    fn os(errno: Errno) -> io::Error {
        io::Error::from_raw_os_error(errno as i32)
    }

    #[test]
    fn a_stream_carrying_udp_is_the_nodes_alone() {
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        let garbage = io::Error::new(io::ErrorKind::InvalidData, "malformed frame");
        let reset = os(Errno::ECONNRESET);
        assert_eq!(Failure::node_stream_ended(&eof, true).blame, Path);
        assert_eq!(Failure::node_stream_ended(&reset, true).blame, Path);
        // An idle session closed: nobody's, and never the destination's.
        assert_eq!(Failure::node_stream_ended(&eof, false).blame, Nobody);
        assert_eq!(Failure::node_stream_ended(&reset, false).blame, Nobody);
        // What does not parse is the node's, in flight or not.
        assert_eq!(Failure::node_stream_ended(&garbage, false).blame, Path);
    }

    #[test]
    fn blame_table() {
        let eof = || io::Error::from(io::ErrorKind::UnexpectedEof);
        let short = || io::Error::from(io::ErrorKind::WriteZero);
        #[rustfmt::skip]
        let table: Vec<(io::Error, Stage, Hop, bool, Blame)> = vec![
            // Reaching the node: anything but local pressure is the path.
            (os(Errno::ECONNREFUSED), ProxyConnect, Proxy, false, Path),
            (os(Errno::ETIMEDOUT), ProxyConnect, Proxy, false, Path),
            (os(Errno::EHOSTUNREACH), ProxyConnect, Proxy, false, Path),
            (os(Errno::ECONNRESET), ProxyHandshake, Proxy, false, Path),
            (eof(), ProxyHandshake, Proxy, false, Path),
            (os(Errno::EMFILE), ProxyConnect, Proxy, false, Nobody),
            (os(Errno::EADDRNOTAVAIL), ProxyConnect, Proxy, false, Nobody),
            (os(Errno::ENOBUFS), ProxyHandshake, Proxy, false, Nobody),
            // Direct to the destination: a refusal is the destination's.
            (os(Errno::ECONNREFUSED), TargetConnect, Direct, false, Target),
            (os(Errno::ENETUNREACH), TargetConnect, Direct, false, Path),
            (os(Errno::ETIMEDOUT), TargetConnect, Direct, false, Target),
            (os(Errno::EINTR), TargetConnect, Direct, false, Nobody),
            // An established tunnel through a node breaking under load.
            (os(Errno::ECONNRESET), Session, Proxy, true, Path),
            (os(Errno::EPIPE), Session, Proxy, true, Path),
            (eof(), Session, Proxy, true, Path),
            // ...but not when nothing was outstanding: an idle close.
            (eof(), Session, Proxy, false, Target),
            // A direct session's peer closing is the server's doing.
            (os(Errno::ECONNRESET), Session, Direct, true, Target),
            (eof(), Session, Direct, true, Target),
            // Our own socket, local pressure, short writes: nobody's.
            (os(Errno::EBADF), Session, Proxy, true, Nobody),
            (os(Errno::EAGAIN), Session, Proxy, true, Nobody),
            (short(), Session, Proxy, true, Nobody),
            // Teardown and cancellation never count.
            (os(Errno::EPIPE), Teardown, Proxy, true, Nobody),
            (os(Errno::ECONNRESET), Teardown, Direct, true, Nobody),
            (eof(), Cancelled, Proxy, true, Nobody),
            (os(Errno::ETIMEDOUT), Cancelled, Proxy, true, Nobody),
        ];
        for (err, stage, hop, in_flight, want) in table {
            let failure = Failure::io(&err, stage, hop, in_flight);
            assert_eq!(
                failure.blame, want,
                "{err} at {stage:?} via {hop:?} (in flight: {in_flight})"
            );
        }
    }

    #[test]
    fn socks5_errors_blame() {
        let cases = [
            (Socks5Error::Closed, Path),
            (Socks5Error::NoAcceptableMethod, Path),
            (Socks5Error::AuthRejected, Path),
            (Socks5Error::Protocol("version 4".into()), Path),
            (Socks5Error::Reply(ReplyCode::GeneralFailure), Path),
            (Socks5Error::Reply(ReplyCode::NetworkUnreachable), Path),
            (Socks5Error::Reply(ReplyCode::ConnectionRefused), Target),
            (Socks5Error::Io(os(Errno::ECONNRESET)), Path),
            (Socks5Error::Io(os(Errno::EMFILE)), Nobody),
        ];
        for (err, want) in cases {
            assert_eq!(Failure::socks5(&err).blame, want, "{err}");
        }
    }

    #[test]
    fn timeouts_blame_the_node_not_the_destination() {
        assert_eq!(Failure::timeout(ProxyConnect).blame, Path);
        assert_eq!(Failure::timeout(ProxyHandshake).blame, Path);
        assert_eq!(Failure::timeout(TargetConnect).blame, Target);
        assert_eq!(Failure::timeout(Session).blame, Path);
        assert_eq!(Failure::local("lookup".into()).blame, Nobody);
        assert_eq!(Failure::timeout(Cancelled).blame, Nobody);
        assert!(Failure::association_closed(None).blames_path());
        assert!(ProxyHandshake.reaches_node() && !Session.reaches_node());
    }
}

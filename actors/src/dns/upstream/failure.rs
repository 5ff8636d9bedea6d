//! Why an upstream's actor ends, or cannot do part of its job, as a typed
//! value: a configured transport it cannot set up (class `config`), a UDP
//! socket or association that stopped working (the socket's or the path's
//! class), a connection it could not start. An exit reaches the supervisor
//! as a [`ChildFailure`] carrying this error; what does not end the actor
//! (a connection that cannot start, UDP sessions that cannot open yet) is
//! logged with it. Why one query got no answer is [`super::UpstreamError`].

use std::io;
use std::path::PathBuf;

use ward_supervision::{ChildFailure, Classify};

use super::tls::TlsError;
use crate::dialer::Failure;
use crate::io_class::{IoClass, SocketFailure};

/// The class of a configured transport the actor cannot set up.
const CONFIG: &str = "config";
/// The class of a child actor that could not be spawned (as the supervisor
/// names a failed spawn).
const SPAWN: &str = "spawn";

#[derive(Debug, thiserror::Error)]
pub enum UpstreamFailure {
    #[error("{}: {source}", path.display())]
    ResolvConf { path: PathBuf, source: io::Error },
    #[error("{}: no usable nameserver lines", path.display())]
    NoNameservers { path: PathBuf },
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Every dialer of the upstream's `via` is excluded or gone.
    #[error("no dialer in {via:?} to reach the upstream")]
    NoDialer { via: String },
    /// A UDP session through a dialer could not be opened, or its
    /// association ended (the node closed it, its relay is gone).
    #[error("UDP session through {dialer}: {failure}")]
    Path { dialer: String, failure: Failure },
    /// A UDP socket of the upstream is unusable.
    #[error(transparent)]
    Socket(#[from] SocketFailure),
    #[error("the upstream has no stream transport")]
    NoStreams,
    #[error("cannot start a connection: {0}")]
    Spawn(#[from] ractor::SpawnErr),
}

impl Classify for UpstreamFailure {
    fn class(&self) -> &'static str {
        match self {
            UpstreamFailure::ResolvConf { .. }
            | UpstreamFailure::NoNameservers { .. }
            | UpstreamFailure::Tls(_)
            | UpstreamFailure::NoStreams => CONFIG,
            UpstreamFailure::NoDialer { .. } => IoClass::PathFailed.label(),
            UpstreamFailure::Path { failure, .. } => failure.class.label(),
            UpstreamFailure::Socket(socket) => socket.class(),
            UpstreamFailure::Spawn(_) => SPAWN,
        }
    }
}

impl From<UpstreamFailure> for ChildFailure {
    fn from(failure: UpstreamFailure) -> Self {
        ChildFailure::of(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::ActorProcessingErr;

    #[test]
    fn a_config_failure_reaches_the_supervisor_typed_and_classed_config() {
        let failure = UpstreamFailure::NoNameservers {
            path: "/etc/resolv.conf".into(),
        };
        let boxed: ActorProcessingErr = ChildFailure::from(failure).into();
        let back = ChildFailure::from_processing_err(boxed);
        assert_eq!(back.class(), "config");
        assert!(matches!(
            back.downcast_ref::<UpstreamFailure>(),
            Some(UpstreamFailure::NoNameservers { .. })
        ));
    }

    #[test]
    fn a_dead_udp_socket_is_classed_by_the_socket() {
        let dead = io::Error::from_raw_os_error(libc::EBADF);
        let failure = UpstreamFailure::from(SocketFailure::new(
            "UDP receive",
            crate::io_class::IoSide::Session,
            dead,
        ));
        assert_eq!(ChildFailure::from(failure).class(), "socket_dead");
    }
}

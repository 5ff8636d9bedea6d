//! The one accept loop of ward's listening stream sockets: the admin
//! socket, the metrics server, DNS over TCP and the SOCKS5 inbound.
//!
//! One error policy for all of them: an error about the connection being
//! accepted (a client that gave up, a firewall) or about a passing
//! shortage (EMFILE, ENFILE, ENOBUFS) is logged through the throttle and
//! waited out with the jittered backoff; only a dead listening socket
//! (EBADF, EINVAL, ENOTSOCK) ends the loop, as a [`SocketFailure`] for the
//! supervisor. What to do with a connection (serve it, refuse it past a
//! cap) is the caller's `admit`, which must not wait; a caller whose
//! connections are capped in total waits for room before each accept
//! ([`accept_paced`]), so past the cap new connections wait in the
//! kernel's queue and hold none of ward's descriptors.

use std::future::{poll_fn, Future};
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use ward_supervision::{Backoff, BackoffPolicy};

use crate::io_class::{classify_io_error, IoClass, IoSide, SocketFailure};
use crate::warn_throttled;

/// Waits after a failed accept: short (a client that gave up), growing
/// while the failures last (out of descriptors), never long.
const ACCEPT_BACKOFF: BackoffPolicy =
    BackoffPolicy::doubling(Duration::from_millis(10), Duration::from_secs(1));

/// A listening stream socket.
pub trait Listener: Send + Sync {
    type Stream: Send + 'static;
    type Peer: Send + 'static;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, Self::Peer)>>;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    type Peer = std::net::SocketAddr;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, Self::Peer)>> {
        tokio::net::TcpListener::poll_accept(self, cx)
    }
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    type Peer = tokio::net::unix::SocketAddr;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, Self::Peer)>> {
        tokio::net::UnixListener::poll_accept(self, cx)
    }
}

/// Accepts connections on `listener` and hands each to `admit` until the
/// listening socket is dead; what ended it. `what` names the listener in
/// logs (`dns tcp 127.0.0.1:53`).
pub async fn accept_each<L: Listener>(
    listener: &L,
    what: &str,
    admit: impl FnMut(L::Stream, L::Peer),
) -> SocketFailure {
    accept_paced(listener, what, || std::future::ready(()), admit).await
}

/// [`accept_each`], waiting for `room` before each accept.
pub async fn accept_paced<L: Listener, R: Future<Output = ()>>(
    listener: &L,
    what: &str,
    mut room: impl FnMut() -> R,
    mut admit: impl FnMut(L::Stream, L::Peer),
) -> SocketFailure {
    let mut backoff = Backoff::new(ACCEPT_BACKOFF);
    loop {
        room().await;
        match poll_fn(|cx| listener.poll_accept(cx)).await {
            Ok((stream, peer)) => {
                backoff.succeed();
                admit(stream, peer);
            }
            Err(e) => match classify_io_error(&e, IoSide::Accept) {
                IoClass::SocketDead => {
                    return SocketFailure::classed(
                        format!("accept on {what}"),
                        IoClass::SocketDead,
                        e,
                    )
                }
                _ => {
                    let wait = backoff.fail();
                    warn_throttled!(what, listener = what, error = %e,
                        retry_in_ms = wait.as_millis() as u64, "accept failed; backing off");
                    tokio::time::sleep(wait).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A listener that fails as told, then accepts.
    struct Scripted {
        errors: std::sync::Mutex<Vec<i32>>,
        accepted: AtomicUsize,
    }

    impl Listener for Scripted {
        type Stream = ();
        type Peer = ();

        fn poll_accept(&self, _cx: &mut Context<'_>) -> Poll<io::Result<((), ())>> {
            match self.errors.lock().unwrap().pop() {
                Some(errno) => Poll::Ready(Err(io::Error::from_raw_os_error(errno))),
                None if self.accepted.fetch_add(1, Ordering::SeqCst) < 3 => {
                    Poll::Ready(Ok(((), ())))
                }
                None => Poll::Ready(Err(io::Error::from_raw_os_error(libc::EBADF))),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn passing_errors_are_waited_out_and_only_a_dead_socket_ends_the_loop() {
        let listener = Arc::new(Scripted {
            // Popped from the end: out of descriptors twice, a client
            // that gave up, a firewall.
            errors: std::sync::Mutex::new(vec![
                libc::EPERM,
                libc::ECONNABORTED,
                libc::EMFILE,
                libc::EMFILE,
            ]),
            accepted: AtomicUsize::new(0),
        });
        let started = tokio::time::Instant::now();
        let mut admitted = 0;
        let failure = accept_each(&*listener, "test", |(), ()| admitted += 1).await;
        assert_eq!(admitted, 3);
        assert_eq!(failure.class, IoClass::SocketDead);
        // Four waits of 10, 20, 40, 80 ms (jitter up to 20% more).
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_millis(190),
            "{waited:?}"
        );
    }
}

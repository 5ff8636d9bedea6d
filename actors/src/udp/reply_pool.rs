//! The sockets a tproxy inbound answers through: one transparent socket
//! per address answers come from (the original destination of the
//! client's datagrams), shared by every flow of the inbound.
//!
//! Those addresses are chosen by whoever the clients talk to, so the pool
//! is capped (`udp.reply_sockets`): at the cap the socket used least
//! recently is closed to make room, and counted. So is its memory of
//! addresses whose bind failed lately. It does not send: the inbound's
//! reply sink ([`super::tproxy::TproxyReply`]) does.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::metrics::UdpMetrics;
use super::tproxy::transparent;
use crate::lru::Lru;
use crate::warn_throttled;

/// A reply socket unused this long is closed.
const REPLY_IDLE: Duration = Duration::from_secs(60);
/// A failed bind of a reply address is not tried again for this long.
const BIND_RETRY: Duration = Duration::from_secs(5);

/// How the pool gets a socket for an address (tests bind without the
/// privilege a transparent socket needs).
type Bind = Box<dyn Fn(SocketAddr) -> io::Result<UdpSocket> + Send + Sync>;

struct Bound {
    socket: Arc<UdpSocket>,
    used: Instant,
}

/// Both maps are kept in least-recently-used order, so the send path
/// pays O(1) for a hit, a miss and an eviction alike: expiring idle
/// sockets or old failures is popping from the old end while it is
/// expired, and at the cap the entry to give up is that end. (Scanning
/// for the oldest `used` at the cap would cost O(cap) for every new
/// address under exactly the load the cap is for.)
struct Pool {
    sockets: Lru<SocketAddr, Bound>,
    failed: Lru<SocketAddr, Instant>,
}

/// Replies from the original destination: one transparent socket per
/// address answers come from, at most `cap` of them, closed when idle or
/// when the least recently used must make room; a bind that failed is not
/// retried for a while.
pub struct ReplyPool {
    pool: Mutex<Pool>,
    metrics: Arc<UdpMetrics>,
    bind: Bind,
}

impl ReplyPool {
    /// A pool of at most `cap` transparent sockets (and as many failed
    /// addresses remembered).
    pub fn new(cap: usize, metrics: Arc<UdpMetrics>) -> ReplyPool {
        Self::with_bind(cap, metrics, Box::new(bind_transparent))
    }

    fn with_bind(cap: usize, metrics: Arc<UdpMetrics>, bind: Bind) -> ReplyPool {
        ReplyPool {
            pool: Mutex::new(Pool {
                sockets: Lru::new(cap),
                failed: Lru::new(cap),
            }),
            metrics,
            bind,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The socket answers from `from` leave by: the pooled one, or a new
    /// one bound to `from`.
    pub fn socket(&self, from: SocketAddr) -> io::Result<Arc<UdpSocket>> {
        let mut pool = self.lock();
        let now = Instant::now();
        self.expire(&mut pool, now);
        if let Some(bound) = pool.sockets.get(&from) {
            bound.used = now;
            return Ok(bound.socket.clone());
        }
        if pool.failed.peek(&from).is_some() {
            return Err(io::Error::from(io::ErrorKind::AddrNotAvailable));
        }
        match (self.bind)(from) {
            Ok(socket) => {
                let socket = Arc::new(socket);
                let bound = Bound {
                    socket: socket.clone(),
                    used: now,
                };
                // The evicted socket closes here, unless a send still
                // holds it (then when that send is done).
                match pool.sockets.insert(from, bound) {
                    Some(_) => {
                        self.metrics.reply_sockets_evicted.inc();
                    }
                    None => {
                        self.metrics.reply_sockets.inc();
                    }
                }
                Ok(socket)
            }
            Err(e) => {
                warn_throttled!("tproxy-reply-bind", %from, error = %e, "cannot bind a reply socket to the original destination");
                if pool.failed.insert(from, now).is_some() {
                    self.metrics.reply_binds_failed_evicted.inc();
                }
                Err(e)
            }
        }
    }

    /// Closes the sockets idle for [`REPLY_IDLE`] and forgets the failures
    /// older than [`BIND_RETRY`]: the old ends of both maps.
    fn expire(&self, pool: &mut Pool, now: Instant) {
        while pool
            .sockets
            .oldest()
            .is_some_and(|(_, b)| now.duration_since(b.used) >= REPLY_IDLE)
        {
            pool.sockets.pop_oldest();
            self.metrics.reply_sockets.dec();
        }
        while pool
            .failed
            .oldest()
            .is_some_and(|(_, at)| now.duration_since(*at) >= BIND_RETRY)
        {
            pool.failed.pop_oldest();
        }
    }

    /// Reply sockets open now (the gauge says it to everyone else).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().sockets.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for ReplyPool {
    fn drop(&mut self) {
        // Its sockets close with it (the inbound's socket failed and the
        // inbound is built again, or ward stops).
        let open = self.lock().sockets.len();
        self.metrics.reply_sockets.dec_by(open as i64);
    }
}

/// A plain non-blocking socket bound to `from`: replies never wait, and a
/// tokio socket would refuse its first send until the reactor saw it
/// writable.
fn bind_transparent(from: SocketAddr) -> io::Result<UdpSocket> {
    let socket = transparent(from)?;
    socket.bind(&from.into())?;
    Ok(UdpSocket::from(socket))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Weak;

    use super::*;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 99, (i >> 8) as u8, i as u8], 9000))
    }

    /// A pool of `cap` whose sockets are plain loopback ones (no
    /// privilege needed), failing the binds `fails` picks; its metrics and
    /// how many binds it tried.
    fn pool(
        cap: usize,
        fails: fn(SocketAddr) -> bool,
    ) -> (ReplyPool, Arc<UdpMetrics>, Arc<AtomicUsize>) {
        let metrics = Arc::new(UdpMetrics::default());
        let binds = Arc::new(AtomicUsize::new(0));
        let counted = binds.clone();
        let bind: Bind = Box::new(move |from| {
            counted.fetch_add(1, Ordering::Relaxed);
            if fails(from) {
                return Err(io::Error::from(io::ErrorKind::AddrNotAvailable));
            }
            UdpSocket::bind("127.0.0.1:0")
        });
        (
            ReplyPool::with_bind(cap, metrics.clone(), bind),
            metrics,
            binds,
        )
    }

    #[test]
    fn at_the_cap_the_least_recently_used_socket_is_closed_and_counted() {
        let (pool, metrics, binds) = pool(4, |_| false);
        let sockets: Vec<Weak<UdpSocket>> = (0..4)
            .map(|i| Arc::downgrade(&pool.socket(addr(i)).unwrap()))
            .collect();
        // Address 0 answers again: 1 is now the least recently used.
        pool.socket(addr(0)).unwrap();
        assert_eq!(binds.load(Ordering::Relaxed), 4, "a hit binds nothing");
        pool.socket(addr(4)).unwrap();
        assert_eq!(pool.len(), 4);
        assert_eq!(metrics.reply_sockets_evicted.get(), 1);
        assert!(sockets[1].upgrade().is_none(), "1 was closed");
        assert!(sockets[0].upgrade().is_some(), "0 was used lately");
        // Then 2, 3 and 0 go for three more.
        for i in 5..8 {
            pool.socket(addr(i)).unwrap();
        }
        assert!(sockets.iter().all(|s| s.upgrade().is_none()));
        assert_eq!(metrics.reply_sockets_evicted.get(), 4);
        assert_eq!(metrics.reply_sockets.get(), 4);
        drop(pool);
        assert_eq!(metrics.reply_sockets.get(), 0, "the gauge follows a drop");
    }

    #[test]
    fn many_sources_through_a_small_pool_hold_at_most_its_cap() {
        let (pool, metrics, _) = pool(16, |_| false);
        for i in 0..2000 {
            pool.socket(addr(i)).unwrap();
            assert!(pool.len() <= 16);
        }
        assert_eq!(metrics.reply_sockets_evicted.get(), 2000 - 16);
        assert_eq!(metrics.reply_sockets.get(), 16);
    }

    #[test]
    fn a_socket_in_use_outlives_its_eviction_until_the_send_is_done() {
        let (pool, _, _) = pool(1, |_| false);
        let held = pool.socket(addr(0)).unwrap();
        pool.socket(addr(1)).unwrap();
        assert!(held.local_addr().is_ok(), "still open for its sender");
        let weak = Arc::downgrade(&held);
        drop(held);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn failed_binds_are_not_retried_and_their_memory_is_capped() {
        let (pool, metrics, binds) = pool(2, |from| from.port() == 9000);
        for i in 0..2 {
            assert!(pool.socket(addr(i)).is_err());
        }
        assert!(pool.socket(addr(0)).is_err());
        assert_eq!(binds.load(Ordering::Relaxed), 2, "a failed bind waits");
        // A third failure forgets the oldest (0), which is tried again.
        assert!(pool.socket(addr(2)).is_err());
        assert_eq!(metrics.reply_binds_failed_evicted.get(), 1);
        assert!(pool.socket(addr(1)).is_err());
        assert_eq!(binds.load(Ordering::Relaxed), 3);
        assert!(pool.socket(addr(0)).is_err());
        assert_eq!(binds.load(Ordering::Relaxed), 4);
        assert!(pool.is_empty());
        assert_eq!(metrics.reply_sockets.get(), 0);
    }
}

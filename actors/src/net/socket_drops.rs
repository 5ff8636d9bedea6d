//! Datagrams the kernel dropped because a receiving socket's buffer was
//! full: a DNS listener or a relay inbound that could not keep up. ward's
//! own drops are counted where they happen; these happen before ward sees
//! the datagram, so they are read from each socket (`SO_MEMINFO`, the
//! counter `ss -m` shows as `d`) when metrics are rendered.
//!
//! Receiving sockets register here under their tree path when bound; a
//! socket that closed is forgotten at the next reading. A path keeps its
//! total across restarts of its actor (a new socket starts from zero).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// `SO_MEMINFO` (asm-generic; the same on x86, ARM and RISC-V).
const SO_MEMINFO: libc::c_int = 55;
/// Entries of the `SO_MEMINFO` array (`SK_MEMINFO_VARS`).
const MEMINFO_VARS: usize = 9;

/// A receiving socket, watched for drops.
pub type Watched = Arc<dyn AsRawFd + Send + Sync>;

struct Entry {
    path: String,
    socket: Weak<dyn AsRawFd + Send + Sync>,
    /// The socket's drop count at the last reading.
    seen: u32,
}

/// The receiving sockets of the process, and their drops so far.
#[derive(Default)]
pub struct SocketDrops {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sockets: Vec<Entry>,
    /// Drops per path, over every socket that path had.
    totals: HashMap<String, u64>,
}

impl SocketDrops {
    /// The process's registry.
    pub fn global() -> &'static SocketDrops {
        static GLOBAL: OnceLock<SocketDrops> = OnceLock::new();
        GLOBAL.get_or_init(SocketDrops::default)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches `socket`, named by the tree path of its owner, until it
    /// closes. Watching a socket watched already (its owner restarted and
    /// adopted it) changes nothing.
    pub fn watch(&self, path: impl Into<String>, socket: &Watched) {
        let path = path.into();
        let seen = drops(socket.as_raw_fd()).unwrap_or(0);
        let mut inner = self.lock();
        inner.totals.entry(path.clone()).or_insert(0);
        // Without scrapes nothing else forgets closed sockets; a socket
        // that closed since is forgotten with the drops of its last
        // reading (its owner restarted, which is rare).
        inner
            .sockets
            .retain(|entry| entry.socket.strong_count() > 0);
        let held = Arc::downgrade(socket);
        if inner.sockets.iter().any(|e| e.socket.ptr_eq(&held)) {
            return;
        }
        inner.sockets.push(Entry {
            path,
            socket: held,
            seen,
        });
    }

    /// Reads every live socket and returns the drops per path since
    /// start, sorted by path.
    pub fn totals(&self) -> Vec<(String, u64)> {
        let mut guard = self.lock();
        let Inner { sockets, totals } = &mut *guard;
        sockets.retain_mut(|entry| {
            let Some(socket) = entry.socket.upgrade() else {
                return false;
            };
            if let Ok(now) = drops(socket.as_raw_fd()) {
                let new = now.wrapping_sub(entry.seen);
                entry.seen = now;
                *totals.entry(entry.path.clone()).or_insert(0) += u64::from(new);
            }
            true
        });
        let mut out: Vec<(String, u64)> = totals.iter().map(|(p, n)| (p.clone(), *n)).collect();
        out.sort();
        out
    }
}

/// The kernel's count of datagrams dropped on `fd` (full receive buffer).
fn drops(fd: RawFd) -> io::Result<u32> {
    let mut info = [0u32; MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: a buffer of `len` bytes for the kernel to fill, on the
    // caller's descriptor.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info[libc::SK_MEMINFO_DROPS as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// A socket with a small buffer that nobody reads: what does not fit
    /// is counted under its path, and stays counted after it closes.
    #[test]
    fn drops_of_a_full_socket_are_counted_under_its_path() {
        let registry = SocketDrops::default();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&socket)
            .set_recv_buffer_size(4096)
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let socket: Watched = Arc::new(socket);
        registry.watch("dns/listeners/udp:test", &socket);
        // Its owner restarted and adopted it: still counted once.
        registry.watch("dns/listeners/udp:test", &socket);
        assert_eq!(registry.lock().sockets.len(), 1);
        assert_eq!(registry.totals(), [("dns/listeners/udp:test".into(), 0)]);

        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            sender.send_to(&[0u8; 512], addr).unwrap();
        }
        let dropped = registry.totals()[0].1;
        assert!(
            (1..200).contains(&dropped),
            "some fit, the rest were dropped: {dropped}"
        );
        drop(socket);
        assert_eq!(
            registry.totals(),
            [("dns/listeners/udp:test".into(), dropped)]
        );
        assert!(
            registry.lock().sockets.is_empty(),
            "a closed socket is forgotten"
        );
    }
}

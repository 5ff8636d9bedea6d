//! UDP test peers: a peer whose thread answers datagrams (an echo
//! server, for one), a port that refuses every datagram, and a client that
//! checks its echoes.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A UDP peer on loopback: a thread hands every datagram it receives, with
/// its source, to a handler that may answer on the socket, until the peer
/// is dropped.
pub struct Peer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Peer {
    pub fn start(mut handle: impl FnMut(&UdpSocket, &[u8], SocketAddr) + Send + 'static) -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    handle(&socket, &buf[..n], from);
                }
            }
        });
        Peer { addr, stop }
    }

    /// An echo server: every datagram goes back to where it came from.
    pub fn echo() -> Peer {
        Peer::start(|socket, bytes, from| {
            let _ = socket.send_to(bytes, from);
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A loopback UDP port where nothing listens: every datagram sent to it
/// is answered with ICMP port unreachable (ECONNREFUSED), and nothing else
/// can bind it while this lives. It holds a socket bound to the port and
/// connected to itself, which the kernel hands no one else's datagram.
pub struct Refusing {
    pub addr: SocketAddr,
    _socket: UdpSocket,
}

impl Refusing {
    pub fn new() -> Refusing {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        socket.connect(addr).unwrap();
        Refusing {
            addr,
            _socket: socket,
        }
    }
}

/// One client flow: sends `i` and waits for its echo.
pub struct Client(pub UdpSocket);

impl Client {
    pub fn new() -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Client(socket)
    }

    pub fn echo(&self, to: SocketAddr, i: u32) -> bool {
        let sent = format!("datagram {i}");
        self.0.send_to(sent.as_bytes(), to).unwrap();
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match self.0.recv_from(&mut buf) {
                Ok((n, from)) if from == to && &buf[..n] == sent.as_bytes() => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
        false
    }
}

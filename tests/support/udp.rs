//! UDP test peers: a peer whose thread answers datagrams (an echo
//! server, for one), a port that refuses every datagram, a client that
//! checks its echoes, and steady flows that send at a fixed pace and
//! count what came back and how long they went unanswered.

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

/// What one steady flow of [`paced`] saw.
#[derive(Debug)]
pub struct Paced {
    /// The flow's source address (as ward's log names its client).
    pub source: SocketAddr,
    /// The numbers of the datagrams whose echo never came.
    pub lost: Vec<u32>,
    /// The most datagrams sent between two echoes (or before the first,
    /// or after the last): how long the flow went unanswered, counted in
    /// send intervals.
    pub silence: u32,
}

/// Bytes of each datagram of [`paced`]: small, so that no node splits or
/// drops them for their size.
pub const PACED_LEN: usize = 64;

/// Runs `flows` steady flows to the echo behind `to`, each from a socket
/// of its own: each sends `count` numbered datagrams, one every `every`
/// whatever comes back (as a call or a game does), and notes which echoes
/// arrive and how many datagrams it had sent by then. `during` runs on
/// this thread meanwhile, told how many echoes arrived. Echoes are awaited
/// for 1 s after the last datagram is sent.
pub fn paced(
    flows: usize,
    to: SocketAddr,
    count: u32,
    every: Duration,
    during: impl FnOnce(&super::Flowing),
) -> Vec<Paced> {
    let flowing = super::Flowing::default();
    let start = Instant::now();
    let sockets: Vec<UdpSocket> = (0..flows)
        .map(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            socket
        })
        .collect();
    std::thread::scope(|scope| {
        let flowing = &flowing;
        let running: Vec<_> = sockets
            .iter()
            .map(|socket| {
                let sent = Arc::new(std::sync::atomic::AtomicU32::new(0));
                let sending = sent.clone();
                scope.spawn(move || {
                    for i in 0..count {
                        // The pace of a steady sender, not a wait.
                        std::thread::sleep(
                            (start + every * i).saturating_duration_since(Instant::now()),
                        );
                        let _ = socket.send_to(&paced_datagram(i), to);
                        sending.store(i + 1, Ordering::SeqCst);
                    }
                });
                scope.spawn(move || {
                    let deadline = start + every * count + Duration::from_secs(1);
                    receive_paced(socket, to, count, deadline, &sent, flowing)
                })
            })
            .collect();
        during(flowing);
        running.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

/// Datagram `i` of a paced flow: its number, then filler.
fn paced_datagram(i: u32) -> [u8; PACED_LEN] {
    let mut datagram = [b'.'; PACED_LEN];
    datagram[..4].copy_from_slice(&i.to_be_bytes());
    datagram
}

/// The receiving half of one paced flow, until every echo came or
/// `deadline`.
fn receive_paced(
    socket: &UdpSocket,
    from: SocketAddr,
    count: u32,
    deadline: Instant,
    sent: &std::sync::atomic::AtomicU32,
    flowing: &super::Flowing,
) -> Paced {
    let mut echoed = vec![false; count as usize];
    // How many datagrams had been sent at each echo, from the start on.
    let mut marks = vec![0];
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && marks.len() <= count as usize {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(i) = buf[..n]
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
        else {
            continue;
        };
        if peer != from || i >= count || buf[..n] != paced_datagram(i) || echoed[i as usize] {
            continue;
        }
        echoed[i as usize] = true;
        marks.push(sent.load(Ordering::SeqCst));
        flowing.answered.fetch_add(1, Ordering::SeqCst);
    }
    marks.push(sent.load(Ordering::SeqCst));
    Paced {
        source: socket.local_addr().unwrap(),
        lost: (0..count).filter(|&i| !echoed[i as usize]).collect(),
        silence: marks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0),
    }
}

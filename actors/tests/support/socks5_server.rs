//! A small real SOCKS5 server for the crate's integration tests, serving
//! CONNECT and UDP ASSOCIATE on 127.0.0.1 (with RFC 1929 authentication
//! when given credentials) through the crate's own server side
//! (`socks5::accept`, `socks5::reply`); and echo servers to reach through
//! it. Killing it resets every connection it holds, like a node whose
//! process died.

use std::collections::HashMap;
use std::future::{pending, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use socket2::{SockRef, Socket};
use tokio::io::AsyncReadExt;
use tokio::net::{lookup_host, TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;
use ward_actors::dialer::socks5::{
    self, decapsulate, encapsulate, Command, Credentials, ReplyCode, Socks5Error, TargetAddr,
};

/// A TCP server on 127.0.0.1 that echoes every connection.
pub async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    addr
}

/// A UDP server on 127.0.0.1 that echoes every datagram.
pub async fn udp_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..len], from).await;
        }
    });
    addr
}

/// A SOCKS5 server on 127.0.0.1 serving CONNECT and UDP ASSOCIATE.
pub struct TestProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    credentials: Option<Credentials>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// None once killed or dropped: the port is closed.
    listener: Option<TcpListener>,
    accepted: usize,
    next_id: u64,
    /// A duplicate of each open connection's socket, to reset it on kill.
    connections: HashMap<u64, Socket>,
    /// The accept loop and one task per connection.
    tasks: JoinSet<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TestProxy {
    /// Binds 127.0.0.1:0 and serves CONNECT and UDP ASSOCIATE; with
    /// Some(credentials) it requires RFC 1929 auth.
    pub async fn start(credentials: Option<Credentials>) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test proxy");
        let addr = listener.local_addr().expect("test proxy address");
        let shared = Arc::new(Shared {
            credentials,
            state: Mutex::new(State {
                listener: Some(listener),
                ..State::default()
            }),
        });
        let accept = accept_loop(Arc::clone(&shared));
        shared.lock().tasks.spawn(accept);
        TestProxy { addr, shared }
    }

    /// Connections (control or CONNECT) accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.lock().accepted
    }

    /// Closes every connection it holds with a reset (SO_LINGER 0) and
    /// stops accepting, like a node whose process was killed. The port
    /// refuses as soon as this returns; the resets go out as the runtime
    /// drops the aborted tasks.
    pub fn kill(&self) {
        let mut state = self.shared.lock();
        state.listener = None;
        for socket in state.connections.values() {
            // Best effort: a socket that fails this is already gone.
            let _ = socket.set_linger(Some(Duration::ZERO));
        }
        state.connections.clear();
        state.tasks.abort_all();
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.listener = None;
        state.connections.clear();
        state.tasks.abort_all();
    }
}

/// Accepts until the listener is taken away. Accepting and registering
/// happen under one lock, so `kill` never misses a connection.
async fn accept_loop(shared: Arc<Shared>) {
    let accept_one = || {
        poll_fn(|cx| {
            let mut state = shared.lock();
            let Some(listener) = &state.listener else {
                return Poll::Ready(false);
            };
            match listener.poll_accept(cx) {
                Poll::Pending => Poll::Pending,
                // Whatever failed concerns that one connection.
                Poll::Ready(Err(_)) => Poll::Ready(true),
                Poll::Ready(Ok((stream, _))) => {
                    state.accepted += 1;
                    let id = state.next_id;
                    state.next_id += 1;
                    if let Ok(socket) = SockRef::from(&stream).try_clone() {
                        state.connections.insert(id, socket);
                    }
                    while state.tasks.try_join_next().is_some() {}
                    state.tasks.spawn(serve(Arc::clone(&shared), id, stream));
                    Poll::Ready(true)
                }
            }
        })
    };
    while accept_one().await {}
}

/// One connection, from greeting to close.
async fn serve(shared: Arc<Shared>, id: u64, mut stream: TcpStream) {
    // A test proxy has nobody to report errors to: they end the session.
    let _ = session(&shared, &mut stream).await;
    // Forget the duplicate first, so that dropping the stream closes it.
    shared.lock().connections.remove(&id);
}

async fn session(shared: &Shared, stream: &mut TcpStream) -> Result<(), Socks5Error> {
    let (command, target) = socks5::accept(stream, shared.credentials.as_ref()).await?;
    match command {
        Command::Connect => relay_tcp(stream, &target).await,
        Command::UdpAssociate => relay_udp(stream).await,
        Command::Other(_) => Ok(socks5::reply(stream, Err(ReplyCode::CommandNotSupported)).await?),
    }
}

/// CONNECT: dial the target, reply, then copy both ways until both close.
async fn relay_tcp(client: &mut TcpStream, target: &TargetAddr) -> Result<(), Socks5Error> {
    let mut outbound = match dial(target).await {
        Ok(outbound) => outbound,
        Err(code) => return Ok(socks5::reply(client, Err(code)).await?),
    };
    socks5::reply(client, Ok(outbound.local_addr()?)).await?;
    tokio::io::copy_bidirectional(client, &mut outbound).await?;
    Ok(())
}

async fn dial(target: &TargetAddr) -> Result<TcpStream, ReplyCode> {
    let mut code = ReplyCode::HostUnreachable;
    for addr in resolve(target).await {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(err) => code = reply_code(&err),
        }
    }
    Err(code)
}

/// The reply code for a failed dial to the target.
fn reply_code(err: &io::Error) -> ReplyCode {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => ReplyCode::ConnectionRefused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::TimedOut => ReplyCode::HostUnreachable,
        io::ErrorKind::NetworkUnreachable => ReplyCode::NetworkUnreachable,
        _ => ReplyCode::GeneralFailure,
    }
}

/// The target's addresses; none when a name does not resolve.
async fn resolve(target: &TargetAddr) -> Vec<SocketAddr> {
    match target {
        TargetAddr::Ip(addr) => vec![*addr],
        TargetAddr::Domain(name, port) => lookup_host((name.as_str(), *port))
            .await
            .map(Iterator::collect)
            .unwrap_or_default(),
    }
}

/// UDP ASSOCIATE: relays datagrams until the control connection closes.
/// The client's address is learned from its first datagram; datagrams
/// from elsewhere are dropped.
async fn relay_udp(control: &mut TcpStream) -> Result<(), Socks5Error> {
    let relay = UdpSocket::bind("127.0.0.1:0").await?;
    let outbound_v4 = UdpSocket::bind("0.0.0.0:0").await?;
    // Hosts without IPv6 simply cannot relay to IPv6 targets.
    let outbound_v6 = UdpSocket::bind("[::]:0").await.ok();
    socks5::reply(control, Ok(relay.local_addr()?)).await?;

    let mut client = None;
    let mut control_buf = [0u8; 64];
    let mut from_client = vec![0u8; 65536];
    let mut from_v4 = vec![0u8; 65536];
    let mut from_v6 = vec![0u8; 65536];
    let mut packet = Vec::new();
    loop {
        tokio::select! {
            read = control.read(&mut control_buf) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return Ok(());
                }
            }
            received = relay.recv_from(&mut from_client) => {
                let Ok((len, source)) = received else { continue };
                if *client.get_or_insert(source) != source {
                    continue;
                }
                let Ok((target, payload)) = decapsulate(&from_client[..len]) else {
                    continue;
                };
                let Some(dest) = resolve(&target).await.into_iter().next() else {
                    continue;
                };
                let socket = match dest {
                    SocketAddr::V4(_) => Some(&outbound_v4),
                    SocketAddr::V6(_) => outbound_v6.as_ref(),
                };
                if let Some(socket) = socket {
                    let _ = socket.send_to(payload, dest).await;
                }
            }
            received = outbound_v4.recv_from(&mut from_v4) => {
                if let (Ok((len, source)), Some(client)) = (received, client) {
                    back_to_client(&relay, client, source, &from_v4[..len], &mut packet).await;
                }
            }
            received = recv_from_opt(outbound_v6.as_ref(), &mut from_v6) => {
                if let (Ok((len, source)), Some(client)) = (received, client) {
                    back_to_client(&relay, client, source, &from_v6[..len], &mut packet).await;
                }
            }
        }
    }
}

/// `recv_from` on a socket that may not exist (then never ready).
async fn recv_from_opt(
    socket: Option<&UdpSocket>,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buf).await,
        None => pending().await,
    }
}

/// Sends a target's datagram to the client, with the request header.
async fn back_to_client(
    relay: &UdpSocket,
    client: SocketAddr,
    source: SocketAddr,
    payload: &[u8],
    packet: &mut Vec<u8>,
) {
    packet.clear();
    encapsulate(&TargetAddr::Ip(source), payload, packet);
    // Best effort, like any UDP relay.
    let _ = relay.send_to(packet, client).await;
}

//! A SOCKS5 inbound: a SOCKS5 server offering UDP ASSOCIATE (RFC 1928,
//! optional RFC 1929 authentication). Control connections arrive on TCP at
//! the listen address; the relay is the UDP socket at the same address.
//! Datagrams are accepted only from a client with a live association (its
//! address, and its port once known), and its flows end when the control
//! connection closes. Control connections are tasks held with the socket:
//! they outlive a killed inbound's actor, as its flows do.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::flows::{Flows, EVENTS};
use super::inbound::SocketReply;
use super::metrics::{Dropped, Refused, UdpMetrics};
use super::{Event, Relay};
use crate::dialer::socks5::{self, Command, Credentials, ReplyCode, TargetAddr};
use crate::io_class::{classify_io_error, IoClass, IoSide, SocketFailure};
use crate::net::{accept_each, Connections};
use crate::warn_throttled;

/// Control connections served at once, at most.
const MAX_ASSOCIATIONS: usize = 4096;
/// How long a client may take to negotiate.
const NEGOTIATE_TIMEOUT: Duration = Duration::from_secs(10);

/// An association's id, and the client port it takes datagrams from (once
/// known).
type Association = (u64, Option<u16>);
type ByIp = HashMap<IpAddr, Vec<Association>>;

/// Live associations by client address.
#[derive(Default)]
pub struct Associations {
    by_ip: Mutex<ByIp>,
    next: AtomicU64,
}

impl Associations {
    fn lock(&self) -> std::sync::MutexGuard<'_, ByIp> {
        self.by_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an association for `ip`, from `port` when the client said.
    pub fn add(&self, ip: IpAddr, port: Option<u16>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(ip).or_default().push((id, port));
        id
    }

    /// True when a datagram from `from` belongs to a live association; an
    /// association that did not name its port takes this one.
    pub fn admit(&self, from: SocketAddr) -> bool {
        let port = from.port();
        let mut by_ip = self.lock();
        let Some(list) = by_ip.get_mut(&from.ip().to_canonical()) else {
            return false;
        };
        if list.iter().any(|&(_, p)| p == Some(port)) {
            return true;
        }
        match list.iter_mut().find(|(_, p)| p.is_none()) {
            Some(open) => {
                open.1 = Some(port);
                true
            }
            None => false,
        }
    }

    /// Forgets an association; the client address its flows came from.
    pub fn remove(&self, ip: IpAddr, id: u64) -> Option<SocketAddr> {
        let mut by_ip = self.lock();
        let list = by_ip.get_mut(&ip)?;
        let at = list.iter().position(|&(i, _)| i == id)?;
        let (_, port) = list.swap_remove(at);
        if list.is_empty() {
            by_ip.remove(&ip);
        }
        port.map(|port| SocketAddr::new(ip, port))
    }
}

/// What a SOCKS5 inbound keeps across its actor's restarts.
pub struct Socks5Held {
    /// The relay: datagrams of associated clients.
    pub socket: Arc<UdpSocket>,
    /// Control connections arrive here (the same address).
    listener: TcpListener,
    relay_addr: SocketAddr,
    credentials: Option<Arc<Credentials>>,
    associations: Arc<Associations>,
    /// The control connections (at most `MAX_ASSOCIATIONS`): they outlive
    /// a kill of the inbound, and end with this state when its socket is
    /// rebuilt (their clients then associate again).
    controls: Connections,
    flows: Flows,
    events: mpsc::Receiver<Event>,
    /// Clients whose association ended: their flows end.
    ended_tx: mpsc::Sender<SocketAddr>,
    ended: mpsc::Receiver<SocketAddr>,
    metrics: Arc<UdpMetrics>,
}

impl Socks5Held {
    pub fn bind(
        listen: SocketAddr,
        credentials: Option<Credentials>,
        relay: &Arc<Relay>,
    ) -> io::Result<Socks5Held> {
        let socket = super::inbound::bind(listen)?;
        let relay_addr = socket.local_addr()?;
        // The same family rules as the relay socket (IPv6-only on `[::]`),
        // so `0.0.0.0:p` and `[::]:p` can both be served.
        let listener = crate::net::socket::bind_tcp(relay_addr)?;
        let (ended_tx, ended) = mpsc::channel(EVENTS);
        let (flows, events) = Flows::new(relay.clone(), SocketReply::new(&socket, true), "socks5");
        Ok(Socks5Held {
            socket,
            listener,
            relay_addr,
            credentials: credentials.map(Arc::new),
            associations: Arc::default(),
            controls: Connections::new(MAX_ASSOCIATIONS),
            flows,
            events,
            ended_tx,
            ended,
            metrics: relay.metrics.clone(),
        })
    }
}

/// Serves the relay and the control connections until a socket dies.
pub async fn run(held: &mut Socks5Held) -> Result<(), SocketFailure> {
    let Socks5Held {
        socket,
        listener,
        relay_addr,
        credentials,
        associations,
        controls,
        flows,
        events,
        ended_tx,
        ended,
        metrics,
    } = held;
    let relay = relay_loop(socket, associations, flows, events, ended);
    let accept = accept_each(&*listener, "socks5 inbound", |stream, peer| {
        if !controls.has_room() {
            metrics.refused(Refused::Associations);
            warn_throttled!("socks5-inbound-full", %peer, "SOCKS5 inbound: too many associations; refusing");
            return;
        }
        controls.serve(control(
            stream,
            peer,
            *relay_addr,
            credentials.clone(),
            associations.clone(),
            ended_tx.clone(),
        ));
    });
    tokio::select! {
        failed = relay => failed,
        dead = accept => Err(dead),
    }
}

/// One control connection: negotiation, the UDP ASSOCIATE request, then
/// waiting for the client to close it.
async fn control(
    mut stream: TcpStream,
    peer: SocketAddr,
    relay_addr: SocketAddr,
    credentials: Option<Arc<Credentials>>,
    associations: Arc<Associations>,
    ended: mpsc::Sender<SocketAddr>,
) {
    let negotiated = tokio::time::timeout(
        NEGOTIATE_TIMEOUT,
        socks5::accept(&mut stream, credentials.as_deref()),
    )
    .await;
    let Ok(Ok((command, target))) = negotiated else {
        return;
    };
    if command != Command::UdpAssociate {
        let _ = socks5::reply(&mut stream, Err(ReplyCode::CommandNotSupported)).await;
        return;
    }
    let port = match target {
        TargetAddr::Ip(addr) if addr.port() != 0 => Some(addr.port()),
        _ => None,
    };
    let ip = peer.ip().to_canonical();
    let id = associations.add(ip, port);
    // An unspecified listen address answers with the address the client
    // reached.
    let bound = match (relay_addr.ip().is_unspecified(), stream.local_addr()) {
        (true, Ok(local)) => SocketAddr::new(local.ip().to_canonical(), relay_addr.port()),
        _ => relay_addr,
    };
    if socks5::reply(&mut stream, Ok(bound)).await.is_ok() {
        socks5::control_closed(&mut stream).await;
    }
    if let Some(client) = associations.remove(ip, id) {
        let _ = ended.send(client).await;
    }
}

/// The relay loop: datagrams from associated clients, unwrapped and
/// handed to their flows, until the socket dies.
async fn relay_loop(
    socket: &UdpSocket,
    associations: &Associations,
    flows: &mut Flows,
    events: &mut mpsc::Receiver<Event>,
    ended: &mut mpsc::Receiver<SocketAddr>,
) -> Result<(), SocketFailure> {
    let mut buf = vec![0u8; 65_535];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, client)) => {
                    if !associations.admit(client) {
                        flows.metrics().dropped(Dropped::Unassociated);
                        continue;
                    }
                    match socks5::decapsulate(&buf[..n]) {
                        Ok((TargetAddr::Ip(dst), payload)) => {
                            flows.datagram(client, dst, payload);
                            flows.flush();
                        }
                        // Names are not resolved here; fragments are not
                        // reassembled (RFC 1928 makes both optional).
                        _ => flows.metrics().dropped(Dropped::Malformed),
                    }
                }
                Err(e) => {
                    if classify_io_error(&e, IoSide::Listener) == IoClass::SocketDead {
                        return Err(SocketFailure::classed("receive", IoClass::SocketDead, e));
                    }
                }
            },
            Some(event) = events.recv() => flows.event(event),
            Some(client) = ended.recv() => flows.end_client(client),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_only_from_associated_clients_and_ports() {
        let a = Associations::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let from = |port| SocketAddr::new(ip, port);
        assert!(!a.admit(from(4000)), "no association yet");
        let named = a.add(ip, Some(4000));
        let open = a.add(ip, None);
        assert!(a.admit(from(4000)));
        assert!(
            a.admit(from(5000)),
            "the open association takes its first port"
        );
        assert!(!a.admit(from(6000)), "no association left for a third port");
        assert_eq!(a.remove(ip, open), Some(from(5000)));
        assert!(!a.admit(from(5000)));
        assert_eq!(a.remove(ip, named), Some(from(4000)));
        assert!(!a.admit(from(4000)));
        assert_eq!(a.remove(ip, named), None);
    }
}

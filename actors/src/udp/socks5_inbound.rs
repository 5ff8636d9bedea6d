//! A SOCKS5 inbound: a SOCKS5 server offering UDP ASSOCIATE (RFC 1928,
//! optional RFC 1929 authentication). Control connections arrive on TCP at
//! the listen address; the relay is the UDP socket at the same address.
//! Datagrams are accepted only from a client with a live association (its
//! address, and its port once known), and its flows end when the control
//! connection closes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorRef;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::inbound::{Flows, InboundMsg};
use super::metrics::Dropped;
use super::Event;
use crate::dialer::socks5::{self, Command, Credentials, ReplyCode, TargetAddr};
use crate::io_class::{classify_io_error, IoClass, IoSide};
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

/// Accepts control connections until the inbound ends; each association
/// lives as long as its connection.
pub async fn accept_loop(
    listener: TcpListener,
    relay_addr: SocketAddr,
    credentials: Option<Credentials>,
    associations: Arc<Associations>,
    ended: mpsc::Sender<SocketAddr>,
    inbound: ActorRef<InboundMsg>,
) {
    let credentials = credentials.map(Arc::new);
    let mut controls = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if controls.len() >= MAX_ASSOCIATIONS {
                        warn_throttled!("socks5-inbound-full", %peer, "SOCKS5 inbound: too many associations; refusing");
                        continue;
                    }
                    controls.spawn(control(
                        stream,
                        peer,
                        relay_addr,
                        credentials.clone(),
                        associations.clone(),
                        ended.clone(),
                    ));
                }
                Err(e) => match classify_io_error(&e, IoSide::Accept) {
                    IoClass::SocketDead => {
                        let _ = inbound.send_message(InboundMsg::SocketDead(e.to_string()));
                        return;
                    }
                    // Out of descriptors and the like: wait a little.
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                },
            },
            Some(_) = controls.join_next() => {}
        }
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
/// handed to their flows.
pub async fn relay_loop(
    socket: Arc<UdpSocket>,
    associations: Arc<Associations>,
    mut flows: Flows,
    mut events: mpsc::Receiver<Event>,
    mut ended: mpsc::Receiver<SocketAddr>,
    inbound: ActorRef<InboundMsg>,
) {
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
                        let _ = inbound.send_message(InboundMsg::SocketDead(e.to_string()));
                        return;
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

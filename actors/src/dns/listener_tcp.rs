//! A TCP DNS listener (kind `dns-listener-tcp`): an accept loop and a task
//! per connection. Queries on one connection are pipelined: each is
//! answered as soon as its answer is ready, in whatever order. A client
//! that half-closes still gets the answers it is owed; then ward closes its
//! side. Connections per client address are capped; an idle client is
//! disconnected. The accept loop backs off on EMFILE, ECONNABORTED and the
//! like, and ends only when the listening socket itself is dead.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use ward_supervision::{TaskGuard, TaskScope};

use super::limits::client_key;
use super::metrics::{Dropped, Transport};
use super::resolver::{Decision, Resolver};
use super::sockets::bind_tcp;
use super::upstream::conn::frame;
use crate::io_class::{classify_io_error, IoClass, IoSide};
use crate::warn_throttled;

/// Answers queued per connection before its reader waits.
const ANSWER_QUEUE: usize = 64;
/// A client that takes longer than this to accept an answer is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(20);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

pub struct DnsTcpListener;

pub struct TcpListenerArgs {
    pub addr: SocketAddr,
    pub resolver: Arc<Resolver>,
    pub tasks: TaskScope,
}

pub enum TcpListenerMsg {
    SocketFailed(String),
}

pub struct TcpListenerState {
    _accept: TaskGuard,
}

impl Actor for DnsTcpListener {
    type Msg = TcpListenerMsg;
    type State = TcpListenerState;
    type Arguments = TcpListenerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TcpListenerMsg>,
        args: TcpListenerArgs,
    ) -> Result<TcpListenerState, ActorProcessingErr> {
        let listener = bind_tcp(args.addr).map_err(|e| format!("bind tcp {}: {e}", args.addr))?;
        tracing::info!(addr = %args.addr, "DNS listening on TCP");
        let accept = args
            .tasks
            .spawn(accept_loop(listener, args.resolver, myself));
        Ok(TcpListenerState { _accept: accept })
    }

    async fn handle(
        &self,
        _myself: ActorRef<TcpListenerMsg>,
        message: TcpListenerMsg,
        _state: &mut TcpListenerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TcpListenerMsg::SocketFailed(reason) => Err(format!("socket failed: {reason}").into()),
        }
    }
}

/// Connections per client address; a slot is given back when dropped.
#[derive(Default)]
struct ClientCounts(Mutex<HashMap<IpAddr, usize>>);

struct ClientSlot {
    counts: Arc<ClientCounts>,
    ip: IpAddr,
}

impl ClientCounts {
    fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<ClientSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    resolver: Arc<Resolver>,
    owner: ActorRef<TcpListenerMsg>,
) {
    let counts = Arc::new(ClientCounts::default());
    let cap = resolver.settings().limits.tcp_clients_per_ip;
    let mut connections = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        while connections.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                match counts.take(client_key(peer.ip()), cap) {
                    Some(slot) => {
                        connections.spawn(serve(stream, peer, resolver.clone(), slot));
                    }
                    None => resolver.metrics.dropped(Dropped::TcpClientCap),
                }
            }
            Err(e) => match classify_io_error(&e, IoSide::Accept) {
                IoClass::SocketDead => {
                    let _ = owner.send_message(TcpListenerMsg::SocketFailed(e.to_string()));
                    return;
                }
                _ => {
                    warn_throttled!("dns tcp accept", error = %e, "DNS TCP accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            },
        }
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, resolver: Arc<Resolver>, _slot: ClientSlot) {
    let _ = stream.set_nodelay(true);
    let idle = resolver.settings().limits.tcp_idle;
    let (mut reader, mut writer) = stream.into_split();
    let (answers, mut queue) = mpsc::channel::<Vec<u8>>(ANSWER_QUEUE);
    let read = async move {
        let mut buf = vec![0u8; 65_535];
        let mut out = Vec::new();
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(idle, reader.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                // EOF, an error, or idle: stop reading; owed answers still go out.
                _ => break,
            }
            let len = u16::from_be_bytes(len) as usize;
            if !matches!(
                tokio::time::timeout(idle, reader.read_exact(&mut buf[..len])).await,
                Ok(Ok(_))
            ) {
                break;
            }
            match resolver.decide(&buf[..len], peer.ip(), Transport::Tcp, &mut out) {
                Decision::Reply => {
                    if answers.send(frame(&out)).await.is_err() {
                        break;
                    }
                }
                Decision::Drop => {}
                Decision::Resolve(pending) => {
                    let packet = buf[..len].to_vec();
                    let resolver = resolver.clone();
                    let answers = answers.clone();
                    tokio::spawn(async move {
                        let answer = resolver
                            .resolve(&packet, peer.ip(), Transport::Tcp, pending.stale)
                            .await;
                        let _ = answers.send(frame(&answer)).await;
                        drop(pending.permit);
                    });
                }
            }
        }
    };
    let write = async move {
        while let Some(answer) = queue.recv().await {
            // A client that stops reading is dropped; the reader and the
            // tasks answering it then fail fast and give their permits back.
            match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&answer)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        // Every sender is gone: the reader stopped and every answer is out.
        let _ = writer.shutdown().await;
    };
    tokio::join!(read, write);
}

//! A UDP DNS listener (kind `dns-listener-udp`): one socket, one receive
//! loop. The loop takes queries in batches (`recvmmsg`), answers what can be
//! answered at once and spawns a task per miss; it never waits on upstream
//! work. Answers from those tasks come back through a bounded channel; all
//! answers ready together leave in one `sendmmsg`.
//!
//! A socket that becomes unusable (ENOTCONN, EBADF, ECONNABORTED when it is
//! destroyed from outside) ends the actor; its supervisor binds a new one
//! after a backoff. Transient errors, ICMP echoes of earlier answers among
//! them, never end the loop.

use std::net::SocketAddr;
use std::sync::Arc;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use ward_supervision::{TaskGuard, TaskScope};

use super::metrics::{Dropped, Transport};
use super::resolver::{Decision, Resolver};
use super::sockets::bind_udp;
use crate::io_class::{classify_io_error, IoClass, IoSide};
use crate::socket_drops::{SocketDrops, Watched};
use crate::udp_batch::{RecvBatch, SendBatch, BATCH};

pub struct UdpListener;

pub struct UdpListenerArgs {
    pub addr: SocketAddr,
    /// The listener's path in the tree (its socket's drops are counted
    /// under it).
    pub path: String,
    pub resolver: Arc<Resolver>,
    /// The incarnation's task scope, for the receive loop (it owns the socket).
    pub tasks: TaskScope,
}

pub enum UdpListenerMsg {
    /// The socket stopped working; the actor ends and is rebound.
    SocketFailed(String),
}

pub struct UdpListenerState {
    _receive: TaskGuard,
}

impl Actor for UdpListener {
    type Msg = UdpListenerMsg;
    type State = UdpListenerState;
    type Arguments = UdpListenerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<UdpListenerMsg>,
        args: UdpListenerArgs,
    ) -> Result<UdpListenerState, ActorProcessingErr> {
        let socket = bind_udp(args.addr).map_err(|e| format!("bind udp {}: {e}", args.addr))?;
        let socket = Arc::new(socket);
        let watched: Watched = socket.clone();
        SocketDrops::global().watch(&args.path, &watched);
        // The UDP relay answers DNS captured for this address through this
        // very socket, never binding the address a second time.
        args.resolver.register_udp(args.addr, &socket);
        tracing::info!(addr = %args.addr, "DNS listening on UDP");
        let receive = args.tasks.spawn(serve(socket, args.resolver, myself));
        Ok(UdpListenerState { _receive: receive })
    }

    async fn handle(
        &self,
        _myself: ActorRef<UdpListenerMsg>,
        message: UdpListenerMsg,
        _state: &mut UdpListenerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            UdpListenerMsg::SocketFailed(reason) => Err(format!("socket failed: {reason}").into()),
        }
    }
}

async fn serve(socket: Arc<UdpSocket>, resolver: Arc<Resolver>, owner: ActorRef<UdpListenerMsg>) {
    let fail = |reason: String| {
        let _ = owner.send_message(UdpListenerMsg::SocketFailed(reason));
    };
    // SAFETY: the AsyncFd owns the std socket, whose fd stays open and the
    // same until the AsyncFd is dropped.
    // A socket destroyed from outside reports only an error: wait for that too.
    let interest = Interest::READABLE | Interest::ERROR;
    let socket = match unsafe { AsyncFd::register_with_interest(socket, interest) } {
        Ok(socket) => socket,
        Err(e) => return fail(e.to_string()),
    };
    let fd = socket.get_ref().as_raw_fd();
    let capacity = resolver.settings().limits.in_flight.max(1);
    let (answers_tx, mut answers) = mpsc::channel::<(SocketAddr, Vec<u8>)>(capacity);
    let mut queries = RecvBatch::new();
    let mut out = SendBatch::default();
    let mut reply = Vec::with_capacity(1232);
    loop {
        tokio::select! {
            biased;
            Some((client, answer)) = answers.recv() => {
                out.push(client, &answer);
                while let Ok((client, answer)) = answers.try_recv() {
                    out.push(client, &answer);
                }
            }
            ready = socket.ready(interest) => {
                let mut ready = match ready {
                    Ok(ready) => ready,
                    Err(e) => return fail(e.to_string()),
                };
                match queries.recv(fd) {
                    Ok(n) => {
                        // A short batch emptied the queue: wait for the next wake-up.
                        if n < BATCH {
                            ready.clear_ready();
                        }
                        for i in 0..n {
                            if let Some((packet, client)) = queries.get(i) {
                                handle(packet, client, &resolver, &answers_tx, &mut reply, &mut out);
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => ready.clear_ready(),
                    Err(e) => match classify_io_error(&e, IoSide::Listener) {
                        IoClass::Transient | IoClass::Normal => {}
                        _ => return fail(e.to_string()),
                    },
                }
            }
        }
        if !out.is_empty() {
            for _ in 0..out.flush(fd) {
                resolver.metrics.dropped(Dropped::SendFailed);
            }
        }
    }
}

/// One query: answered into `out`, or handed to a task whose answer comes
/// back through `answers`.
fn handle(
    packet: &[u8],
    client: SocketAddr,
    resolver: &Arc<Resolver>,
    answers: &mpsc::Sender<(SocketAddr, Vec<u8>)>,
    reply: &mut Vec<u8>,
    out: &mut SendBatch,
) {
    match resolver.decide(packet, client.ip(), Transport::Udp, reply) {
        Decision::Reply => out.push(client, reply),
        Decision::Drop => {}
        Decision::Resolve(pending) => {
            let packet = packet.to_vec();
            let resolver = resolver.clone();
            let answers = answers.clone();
            tokio::spawn(async move {
                let answer = resolver
                    .resolve(&packet, client.ip(), Transport::Udp, pending.stale)
                    .await;
                let _ = answers.send((client, answer)).await;
                drop(pending.permit);
            });
        }
    }
}

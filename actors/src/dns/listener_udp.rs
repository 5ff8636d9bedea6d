//! A UDP DNS listener (kind `dns-listener-udp`): one socket, one receive
//! loop. The loop answers what can be answered at once and spawns a task
//! per miss; it never waits on upstream work. Answers from those tasks come
//! back through a bounded channel and leave through the same socket.
//!
//! A socket that becomes unusable (ENOTCONN, EBADF, ECONNABORTED when it is
//! destroyed from outside) ends the actor; its supervisor binds a new one
//! after a backoff. Transient errors, ICMP echoes of earlier answers among
//! them, never end the loop.

use std::net::SocketAddr;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use ward_supervision::{TaskGuard, TaskScope};

use super::metrics::{Dropped, Transport};
use super::resolver::{Decision, Resolver};
use super::sockets::bind_udp;
use crate::io_class::{classify_io_error, IoClass, IoSide};

pub struct UdpListener;

pub struct UdpListenerArgs {
    pub addr: SocketAddr,
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

async fn serve(socket: UdpSocket, resolver: Arc<Resolver>, owner: ActorRef<UdpListenerMsg>) {
    let capacity = resolver.settings().limits.in_flight.max(1);
    let (answers_tx, mut answers) = mpsc::channel::<(SocketAddr, Vec<u8>)>(capacity);
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(1232);
    loop {
        tokio::select! {
            biased;
            Some((client, answer)) = answers.recv() => send(&socket, &answer, client, &resolver),
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, client)) => match resolver.decide(&buf[..n], client.ip(), Transport::Udp, &mut out) {
                    Decision::Reply => send(&socket, &out, client, &resolver),
                    Decision::Drop => {}
                    Decision::Resolve(pending) => {
                        let packet = buf[..n].to_vec();
                        let resolver = resolver.clone();
                        let answers = answers_tx.clone();
                        tokio::spawn(async move {
                            let answer = resolver.resolve(&packet, client.ip(), Transport::Udp, pending).await;
                            let _ = answers.send((client, answer)).await;
                        });
                    }
                },
                Err(e) => match classify_io_error(&e, IoSide::Listener) {
                    IoClass::Transient | IoClass::Normal => {}
                    _ => {
                        let _ = owner.send_message(UdpListenerMsg::SocketFailed(e.to_string()));
                        return;
                    }
                },
            },
        }
    }
}

/// Sends without waiting: a full socket buffer drops the answer (counted).
fn send(socket: &UdpSocket, answer: &[u8], client: SocketAddr, resolver: &Resolver) {
    if socket.try_send_to(answer, client).is_err() {
        resolver.metrics.dropped(Dropped::SendFailed);
    }
}

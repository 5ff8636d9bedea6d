//! The direct outbound: straight out of this host, with the socket
//! options the path is configured with (SO_MARK, SO_BINDTODEVICE).

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::failure::{Failure, Hop, Stage};
use super::outbound::{Dial, Outbound, ProxyStream};
use super::path::resolve;
use super::session::UdpSession;
use super::socks5::TargetAddr;
use crate::net::socket::{connected_udp_socket, flow_socket, tcp_socket};

/// Straight out: `mark` sets SO_MARK on every socket, `interface` binds
/// them to a device.
pub struct Direct {
    pub mark: Option<u32>,
    pub interface: Option<String>,
}

fn io_failure(e: io::Error) -> Failure {
    Failure::io(&e, Stage::TargetConnect, Hop::Direct, false)
}

impl Outbound for Direct {
    fn hop(&self) -> Hop {
        Hop::Direct
    }

    fn stream<'a>(
        &'a self,
        target: &'a TargetAddr,
        deadline: tokio::time::Instant,
    ) -> Dial<'a, ProxyStream> {
        Box::pin(async move {
            let addr = match target {
                TargetAddr::Ip(addr) => *addr,
                TargetAddr::Domain(host, port) => {
                    let name = format!("{host}:{port}");
                    tokio::time::timeout_at(deadline, resolve(&name))
                        .await
                        .map_err(|_| Failure::timeout(Stage::Cancelled))?
                        .map_err(|e| Failure::local(format!("cannot look up {host}: {e}")))?
                }
            };
            let socket =
                tcp_socket(addr, self.mark, self.interface.as_deref()).map_err(io_failure)?;
            let stream = tokio::time::timeout_at(deadline, socket.connect(addr))
                .await
                .map_err(|_| Failure::timeout(Stage::TargetConnect))?
                .map_err(io_failure)?;
            stream.set_nodelay(true).map_err(io_failure)?;
            Ok(ProxyStream::from(stream))
        })
    }

    fn udp(&self, target: SocketAddr, connected: bool) -> Dial<'_, UdpSession> {
        Box::pin(async move {
            let interface = self.interface.as_deref();
            let (socket, dual_stack) = if connected {
                let socket = connected_udp_socket(target, self.mark, interface);
                (socket.map_err(io_failure)?, false)
            } else {
                flow_socket(target, self.mark, interface).map_err(io_failure)?
            };
            Ok(UdpSession::direct(
                socket,
                connected.then_some(target),
                dual_stack,
            ))
        })
    }

    fn query_socket(&self, target: SocketAddr) -> Option<io::Result<UdpSocket>> {
        Some(connected_udp_socket(
            target,
            self.mark,
            self.interface.as_deref(),
        ))
    }
}

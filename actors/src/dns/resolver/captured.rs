//! Queries the UDP relay captured on their way to one of ward's own DNS
//! addresses: the resolver keeps the UDP listeners' sockets (weakly, by
//! configured address) and answers such a query through the listener's own
//! socket, as the listener would, so the client sees the reply come from
//! the address it asked. Deciding and resolving are the same as for the
//! listener's own queries.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{Decision, Resolver};
use crate::dns::metrics::{Dropped, Transport};

impl Resolver {
    /// Records a UDP listener's socket for its configured address.
    pub fn register_udp(&self, addr: SocketAddr, socket: &Arc<std::net::UdpSocket>) {
        self.own_udp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, Arc::downgrade(socket));
    }

    /// The live UDP listener socket for exactly this address, if any.
    pub fn udp_listener(&self, addr: SocketAddr) -> Option<Arc<std::net::UdpSocket>> {
        self.own_udp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)?
            .upgrade()
    }

    /// Answers a UDP query that reached ward some other way (the relay
    /// captured it) through the listener socket `socket`, as the listener
    /// would.
    pub fn answer_from(
        self: &Arc<Self>,
        socket: Arc<std::net::UdpSocket>,
        packet: &[u8],
        client: SocketAddr,
    ) {
        let mut reply = Vec::new();
        match self.decide(packet, client.ip(), Transport::Udp, &mut reply) {
            Decision::Reply => {
                let _ = socket.send_to(&reply, client);
            }
            Decision::Drop => {}
            Decision::Resolve(pending) => {
                let metrics = self.metrics.clone();
                self.spawn_resolve(
                    pending,
                    packet,
                    client.ip(),
                    Transport::Udp,
                    move |answer| async move {
                        if socket.send_to(&answer, client).is_err() {
                            metrics.dropped(Dropped::SendFailed);
                        }
                    },
                );
            }
        }
    }
}

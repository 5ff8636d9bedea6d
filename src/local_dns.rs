//! ward's DNS resolver as the UDP relay's [`LocalDns`]: the one place that
//! knows both rooms. A tproxy inbound that captured a query for one of
//! ward's DNS listen addresses hands it here, and the resolver answers it
//! through that listener's socket. The relay itself never sees the DNS
//! module.

use std::net::SocketAddr;
use std::sync::Arc;

use ward_actors::dns::resolver::Resolver;
use ward_actors::udp::LocalDns;

/// The resolver, answering for the relay.
pub struct ResolverDns(pub Arc<Resolver>);

impl LocalDns for ResolverDns {
    fn answer(&self, listen: SocketAddr, query: &[u8], client: SocketAddr) -> bool {
        let Some(socket) = self.0.udp_listener(listen) else {
            return false;
        };
        self.0.answer_from(socket, query, client);
        true
    }
}

//! The DNS forwarder: listeners, upstreams, the resolver between them, and
//! the wire format and cache they share.

pub mod answer;
pub mod cache;
pub mod coalesce;
pub mod fuzzing;
pub mod limits;
pub mod listener_tcp;
pub mod listener_udp;
pub mod metrics;
pub mod resolver;
pub mod settings;
pub mod statics;
pub mod tcp_clients;
pub mod upstream;
pub mod wire;

//! Trojan (trojan-gfw's protocol), the client side: what a Trojan dialer
//! speaks to its node. Over TLS the client sends `hex(SHA-224(password))`
//! CRLF, a SOCKS5-style request (CMD, ATYP, address, port) CRLF, then its
//! payload; the node never replies to the request. A UDP association
//! carries datagrams as frames inside the same TLS stream.
//!
//! - `node`: [`TrojanNode`]: one node's TLS settings and password hash;
//!   CONNECT and UDP ASSOCIATE over a TCP stream the caller opened.
//! - `tls`: the client config: system roots, a private CA, or no
//!   verification at all.
//! - `udp`: the frames of a UDP association ([`encode_udp`],
//!   [`decode_udp`]).
//! - `error`: [`TrojanError`] and its class.
//! - `outbound`: [`TrojanOutbound`], the dialer's [`super::Outbound`]:
//!   streams, and UDP sessions framed in their TLS connection.
//! - [`fuzzing`]: the frame decoder driven by arbitrary bytes.
//!

mod error;
pub mod fuzzing;
mod node;
mod outbound;
mod tls;
mod udp;

pub use error::TrojanError;
pub use node::TrojanNode;
pub use outbound::TrojanOutbound;
pub use udp::{decode_udp, encode_udp, UdpFrame, MAX_UDP_PAYLOAD};

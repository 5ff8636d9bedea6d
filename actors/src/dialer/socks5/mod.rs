//! SOCKS5 (RFC 1928, RFC 1929 authentication), both sides: the client a
//! SOCKS5 dialer speaks to its node, and the server the SOCKS5 inbound
//! speaks to its clients.
//!
//! - `client`: CONNECT, UDP ASSOCIATE, watching an association's end.
//! - `server`: negotiating with a client, reading its request, replying.
//! - `wire`: what both share: credentials, addresses, reply codes, the UDP
//!   request header ([`encapsulate`], [`decapsulate`]).
//! - `error`: [`Socks5Error`] and its class.

mod client;
mod error;
mod node;
mod server;
// The address encoding is Shadowsocks' too.
pub(in crate::dialer) mod wire;

pub use client::{
    connect, control_closed, negotiate, request_connect, udp_associate, UdpAssociation,
};
pub use error::Socks5Error;
pub use node::{Socks5Datagrams, Socks5Node};
pub use server::{accept, reply, Command};
pub use wire::{decapsulate, encapsulate, Credentials, ReplyCode, TargetAddr};
// Trojan requests and UDP frames carry SOCKS5 addresses.
pub(in crate::dialer) use wire::{put_addr, ATYP_DOMAIN, ATYP_IPV4, ATYP_IPV6};

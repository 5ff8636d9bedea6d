//! Shadowsocks, the client side: the classic AEAD edition (SIP004:
//! aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305) and the 2022 edition
//! (SIP022: 2022-blake3-aes-128-gcm, -aes-256-gcm, -chacha20-poly1305).
//! The framing is ward's own; the ciphers come from RustCrypto and BLAKE3.
//!
//! - `method`: [`Method`] and [`Key`] (password or PSK to key).
//! - `crypto`: the AEADs, nonces and the 2022 UDP header cipher.
//! - `tcp_write`, `tcp_read`, `stream`: [`client`] and the
//!   [`ShadowsocksStream`] it returns.
//! - `udp` and `replay`: [`UdpCodec`], one UDP session's datagrams.
//! - `error`: [`ShadowsocksError`].
//! - `outbound`: [`ShadowsocksNode`], the dialer's [`super::Outbound`].
//! - [`fuzzing`]: what the fuzz target runs, and a server side that
//!   encrypts replies for the tests.
//!
//! Addresses are SOCKS5's (RFC 1928 section 5), shared with
//! [`super::socks5`].

mod crypto;
mod error;
pub mod fuzzing;
mod method;
mod outbound;
mod replay;
mod stream;
mod tcp_read;
mod tcp_write;
#[cfg(test)]
mod tests;
mod udp;

pub use error::ShadowsocksError;
pub use method::{Key, Method};
pub use outbound::{Drops, ShadowsocksNode};
pub use stream::{client, ShadowsocksStream};
pub use udp::UdpCodec;

/// Seconds since the Unix epoch, as the 2022 headers carry them (0 on a
/// clock set before 1970).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How far a 2022 timestamp may be from our clock (SIP022 3.1.3).
const MAX_CLOCK_GAP_SECS: u64 = 30;

/// True when a 2022 timestamp is within [`MAX_CLOCK_GAP_SECS`] of `now`.
fn fresh(timestamp: u64, now: u64) -> bool {
    timestamp.abs_diff(now) <= MAX_CLOCK_GAP_SECS
}

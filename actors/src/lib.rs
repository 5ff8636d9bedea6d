//! # ward-actors
//!
//! ward's domain actors and what they share. Each socket-owning actor
//! classifies its I/O errors once, at the socket, with [`io_class`], and logs
//! anything that can repeat through [`throttle`].
//!
//! # Layout
//! - [`io_class`]: one enum that says what an I/O error means (rule 4 of
//!   the architecture brief): peer gone, socket dead, transient, path failed,
//!   normal.
//! - [`throttle`]: first occurrence logged, then one summary per window.
//! - [`lru`]: a capped map that evicts the least recently used entry, in
//!   O(1).
//! - [`dialer`]: outbound paths and groups, with health learned from
//!   traffic and probes.
//! - [`dns`]: the DNS forwarder.
//! - [`net`]: socket code the rooms share: building sockets, the one
//!   accept loop, the hold that keeps a listener's socket across its
//!   actor's restarts, batched UDP I/O, the kernel's drops at receiving
//!   sockets.
//! - [`udp`]: the UDP relay: inbounds and one endpoint actor per flow.

pub mod dialer;
pub mod dns;
pub mod io_class;
pub mod lru;
pub mod net;
pub mod reload;
pub mod throttle;
pub mod udp;

/// The integration tests' one way to skip (`tests/support/skip.rs`), for
/// unit tests that need root.
#[cfg(test)]
#[path = "../../tests/support/skip.rs"]
pub(crate) mod skip;

pub use io_class::{classify_io_error, IoClass, IoSide};
pub use throttle::Throttle;

//! Socket code shared by the DNS forwarder, the dialers and the UDP relay.
//! It knows sockets, not what flows over them: no DNS, no SOCKS5, no flows.
//!
//! - [`socket`]: building sockets (listening, outbound, marked), all
//!   nonblocking and close-on-exec from `socket()`.
//! - [`accept`]: the one accept loop of ward's listening stream sockets.
//! - [`held`]: the hold that lets a listener's socket outlive the actor
//!   reading it.
//! - [`ready`]: waiting on a connected UDP socket for data or an ICMP error.
//! - [`udp_batch`]: `recvmmsg`/`sendmmsg` and segmented (GSO) sends.
//! - [`socket_drops`]: datagrams the kernel dropped at a full receiving
//!   socket, per tree path.

pub mod accept;
pub mod connections;
pub mod held;
pub mod ready;
pub mod socket;
pub mod socket_drops;
pub mod udp_batch;

pub use accept::{accept_each, accept_paced, Listener};
pub use connections::Connections;
pub use held::{Held, Lease, Release};

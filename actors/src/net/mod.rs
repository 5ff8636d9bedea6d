//! Socket code more than one room of ward uses: the one accept loop of its
//! listening stream sockets, and the hold that lets a listener's socket
//! outlive the actor reading it.

pub mod accept;
pub mod held;

pub use accept::{accept_each, accept_paced, Listener};
pub use held::{Held, Lease};

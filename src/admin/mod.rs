//! The admin socket: a Unix stream socket speaking one JSON object per line
//! each way, served by a supervised actor, and the `ward ctl` client for it.

pub mod client;
pub mod operations;
pub mod protocol;
pub mod render;
pub mod server;
pub mod socket_file;

pub use server::{child_spec, AdminArgs, AdminSocket};

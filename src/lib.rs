//! # ward
//!
//! A DNS forwarder and UDP relay for home and edge routers, built as a tree
//! of supervised actors: a broken socket is an actor exit, its supervisor
//! restarts it, and the failure is counted instead of logged forever.
//!
//! # Layout
//! - [`cli`]: the command line (`run`, `check`, `ctl`); `main.rs` only calls it.
//! - [`config`]: RON configuration, parsed then validated into a ready [`config::Config`].
//! - [`app`]: builds the actor tree from the config and runs it until shutdown.
//! - [`context`]: what the service-level actors share (tree root, metrics, run facts).
//! - [`reload`]: hot reload: the new file validated, the difference applied to the live tree.
//! - [`local_dns`]: the resolver as the UDP relay's `LocalDns` (the relay does not know DNS).
//! - [`privileges`]: the user ward runs as and the capabilities it keeps.
//! - [`admin`]: the admin socket server actor, its protocol, and the `ctl` client.
//! - [`api`]: the HTTP API actor: the Clash/mihomo REST subset and ward's own routes.
//! - [`telemetry`]: logging, Prometheus metrics, process figures, the telemetry actor.
//! - [`readiness`]: when the tree serves (every front door bound), awaited through its observer.
//! - [`systemd`]: READY, RELOADING, STOPPING, STATUS and the watchdog, through `sd_notify`.
//!
//! The supervision machinery lives in `ward-supervision`; the domain actors
//! (DNS, dialers, UDP relay) and socket error classification in `ward-actors`.

pub mod admin;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod context;
pub mod local_dns;
pub mod privileges;
pub mod readiness;
pub mod reload;
pub mod systemd;
pub mod telemetry;

/// The integration tests' one way to skip (`tests/support/skip.rs`), for
/// unit tests that need root.
#[cfg(test)]
#[path = "../tests/support/skip.rs"]
pub(crate) mod skip;

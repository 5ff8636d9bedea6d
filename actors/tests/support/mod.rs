//! Support for the integration tests of `ward-actors`: peers on loopback
//! (a SOCKS5 server, a real trojan server, echo servers) and dialers to
//! reach them with. Every test file uses a different part of it.

#![allow(dead_code)]

pub mod socks5_server;
pub mod trojan_server;

/// The workspace's one way to skip a test (`tests/support/skip.rs`).
#[path = "../../../tests/support/skip.rs"]
mod skip;
#[allow(unused_imports)] // each test file uses a different part
pub use skip::require;

use std::net::SocketAddr;
use std::sync::Arc;

use ward_actors::dialer::metrics::DialerMetrics;
use ward_actors::dialer::settings::{DialerSpec, HealthSettings};
use ward_actors::dialer::Dialer;

/// A dialer named `d` with default health settings.
pub fn dialer(spec: DialerSpec) -> Dialer {
    Dialer::new(
        "d".into(),
        spec,
        Arc::new(HealthSettings::default()),
        Arc::new(DialerMetrics::default()),
    )
}

/// A direct dialer, without mark or device.
pub fn direct() -> Dialer {
    dialer(DialerSpec::Direct {
        mark: None,
        interface: None,
    })
}

/// A dialer through the SOCKS5 node at `server`, without credentials.
pub fn socks5_dialer(server: SocketAddr) -> Dialer {
    dialer(DialerSpec::Socks5 {
        server: server.to_string(),
        credentials: None,
        mark: None,
    })
}

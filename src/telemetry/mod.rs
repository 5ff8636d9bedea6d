//! Telemetry: logging setup, Prometheus metrics, process figures, and the
//! telemetry child that serves `/metrics` and flushes the log throttle.

pub mod logging;
pub mod metrics;
pub mod process;
pub mod server;

pub use metrics::{Metrics, MetricsObserver};
pub use server::child_spec;

//! Telemetry: logging setup and live log lines, Prometheus metrics, process figures, and the
//! telemetry child that serves `/metrics` and flushes the log throttle.

pub mod log_stream;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod server;

pub use metrics::{Metrics, MetricsObserver};
pub use server::child_spec;

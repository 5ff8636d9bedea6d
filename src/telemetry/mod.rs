//! Telemetry: logging setup, Prometheus metrics, process figures, and the
//! telemetry actor that serves `/metrics` and flushes the log throttle.

pub mod logging;
pub mod metrics;
pub mod process;
pub mod server;

pub use metrics::{Metrics, MetricsObserver};
pub use server::{TelemetryActor, TelemetryArgs};

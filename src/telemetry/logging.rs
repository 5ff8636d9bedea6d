//! The tracing subscriber: text or JSON lines, to stderr or to a file rotated
//! daily through tracing-appender's non-blocking writer. `RUST_LOG`, when
//! set, overrides the configured level.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Rotated log files kept: a week.
const KEEP_DAYS: usize = 7;

/// Keeps the file writer flushing (held only for its drop); drop it last, at exit.
pub struct LogGuard(#[allow(dead_code)] Option<WorkerGuard>);

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(config: &LogConfig) -> std::io::Result<LogGuard> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = match &config.file {
        Some(path) => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            let dir = dir.unwrap_or_else(|| std::path::Path::new("."));
            std::fs::create_dir_all(dir)?;
            let prefix = path.file_name().unwrap_or_default().to_string_lossy();
            let appender = tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix(prefix.as_ref())
                .max_log_files(KEEP_DAYS)
                .build(dir)
                .map_err(std::io::Error::other)?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            (BoxMakeWriter::new(writer), Some(guard))
        }
        None => (BoxMakeWriter::new(std::io::stderr), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A subscriber installed earlier (tests) stays; that is not an error.
    drop(result);
    Ok(LogGuard(guard))
}

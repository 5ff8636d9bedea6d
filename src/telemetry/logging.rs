//! The tracing subscriber: text or JSON lines, to stderr or to a file rotated
//! daily through tracing-appender's non-blocking writer. `RUST_LOG`, when
//! set, overrides the configured level. The filter can be replaced while
//! ward runs ([`set_level`], for the API's `PATCH /configs`). What the
//! filter lets through also goes to live subscribers (`log_stream`).

use std::sync::OnceLock;

use tracing::level_filters::LevelFilter;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::log_stream::LogFanOut;
use crate::config::{LogConfig, LogFormat};

/// Rotated log files kept: a week.
const KEEP_DAYS: usize = 7;

/// Keeps the file writer flushing (held only for its drop); drop it last, at exit.
pub struct LogGuard(#[allow(dead_code)] Option<WorkerGuard>);

/// Replaces the installed subscriber's filter.
type SetFilter = Box<dyn Fn(Targets) -> Result<(), String> + Send + Sync>;

/// How to replace the filter, once [`init`] installed the subscriber.
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();
/// The filter in force, as written.
static LEVEL: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// The filter in force, as written (`info`, `ward=debug,info`).
pub fn level() -> String {
    LEVEL.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Replaces the log filter while ward runs. An error when `filter` does
/// not parse or when this process installed no subscriber of its own.
pub fn set_level(filter: &str) -> Result<(), String> {
    let parsed = parse(filter)?;
    let set = SET_FILTER
        .get()
        .ok_or_else(|| "the log filter cannot be changed here".to_string())?;
    set(parsed)?;
    *LEVEL.lock().unwrap_or_else(|e| e.into_inner()) = filter.to_string();
    Ok(())
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(config: &LogConfig) -> std::io::Result<LogGuard> {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|text| Some((parse(&text).ok()?, text)));
    let (filter, level) = match from_env {
        Some(env) => env,
        None => match parse(&config.level) {
            Ok(filter) => (filter, config.level.clone()),
            Err(_) => (
                Targets::new().with_default(LevelFilter::INFO),
                "info".into(),
            ),
        },
    };
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
    // The filter is global: it decides what the log and the live
    // subscribers (log_stream) both get.
    let (filter, reload) = tracing_subscriber::reload::Layer::new(filter);
    let (text, json) = match config.format {
        LogFormat::Text => (
            Some(fmt::layer().with_ansi(false).with_writer(writer)),
            None,
        ),
        LogFormat::Json => {
            let json = fmt::layer().json().flatten_event(true).with_ansi(false);
            (None, Some(json.with_writer(writer)))
        }
    };
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(LogFanOut)
        .try_init()
        .map(|()| keep_setter(move |f| reload.reload(f)));
    // A subscriber installed earlier (tests) stays; that is not an error.
    if result.is_ok() {
        *LEVEL.lock().unwrap_or_else(|e| e.into_inner()) = level;
    }
    Ok(LogGuard(guard))
}

/// A filter as `log.level`, `RUST_LOG` and `PATCH /configs` write it: a
/// default level and `target=level` directives, comma-separated
/// (`info`, `ward_actors::dns=debug,info`); a target matches the targets
/// it begins. Span and field filters are not taken.
pub fn parse(filter: &str) -> Result<Targets, String> {
    filter.parse::<Targets>().map_err(|e| e.to_string())
}

fn keep_setter<E: std::fmt::Display>(
    reload: impl Fn(Targets) -> Result<(), E> + Send + Sync + 'static,
) {
    let _ = SET_FILTER.set(Box::new(move |filter| {
        reload(filter).map_err(|e| e.to_string())
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn a_filter_is_a_default_level_and_target_directives() {
        let filter = parse("ward_actors::dns=debug,warn").unwrap();
        assert!(filter.would_enable("ward_actors::dns::cache", &Level::DEBUG));
        assert!(!filter.would_enable("ward_actors::udp", &Level::INFO));
        assert!(filter.would_enable("ward::app", &Level::WARN));
        // A target takes in every target it begins.
        assert!(parse("ward=trace")
            .unwrap()
            .would_enable("ward_actors::x", &Level::TRACE));
        assert!(!parse("off").unwrap().would_enable("ward", &Level::ERROR));
        assert!(parse("ward=loud").is_err());
    }
}

//! The streaming routes, as mihomo's `hub/route`: `/traffic` (relayed UDP
//! bytes per second, each second), `/memory` (resident memory, each
//! second) and `/logs?level=` (log lines from now on, at that level and
//! above), each chunked or over a WebSocket (see `stream`). The
//! WebSocket forms of `/connections` and `/tree` live beside their plain
//! routes (`connections`, `own`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tracing::level_filters::LevelFilter;
use tracing::Level;

use super::stream::{every, Feed, StreamHub, Upgrade};
use crate::context::ServiceContext;
use crate::telemetry::{log_stream, process};

type Ctx = State<Arc<ServiceContext>>;
type Hub = Extension<StreamHub>;

/// How often `/traffic` and `/memory` speak.
const TICK: Duration = Duration::from_secs(1);

pub fn routes() -> Router<Arc<ServiceContext>> {
    Router::new()
        .route("/traffic", get(traffic))
        .route("/memory", get(memory))
        .route("/logs", get(logs))
}

/// Bytes sent (`up`) and received (`down`) by every UDP flow, per second
/// over the last tick.
async fn traffic(State(ctx): Ctx, Extension(hub): Hub, Upgrade(upgrade): Upgrade) -> Response {
    let totals = move || ctx.udp.as_ref().map_or((0, 0), |r| r.live_flows.totals());
    let mut last = (totals(), Instant::now());
    let feed = every(TICK, move || {
        let now = (totals(), Instant::now());
        // A client that stalled gets the mean over its stall.
        let secs = now.1.duration_since(last.1).as_secs_f64().max(1.0);
        let rate = |from: u64, to: u64| (to.saturating_sub(from) as f64 / secs).round() as u64;
        let (up, down) = (rate(last.0 .0, now.0 .0), rate(last.0 .1, now.0 .1));
        last = now;
        json!({"up": up, "down": down}).to_string().into()
    });
    hub.deliver(upgrade, feed)
}

/// Resident memory; ward sets no limit of its own.
async fn memory(Extension(hub): Hub, Upgrade(upgrade): Upgrade) -> Response {
    let feed = every(TICK, || {
        json!({"inuse": process::rss_bytes(), "oslimit": 0})
            .to_string()
            .into()
    });
    hub.deliver(upgrade, feed)
}

#[derive(Deserialize)]
struct LogsQuery {
    level: Option<String>,
}

/// What a mihomo level name lets through (`silent`: nothing); `None`
/// for a name mihomo does not have.
pub fn least_level(name: &str) -> Option<LevelFilter> {
    match name {
        // ward's trace lines show as debug.
        "debug" => Some(LevelFilter::TRACE),
        "info" => Some(LevelFilter::INFO),
        "warning" => Some(LevelFilter::WARN),
        "error" => Some(LevelFilter::ERROR),
        "silent" => Some(LevelFilter::OFF),
        _ => None,
    }
}

/// mihomo's name of a level.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE | Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warning",
        Level::ERROR => "error",
    }
}

/// Log lines at `?level=` (default `info`) and above, as
/// `{"type": level, "payload": text}`. Only what the log filter lets
/// through is there to stream.
async fn logs(
    Query(query): Query<LogsQuery>,
    Extension(hub): Hub,
    Upgrade(upgrade): Upgrade,
) -> Response {
    let Some(least) = least_level(query.level.as_deref().unwrap_or("info")) else {
        return super::error(StatusCode::BAD_REQUEST, "Body invalid");
    };
    hub.deliver(upgrade, log_feed(least))
}

fn log_feed(least: LevelFilter) -> Feed {
    futures::stream::unfold(log_stream::subscribe(), move |mut lines| async move {
        // Each turn waits for a line: this loop does not spin.
        loop {
            match lines.recv().await {
                Ok(line) if line.level <= least => {
                    let json = json!({"type": level_name(line.level), "payload": line.text});
                    return Some((json.to_string().into(), lines));
                }
                // Lines below the level, and those skipped when behind.
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_lets_through_itself_and_what_is_more_severe() {
        let passes = |name: &str, level: Level| level <= least_level(name).unwrap();
        assert!(passes("info", Level::WARN) && passes("info", Level::INFO));
        assert!(!passes("info", Level::DEBUG));
        assert!(passes("warning", Level::ERROR) && !passes("warning", Level::INFO));
        assert!(passes("debug", Level::TRACE));
        assert!(!passes("error", Level::WARN));
        assert!(!passes("silent", Level::ERROR));
        assert!(least_level("warn").is_none());
        assert_eq!(level_name(Level::WARN), "warning");
    }
}

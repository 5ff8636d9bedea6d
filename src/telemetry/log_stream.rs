//! Log lines for live subscribers (the API's `/logs`): a tracing layer
//! that, while anyone listens, formats each event the log filter lets
//! through and puts it on a bounded broadcast channel. Sending never
//! waits: a subscriber that falls more than [`CAPACITY`] lines behind
//! skips the oldest ones. Nothing is formatted while nobody listens.
//! It is not the log itself (that is `logging`'s writer) and keeps no
//! history: a subscriber sees what is logged after it subscribed.

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines a subscriber may fall behind before it skips some (each line is
/// a few hundred bytes: at most a few hundred KiB held).
pub const CAPACITY: usize = 1024;

/// Events of these crates are not streamed: sending a line over a
/// WebSocket logs through them, and at `debug` each line would beget more.
const TRANSPORT_TARGETS: [&str; 5] = ["tungstenite", "tokio_tungstenite", "hyper", "axum", "tower"];

/// One log event as subscribers get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    /// The message, then each field as ` key=value`.
    pub text: String,
}

static LINES: LazyLock<broadcast::Sender<Arc<LogLine>>> =
    LazyLock::new(|| broadcast::channel(CAPACITY).0);

/// Every line logged from now on, to receive (or to skip when behind).
pub fn subscribe() -> broadcast::Receiver<Arc<LogLine>> {
    LINES.subscribe()
}

/// The layer `logging::init` installs behind the log filter.
pub struct LogFanOut;

impl<S: Subscriber> Layer<S> for LogFanOut {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if LINES.receiver_count() == 0 {
            return;
        }
        let meta = event.metadata();
        let target = meta.target();
        let transport = TRANSPORT_TARGETS.iter().any(|t| {
            target
                .strip_prefix(t)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        });
        if transport {
            return;
        }
        let mut text = TextOf::default();
        event.record(&mut text);
        // No receiver left since the check is not an error.
        let _ = LINES.send(Arc::new(LogLine {
            level: *meta.level(),
            text: text.finish(),
        }));
    }
}

/// The message first, then the other fields, as the text log writes them.
#[derive(Default)]
struct TextOf {
    message: String,
    fields: String,
}

impl TextOf {
    fn finish(mut self) -> String {
        self.message.push_str(&self.fields);
        self.message
    }
}

impl Visit for TextOf {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Lines that reach `rx` whose text contains `tag`, without waiting.
    fn received(rx: &mut broadcast::Receiver<Arc<LogLine>>, tag: &str) -> Vec<LogLine> {
        let mut out = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(line) if line.text.contains(tag) => out.push((*line).clone()),
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return out,
            }
        }
    }

    #[test]
    fn events_reach_subscribers_with_their_level_and_fields() {
        let mut rx = subscribe();
        let subscriber = tracing_subscriber::registry().with(LogFanOut);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(path = "udp/inbounds/a", n = 3, "fanout-one killing");
            tracing::info!("fanout-one restarted");
            tracing::warn!(target: "tungstenite::protocol", "fanout-one frame");
        });
        let lines = received(&mut rx, "fanout-one");
        assert_eq!(
            lines,
            vec![
                LogLine {
                    level: Level::WARN,
                    text: "fanout-one killing path=\"udp/inbounds/a\" n=3".into()
                },
                LogLine {
                    level: Level::INFO,
                    text: "fanout-one restarted".into()
                },
            ]
        );
    }

    #[test]
    fn a_subscriber_that_falls_behind_skips_lines_and_logging_goes_on() {
        let mut slow = subscribe();
        let subscriber = tracing_subscriber::registry().with(LogFanOut);
        let total = CAPACITY * 3;
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..total {
                tracing::info!(i, "fanout-two line");
            }
        });
        let mut skipped = 0;
        let mut kept = 0;
        loop {
            match slow.try_recv() {
                Ok(line) if line.text.contains("fanout-two") => kept += 1,
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(n)) => skipped += n,
                Err(_) => break,
            }
        }
        assert!(kept <= CAPACITY, "kept {kept}");
        assert!(skipped as usize >= total - CAPACITY, "skipped {skipped}");
        assert!(kept > 0);
    }
}

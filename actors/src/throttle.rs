//! Log throttling for events that can repeat.
//!
//! Per call site and key (`broken pipe via hk1`), the first occurrence is
//! logged; later ones inside the window are counted, and one summary per
//! window says how many were suppressed. A periodic [`Throttle::flush`] emits
//! summaries for keys that went quiet. The number of keys is bounded.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How many distinct keys are tracked before new ones share one bucket.
const MAX_KEYS: usize = 4096;
/// The key that absorbs events past [`MAX_KEYS`].
const OVERFLOW_KEY: &str = "(too many distinct keys)";

/// Logs a warning through the global throttle: `warn_throttled!(key, ...)`
/// where `key` is a `&str` naming what repeats and the rest is what
/// `tracing::warn!` takes.
#[macro_export]
macro_rules! warn_throttled {
    ($key:expr, $($arg:tt)+) => {
        if $crate::throttle::Throttle::global().check(concat!(file!(), ":", line!()), $key) {
            ::tracing::warn!($($arg)+);
        }
    };
}

/// A count of suppressed occurrences for one site and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub site: &'static str,
    pub key: String,
    pub suppressed: u64,
    pub window: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "suppressed {} similar ({}) in the last {}s",
            self.suppressed,
            self.key,
            self.window.as_secs()
        )
    }
}

/// What to do with one occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Log this occurrence.
    pub log: bool,
    /// A window just ended with suppressed occurrences: log this first.
    pub summary: Option<Summary>,
}

struct Entry {
    window_start: Instant,
    suppressed: u64,
}

/// The throttle; one global instance serves the process.
pub struct Throttle {
    window: Duration,
    entries: Mutex<HashMap<(&'static str, String), Entry>>,
    suppressed_total: AtomicU64,
}

static GLOBAL: OnceLock<Throttle> = OnceLock::new();

impl Throttle {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            entries: Mutex::new(HashMap::new()),
            suppressed_total: AtomicU64::new(0),
        }
    }

    /// Sets the window of the global throttle; only the first call counts.
    pub fn init_global(window: Duration) -> &'static Throttle {
        GLOBAL.get_or_init(|| Throttle::new(window))
    }

    /// The global throttle (10 s window unless initialised otherwise).
    pub fn global() -> &'static Throttle {
        Self::init_global(Duration::from_secs(10))
    }

    /// Occurrences suppressed since start.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total.load(Ordering::Relaxed)
    }

    /// True when this occurrence should be logged; logs a pending summary.
    pub fn check(&self, site: &'static str, key: &str) -> bool {
        let decision = self.check_at(site, key, Instant::now());
        if let Some(summary) = decision.summary {
            tracing::warn!(site = summary.site, "{summary}");
        }
        decision.log
    }

    /// The decision for an occurrence at `now`.
    pub fn check_at(&self, site: &'static str, key: &str, now: Instant) -> Decision {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = if entries.len() >= MAX_KEYS && !entries.contains_key(&(site, key.to_string())) {
            OVERFLOW_KEY
        } else {
            key
        };
        let entry = match entries.entry((site, key.to_string())) {
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(Entry {
                    window_start: now,
                    suppressed: 0,
                });
                return Decision {
                    log: true,
                    summary: None,
                };
            }
            std::collections::hash_map::Entry::Occupied(occupied) => occupied.into_mut(),
        };
        if now.duration_since(entry.window_start) < self.window {
            entry.suppressed += 1;
            self.suppressed_total.fetch_add(1, Ordering::Relaxed);
            return Decision {
                log: false,
                summary: None,
            };
        }
        let summary = (entry.suppressed > 0).then(|| Summary {
            site,
            key: key.to_string(),
            suppressed: entry.suppressed,
            window: self.window,
        });
        entry.window_start = now;
        entry.suppressed = 0;
        Decision { log: true, summary }
    }

    /// Logs summaries of windows that have ended; forgets quiet keys.
    pub fn flush(&self) {
        for summary in self.flush_at(Instant::now()) {
            tracing::warn!(site = summary.site, "{summary}");
        }
    }

    /// Summaries of windows ended by `now`.
    pub fn flush_at(&self, now: Instant) -> Vec<Summary> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        entries.retain(|(site, key), entry| {
            if now.duration_since(entry.window_start) < self.window {
                return true;
            }
            if entry.suppressed > 0 {
                out.push(Summary {
                    site,
                    key: key.clone(),
                    suppressed: entry.suppressed,
                    window: self.window,
                });
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = "test.rs:1";

    #[test]
    fn first_is_logged_then_counted_then_summarised() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(t.check_at(SITE, "broken pipe via hk1", t0).log);
        for i in 1..=4812 {
            let at = t0 + Duration::from_millis(i);
            assert!(!t.check_at(SITE, "broken pipe via hk1", at).log);
        }
        // Another key is independent.
        assert!(
            t.check_at(SITE, "broken pipe via hk2", t0 + Duration::from_secs(1))
                .log
        );

        let later = t.check_at(SITE, "broken pipe via hk1", t0 + Duration::from_secs(11));
        assert!(later.log);
        let summary = later.summary.expect("summary of the ended window");
        assert_eq!(
            summary.to_string(),
            "suppressed 4812 similar (broken pipe via hk1) in the last 10s"
        );
        assert_eq!(t.suppressed_total(), 4812);
    }

    #[test]
    fn flush_summarises_quiet_keys_and_forgets_them() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        t.check_at(SITE, "a", t0);
        t.check_at(SITE, "a", t0 + Duration::from_secs(1));
        t.check_at(SITE, "b", t0);
        assert!(t.flush_at(t0 + Duration::from_secs(5)).is_empty());
        let summaries = t.flush_at(t0 + Duration::from_secs(10));
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].key, "a");
        assert_eq!(summaries[0].suppressed, 1);
        // Both were forgotten: the next occurrence is logged again.
        assert!(t.check_at(SITE, "a", t0 + Duration::from_secs(12)).log);
        assert!(t.check_at(SITE, "b", t0 + Duration::from_secs(12)).log);
    }

    #[test]
    fn keys_are_bounded() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..MAX_KEYS {
            assert!(t.check_at(SITE, &format!("peer {i}"), t0).log);
        }
        assert!(t.check_at(SITE, "one more", t0).log);
        assert!(
            !t.check_at(SITE, "and another", t0 + Duration::from_millis(1))
                .log
        );
        assert_eq!(t.entries.lock().unwrap().len(), MAX_KEYS + 1);
    }
}

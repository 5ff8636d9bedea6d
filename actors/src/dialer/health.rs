//! Health of one dialer's track (TCP or UDP), published for the hot path:
//! selection reads atomics, never a mailbox. Traffic reports and probe
//! results write it; the dialer's actor alone decides when a down track is
//! up again.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::failure::Failure;

/// The two kinds of traffic a dialer carries; each has its own health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Track {
    Tcp = 0,
    Udp = 1,
}

impl Track {
    pub const ALL: [Track; 2] = [Track::Tcp, Track::Udp];

    pub fn label(self) -> &'static str {
        match self {
            Track::Tcp => "tcp",
            Track::Udp => "udp",
        }
    }
}

/// Latencies remembered for the average of the last ten.
pub const HISTORY: usize = 10;
/// No latency measured yet.
const NONE: u32 = u32::MAX;
/// Weight of a new sample in the moving average, in 1/8ths.
const EWMA_NEW: u64 = 2;

/// Where a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Probe,
    Traffic,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Probe => "probe",
            Source::Traffic => "traffic",
        }
    }
}

/// The last failure, for `ward ctl dialers`.
#[derive(Clone, Debug)]
pub struct LastFailure {
    pub failure: Failure,
    pub source: Source,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

#[derive(Default)]
struct Detail {
    history: [u32; HISTORY],
    /// When each of `history` was measured, ms since the Unix epoch.
    history_at: [u64; HISTORY],
    len: usize,
    next: usize,
    last_failure: Option<LastFailure>,
}

/// One track's published health.
pub struct TrackHealth {
    up: AtomicBool,
    consecutive_failures: AtomicU32,
    consecutive_successes: AtomicU32,
    /// Microseconds; `NONE` until measured.
    last_us: AtomicU32,
    avg10_us: AtomicU32,
    ewma_us: AtomicU32,
    /// When the last path failure happened (ms since `epoch`), 0 for never.
    failed_at_ms: AtomicU64,
    traffic_failures: AtomicU64,
    probe_failures: AtomicU64,
    epoch: Instant,
    detail: Mutex<Detail>,
}

impl Default for TrackHealth {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            consecutive_successes: AtomicU32::new(0),
            last_us: AtomicU32::new(NONE),
            avg10_us: AtomicU32::new(NONE),
            ewma_us: AtomicU32::new(NONE),
            failed_at_ms: AtomicU64::new(0),
            traffic_failures: AtomicU64::new(0),
            probe_failures: AtomicU64::new(0),
            epoch: Instant::now(),
            detail: Mutex::new(Detail::default()),
        }
    }
}

/// A snapshot for display.
#[derive(Clone, Debug)]
pub struct TrackView {
    pub up: bool,
    pub last: Option<Duration>,
    pub avg10: Option<Duration>,
    pub moving_avg: Option<Duration>,
    pub consecutive_failures: u32,
    pub traffic_failures: u64,
    pub probe_failures: u64,
    pub last_failure: Option<LastFailure>,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(NONE - 1)) as u32
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn duration(us: u32) -> Option<Duration> {
    (us != NONE).then(|| Duration::from_micros(u64::from(us)))
}

impl TrackHealth {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    pub fn consecutive_successes(&self) -> u32 {
        self.consecutive_successes.load(Ordering::Relaxed)
    }

    pub fn last_latency(&self) -> Option<Duration> {
        duration(self.last_us.load(Ordering::Relaxed))
    }

    pub fn avg10(&self) -> Option<Duration> {
        duration(self.avg10_us.load(Ordering::Relaxed))
    }

    pub fn moving_avg(&self) -> Option<Duration> {
        duration(self.ewma_us.load(Ordering::Relaxed))
    }

    /// When the last path failure happened; `None` for never.
    pub fn failed_at(&self) -> Option<Instant> {
        match self.failed_at_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms)),
        }
    }

    /// Records a success with its latency. Does not bring a down track up:
    /// the caller decides that from `consecutive_successes`.
    pub fn record_success(&self, latency: Duration) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.consecutive_successes.fetch_add(1, Ordering::Relaxed);
        let us = micros(latency);
        self.last_us.store(us, Ordering::Relaxed);
        let old = self.ewma_us.load(Ordering::Relaxed);
        let ewma = if old == NONE {
            us
        } else {
            ((u64::from(old) * (8 - EWMA_NEW) + u64::from(us) * EWMA_NEW) / 8) as u32
        };
        self.ewma_us.store(ewma, Ordering::Relaxed);
        let mut detail = self.detail.lock().unwrap_or_else(|e| e.into_inner());
        let slot = detail.next;
        detail.history[slot] = us;
        detail.history_at[slot] = unix_ms();
        detail.next = (slot + 1) % HISTORY;
        detail.len = (detail.len + 1).min(HISTORY);
        let sum: u64 = detail.history[..detail.len]
            .iter()
            .map(|&v| u64::from(v))
            .sum();
        self.avg10_us
            .store((sum / detail.len as u64) as u32, Ordering::Relaxed);
    }

    /// Records a failure that blames the path; true when `down_after`
    /// consecutive failures just marked the track down.
    pub fn record_failure(&self, failure: Failure, source: Source, down_after: u32) -> bool {
        self.consecutive_successes.store(0, Ordering::Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let since_epoch = self.epoch.elapsed().as_millis().max(1) as u64;
        self.failed_at_ms.store(since_epoch, Ordering::Relaxed);
        match source {
            Source::Traffic => &self.traffic_failures,
            Source::Probe => &self.probe_failures,
        }
        .fetch_add(1, Ordering::Relaxed);
        let at_unix_ms = unix_ms();
        self.detail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_failure = Some(LastFailure {
            failure,
            source,
            at_unix_ms,
        });
        n >= down_after.max(1) && self.up.swap(false, Ordering::Relaxed)
    }

    /// Marks the track up with a clean failure count; true when it was down.
    pub fn mark_up(&self) -> bool {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        !self.up.swap(true, Ordering::Relaxed)
    }

    /// The last [`HISTORY`] latencies, oldest first, each with when it was
    /// measured (ms since the Unix epoch).
    pub fn history(&self) -> Vec<(u64, Duration)> {
        let detail = self.detail.lock().unwrap_or_else(|e| e.into_inner());
        let first = (detail.next + HISTORY - detail.len) % HISTORY;
        (0..detail.len)
            .map(|k| (first + k) % HISTORY)
            .map(|i| {
                let latency = Duration::from_micros(u64::from(detail.history[i]));
                (detail.history_at[i], latency)
            })
            .collect()
    }

    pub fn view(&self) -> TrackView {
        let detail = self.detail.lock().unwrap_or_else(|e| e.into_inner());
        TrackView {
            up: self.is_up(),
            last: self.last_latency(),
            avg10: self.avg10(),
            moving_avg: self.moving_avg(),
            consecutive_failures: self.consecutive_failures(),
            traffic_failures: self.traffic_failures.load(Ordering::Relaxed),
            probe_failures: self.probe_failures.load(Ordering::Relaxed),
            last_failure: detail.last_failure.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialer::failure::{Blame, Stage};
    use crate::io_class::IoClass;

    fn failure() -> Failure {
        Failure {
            class: IoClass::PeerGone,
            stage: Stage::Session,
            blame: Blame::Path,
            reason: "reset".into(),
        }
    }

    #[test]
    fn latencies_last_avg10_and_moving_average() {
        let h = TrackHealth::default();
        assert_eq!(h.last_latency(), None);
        for ms in 1..=12u64 {
            h.record_success(Duration::from_millis(ms));
        }
        assert_eq!(h.last_latency(), Some(Duration::from_millis(12)));
        let history: Vec<u64> = h
            .history()
            .iter()
            .map(|(_, d)| d.as_millis() as u64)
            .collect();
        assert_eq!(history, (3..=12).collect::<Vec<u64>>(), "oldest first");
        assert!(h.history().iter().all(|(at, _)| *at > 0));
        // The last ten: 3..=12, average 7.5 ms.
        assert_eq!(h.avg10(), Some(Duration::from_micros(7500)));
        let ewma = h.moving_avg().unwrap();
        assert!(ewma > Duration::from_millis(7) && ewma < Duration::from_millis(12));
    }

    #[test]
    fn down_after_consecutive_failures_and_a_success_resets_the_count() {
        let h = TrackHealth::default();
        assert!(!h.record_failure(failure(), Source::Probe, 3));
        assert!(!h.record_failure(failure(), Source::Probe, 3));
        h.record_success(Duration::from_millis(1));
        assert_eq!(h.consecutive_failures(), 0);
        assert!(!h.record_failure(failure(), Source::Traffic, 3));
        assert!(!h.record_failure(failure(), Source::Traffic, 3));
        assert!(h.record_failure(failure(), Source::Traffic, 3));
        assert!(!h.is_up());
        assert!(
            !h.record_failure(failure(), Source::Traffic, 3),
            "already down"
        );
        assert!(h.failed_at().is_some());
        let view = h.view();
        assert_eq!((view.traffic_failures, view.probe_failures), (4, 2));
        assert_eq!(view.last_failure.unwrap().source, Source::Traffic);
        assert!(h.mark_up());
        assert!(!h.mark_up());
    }
}

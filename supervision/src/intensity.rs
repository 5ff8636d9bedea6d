//! Restart intensity: OTP's `intensity` and `period`.
//!
//! A supervisor that must restart children more than `max_restarts` times
//! within `within` gives up: it stops its remaining children and fails, so
//! its own parent decides (escalation). This module only counts.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The restart rate a supervisor tolerates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed inside one window.
    pub max_restarts: u32,
    /// The window.
    pub within: Duration,
}

impl Default for Intensity {
    /// Ten restarts in thirty seconds. With the default backoff a single
    /// child failing forever stays below this rate; a storm does not.
    fn default() -> Self {
        Self {
            max_restarts: 10,
            within: Duration::from_secs(30),
        }
    }
}

/// The restart times still inside the window.
#[derive(Debug, Default)]
pub(crate) struct RestartWindow {
    times: VecDeque<Instant>,
}

impl RestartWindow {
    /// Records a restart at `now`; true when the intensity is exceeded.
    pub(crate) fn record(&mut self, now: Instant, intensity: Intensity) -> bool {
        while let Some(&oldest) = self.times.front() {
            if now.duration_since(oldest) >= intensity.within {
                self.times.pop_front();
            } else {
                break;
            }
        }
        self.times.push_back(now);
        self.times.len() > intensity.max_restarts as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceeds_only_past_max_inside_window() {
        let intensity = Intensity {
            max_restarts: 2,
            within: Duration::from_secs(5),
        };
        let t0 = Instant::now();
        let mut w = RestartWindow::default();
        assert!(!w.record(t0, intensity));
        assert!(!w.record(t0 + Duration::from_secs(1), intensity));
        assert!(w.record(t0 + Duration::from_secs(2), intensity));

        let mut w = RestartWindow::default();
        assert!(!w.record(t0, intensity));
        assert!(!w.record(t0 + Duration::from_secs(3), intensity));
        // The first restart has left the window by now.
        assert!(!w.record(t0 + Duration::from_secs(6), intensity));
    }
}

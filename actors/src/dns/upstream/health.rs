//! Upstream health, written by the resolver after each attempt and read on
//! the hot path without a message: consecutive failures mark an upstream
//! down; a success (a query or a probe answer) brings it back up.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Consecutive failures that mark an upstream down.
pub const DOWN_AFTER: u32 = 3;

#[derive(Debug, Default)]
pub struct Health {
    consecutive_failures: AtomicU32,
    down: AtomicBool,
    failures: AtomicU64,
    successes: AtomicU64,
}

impl Health {
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Records an answer; true when this brought the upstream back up.
    pub fn record_success(&self) -> bool {
        self.successes.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.down.swap(false, Ordering::Relaxed)
    }

    /// Records a failed attempt; true when this marked the upstream down.
    pub fn record_failure(&self) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        n >= DOWN_AFTER && !self.down.swap(true, Ordering::Relaxed)
    }

    /// Answers and failures since start.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.successes.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_consecutive_failures_up_after_a_success() {
        let h = Health::default();
        assert!(!h.record_failure());
        assert!(!h.record_failure());
        assert!(h.is_up());
        assert!(h.record_failure(), "the third marks it down");
        assert!(!h.is_up());
        assert!(!h.record_failure(), "already down");
        assert!(h.record_success(), "back up");
        assert!(h.is_up());
        assert_eq!(h.consecutive_failures(), 0);
        assert_eq!(h.totals(), (1, 4));
    }
}

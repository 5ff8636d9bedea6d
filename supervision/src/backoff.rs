//! Restart delays: Akka's exponential backoff with random jitter.
//!
//! The n-th consecutive failure of a child waits `min * 2^n`, capped at `max`,
//! stretched by a random factor in `[1, 1 + jitter)`. A child that stayed up
//! for `reset_after` starts again from `min`. This module only computes
//! delays; the supervisor schedules them. [`Backoff`] is the same policy
//! for any other retry loop (reconnects, probes, accept errors): every
//! retry delay in ward comes from here.

use std::time::Duration;

/// How long a failed child waits before it is started again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffPolicy {
    /// Delay after the first failure.
    pub min: Duration,
    /// Upper bound of the delay before jitter.
    pub max: Duration,
    /// A child that ran this long before failing starts again from `min`.
    pub reset_after: Duration,
    /// Random stretch: the delay is multiplied by a factor in `[1, 1 + jitter)`.
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

impl BackoffPolicy {
    /// A policy without delays, for tests and for children that must come back at once.
    pub const IMMEDIATE: BackoffPolicy = BackoffPolicy {
        min: Duration::ZERO,
        max: Duration::ZERO,
        reset_after: Duration::from_secs(60),
        jitter: 0.0,
    };

    /// Delays from `min` doubling to `max`, jittered as a supervisor's are,
    /// for a retry loop ([`Backoff`]; `reset_after` is for supervised
    /// children and plays no part there).
    pub const fn doubling(min: Duration, max: Duration) -> BackoffPolicy {
        BackoffPolicy {
            min,
            max,
            reset_after: Duration::from_secs(60),
            jitter: 0.2,
        }
    }

    /// The delay after `failures` earlier consecutive failures; `unit` is a
    /// random number in `[0, 1)`.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let factor = 2u32.checked_pow(failures.min(31)).unwrap_or(u32::MAX);
        let base = self.min.saturating_mul(factor).min(self.max);
        base.mul_f64(1.0 + self.jitter.max(0.0) * unit.clamp(0.0, 1.0))
    }

    /// The delay for this failure, with fresh randomness.
    pub fn next_delay(&self, failures: u32) -> Duration {
        self.delay(failures, rand::random::<f64>())
    }
}

/// One run of retries on a policy: each failure waits longer, a success
/// starts again from the minimum.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            failures: 0,
        }
    }

    /// A failure: how long to wait before the next attempt.
    pub fn fail(&mut self) -> Duration {
        let delay = self.policy.next_delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// A success: the next failure waits the minimum again.
    pub fn succeed(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
            reset_after: Duration::from_secs(10),
            jitter: 0.5,
        }
    }

    #[test]
    fn delay_doubles_per_failure_until_capped() {
        let p = policy();
        let ms: Vec<u128> = (0..6).map(|n| p.delay(n, 0.0).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.delay(200, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stretches_within_bounds() {
        let p = policy();
        assert_eq!(p.delay(0, 0.999_999).as_millis(), 149);
        for _ in 0..1000 {
            let d = p.next_delay(2);
            assert!(
                d >= Duration::from_millis(400) && d < Duration::from_millis(600),
                "{d:?}"
            );
        }
    }

    #[test]
    fn a_backoff_grows_with_failures_and_starts_over_after_a_success() {
        let mut b = Backoff::new(BackoffPolicy {
            jitter: 0.0,
            ..policy()
        });
        let ms: Vec<u128> = (0..5).map(|_| b.fail().as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000]);
        assert_eq!(b.failures(), 5);
        b.succeed();
        assert_eq!(b.fail(), Duration::from_millis(100));
    }
}

//! One child's lifecycle as a state machine: where it is ([`Life`]), its
//! restart history, and the transitions a supervisor drives it through.
//!
//! Pure: no actor, no runtime, no clock of its own (times are passed in),
//! so every transition is unit-tested here. The supervisor acts on what a
//! transition says (start a task, stop an actor, schedule a timer); this
//! module only decides.

use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::BackoffPolicy;
use crate::exit::ExitReason;
use crate::failure::ChildFailure;
use crate::spec::Restart;

/// Where a child is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Life {
    /// Down, with nothing scheduled. `gone`: its last incarnation (its
    /// task, helper tasks, subtree) has finished.
    Idle { gone: bool },
    /// Down, to be started at `at`, and not before its last incarnation
    /// is gone (the replacement must not meet its sockets).
    Due { at: Instant, gone: bool },
    /// Its start function runs; `attempt` tells the answer from a stale
    /// one. `regroup`: its group restarts meanwhile; once up, it is to be
    /// stopped and started again at that time.
    Starting {
        attempt: u64,
        regroup: Option<Instant>,
    },
    /// Up since `since`. `regroup`: its group restarts; it is to be
    /// stopped and started again at that time.
    Running {
        since: Instant,
        regroup: Option<Instant>,
    },
    /// Asked to stop; killed at `kill_at` if still up. Started again at
    /// `then` if set.
    Stopping {
        kill_at: Instant,
        then: Option<Instant>,
    },
}

/// What an exit means for the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exited {
    /// It ended by itself and must be restarted (after a backoff the
    /// supervisor computes; `uptime` may reset it).
    Restart { uptime: Duration },
    /// It ended by itself and stays down (its restart type says so).
    Done,
    /// It ended while waiting to be stopped for its group's restart: it
    /// restarts with the group, counted once.
    WithGroup,
    /// It ended because it was asked to.
    AsAsked,
    /// It was not up: a stale event.
    NotUp,
}

/// A child's life and history.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    pub(crate) life: Life,
    /// Times it was started again.
    pub(crate) restarts: u32,
    /// Consecutive failures, for the backoff.
    pub(crate) failures: u32,
    pub(crate) started_once: bool,
    pub(crate) last_exit: Option<ExitReason>,
    attempts: u64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            life: Life::Idle { gone: true },
            restarts: 0,
            failures: 0,
            started_once: false,
            last_exit: None,
            attempts: 0,
        }
    }
}

impl Lifecycle {
    /// Schedules a start at `at`: now for a child that is down, after it
    /// stops for one that is up or starting (its group restarts), at the
    /// new time for one already waiting.
    pub(crate) fn schedule(&mut self, at: Instant) {
        self.life = match self.life {
            Life::Idle { gone } | Life::Due { gone, .. } => Life::Due { at, gone },
            Life::Running { since, .. } => Life::Running {
                since,
                regroup: Some(at),
            },
            Life::Stopping { kill_at, .. } => Life::Stopping {
                kill_at,
                then: Some(at),
            },
            Life::Starting { attempt, .. } => Life::Starting {
                attempt,
                regroup: Some(at),
            },
        };
    }

    /// Cancels a scheduled start.
    pub(crate) fn unschedule(&mut self) {
        self.life = match self.life {
            Life::Due { gone, .. } => Life::Idle { gone },
            Life::Running { since, .. } => Life::Running {
                since,
                regroup: None,
            },
            Life::Stopping { kill_at, .. } => Life::Stopping {
                kill_at,
                then: None,
            },
            Life::Starting { attempt, .. } => Life::Starting {
                attempt,
                regroup: None,
            },
            other => other,
        };
    }

    /// When it is to start, while it waits down.
    pub(crate) fn due_at(&self) -> Option<Instant> {
        match self.life {
            Life::Due { at, .. } => Some(at),
            _ => None,
        }
    }

    /// When it is killed if it has not stopped.
    pub(crate) fn kill_at(&self) -> Option<Instant> {
        match self.life {
            Life::Stopping { kill_at, .. } => Some(kill_at),
            _ => None,
        }
    }

    /// True when its start is due and its last incarnation is gone.
    pub(crate) fn ready(&self, now: Instant) -> bool {
        matches!(self.life, Life::Due { at, gone: true } if at <= now)
    }

    /// True while it is on its way up or down: a grouped strategy starts
    /// nobody meanwhile.
    pub(crate) fn in_transit(&self) -> bool {
        matches!(
            self.life,
            Life::Starting { .. }
                | Life::Stopping { .. }
                | Life::Idle { gone: false }
                | Life::Due { gone: false, .. }
        )
    }

    /// Down with nothing left of it: a removed child can be forgotten.
    pub(crate) fn finished(&self) -> bool {
        self.life == Life::Idle { gone: true }
    }

    pub(crate) fn is_starting(&self) -> bool {
        matches!(self.life, Life::Starting { .. })
    }

    /// Its start begins; the attempt number to match the answer with.
    pub(crate) fn begin_start(&mut self) -> u64 {
        self.attempts += 1;
        self.life = Life::Starting {
            attempt: self.attempts,
            regroup: None,
        };
        self.attempts
    }

    /// True when `attempt` is the start now under way.
    pub(crate) fn awaits(&self, attempt: u64) -> bool {
        matches!(self.life, Life::Starting { attempt: a, .. } if a == attempt)
    }

    /// The start succeeded (a group restart that came meanwhile stays due).
    pub(crate) fn started(&mut self, now: Instant) {
        if self.started_once {
            self.restarts += 1;
        }
        self.started_once = true;
        let regroup = match self.life {
            Life::Starting { regroup, .. } => regroup,
            _ => None,
        };
        self.life = Life::Running {
            since: now,
            regroup,
        };
    }

    /// The start failed: it is tried again after the backoff; when.
    pub(crate) fn start_failed(
        &mut self,
        reason: ChildFailure,
        policy: &BackoffPolicy,
        now: Instant,
    ) -> Instant {
        let at = now + policy.next_delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.last_exit = Some(ExitReason::SpawnFailed(reason));
        // Nothing of it ran: there is nothing to wait for. A group restart
        // that came meanwhile waits for this retry too.
        let at = match self.life {
            Life::Starting {
                regroup: Some(group),
                ..
            } => at.max(group),
            _ => at,
        };
        self.life = Life::Due { at, gone: true };
        at
    }

    /// It exited; what that means.
    pub(crate) fn exited(&mut self, reason: ExitReason, restart: Restart, now: Instant) -> Exited {
        let outcome = match self.life {
            Life::Running {
                regroup: Some(at), ..
            } => {
                self.life = Life::Due { at, gone: false };
                Exited::WithGroup
            }
            Life::Running { since, .. } => {
                self.life = Life::Idle { gone: false };
                let again = match restart {
                    Restart::Permanent => true,
                    Restart::Transient => !reason.is_normal(),
                    Restart::Temporary => false,
                };
                match again {
                    true => Exited::Restart {
                        uptime: now.saturating_duration_since(since),
                    },
                    false => Exited::Done,
                }
            }
            Life::Stopping { then, .. } => {
                self.life = match then {
                    Some(at) => Life::Due { at, gone: false },
                    None => Life::Idle { gone: false },
                };
                Exited::AsAsked
            }
            _ => return Exited::NotUp,
        };
        self.last_exit = Some(reason);
        outcome
    }

    /// The backoff before a restart; a child that stayed up `reset_after`
    /// starts again from the minimum.
    pub(crate) fn restart_delay(&mut self, policy: &BackoffPolicy, uptime: Duration) -> Duration {
        if uptime >= policy.reset_after {
            self.failures = 0;
        }
        let delay = policy.next_delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Its last incarnation has finished.
    pub(crate) fn gone(&mut self) {
        self.life = match self.life {
            Life::Idle { .. } => Life::Idle { gone: true },
            Life::Due { at, .. } => Life::Due { at, gone: true },
            other => other,
        };
    }

    /// Asks it to stop (it will be killed at `kill_at`); false when it is
    /// not up.
    pub(crate) fn stop(&mut self, kill_at: Instant) -> bool {
        match self.life {
            Life::Running { regroup, .. } => {
                self.life = Life::Stopping {
                    kill_at,
                    then: regroup,
                };
                true
            }
            _ => false,
        }
    }

    /// Its state for the tree (a running child's actor may refine it).
    pub(crate) fn status(&self) -> &'static str {
        match self.life {
            Life::Idle { .. } => "stopped",
            Life::Due { .. } => "backoff",
            Life::Starting { .. } => "starting",
            Life::Running { .. } => "running",
            Life::Stopping { .. } => "stopping",
        }
    }

    /// When the running incarnation started.
    pub(crate) fn up_since(&self) -> Option<Instant> {
        match self.life {
            Life::Running { since, .. } => Some(since),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    fn boom() -> ExitReason {
        ExitReason::Failed(ChildFailure::new("test", Boom))
    }

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
            reset_after: Duration::from_secs(10),
            jitter: 0.0,
        }
    }

    fn running(now: Instant) -> Lifecycle {
        let mut l = Lifecycle::default();
        l.schedule(now);
        assert!(l.ready(now));
        l.begin_start();
        l.started(now);
        l
    }

    #[test]
    fn a_first_start_then_a_crash_and_a_restart_count_once() {
        let t0 = Instant::now();
        let mut l = running(t0);
        assert_eq!((l.status(), l.restarts), ("running", 0));
        let t1 = t0 + Duration::from_secs(1);
        let out = l.exited(boom(), Restart::Permanent, t1);
        assert_eq!(
            out,
            Exited::Restart {
                uptime: Duration::from_secs(1)
            }
        );
        assert!(l.in_transit(), "not gone yet");
        let delay = l.restart_delay(&policy(), Duration::from_secs(1));
        assert_eq!(delay, Duration::from_millis(100));
        l.schedule(t1 + delay);
        assert!(!l.ready(t1 + delay), "its old incarnation is not gone");
        l.gone();
        assert!(l.ready(t1 + delay));
        l.begin_start();
        l.started(t1 + delay);
        assert_eq!(l.restarts, 1);
        assert_eq!(l.last_exit.as_ref().map(|e| e.class()), Some("test"));
    }

    #[test]
    fn restart_types_decide_after_an_exit_by_itself() {
        let t0 = Instant::now();
        for (restart, reason, expect) in [
            (Restart::Permanent, ExitReason::Normal, true),
            (Restart::Transient, ExitReason::Normal, false),
            (Restart::Transient, ExitReason::Killed, true),
            (Restart::Transient, boom(), true),
            (Restart::Temporary, boom(), false),
        ] {
            let mut l = running(t0);
            let again = matches!(l.exited(reason, restart, t0), Exited::Restart { .. });
            assert_eq!(again, expect, "{restart:?}");
        }
    }

    #[test]
    fn a_failed_start_backs_off_and_doubles() {
        let t0 = Instant::now();
        let mut l = Lifecycle::default();
        l.schedule(t0);
        let attempt = l.begin_start();
        assert!(l.awaits(attempt) && !l.awaits(attempt + 1));
        let at = l.start_failed(ChildFailure::new("config", Boom), &policy(), t0);
        assert_eq!(at, t0 + Duration::from_millis(100));
        assert!(l.ready(at), "nothing ran, nothing to wait for");
        l.begin_start();
        let at = l.start_failed(ChildFailure::new("config", Boom), &policy(), at);
        assert_eq!(at, t0 + Duration::from_millis(300));
        assert_eq!(l.status(), "backoff");
        assert_eq!(
            l.last_exit.as_ref().map(ToString::to_string).as_deref(),
            Some("spawn failed: boom (config)")
        );
    }

    #[test]
    fn a_long_run_resets_the_backoff() {
        let mut l = Lifecycle {
            failures: 5,
            ..Lifecycle::default()
        };
        assert_eq!(
            l.restart_delay(&policy(), Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            l.restart_delay(&policy(), Duration::from_secs(10)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn a_group_member_stops_then_starts_at_the_groups_time() {
        let t0 = Instant::now();
        let at = t0 + Duration::from_millis(50);
        let mut l = running(t0);
        l.schedule(at);
        assert_eq!(l.status(), "running", "up until its turn to stop");
        assert!(l.stop(t0 + Duration::from_secs(2)));
        assert_eq!(l.kill_at(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(
            l.exited(ExitReason::Normal, Restart::Permanent, t0),
            Exited::AsAsked
        );
        assert_eq!(l.due_at(), Some(at));
        l.gone();
        assert!(l.ready(at));
    }

    #[test]
    fn a_member_crashing_before_its_turn_restarts_with_its_group() {
        let t0 = Instant::now();
        let at = t0 + Duration::from_millis(50);
        let mut l = running(t0);
        l.schedule(at);
        assert_eq!(l.exited(boom(), Restart::Permanent, t0), Exited::WithGroup);
        assert_eq!(l.due_at(), Some(at));
        assert_eq!(l.failures, 0, "counted once, by the member that failed");
    }

    #[test]
    fn a_member_starting_when_its_group_restarts_is_stopped_once_up() {
        let t0 = Instant::now();
        let at = t0 + Duration::from_millis(50);
        let mut l = Lifecycle::default();
        l.schedule(t0);
        let attempt = l.begin_start();
        l.schedule(at);
        assert!(l.awaits(attempt), "still its start");
        assert!(matches!(l.life, Life::Starting { regroup: Some(t), .. } if t == at));
        l.started(t0);
        assert!(
            l.stop(t0 + Duration::from_secs(2)),
            "up, and due to go down"
        );
        assert_eq!(
            l.exited(ExitReason::Normal, Restart::Permanent, t0),
            Exited::AsAsked
        );
        assert_eq!(l.due_at(), Some(at), "started again with its group");
        // A start that fails meanwhile is tried again no sooner than the group.
        let mut f = Lifecycle::default();
        f.schedule(t0);
        f.begin_start();
        f.schedule(t0 + Duration::from_secs(5));
        let retry = f.start_failed(ChildFailure::new("config", Boom), &policy(), t0);
        assert_eq!(retry, t0 + Duration::from_secs(5));
    }

    #[test]
    fn a_stop_without_restart_leaves_it_down_and_removable() {
        let t0 = Instant::now();
        let mut l = running(t0);
        assert!(l.stop(t0));
        assert!(!l.stop(t0), "already stopping");
        assert_eq!(
            l.exited(ExitReason::Killed, Restart::Permanent, t0),
            Exited::AsAsked
        );
        assert!(!l.finished(), "its tasks may still hold sockets");
        l.gone();
        assert!(l.finished());
        assert_eq!(
            l.exited(ExitReason::Normal, Restart::Permanent, t0),
            Exited::NotUp
        );
    }

    #[test]
    fn unscheduling_cancels_a_pending_start() {
        let t0 = Instant::now();
        let mut l = Lifecycle::default();
        l.schedule(t0);
        l.unschedule();
        assert!(l.finished() && !l.ready(t0));
        let mut up = running(t0);
        up.schedule(t0);
        up.unschedule();
        assert!(up.stop(t0));
        assert_eq!(
            up.exited(ExitReason::Normal, Restart::Permanent, t0),
            Exited::AsAsked
        );
        assert_eq!(up.due_at(), None);
    }
}

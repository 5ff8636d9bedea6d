//! How a supervised child ended, and whether that counts as normal.
//!
//! ractor reports a clean `stop` as `ActorTerminated` with an optional reason,
//! a `kill` as `ActorTerminated` with the reason `"killed"`, and a panic or an
//! `Err` from a handler as `ActorFailed`. OTP's rule applies on top: a clean
//! stop is normal; a kill, a panic, an error or a failed spawn is abnormal.

use std::fmt;

use ractor::{ActorId, SupervisionEvent};

/// ractor's exit reason for a killed actor (the `Display` of `Signal::Kill`).
const KILLED: &str = "killed";
/// ractor's exit reason when the runtime dropped the actor's task.
const TASK_CANCELLED: &str = "actor_task_cancelled";

/// Why a child is no longer running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// A clean `stop` without a reason.
    Normal,
    /// A clean `stop` with a reason.
    Stopped(String),
    /// Killed by a signal (ractor `kill`), or its task was cancelled.
    Killed,
    /// A panic or an `Err` returned from one of its handlers.
    Failed(String),
    /// The child never ran: its start function or `pre_start` failed.
    SpawnFailed(String),
}

impl ExitReason {
    /// The child and its exit reason, when the event says a child ended.
    pub fn from_event(event: &SupervisionEvent) -> Option<(ActorId, ExitReason)> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                Some((cell.get_id(), Self::from_stop_reason(reason.as_deref())))
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                Some((cell.get_id(), ExitReason::Failed(err.to_string())))
            }
            _ => None,
        }
    }

    fn from_stop_reason(reason: Option<&str>) -> ExitReason {
        match reason {
            None => ExitReason::Normal,
            Some(KILLED) | Some(TASK_CANCELLED) => ExitReason::Killed,
            Some(other) => ExitReason::Stopped(other.to_string()),
        }
    }

    /// A normal exit is not restarted for `Transient` children and never
    /// counts toward restart intensity.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal | ExitReason::Stopped(_))
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Stopped(reason) => write!(f, "stopped: {reason}"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Failed(err) => write!(f, "failed: {err}"),
            ExitReason::SpawnFailed(err) => write!(f, "spawn failed: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_map_to_normal_or_killed() {
        assert_eq!(ExitReason::from_stop_reason(None), ExitReason::Normal);
        assert_eq!(
            ExitReason::from_stop_reason(Some("killed")),
            ExitReason::Killed
        );
        assert_eq!(
            ExitReason::from_stop_reason(Some("actor_task_cancelled")),
            ExitReason::Killed
        );
        let stopped = ExitReason::from_stop_reason(Some("shutdown"));
        assert_eq!(stopped, ExitReason::Stopped("shutdown".into()));
        assert!(stopped.is_normal());
        assert!(!ExitReason::Killed.is_normal());
        assert!(!ExitReason::Failed("boom".into()).is_normal());
        assert!(!ExitReason::SpawnFailed("bind".into()).is_normal());
    }
}

//! How a supervised child ended, and whether that counts as normal.
//!
//! ractor reports a clean `stop` as `ActorTerminated` with an optional reason,
//! a `kill` as `ActorTerminated` with the reason `"killed"`, and a panic or an
//! `Err` from a handler as `ActorFailed`. OTP's rule applies on top: a clean
//! stop is normal; a kill, a panic, an error or a failed spawn is abnormal.
//! A failure keeps its error value and class ([`ChildFailure`]); only
//! ractor's own stop and kill reasons are text.

use std::fmt;

use ractor::{ActorId, SupervisionEvent};

use crate::failure::ChildFailure;

/// ractor's exit reason for a killed actor (the `Display` of `Signal::Kill`).
const KILLED: &str = "killed";
/// ractor's exit reason when the runtime dropped the actor's task.
const TASK_CANCELLED: &str = "actor_task_cancelled";

/// Why a child is no longer running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// A clean `stop` without a reason.
    Normal,
    /// A clean `stop` with a reason (ractor's interface: text).
    Stopped(String),
    /// Killed by a signal (ractor `kill`), or its task was cancelled.
    Killed,
    /// A panic or an `Err` returned from one of its handlers.
    Failed(ChildFailure),
    /// The child never ran: its start function or `pre_start` failed.
    SpawnFailed(ChildFailure),
}

impl ExitReason {
    /// The child and its exit reason, when the event says a child ended.
    /// Takes the event: a failed child's error moves out of it, and
    /// whatever else it carries (the dead child's state) is dropped here.
    pub fn from_event(event: SupervisionEvent) -> Option<(ActorId, ExitReason)> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                Some((cell.get_id(), Self::from_stop_reason(reason.as_deref())))
            }
            SupervisionEvent::ActorFailed(cell, err) => Some((
                cell.get_id(),
                ExitReason::Failed(ChildFailure::from_processing_err(err)),
            )),
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

    /// A stable label of the exit for the tree and metrics: `normal`,
    /// `killed`, or the failure's class.
    pub fn class(&self) -> &'static str {
        match self {
            ExitReason::Normal | ExitReason::Stopped(_) => "normal",
            ExitReason::Killed => "killed",
            ExitReason::Failed(failure) | ExitReason::SpawnFailed(failure) => failure.class(),
        }
    }

    /// The failure, when the child failed.
    pub fn failure(&self) -> Option<&ChildFailure> {
        match self {
            ExitReason::Failed(failure) | ExitReason::SpawnFailed(failure) => Some(failure),
            _ => None,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Stopped(reason) => write!(f, "stopped: {reason}"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Failed(failure) => write!(f, "failed: {failure}"),
            ExitReason::SpawnFailed(failure) => write!(f, "spawn failed: {failure}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

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
        let failed = ExitReason::Failed(ChildFailure::new("socket_dead", Boom));
        assert!(!failed.is_normal());
        assert_eq!(failed.class(), "socket_dead");
        assert_eq!(failed.to_string(), "failed: boom (socket_dead)");
        assert!(!ExitReason::SpawnFailed(ChildFailure::new("config", Boom)).is_normal());
        assert_eq!(stopped.class(), "normal");
        assert_eq!(ExitReason::Killed.class(), "killed");
    }
}

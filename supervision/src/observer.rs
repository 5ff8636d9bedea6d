//! Hooks through which a supervisor reports restarts and escalations.
//!
//! The supervision crate knows nothing of metrics backends; the binary passes
//! an observer that counts into Prometheus. Calls happen inside the
//! supervisor's handler, so an observer must be cheap and must not block.

use std::time::Duration;

use crate::exit::ExitReason;

/// Receives supervision events of every supervisor it is given to.
pub trait SupervisionObserver: Send + Sync + 'static {
    /// A child started (its start function succeeded, the first time or
    /// again); `path` is the child's path. Tells a waiter that the tree
    /// changed, so it need not poll.
    fn child_started(&self, _path: &str, _kind: &str) {}
    /// A child ended; `path` is the child's path.
    fn child_exited(&self, _path: &str, _kind: &str, _reason: &ExitReason) {}
    /// A child will be started again after `delay`.
    fn child_restarting(&self, _path: &str, _kind: &str, _delay: Duration) {}
    /// A supervisor exceeded its restart intensity and is failing.
    fn escalated(&self, _path: &str) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl SupervisionObserver for NoopObserver {}

//! What a supervisor does when a child ends: apply its restart type and
//! the strategy (siblings of a group stop one by one, last started first,
//! and start again together), count the restart against the intensity,
//! escalate past it, and watch the old incarnation until it is gone.

use ractor::{ActorId, ActorRef};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{display_path, SupervisorError, SupervisorMsg, SupervisorState, ESCALATED};
use crate::exit::ExitReason;
use crate::failure::ChildFailure;
use crate::lifecycle::Exited;
use crate::spec::{Restart, Strategy};

impl SupervisorState {
    /// A child's exit, taken from ractor's event.
    pub(super) async fn on_child_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: ActorId,
        reason: ExitReason,
        now: Instant,
    ) -> Result<(), ChildFailure> {
        let Some(seq) = self.table().take_id(&id) else {
            // Not known yet: its start's answer is still on its way.
            self.hold_early_exit(id, reason);
            return Ok(());
        };
        let exited = self.table().update(seq, |slot| {
            slot.now.cell = None;
            let exited = slot.life.exited(reason.clone(), slot.spec.restart, now);
            if exited == Exited::Done && slot.spec.restart == Restart::Temporary {
                slot.removing = true;
            }
            (exited, slot.spec.name.clone(), slot.spec.kind.clone())
        });
        let Some((exited, name, kind)) = exited else {
            return Ok(());
        };
        self.watch_old_incarnation(myself, seq);
        let path = self.child_path(&name);
        if exited != Exited::AsAsked && exited != Exited::NotUp {
            self.config.observer.child_exited(&path, &kind, &reason);
        }
        match exited {
            Exited::AsAsked => {
                self.advance_stops(now);
                self.forget_if_finished(seq);
            }
            // Its group restarts anyway: one restart, counted once.
            Exited::WithGroup => self.stop_queue.retain(|&s| s != seq),
            Exited::Done => {
                if !reason.is_normal() {
                    tracing::debug!(child = %path, %reason, "child exited; not restarted");
                }
                self.forget_if_finished(seq);
            }
            Exited::Restart { uptime } => {
                if self.window.record(now, self.config.intensity) {
                    let error = self.escalate(path, reason).await;
                    return Err(ChildFailure::new(ESCALATED, error));
                }
                self.restart(seq, &path, &kind, &reason, uptime, now);
            }
            Exited::NotUp => {}
        }
        Ok(())
    }

    /// Schedules `seq` (and its group) to start again after its backoff.
    fn restart(
        &mut self,
        seq: u64,
        path: &str,
        kind: &str,
        reason: &ExitReason,
        uptime: std::time::Duration,
        now: Instant,
    ) {
        let policy = self.config.backoff;
        let delay = self
            .table()
            .update(seq, |slot| {
                let policy = slot.spec.backoff.unwrap_or(policy);
                slot.life.restart_delay(&policy, uptime)
            })
            .unwrap_or(policy.min);
        tracing::warn!(child = %path, kind = %kind, %reason,
            restart_in_ms = delay.as_millis() as u64, "child exited; restarting");
        self.config.observer.child_restarting(path, kind, delay);
        let at = now + delay;
        let siblings = self.affected_siblings(seq);
        let mut table = self.view.lock();
        for &sibling in &siblings {
            // Temporary siblings are stopped and not started again.
            table.update(sibling, |slot| {
                if slot.spec.restart == Restart::Temporary {
                    slot.removing = true;
                } else {
                    slot.life.schedule(at);
                }
            });
        }
        table.update(seq, |slot| slot.life.schedule(at));
        drop(table);
        for &sibling in &siblings {
            self.forget_if_finished(sibling);
        }
        self.stop_queue.extend(siblings.iter().rev());
        self.advance_stops(now);
    }

    /// Siblings the strategy restarts along with `seq` (not `seq` itself).
    fn affected_siblings(&self, seq: u64) -> Vec<u64> {
        let table = self.table();
        match self.config.strategy {
            Strategy::OneForOne => Vec::new(),
            Strategy::OneForAll => table.slots.keys().copied().filter(|&s| s != seq).collect(),
            Strategy::RestForOne => table.slots.range(seq + 1..).map(|(s, _)| *s).collect(),
        }
    }

    /// The old incarnation of a child has ended completely.
    pub(super) fn mark_gone(&mut self, seq: u64) {
        self.table().update(seq, |slot| slot.life.gone());
        self.forget_if_finished(seq);
    }

    /// Watches the ended incarnation of a child until its task and every
    /// task below it have finished, then sends `Gone`. Until then the child
    /// is not started again, so its replacement never meets its sockets.
    fn watch_old_incarnation(&mut self, myself: &ActorRef<SupervisorMsg>, seq: u64) {
        let taken = self.table().update(seq, |slot| {
            let mut joins: Vec<JoinHandle<()>> = slot.now.join.take().into_iter().collect();
            joins.extend(slot.now.tasks.abort_all());
            // The dead incarnation's subtree leaves the tree now.
            (joins, slot.now.view.take())
        });
        let Some((mut joins, old_view)) = taken else {
            return;
        };
        if let Some(view) = old_view {
            joins.extend(view.take_unfinished_joins());
        }
        joins.retain(|join| !join.is_finished());
        if joins.is_empty() {
            self.mark_gone(seq);
            return;
        }
        let target = myself.clone();
        tokio::spawn(async move {
            for join in joins {
                let _ = join.await;
            }
            let _ = target.send_message(SupervisorMsg::Gone(seq));
        });
    }

    /// Past the intensity: stop every child and fail, for the parent.
    async fn escalate(&mut self, child: String, reason: ExitReason) -> SupervisorError {
        let intensity = self.config.intensity;
        tracing::error!(supervisor = %display_path(&self.path), %child, %reason,
            max_restarts = intensity.max_restarts, within_ms = intensity.within.as_millis() as u64,
            "restart intensity exceeded; stopping children and escalating");
        self.config.observer.escalated(&self.path);
        self.shutdown_children().await;
        SupervisorError::IntensityExceeded {
            max_restarts: intensity.max_restarts,
            within: intensity.within,
            child,
            reason,
        }
    }
}

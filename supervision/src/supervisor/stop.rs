//! Stopping children: one asked to stop is killed if it overruns its
//! shutdown time; a group's siblings stop one at a time, last started
//! first; a removed child is forgotten once it and its tasks are gone; a
//! supervisor's own shutdown stops every child in reverse start order.

use std::time::Duration;

use ractor::{ActorCell, RpcReplyPort};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{SupervisorError, SupervisorState};
use crate::table::StartTicket;

/// How long a killed child may take to end before shutdown moves on.
const KILL_WAIT: Duration = Duration::from_secs(1);

impl SupervisorState {
    /// Asks a running child to stop, to be killed if it overruns its
    /// shutdown time; false when it was not running.
    pub(super) fn request_stop(&mut self, seq: u64, now: Instant, reason: &str) -> bool {
        self.table()
            .update(seq, |slot| {
                let kill_at = now + slot.spec.shutdown;
                let stopping = slot.life.stop(kill_at);
                if let (true, Some(cell)) = (stopping, &slot.now.cell) {
                    cell.stop(Some(reason.to_string()));
                }
                stopping
            })
            .unwrap_or(false)
    }

    /// Stops the next queued sibling once the previous one has ended, so a
    /// group goes down in reverse start order.
    /// A sibling still starting is waited for: it is stopped once up.
    pub(super) fn advance_stops(&mut self, now: Instant) {
        if self.stop_queue.is_empty() || self.table().any_stopping() {
            return;
        }
        while let Some(&seq) = self.stop_queue.front() {
            if self
                .table()
                .get(seq)
                .is_some_and(|slot| slot.life.is_starting())
            {
                return;
            }
            self.stop_queue.pop_front();
            if self.request_stop(seq, now, "restarting with a sibling") {
                return;
            }
        }
    }

    /// Kills children that did not stop within their shutdown time.
    pub(super) fn expire_deadlines(&mut self, now: Instant) {
        let mut table = self.view.lock();
        while let Some(&(at, seq)) = table.deadlines.first() {
            if at > now {
                break;
            }
            // The slot stays stopping until its exit comes; only the
            // timer's entry goes.
            table.deadlines.remove(&(at, seq));
            if let Some(slot) = table.get(seq) {
                if let Some(cell) = &slot.now.cell {
                    tracing::warn!(child = %self.child_path(&slot.spec.name),
                        "child did not stop in time; killing it");
                    cell.kill();
                }
            }
        }
    }

    /// Stops a child and forgets it once it and its tasks are gone.
    pub(super) fn remove_child(
        &mut self,
        name: &str,
        reply: RpcReplyPort<Result<(), SupervisorError>>,
        now: Instant,
    ) {
        let Some(seq) = self.table().seq_of_name(name) else {
            let _ = reply.send(Err(SupervisorError::NoSuchChild(name.to_string())));
            return;
        };
        self.table().update(seq, |slot| {
            slot.life.unschedule();
            slot.removing = true;
            slot.on_removed.push(reply);
        });
        // A running child is asked to stop; a stopping one is already on
        // its way; a starting one is stopped when its start is answered.
        self.request_stop(seq, now, "removed");
        self.forget_if_finished(seq);
    }

    /// Stops every child in reverse start order, killing those that overrun
    /// their shutdown time. Used on graceful stop and on escalation.
    pub(super) async fn shutdown_children(&mut self) {
        self.wake = None;
        let seqs: Vec<u64> = self.table().slots.keys().rev().copied().collect();
        for seq in seqs {
            let taken = self.table().get_mut_for_shutdown(seq);
            let Some((cell, join, tasks, start, shutdown)) = taken else {
                continue;
            };
            let (cell, join) = match (cell, start) {
                (Some(cell), _) => (Some(cell), join),
                // Still starting: wait for the start to end, then stop what it started.
                (None, Some(start)) => started_meanwhile(start, shutdown).await,
                (None, None) => (None, None),
            };
            if let Some(cell) = cell {
                stop_gracefully(&cell, join, shutdown).await;
            }
            for task in tasks.abort_all() {
                let _ = tokio::time::timeout(KILL_WAIT, task).await;
            }
        }
    }
}

/// The child a start in flight brought up, once it has ended.
async fn started_meanwhile(
    start: StartTicket,
    within: Duration,
) -> (Option<ActorCell>, Option<JoinHandle<()>>) {
    let StartTicket { mut task, result } = start;
    if tokio::time::timeout(within, &mut task).await.is_err() {
        // Whatever it started is linked to this supervisor, which ractor
        // kills with it.
        task.abort();
        let _ = tokio::time::timeout(KILL_WAIT, task).await;
        return (None, None);
    }
    let started = result.lock().unwrap_or_else(|e| e.into_inner()).take();
    match started {
        Some(Ok(child)) => (Some(child.cell), Some(child.join)),
        _ => (None, None),
    }
}

/// Stops a child and waits until its task has ended; kills it after `shutdown`.
async fn stop_gracefully(cell: &ActorCell, join: Option<JoinHandle<()>>, shutdown: Duration) {
    cell.stop(Some("shutdown".to_string()));
    let Some(mut join) = join else {
        let _ = cell.wait(Some(shutdown)).await;
        return;
    };
    if tokio::time::timeout(shutdown, &mut join).await.is_err() {
        tracing::warn!(actor = %cell.get_id(), "child did not stop in time; killing it");
        cell.kill();
        let _ = tokio::time::timeout(KILL_WAIT, join).await;
    }
}

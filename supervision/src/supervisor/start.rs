//! Starting children: in order at the supervisor's own start, and later
//! (restarts, `AddChild`) in a task per start whose answer comes back as
//! [`SupervisorMsg::Started`], so a slow start function never holds the
//! supervisor's mailbox. A grouped strategy starts one child at a time, in
//! order; a failed start holds back every later child of its group.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use ractor::{ActorId, ActorRef, SpawnErr};
use tokio::time::Instant;

use super::{SupervisorError, SupervisorMsg, SupervisorState, EARLY_EXITS_MAX};
use crate::exit::ExitReason;
use crate::failure::ChildFailure;
use crate::spec::{ChildSpec, StartContext, StartedChild};
use crate::table::{AddReply, StartResult, StartTicket, Table};
use crate::task_guard::TaskScope;

/// The class of an error from ractor's spawn itself.
const SPAWN: &str = "spawn";

impl SupervisorState {
    /// Starts `seqs` one after another, awaiting each: the supervisor's
    /// own start, before it takes any message.
    pub(super) async fn start_in_order(&mut self, myself: &ActorRef<SupervisorMsg>, seqs: &[u64]) {
        let mut held: Option<Instant> = None;
        for &seq in seqs {
            if let Some(at) = held {
                // An earlier sibling of the group failed to start: this
                // one waits for it.
                self.table().update(seq, |slot| slot.life.schedule(at));
                continue;
            }
            let Some((spec, attempt, ctx)) = self.begin_start(myself, seq) else {
                continue;
            };
            let result = start_child(&spec, ctx).await;
            // Exits are taken after this start: none can be early.
            let _ = self.finish_start(seq, attempt, result, Instant::now());
            if self.grouped() {
                held = self.table().get(seq).and_then(|slot| slot.life.due_at());
            }
        }
    }

    /// Starts the children whose restart is due, in start order: all at
    /// once for one_for_one, the first only for a grouped strategy (the
    /// next when its answer comes).
    pub(super) fn start_due(&mut self, myself: &ActorRef<SupervisorMsg>, now: Instant) {
        if self.group_blocked() {
            return;
        }
        let mut due: Vec<u64> = {
            let table = self.table();
            table
                .dues
                .iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, seq)| *seq)
                .collect()
        };
        due.sort_unstable();
        for seq in due {
            if !self
                .table()
                .get(seq)
                .is_some_and(|slot| slot.life.ready(now))
            {
                continue;
            }
            if self.table().get(seq).is_some_and(|slot| slot.removing) {
                self.table().update(seq, |slot| slot.life.unschedule());
                self.forget_if_finished(seq);
                continue;
            }
            self.spawn_start(myself, seq);
            if self.grouped() {
                return;
            }
        }
    }

    /// Marks the child as starting, with a fresh task scope; what its
    /// start function needs.
    fn begin_start(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        seq: u64,
    ) -> Option<(ChildSpec, u64, StartContext)> {
        let path_of = |name: &str| self.child_path(name);
        let mut table = self.view.lock();
        let (spec, attempt, tasks) = table.update(seq, |slot| {
            let attempt = slot.life.begin_start();
            slot.now.tasks = TaskScope::new();
            (slot.spec.clone(), attempt, slot.now.tasks.clone())
        })?;
        drop(table);
        let ctx = StartContext {
            supervisor: myself.get_cell(),
            path: path_of(&spec.name),
            tasks,
        };
        Some((spec, attempt, ctx))
    }

    /// Runs the child's start function in a task; its answer comes back
    /// as `Started`.
    fn spawn_start(&mut self, myself: &ActorRef<SupervisorMsg>, seq: u64) {
        let Some((spec, attempt, ctx)) = self.begin_start(myself, seq) else {
            return;
        };
        let result = Arc::new(Mutex::new(None));
        let (out, target) = (result.clone(), myself.clone());
        let task = tokio::spawn(async move {
            let started = start_child(&spec, ctx).await;
            *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
            let _ = target.send_message(SupervisorMsg::Started { seq, attempt });
        });
        self.table().update(seq, |slot| {
            slot.now.start = Some(StartTicket { task, result })
        });
    }

    /// A start task has ended: take its answer.
    pub(super) async fn on_started(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        seq: u64,
        attempt: u64,
        now: Instant,
    ) -> Result<(), ChildFailure> {
        let ticket = self
            .table()
            .update(seq, |slot| match slot.life.awaits(attempt) {
                true => slot.now.start.take(),
                false => None,
            })
            .flatten();
        let Some(ticket) = ticket else {
            return Ok(()); // stale: the slot moved on
        };
        let result = ticket
            .take()
            .unwrap_or_else(|| Err(ChildFailure::new(SPAWN, SupervisorError::Removed)));
        let early = self.finish_start(seq, attempt, result, now);
        if !self.table().any_starting() {
            self.early_exits.clear();
        }
        // A sibling of a group restart that was starting is up now: its
        // turn to be stopped.
        self.advance_stops(now);
        match early {
            Some((id, reason)) => self.on_child_exit(myself, id, reason, now).await,
            None => Ok(()),
        }
    }

    /// Records how a start ended. A child that already exited (its exit
    /// came before this answer) is handed back with its exit reason.
    fn finish_start(
        &mut self,
        seq: u64,
        attempt: u64,
        result: StartResult,
        now: Instant,
    ) -> Option<(ActorId, ExitReason)> {
        match result {
            Ok(started) => self.started(seq, attempt, started, now),
            Err(failure) => {
                self.start_failed(seq, failure, now);
                None
            }
        }
    }

    fn started(
        &mut self,
        seq: u64,
        attempt: u64,
        started: StartedChild,
        now: Instant,
    ) -> Option<(ActorId, ExitReason)> {
        let cell = started.cell.clone();
        let id = cell.get_id();
        let mut table = self.view.lock();
        let taken = table.update(seq, |slot| {
            if !slot.life.awaits(attempt) {
                return None;
            }
            slot.life.started(now);
            slot.now.cell = Some(started.cell);
            slot.now.join = Some(started.join);
            slot.now.view = started.view;
            let named = (slot.spec.name.clone(), slot.spec.kind.clone());
            Some((slot.on_added.take(), slot.removing, named))
        });
        let Some(Some((added, removing, (name, kind)))) = taken else {
            drop(table);
            cell.stop(None);
            return None;
        };
        table.bind_id(id, seq);
        drop(table);
        self.config
            .observer
            .child_started(&self.child_path(&name), &kind);
        if let Some(reply) = added {
            let _ = reply.send(Ok(cell));
        }
        if let Some(reason) = self.early_exits.remove(&id) {
            // It is already gone: its exit is handled now, in order.
            return Some((id, reason));
        }
        if removing {
            self.request_stop(seq, now, "removed");
        }
        None
    }

    /// Records a failed start. A static child is tried again after its
    /// backoff (later children of a group wait for it); a dynamic one is
    /// forgotten and its caller told.
    fn start_failed(&mut self, seq: u64, failure: ChildFailure, now: Instant) {
        let policy = self.config.backoff;
        let mut table = self.view.lock();
        let Some(slot) = table.get(seq) else {
            return;
        };
        let (name, kind) = (slot.spec.name.clone(), slot.spec.kind.clone());
        if slot.on_added.is_some() || slot.removing {
            let removed = table.remove(seq);
            drop(table);
            if let Some(removed) = removed {
                if let Some(reply) = removed.on_added {
                    let _ = reply.send(Err(SupervisorError::SpawnFailed {
                        name,
                        reason: failure,
                    }));
                }
                for reply in removed.on_removed {
                    let _ = reply.send(Ok(()));
                }
            }
            return;
        }
        let retry_at = table
            .update(seq, |slot| {
                let policy = slot.spec.backoff.unwrap_or(policy);
                slot.life.start_failed(failure.clone(), &policy, now)
            })
            .unwrap_or(now);
        if self.grouped() {
            hold_later(&mut table, seq, retry_at);
        }
        drop(table);
        let path = self.child_path(&name);
        let delay = retry_at.saturating_duration_since(now);
        tracing::warn!(child = %path, reason = %failure, retry_in_ms = delay.as_millis() as u64,
            "child failed to start");
        self.config.observer.child_restarting(&path, &kind, delay);
    }

    /// Adds a child and starts it; the caller is answered when its start
    /// has ended.
    pub(super) fn add_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
        reply: AddReply,
    ) {
        let name = spec.name.clone();
        let Some(seq) = self.table().insert(spec) else {
            let _ = reply.send(Err(SupervisorError::NameTaken(name)));
            return;
        };
        self.table().update(seq, |slot| slot.on_added = Some(reply));
        self.spawn_start(myself, seq);
    }

    /// Holds an exit that came before its child's start was answered.
    pub(super) fn hold_early_exit(&mut self, id: ActorId, reason: ExitReason) {
        if !self.table().any_starting() {
            return; // a stale exit: nothing is starting that it could be
        }
        if self.early_exits.len() >= EARLY_EXITS_MAX {
            tracing::warn!(supervisor = %super::display_path(&self.path), actor = %id, %reason,
                "too many exits before their starts were answered; this one is lost");
            return;
        }
        self.early_exits.insert(id, reason);
    }
}

/// Later children of a group whose start is due before `at` wait until then.
fn hold_later(table: &mut Table, seq: u64, at: Instant) {
    let later: Vec<u64> = table
        .slots
        .range(seq + 1..)
        .filter(|(_, slot)| slot.life.due_at().is_some_and(|due| due < at))
        .map(|(s, _)| *s)
        .collect();
    for later in later {
        table.update(later, |slot| slot.life.schedule(at));
    }
}

/// Runs a child's start function, turning a panic into a failure.
pub(crate) async fn start_child(spec: &ChildSpec, ctx: StartContext) -> StartResult {
    let start = Arc::clone(&spec.start);
    let future = match std::panic::catch_unwind(AssertUnwindSafe(|| start(ctx))) {
        Ok(future) => future,
        Err(panic) => return Err(ChildFailure::panic(panic)),
    };
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(Ok(started)) => Ok(started),
        Ok(Err(SpawnErr::StartupFailed(err))) => Err(ChildFailure::from_processing_err(err)),
        Ok(Err(other)) => Err(ChildFailure::new(SPAWN, other)),
        Err(panic) => Err(ChildFailure::panic(panic)),
    }
}

//! The supervisor actor: starts its children in order, watches them, and
//! restarts them after a backoff according to its strategy and their restart
//! types; fails (escalates) past its restart intensity.
//!
//! Restarts are scheduled on a single timer task, never awaited inside a
//! handler, so a supervisor answers requests while a child waits. A dead
//! child's state (and every state below it) is dropped before its
//! replacement starts: the supervisor drops the exit event, which carries the
//! state, and waits for the old incarnation's tasks before starting the new.

use std::collections::{BTreeSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::exit::ExitReason;
use crate::failure::ChildFailure;
use crate::intensity::RestartWindow;
use crate::spec::{
    ChildSpec, Restart, StartContext, StartFn, StartedChild, Strategy, SupervisorConfig,
};
use crate::table::{Run, SelfInfo, SupervisorView};
use crate::task_guard::{TaskGuard, TaskScope};
use crate::tree::{child_path, TreeNode};

/// How long a killed child may take to end before shutdown moves on.
const KILL_WAIT: Duration = Duration::from_secs(1);
/// How long a nested supervisor gets to stop its own subtree.
pub const SUPERVISOR_SHUTDOWN: Duration = Duration::from_secs(10);

/// The class of a supervisor's own failure: its children exceeded its
/// restart intensity, or it could not be set up.
pub const ESCALATED: &str = "escalated";
/// The class of a start that found its child removed meanwhile.
const REMOVED: &str = "removed";
/// The class of an error from ractor's spawn itself.
const SPAWN: &str = "spawn";

/// Errors a supervisor reports to callers and to its own parent.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("a child named {0:?} exists already")]
    NameTaken(String),
    #[error("no child named {0:?}")]
    NoSuchChild(String),
    #[error("the child was removed")]
    Removed,
    #[error("child {name:?} failed to start: {reason}")]
    SpawnFailed { name: String, reason: ChildFailure },
    #[error(
        "restart intensity exceeded: more than {max_restarts} restarts within {within:?} \
         (last: {child}, {reason})"
    )]
    IntensityExceeded {
        max_restarts: u32,
        within: Duration,
        child: String,
        reason: ExitReason,
    },
}

/// The supervisor actor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Supervisor;

/// What a supervisor starts with.
pub struct SupervisorArgs {
    /// Its own path in the tree (empty for the root).
    pub path: String,
    pub config: SupervisorConfig,
    /// Static children, in start order.
    pub children: Vec<ChildSpec>,
    /// The view readers use; the supervisor fills it.
    pub view: SupervisorView,
}

/// Messages a supervisor handles.
pub enum SupervisorMsg {
    /// A scheduled restart or stop deadline may be due.
    Tick,
    /// The previous incarnation of a child has ended completely.
    Gone(u64),
    /// Adds and starts a child at run time (after every existing child).
    AddChild(ChildSpec, RpcReplyPort<Result<ActorCell, SupervisorError>>),
    /// Stops a child gracefully and forgets it; replies once it has ended.
    RemoveChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// A snapshot of this supervisor's subtree.
    Tree(RpcReplyPort<TreeNode>),
}

/// A supervisor's private state; the children table lives in its view.
pub struct SupervisorState {
    path: String,
    config: SupervisorConfig,
    view: SupervisorView,
    window: RestartWindow,
    /// Children waiting for their restart, by due time; only those whose
    /// previous incarnation is gone.
    dues: BTreeSet<(Instant, u64)>,
    /// Children asked to stop, by the time they get killed instead.
    deadlines: BTreeSet<(Instant, u64)>,
    /// Siblings still to be stopped for a group restart, last started first;
    /// one is stopped at a time.
    stop_queue: VecDeque<u64>,
    /// The one timer task, and when it fires.
    wake: Option<(Instant, TaskGuard)>,
}

impl Supervisor {
    /// A child spec for a nested supervisor with these children.
    pub fn spec(
        name: impl Into<String>,
        restart: Restart,
        config: SupervisorConfig,
        children: Vec<ChildSpec>,
    ) -> ChildSpec {
        let start: StartFn = Arc::new(move |ctx: StartContext| {
            let view = SupervisorView::new();
            let args = SupervisorArgs {
                path: ctx.path,
                config: config.clone(),
                children: children.clone(),
                view: view.clone(),
            };
            Box::pin(async move {
                let (actor_ref, join) =
                    Actor::spawn_linked(None, Supervisor, args, ctx.supervisor).await?;
                Ok(StartedChild {
                    cell: actor_ref.get_cell(),
                    join,
                    view: Some(Arc::new(view)),
                })
            })
        });
        ChildSpec::new(name, "supervisor", restart, start).with_shutdown(SUPERVISOR_SHUTDOWN)
    }

    /// Spawns a top-level supervisor (the root of a tree).
    pub async fn spawn_root(
        config: SupervisorConfig,
        children: Vec<ChildSpec>,
        view: SupervisorView,
    ) -> Result<(ActorRef<SupervisorMsg>, JoinHandle<()>), SpawnErr> {
        let args = SupervisorArgs {
            path: String::new(),
            config,
            children,
            view,
        };
        Actor::spawn(None, Supervisor, args).await
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        args.view.set_me(SelfInfo {
            cell: myself.get_cell(),
            started_at: Instant::now(),
        });
        let mut state = SupervisorState {
            path: args.path,
            config: args.config,
            view: args.view,
            window: RestartWindow::default(),
            dues: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            stop_queue: VecDeque::new(),
            wake: None,
        };
        let now = Instant::now();
        for spec in args.children {
            let name = spec.name.clone();
            let seq =
                state.view.lock().insert(spec).ok_or_else(|| {
                    ChildFailure::new(ESCALATED, SupervisorError::NameTaken(name))
                })?;
            state.schedule_start(seq, now);
        }
        state.start_due(&myself, now).await;
        state.arm(&myself);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.shutdown_children().await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Tick => state.on_tick(&myself).await,
            SupervisorMsg::Gone(seq) => {
                state.mark_gone(seq);
                state.start_due(&myself, Instant::now()).await;
                state.arm(&myself);
            }
            SupervisorMsg::AddChild(spec, reply) => {
                let _ = reply.send(state.add_child(&myself, spec).await);
            }
            SupervisorMsg::RemoveChild(name, reply) => {
                state.remove_child(&name, reply);
                state.arm(&myself);
            }
            SupervisorMsg::Tree(reply) => {
                let _ = reply.send(state.view.snapshot(&state.path, "supervisor"));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // The event carries the dead child's state; it is dropped now,
        // before any replacement can try to take the same resources.
        let Some((id, reason)) = ExitReason::from_event(event) else {
            return Ok(());
        };
        state
            .on_child_exit(&myself, id, reason)
            .await
            .map_err(|e| ChildFailure::new(ESCALATED, e))?;
        Ok(())
    }
}

impl SupervisorState {
    fn grouped(&self) -> bool {
        self.config.strategy != Strategy::OneForOne
    }

    fn child_path(&self, name: &str) -> String {
        child_path(&self.path, name)
    }

    /// Sets (or moves) the time a child is to be started.
    fn schedule_start(&mut self, seq: u64, at: Instant) {
        let mut table = self.view.lock();
        let Some(slot) = table.get_mut(seq) else {
            return;
        };
        if let Some(old) = slot.due.replace(at) {
            self.dues.remove(&(old, seq));
        }
        if slot.gone {
            self.dues.insert((at, seq));
        }
    }

    /// The previous incarnation has ended: a scheduled start may now happen.
    fn mark_gone(&mut self, seq: u64) {
        let mut table = self.view.lock();
        let Some(slot) = table.get_mut(seq) else {
            return;
        };
        slot.gone = true;
        if let Some(at) = slot.due {
            self.dues.insert((at, seq));
        }
        drop(table);
        self.forget_if_gone(seq);
    }

    /// Forgets a child marked for removal once it is down and its old
    /// incarnation is gone, and answers everyone waiting for that. Until
    /// then its name stays taken, so a new child of that name cannot meet
    /// the old one's sockets.
    fn forget_if_gone(&mut self, seq: u64) {
        let mut table = self.view.lock();
        let done = table
            .get_mut(seq)
            .is_some_and(|slot| slot.removing && slot.gone && matches!(slot.run, Run::Down));
        if !done {
            return;
        }
        if let Some(removed) = table.remove(seq) {
            if let Some(at) = removed.due {
                self.dues.remove(&(at, seq));
            }
            for reply in removed.on_removed {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Watches the ended incarnation of a child until its task and every
    /// task below it have finished, then sends `Gone`. Until then the child
    /// is not started again, so its replacement never meets its sockets.
    fn watch_old_incarnation(&mut self, myself: &ActorRef<SupervisorMsg>, seq: u64) {
        let (mut joins, old_view) = {
            let mut table = self.view.lock();
            let Some(slot) = table.get_mut(seq) else {
                return;
            };
            let mut joins: Vec<JoinHandle<()>> = slot.join.take().into_iter().collect();
            joins.extend(slot.tasks.abort_all());
            // The dead incarnation's subtree leaves the tree now.
            (joins, slot.view.take())
        };
        if let Some(view) = old_view {
            joins.extend(view.take_unfinished_joins());
        }
        joins.retain(|join| !join.is_finished());
        if joins.is_empty() {
            self.mark_gone(seq);
            return;
        }
        if let Some(slot) = self.view.lock().get_mut(seq) {
            slot.gone = false;
        }
        let target = myself.clone();
        tokio::spawn(async move {
            for join in joins {
                let _ = join.await;
            }
            let _ = target.send_message(SupervisorMsg::Gone(seq));
        });
    }

    /// A grouped strategy starts nobody while a sibling is still on its way down.
    fn group_blocked(&self) -> bool {
        if !self.grouped() {
            return false;
        }
        if !self.stop_queue.is_empty() {
            return true;
        }
        self.view
            .lock()
            .slots
            .values()
            .any(|slot| !slot.gone || matches!(slot.run, Run::Stopping(_)))
    }

    fn unschedule_start(&mut self, seq: u64) {
        let mut table = self.view.lock();
        if let Some(old) = table.get_mut(seq).and_then(|slot| slot.due.take()) {
            self.dues.remove(&(old, seq));
        }
    }

    /// Makes sure the timer fires by the earliest due start or deadline.
    /// A blocked group waits for the event that unblocks it instead.
    fn arm(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let due = if self.group_blocked() {
            None
        } else {
            self.dues.first()
        };
        let next = [due, self.deadlines.first()]
            .into_iter()
            .flatten()
            .map(|(at, _)| *at)
            .min();
        let Some(at) = next else {
            return;
        };
        if self
            .wake
            .as_ref()
            .is_some_and(|(wake_at, _)| *wake_at <= at)
        {
            return;
        }
        let target = myself.clone();
        let guard = TaskGuard::spawn(async move {
            tokio::time::sleep_until(at).await;
            let _ = target.send_message(SupervisorMsg::Tick);
        });
        self.wake = Some((at, guard));
    }

    async fn on_tick(&mut self, myself: &ActorRef<SupervisorMsg>) {
        self.wake = None;
        let now = Instant::now();
        self.expire_deadlines(now);
        self.start_due(myself, now).await;
        self.arm(myself);
    }

    /// Kills children that did not stop within their shutdown time.
    fn expire_deadlines(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.remove(&(at, seq));
            let table = self.view.lock();
            if let Some(Run::Stopping(cell)) = table.slots.get(&seq).map(|s| &s.run) {
                tracing::warn!(child = %self.child_path(&table.slots[&seq].spec.name),
                    "child did not stop in time; killing it");
                cell.kill();
            }
        }
    }

    /// Starts the children whose restart is due, in start order. With a
    /// grouped strategy nothing starts while a sibling is still stopping, and
    /// a failed start holds back every later child of the group.
    async fn start_due(&mut self, myself: &ActorRef<SupervisorMsg>, now: Instant) {
        let mut due: Vec<u64> = self
            .dues
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, seq)| *seq)
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort_unstable();
        if self.group_blocked() {
            return;
        }
        for (i, &seq) in due.iter().enumerate() {
            self.unschedule_start(seq);
            if self
                .view
                .lock()
                .get_mut(seq)
                .is_some_and(|slot| slot.removing)
            {
                self.forget_if_gone(seq);
                continue;
            }
            if let Err(reason) = self.start_slot(myself, seq).await {
                let retry_at = self.spawn_failed(seq, reason, now);
                if self.grouped() {
                    for &later in &due[i + 1..] {
                        self.schedule_start(later, retry_at);
                    }
                    return;
                }
            }
        }
    }

    fn any_stopping(&self) -> bool {
        self.view
            .lock()
            .slots
            .values()
            .any(|slot| matches!(slot.run, Run::Stopping(_)))
    }

    /// Starts one incarnation of the child in slot `seq`.
    async fn start_slot(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        seq: u64,
    ) -> Result<ActorCell, ChildFailure> {
        let Some(spec) = self.view.lock().slots.get(&seq).map(|s| s.spec.clone()) else {
            return Err(ChildFailure::new(REMOVED, SupervisorError::Removed));
        };
        let tasks = TaskScope::new();
        let ctx = StartContext {
            supervisor: myself.get_cell(),
            path: self.child_path(&spec.name),
            tasks: tasks.clone(),
        };
        let started = start_child(&spec, ctx).await?;
        let cell = started.cell.clone();
        let mut table = self.view.lock();
        let Some(slot) = table.get_mut(seq) else {
            cell.stop(None);
            return Err(ChildFailure::new(REMOVED, SupervisorError::Removed));
        };
        if slot.started_once {
            slot.restarts += 1;
        }
        slot.started_once = true;
        slot.run = Run::Running(cell.clone());
        slot.join = Some(started.join);
        slot.tasks = tasks;
        slot.view = started.view;
        slot.started_at = Some(Instant::now());
        table.bind_id(cell.get_id(), seq);
        Ok(cell)
    }

    /// Records a failed start and schedules the next attempt; returns when.
    fn spawn_failed(&mut self, seq: u64, reason: ChildFailure, now: Instant) -> Instant {
        let (path, kind, delay) = {
            let mut table = self.view.lock();
            let Some(slot) = table.get_mut(seq) else {
                return now;
            };
            let delay = slot
                .spec
                .backoff
                .unwrap_or(self.config.backoff)
                .next_delay(slot.failures);
            slot.failures = slot.failures.saturating_add(1);
            slot.last_exit = Some(ExitReason::SpawnFailed(reason.clone()));
            (
                child_path(&self.path, &slot.spec.name),
                slot.spec.kind.clone(),
                delay,
            )
        };
        tracing::warn!(child = %path, %reason, retry_in_ms = delay.as_millis() as u64,
            "child failed to start");
        self.config.observer.child_restarting(&path, &kind, delay);
        let at = now + delay;
        self.schedule_start(seq, at);
        at
    }

    async fn on_child_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: ActorId,
        reason: ExitReason,
    ) -> Result<(), SupervisorError> {
        let now = Instant::now();
        let (seq, previous) = {
            let mut table = self.view.lock();
            let Some(seq) = table.take_id(&id) else {
                return Ok(());
            };
            let Some(slot) = table.get_mut(seq) else {
                return Ok(());
            };
            (seq, std::mem::replace(&mut slot.run, Run::Down))
        };
        self.watch_old_incarnation(myself, seq);
        match previous {
            Run::Stopping(_) => {
                self.stopped_on_request(seq, reason);
                if !self.stop_queue.is_empty() {
                    self.advance_stops(now);
                }
                self.start_due(myself, now).await;
                self.arm(myself);
                Ok(())
            }
            Run::Running(_) => self.exited_by_itself(myself, seq, reason, now).await,
            Run::Down => Ok(()),
        }
    }

    /// A child we asked to stop has ended.
    fn stopped_on_request(&mut self, seq: u64, reason: ExitReason) {
        let mut table = self.view.lock();
        let Some(slot) = table.get_mut(seq) else {
            return;
        };
        slot.last_exit = Some(reason);
        if let Some(at) = slot.stop_by.take() {
            self.deadlines.remove(&(at, seq));
        }
        drop(table);
        self.forget_if_gone(seq);
    }

    /// A child ended without being asked: apply its restart type and the strategy.
    async fn exited_by_itself(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        seq: u64,
        reason: ExitReason,
        now: Instant,
    ) -> Result<(), SupervisorError> {
        let (path, kind, restart, uptime) = {
            let mut table = self.view.lock();
            let Some(slot) = table.get_mut(seq) else {
                return Ok(());
            };
            slot.last_exit = Some(reason.clone());
            let uptime = slot.started_at.map_or(Duration::ZERO, |s| now - s);
            if slot.spec.restart == Restart::Temporary {
                slot.removing = true;
            }
            // Already waiting to restart with its group (it crashed before
            // its turn to be stopped): one group restart, counted once.
            let in_pending_group = slot.due.is_some() && !slot.removing;
            let info = (
                child_path(&self.path, &slot.spec.name),
                slot.spec.kind.clone(),
                slot.spec.restart,
                uptime,
            );
            if in_pending_group {
                drop(table);
                self.stop_queue.retain(|&s| s != seq);
                self.config.observer.child_exited(&info.0, &info.1, &reason);
                return Ok(());
            }
            info
        };
        self.forget_if_gone(seq);
        self.config.observer.child_exited(&path, &kind, &reason);
        let restart = match restart {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_normal(),
            Restart::Temporary => false,
        };
        if !restart {
            if !reason.is_normal() {
                tracing::debug!(child = %path, %reason, "child exited; not restarted");
            }
            return Ok(());
        }
        if self.window.record(now, self.config.intensity) {
            return Err(self.escalate(path, reason).await);
        }
        let delay = self.next_delay(seq, uptime);
        tracing::warn!(child = %path, kind = %kind, %reason,
            restart_in_ms = delay.as_millis() as u64, "child exited; restarting");
        self.config.observer.child_restarting(&path, &kind, delay);
        let at = now + delay;
        let siblings = self.affected_siblings(seq);
        self.mark_temporaries_removing(&siblings);
        self.stop_queue.extend(siblings.iter().rev());
        self.advance_stops(now);
        for member in self.restart_group(seq) {
            self.schedule_start(member, at);
        }
        self.arm(myself);
        Ok(())
    }

    /// Temporary siblings of a group restart are stopped and not started again.
    fn mark_temporaries_removing(&mut self, siblings: &[u64]) {
        for &seq in siblings {
            if let Some(slot) = self.view.lock().get_mut(seq) {
                if slot.spec.restart == Restart::Temporary {
                    slot.removing = true;
                }
            }
            self.forget_if_gone(seq);
        }
    }

    /// Stops the next queued sibling once the previous one has ended, so a
    /// group goes down in reverse start order.
    fn advance_stops(&mut self, now: Instant) {
        if self.stop_queue.is_empty() || self.any_stopping() {
            return;
        }
        while let Some(seq) = self.stop_queue.pop_front() {
            if self.request_stop(seq, now, "restarting with a sibling") {
                return;
            }
        }
    }

    /// The backoff for this failure; a child that stayed up long enough
    /// starts again from the minimum.
    fn next_delay(&mut self, seq: u64, uptime: Duration) -> Duration {
        let mut table = self.view.lock();
        let Some(slot) = table.get_mut(seq) else {
            return self.config.backoff.min;
        };
        let backoff = slot.spec.backoff.unwrap_or(self.config.backoff);
        if uptime >= backoff.reset_after {
            slot.failures = 0;
        }
        let delay = backoff.next_delay(slot.failures);
        slot.failures = slot.failures.saturating_add(1);
        delay
    }

    /// Siblings the strategy restarts along with `seq` (not `seq` itself).
    fn affected_siblings(&self, seq: u64) -> Vec<u64> {
        let table = self.view.lock();
        match self.config.strategy {
            Strategy::OneForOne => Vec::new(),
            Strategy::OneForAll => table.slots.keys().copied().filter(|&s| s != seq).collect(),
            Strategy::RestForOne => table.slots.range(seq + 1..).map(|(s, _)| *s).collect(),
        }
    }

    /// `seq` and its affected siblings that will be started again.
    fn restart_group(&self, seq: u64) -> Vec<u64> {
        let mut group = self.affected_siblings(seq);
        group.push(seq);
        let table = self.view.lock();
        group.retain(|s| table.slots.get(s).is_some_and(|slot| !slot.removing));
        group
    }

    /// Asks a running child to stop, to be killed if it overruns its
    /// shutdown time; false when it was not running.
    fn request_stop(&mut self, seq: u64, now: Instant, reason: &str) -> bool {
        let mut table = self.view.lock();
        let Some(slot) = table.get_mut(seq) else {
            return false;
        };
        let Run::Running(cell) = &slot.run else {
            return false;
        };
        let cell = cell.clone();
        cell.stop(Some(reason.to_string()));
        let at = now + slot.spec.shutdown;
        slot.stop_by = Some(at);
        slot.run = Run::Stopping(cell);
        self.deadlines.insert((at, seq));
        true
    }

    async fn add_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
    ) -> Result<ActorCell, SupervisorError> {
        let name = spec.name.clone();
        let seq = self
            .view
            .lock()
            .insert(spec)
            .ok_or_else(|| SupervisorError::NameTaken(name.clone()))?;
        match self.start_slot(myself, seq).await {
            Ok(cell) => Ok(cell),
            Err(reason) => {
                self.view.lock().remove(seq);
                Err(SupervisorError::SpawnFailed { name, reason })
            }
        }
    }

    fn remove_child(&mut self, name: &str, reply: RpcReplyPort<Result<(), SupervisorError>>) {
        let Some(seq) = self.view.lock().seq_of_name(name) else {
            let _ = reply.send(Err(SupervisorError::NoSuchChild(name.to_string())));
            return;
        };
        self.unschedule_start(seq);
        // A running child is asked to stop; a stopping one is already on its way.
        self.request_stop(seq, Instant::now(), "removed");
        let mut table = self.view.lock();
        let Some(slot) = table.get_mut(seq) else {
            return;
        };
        slot.removing = true;
        slot.on_removed.push(reply);
        drop(table);
        self.forget_if_gone(seq);
    }

    /// Stops every child in reverse start order, killing those that overrun
    /// their shutdown time. Used on graceful stop and on escalation.
    async fn shutdown_children(&mut self) {
        self.wake = None;
        let seqs: Vec<u64> = self.view.lock().slots.keys().rev().copied().collect();
        for seq in seqs {
            let taken = {
                let mut table = self.view.lock();
                table.get_mut(seq).and_then(|slot| {
                    let cell = slot.run.cell()?.clone();
                    slot.run = Run::Down;
                    Some((
                        cell,
                        slot.join.take(),
                        slot.tasks.clone(),
                        slot.spec.shutdown,
                    ))
                })
            };
            if let Some((cell, join, tasks, shutdown)) = taken {
                stop_gracefully(&cell, join, shutdown).await;
                for task in tasks.abort_all() {
                    let _ = tokio::time::timeout(KILL_WAIT, task).await;
                }
            }
        }
    }

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

/// Runs a child's start function, turning a panic into a failure.
async fn start_child(spec: &ChildSpec, ctx: StartContext) -> Result<StartedChild, ChildFailure> {
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

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "root"
    } else {
        path
    }
}

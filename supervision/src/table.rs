//! The children table of one supervisor, shared with readers of the tree.
//!
//! The supervisor actor is the only writer; it locks the table briefly inside
//! its handlers and never across an await. Readers (`ward ctl tree`, metrics,
//! kill by path) lock it to copy out a snapshot, so listing the tree never
//! waits for a supervisor's mailbox. Each slot's life is a [`Lifecycle`];
//! the table keeps the timer indexes (due starts, stop deadlines) in step
//! with it: every change of a life goes through [`Table::update`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use ractor::{ActorCell, ActorId, RpcReplyPort};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::failure::ChildFailure;
use crate::lifecycle::{Life, Lifecycle};
use crate::spec::{ChildSpec, StartedChild};
use crate::supervisor::SupervisorError;
use crate::task_guard::TaskScope;
use crate::tree::SubtreeRef;

/// What one incarnation of a child holds that the supervisor must see
/// gone before the next one starts.
#[derive(Default)]
pub(crate) struct Incarnation {
    /// The actor, while it is up or stopping.
    pub(crate) cell: Option<ActorCell>,
    /// Completes when the actor's task has ended and its state is dropped.
    pub(crate) join: Option<JoinHandle<()>>,
    /// Its helper tasks.
    pub(crate) tasks: TaskScope,
    /// What it shows below itself (a supervisor's view, a worker's own
    /// child actors).
    pub(crate) view: Option<SubtreeRef>,
    /// Its start, while the start function runs in a task.
    pub(crate) start: Option<StartTicket>,
}

/// What a start function brought.
pub(crate) type StartResult = Result<StartedChild, ChildFailure>;

/// What stopping one child at shutdown needs.
pub(crate) type ShutdownOf = (
    Option<ActorCell>,
    Option<JoinHandle<()>>,
    TaskScope,
    Option<StartTicket>,
    std::time::Duration,
);

/// A start running in a task: its answer is left here, and the task is
/// awaited (not messaged) when the supervisor shuts down meanwhile.
pub(crate) struct StartTicket {
    pub(crate) task: JoinHandle<()>,
    pub(crate) result: Arc<Mutex<Option<StartResult>>>,
}

impl StartTicket {
    /// The answer, once the task has left it.
    pub(crate) fn take(&self) -> Option<StartResult> {
        self.result.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Waiting for an `AddChild`'s start.
pub(crate) type AddReply = RpcReplyPort<Result<ActorCell, SupervisorError>>;

/// One child and its history.
pub(crate) struct Slot {
    pub(crate) spec: ChildSpec,
    pub(crate) life: Lifecycle,
    pub(crate) now: Incarnation,
    /// Forget the child once it is down and gone.
    pub(crate) removing: bool,
    /// Callers waiting for the removal to complete.
    pub(crate) on_removed: Vec<RpcReplyPort<Result<(), SupervisorError>>>,
    /// The caller of `AddChild`, answered when its start ends.
    pub(crate) on_added: Option<AddReply>,
}

impl Slot {
    fn new(spec: ChildSpec) -> Self {
        Self {
            spec,
            life: Lifecycle::default(),
            now: Incarnation::default(),
            removing: false,
            on_removed: Vec::new(),
            on_added: None,
        }
    }
}

/// Children in start order, found by name and by actor id, with the times
/// the supervisor's timer must wake for.
#[derive(Default)]
pub(crate) struct Table {
    /// Boxed: a slot is a few hundred bytes, and the map's nodes, half
    /// full when children are only appended, would hold room for twice
    /// as many (one per UDP flow under `udp/endpoints`).
    pub(crate) slots: BTreeMap<u64, Box<Slot>>,
    by_name: HashMap<String, u64>,
    by_id: HashMap<ActorId, u64>,
    next_seq: u64,
    /// Children whose start is due and whose last incarnation is gone.
    pub(crate) dues: BTreeSet<(Instant, u64)>,
    /// Children asked to stop, by the time they get killed instead.
    pub(crate) deadlines: BTreeSet<(Instant, u64)>,
    /// Children whose start function runs now.
    starting: usize,
}

/// The timer index entries a life needs.
fn keys(life: &Life) -> (Option<Instant>, Option<Instant>) {
    match *life {
        Life::Due { at, gone: true } => (Some(at), None),
        Life::Stopping { kill_at, .. } => (None, Some(kill_at)),
        _ => (None, None),
    }
}

impl Table {
    /// Adds a child after all others; `None` when the name is taken.
    pub(crate) fn insert(&mut self, spec: ChildSpec) -> Option<u64> {
        if self.by_name.contains_key(&spec.name) {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_name.insert(spec.name.clone(), seq);
        self.slots.insert(seq, Box::new(Slot::new(spec)));
        Some(seq)
    }

    /// Changes a slot, keeping the timer indexes in step with its life.
    pub(crate) fn update<R>(&mut self, seq: u64, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
        let slot = self.slots.get_mut(&seq)?;
        let before = keys(&slot.life.life);
        let was_starting = slot.life.is_starting();
        let out = f(slot);
        let after = keys(&slot.life.life);
        match (was_starting, slot.life.is_starting()) {
            (false, true) => self.starting += 1,
            (true, false) => self.starting -= 1,
            _ => {}
        }
        if before != after {
            if let Some(at) = before.0 {
                self.dues.remove(&(at, seq));
            }
            if let Some(at) = before.1 {
                self.deadlines.remove(&(at, seq));
            }
            if let Some(at) = after.0 {
                self.dues.insert((at, seq));
            }
            if let Some(at) = after.1 {
                self.deadlines.insert((at, seq));
            }
        }
        Some(out)
    }

    pub(crate) fn remove(&mut self, seq: u64) -> Option<Slot> {
        self.update(seq, |slot| {
            slot.life.unschedule();
            // Forgotten while starting: its answer will find no slot.
            if slot.life.is_starting() {
                slot.life.life = Life::Idle { gone: true };
            }
        });
        let slot = *self.slots.remove(&seq)?;
        if let Some(at) = slot.life.kill_at() {
            self.deadlines.remove(&(at, seq));
        }
        self.by_name.remove(&slot.spec.name);
        if let Some(cell) = &slot.now.cell {
            self.by_id.remove(&cell.get_id());
        }
        Some(slot)
    }

    pub(crate) fn get(&self, seq: u64) -> Option<&Slot> {
        self.slots.get(&seq).map(|slot| &**slot)
    }

    pub(crate) fn seq_of_name(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).copied()
    }

    /// The child an actor id belongs to, forgetting the id (it has exited).
    pub(crate) fn take_id(&mut self, id: &ActorId) -> Option<u64> {
        self.by_id.remove(id)
    }

    pub(crate) fn bind_id(&mut self, id: ActorId, seq: u64) {
        self.by_id.insert(id, seq);
    }

    /// Takes what the shutdown of a child needs: its actor (now down in
    /// the table), its task, its helper tasks, a start in flight, and its
    /// shutdown time.
    pub(crate) fn get_mut_for_shutdown(&mut self, seq: u64) -> Option<ShutdownOf> {
        self.update(seq, |slot| {
            let cell = slot.now.cell.take();
            let start = slot.now.start.take();
            if cell.is_none() && start.is_none() {
                return None;
            }
            slot.life.life = Life::Idle { gone: false };
            Some((
                cell,
                slot.now.join.take(),
                slot.now.tasks.clone(),
                start,
                slot.spec.shutdown,
            ))
        })
        .flatten()
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// True while some child is on its way up or down.
    pub(crate) fn any_in_transit(&self) -> bool {
        self.slots.values().any(|slot| slot.life.in_transit())
    }

    /// True while some child is asked to stop and has not yet.
    pub(crate) fn any_stopping(&self) -> bool {
        self.slots
            .values()
            .any(|slot| matches!(slot.life.life, Life::Stopping { .. }))
    }

    pub(crate) fn any_starting(&self) -> bool {
        self.starting > 0
    }
}

/// The supervisor itself, as its view knows it.
#[derive(Clone)]
pub(crate) struct SelfInfo {
    pub(crate) cell: ActorCell,
    pub(crate) started_at: Instant,
}

struct ViewInner {
    table: Mutex<Table>,
    me: Mutex<Option<SelfInfo>>,
}

/// A shared handle on one supervisor's children, for snapshots and lookups
/// without a message round trip.
#[derive(Clone)]
pub struct SupervisorView(Arc<ViewInner>);

impl Default for SupervisorView {
    fn default() -> Self {
        Self::new()
    }
}

impl SupervisorView {
    /// An empty view, handed to a supervisor before it starts.
    pub fn new() -> Self {
        Self(Arc::new(ViewInner {
            table: Mutex::new(Table::default()),
            me: Mutex::new(None),
        }))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table half-written
        // in a way readers care about; keep serving it.
        self.0.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_me(&self, info: SelfInfo) {
        *self.0.me.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
    }

    pub(crate) fn me(&self) -> Option<SelfInfo> {
        self.0.me.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The number of children, running or not.
    pub fn child_count(&self) -> usize {
        self.lock().len()
    }
}

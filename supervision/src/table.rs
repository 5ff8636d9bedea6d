//! The children table of one supervisor, shared with readers of the tree.
//!
//! The supervisor actor is the only writer; it locks the table briefly inside
//! its handlers and never across an await. Readers (`ward ctl tree`, metrics,
//! kill by path) lock it to copy out a snapshot, so listing the tree never
//! waits for a supervisor's mailbox.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use ractor::{ActorCell, ActorId, RpcReplyPort};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::exit::ExitReason;
use crate::spec::ChildSpec;
use crate::supervisor::SupervisorError;
use crate::task_guard::TaskScope;
use crate::tree::SubtreeRef;

/// Where a child is in its life.
pub(crate) enum Run {
    /// Running (or still starting up).
    Running(ActorCell),
    /// Asked to stop by its supervisor; its exit is awaited.
    Stopping(ActorCell),
    /// Not running: waiting for a restart (`due` set) or finished.
    Down,
}

impl Run {
    pub(crate) fn cell(&self) -> Option<&ActorCell> {
        match self {
            Run::Running(cell) | Run::Stopping(cell) => Some(cell),
            Run::Down => None,
        }
    }
}

/// One child and its history.
pub(crate) struct Slot {
    pub(crate) spec: ChildSpec,
    pub(crate) run: Run,
    /// The task of the current or last incarnation.
    pub(crate) join: Option<JoinHandle<()>>,
    /// Helper tasks of the current or last incarnation.
    pub(crate) tasks: TaskScope,
    /// What the child shows below itself (a supervisor's view, a worker's
    /// own child actors).
    pub(crate) view: Option<SubtreeRef>,
    pub(crate) restarts: u32,
    /// Consecutive failures, for backoff.
    pub(crate) failures: u32,
    pub(crate) started_once: bool,
    pub(crate) started_at: Option<Instant>,
    pub(crate) last_exit: Option<ExitReason>,
    /// When the child is to be started again.
    pub(crate) due: Option<Instant>,
    /// False while the previous incarnation (or anything below it) has not
    /// finished and dropped its state; a child is never started before.
    pub(crate) gone: bool,
    /// When a child asked to stop gets killed instead.
    pub(crate) stop_by: Option<Instant>,
    /// Forget the child once it has stopped.
    pub(crate) removing: bool,
    /// Callers waiting for the removal to complete.
    pub(crate) on_removed: Vec<RpcReplyPort<Result<(), SupervisorError>>>,
}

impl Slot {
    fn new(spec: ChildSpec) -> Self {
        Self {
            spec,
            run: Run::Down,
            join: None,
            tasks: TaskScope::new(),
            view: None,
            restarts: 0,
            failures: 0,
            started_once: false,
            started_at: None,
            last_exit: None,
            due: None,
            gone: true,
            stop_by: None,
            removing: false,
            on_removed: Vec::new(),
        }
    }
}

/// Children in start order, found by name and by actor id.
#[derive(Default)]
pub(crate) struct Table {
    /// Boxed: a slot is a few hundred bytes, and the map's nodes, half
    /// full when children are only appended, would hold room for twice
    /// as many (one per UDP flow under `udp/endpoints`).
    pub(crate) slots: BTreeMap<u64, Box<Slot>>,
    by_name: HashMap<String, u64>,
    by_id: HashMap<ActorId, u64>,
    next_seq: u64,
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

    pub(crate) fn remove(&mut self, seq: u64) -> Option<Slot> {
        let slot = *self.slots.remove(&seq)?;
        self.by_name.remove(&slot.spec.name);
        if let Some(cell) = slot.run.cell() {
            self.by_id.remove(&cell.get_id());
        }
        Some(slot)
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

    pub(crate) fn get_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        self.slots.get_mut(&seq).map(|slot| &mut **slot)
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
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

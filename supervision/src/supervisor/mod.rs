//! The supervisor actor: starts its children in order, watches them, and
//! restarts them after a backoff according to its strategy and their restart
//! types; fails (escalates) past its restart intensity.
//!
//! Nothing slow happens inside a handler: a start function runs in a task
//! and its answer comes back as a message, and restarts wait on a single
//! timer task, so a supervisor takes new children and exits while another
//! child starts or waits. A dead child's state (and every state below it)
//! is dropped before its replacement starts: the supervisor drops the exit
//! event, which carries the state, and waits for the old incarnation's
//! tasks before starting the new. Each child's life is a
//! [`crate::lifecycle::Lifecycle`]; the files here act on its transitions:
//! [`start`] (starting, failed starts), [`exits`] (restart decisions,
//! groups, intensity), [`stop`] (stops, removal, shutdown).

mod exits;
mod start;
mod stop;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::exit::ExitReason;
use crate::failure::ChildFailure;
use crate::intensity::RestartWindow;
use crate::spec::{ChildSpec, Restart, StartContext, StartFn, StartedChild, SupervisorConfig};
use crate::table::{SelfInfo, SupervisorView, Table};
use crate::task_guard::TaskGuard;
use crate::tree::{child_path, TreeNode};

/// How long a nested supervisor gets to stop its own subtree.
pub const SUPERVISOR_SHUTDOWN: Duration = Duration::from_secs(10);
/// The class of a supervisor's own failure: its children exceeded its
/// restart intensity, or it could not be set up.
pub const ESCALATED: &str = "escalated";

/// Errors a supervisor reports to callers and to its own parent.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("a child named {0:?} exists already")]
    NameTaken(String),
    #[error("no child named {0:?}")]
    NoSuchChild(String),
    #[error("child {name:?} failed to start: {reason}")]
    SpawnFailed { name: String, reason: ChildFailure },
    #[error("the child was removed while it started")]
    Removed,
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
    /// A child's start function has ended (its result waits in the slot).
    Started { seq: u64, attempt: u64 },
    /// Adds and starts a child at run time (after every existing child);
    /// answered once its start has ended.
    AddChild(ChildSpec, RpcReplyPort<Result<ActorCell, SupervisorError>>),
    /// Stops a child gracefully and forgets it; replies once it has ended.
    RemoveChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// A snapshot of this supervisor's subtree.
    Tree(RpcReplyPort<TreeNode>),
}

/// Exits held for children whose start has not been answered yet, at most.
const EARLY_EXITS_MAX: usize = 4096;

/// A supervisor's private state; the children table lives in its view.
pub struct SupervisorState {
    path: String,
    config: SupervisorConfig,
    view: SupervisorView,
    window: RestartWindow,
    /// Siblings still to be stopped for a group restart, last started first;
    /// one is stopped at a time.
    stop_queue: VecDeque<u64>,
    /// The one timer task, and when it fires.
    wake: Option<(Instant, TaskGuard)>,
    /// Exits of children that ended before the answer of their start was
    /// taken (ractor delivers exits ahead of messages), by actor id.
    early_exits: HashMap<ActorId, ExitReason>,
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

    /// Starts the static children in order before the supervisor counts
    /// as started (OTP's rule); its parent waits for that in a task of its
    /// own, not in its mailbox.
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
            stop_queue: VecDeque::new(),
            wake: None,
            early_exits: HashMap::new(),
        };
        let mut seqs = Vec::with_capacity(args.children.len());
        for spec in args.children {
            let name = spec.name.clone();
            let seq = state
                .table()
                .insert(spec)
                .ok_or_else(|| ChildFailure::new(ESCALATED, SupervisorError::NameTaken(name)))?;
            seqs.push(seq);
        }
        state.start_in_order(&myself, &seqs).await;
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
        let now = Instant::now();
        match message {
            SupervisorMsg::Tick => {
                state.wake = None;
                state.expire_deadlines(now);
            }
            SupervisorMsg::Gone(seq) => state.mark_gone(seq),
            SupervisorMsg::Started { seq, attempt } => {
                state.on_started(&myself, seq, attempt, now).await?;
            }
            SupervisorMsg::AddChild(spec, reply) => state.add_child(&myself, spec, reply),
            SupervisorMsg::RemoveChild(name, reply) => state.remove_child(&name, reply, now),
            SupervisorMsg::Tree(reply) => {
                let _ = reply.send(state.view.snapshot(&state.path, "supervisor"));
                return Ok(());
            }
        }
        state.start_due(&myself, now);
        state.arm(&myself);
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
        let now = Instant::now();
        state.on_child_exit(&myself, id, reason, now).await?;
        state.start_due(&myself, now);
        state.arm(&myself);
        Ok(())
    }
}

impl SupervisorState {
    pub(crate) fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.view.lock()
    }

    fn grouped(&self) -> bool {
        self.config.strategy != crate::spec::Strategy::OneForOne
    }

    fn child_path(&self, name: &str) -> String {
        child_path(&self.path, name)
    }

    /// A grouped strategy starts nobody while a sibling is on its way up
    /// or down.
    fn group_blocked(&self) -> bool {
        self.grouped() && (!self.stop_queue.is_empty() || self.table().any_in_transit())
    }

    /// Makes sure the timer fires by the earliest due start or deadline.
    /// A blocked group waits for the event that unblocks it instead.
    fn arm(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let blocked = self.group_blocked();
        let next = {
            let table = self.table();
            let due = if blocked { None } else { table.dues.first() };
            [due, table.deadlines.first()]
                .into_iter()
                .flatten()
                .map(|(at, _)| *at)
                .min()
        };
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

    /// Forgets a child marked for removal once it is down and its old
    /// incarnation is gone, and answers everyone waiting for that. Until
    /// then its name stays taken, so a new child of that name cannot meet
    /// the old one's sockets.
    fn forget_if_finished(&mut self, seq: u64) {
        let mut table = self.table();
        let done = table
            .get(seq)
            .is_some_and(|slot| slot.removing && slot.life.finished());
        if !done {
            return;
        }
        if let Some(removed) = table.remove(seq) {
            for reply in removed.on_removed {
                let _ = reply.send(Ok(()));
            }
        }
    }
}

pub(crate) fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "root"
    } else {
        path
    }
}

//! What a supervisor supervises and how: child specs, restart types,
//! strategies and the supervisor's own settings.
//!
//! A [`ChildSpec`] carries a start function that spawns the child linked to
//! the supervisor it is given. The supervisor calls it for the first start and
//! for every restart, so each incarnation gets fresh arguments.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, SpawnErr};
use tokio::task::JoinHandle;

use crate::backoff::BackoffPolicy;
use crate::intensity::Intensity;
use crate::observer::{NoopObserver, SupervisionObserver};
use crate::task_guard::TaskScope;
use crate::tree::{ChildList, SubtreeRef};

/// When a child that ended is started again (OTP restart types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after an abnormal exit (panic, error, kill).
    Transient,
    /// Never; the child is forgotten when it ends.
    Temporary,
}

/// Which children are restarted when one of them must be (OTP strategies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child that ended.
    OneForOne,
    /// Every child: the others are stopped and all start again in order.
    OneForAll,
    /// The child that ended and every child started after it.
    RestForOne,
}

/// A child that a start function brought up.
pub struct StartedChild {
    /// The running actor, linked to the supervisor.
    pub cell: ActorCell,
    /// Completes when the actor's task has ended and its state is dropped.
    pub join: JoinHandle<()>,
    /// Set when the child has children of its own (a supervisor, or a
    /// worker that spawns child actors), so the tree can descend.
    pub view: Option<SubtreeRef>,
}

/// What a start function is given.
#[derive(Clone, Debug)]
pub struct StartContext {
    /// The supervisor to link the child to.
    pub supervisor: ActorCell,
    /// The child's path in the tree (`dns/upstreams/cf`).
    pub path: String,
    /// Spawn helper tasks that own bound sockets here: the supervisor waits
    /// for them to end before it starts the next incarnation.
    pub tasks: TaskScope,
}

/// The future a start function returns.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<StartedChild, SpawnErr>> + Send>>;
/// Spawns one incarnation of a child, linked to the supervisor in the context.
pub type StartFn = Arc<dyn Fn(StartContext) -> StartFuture + Send + Sync>;

/// One child of a supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among its siblings; one segment of the tree path.
    pub name: String,
    /// A stable kind string for the tree and metrics (`dns-upstream`, ...).
    pub kind: String,
    /// When the child is started again.
    pub restart: Restart,
    /// How long a graceful stop may take before the child is killed.
    pub shutdown: Duration,
    /// The child's own restart delays, instead of its supervisor's.
    pub backoff: Option<BackoffPolicy>,
    /// Spawns the child linked to the supervisor passed in.
    pub start: StartFn,
    /// What the tree shows beside the name (an endpoint's `via n1`).
    pub detail: Option<String>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("detail", &self.detail)
            .finish_non_exhaustive()
    }
}

/// How long a worker gets to stop before it is killed, by default.
pub const DEFAULT_WORKER_SHUTDOWN: Duration = Duration::from_secs(2);

impl ChildSpec {
    /// A child with a hand-written start function.
    pub fn new(
        name: impl Into<String>,
        kind: impl Into<String>,
        restart: Restart,
        start: StartFn,
    ) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            restart,
            shutdown: DEFAULT_WORKER_SHUTDOWN,
            backoff: None,
            start,
            detail: None,
        }
    }

    /// A worker actor; `make` builds the actor and its arguments for each
    /// incarnation, from the context it will start in.
    pub fn worker<A, F>(
        name: impl Into<String>,
        kind: impl Into<String>,
        restart: Restart,
        make: F,
    ) -> Self
    where
        A: Actor,
        F: Fn(&StartContext) -> (A, A::Arguments) + Send + Sync + 'static,
    {
        // No child list to show: a worker has nothing below it. One
        // allocation holds `make` (these are made per UDP flow).
        let start: StartFn = Arc::new(move |ctx: StartContext| {
            let (actor, args) = make(&ctx);
            spawn_linked(actor, args, ctx.supervisor, None)
        });
        Self::new(name, kind, restart, start)
    }

    /// A worker that spawns child actors of its own and lists them in the
    /// [`ChildList`] it is given (a fresh one per incarnation), so they show
    /// in the tree below it and can be killed by path.
    pub fn worker_with_children<A, F>(
        name: impl Into<String>,
        kind: impl Into<String>,
        restart: Restart,
        make: F,
    ) -> Self
    where
        A: Actor,
        F: Fn(&StartContext, Arc<ChildList>) -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let start: StartFn = Arc::new(move |ctx: StartContext| {
            let children = Arc::new(ChildList::default());
            let (actor, args) = make(&ctx, children.clone());
            spawn_linked(actor, args, ctx.supervisor, Some(children))
        });
        Self::new(name, kind, restart, start)
    }

    /// Sets how long a graceful stop may take before the child is killed.
    pub fn with_shutdown(mut self, shutdown: Duration) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Sets what the tree shows beside the child's name.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Gives the child its own restart delays (a front-door listener that
    /// should rebind fast, say), instead of its supervisor's.
    pub fn with_backoff(mut self, backoff: BackoffPolicy) -> Self {
        self.backoff = Some(backoff);
        self
    }
}

/// Spawns `actor` linked to `supervisor`: the start of a worker, with what
/// it shows below itself in the tree.
pub(crate) fn spawn_linked<A: Actor>(
    actor: A,
    args: A::Arguments,
    supervisor: ActorCell,
    view: Option<SubtreeRef>,
) -> StartFuture {
    Box::pin(async move {
        let (actor_ref, join) = Actor::spawn_linked(None, actor, args, supervisor).await?;
        Ok(StartedChild {
            cell: actor_ref.get_cell(),
            join,
            view,
        })
    })
}

/// How a supervisor restarts its children.
#[derive(Clone)]
pub struct SupervisorConfig {
    /// Which siblings restart together.
    pub strategy: Strategy,
    /// The restart rate past which the supervisor escalates.
    pub intensity: Intensity,
    /// Delays between a child's failure and its restart.
    pub backoff: BackoffPolicy,
    /// Receives restarts and escalations (metrics).
    pub observer: Arc<dyn SupervisionObserver>,
}

impl SupervisorConfig {
    /// Default intensity and backoff with the given strategy.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            intensity: Intensity::default(),
            backoff: BackoffPolicy::default(),
            observer: Arc::new(NoopObserver),
        }
    }

    /// The same settings with another strategy (for nested supervisors).
    pub fn with_strategy(&self, strategy: Strategy) -> Self {
        Self {
            strategy,
            ..self.clone()
        }
    }
}

impl std::fmt::Debug for SupervisorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorConfig")
            .field("strategy", &self.strategy)
            .field("intensity", &self.intensity)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

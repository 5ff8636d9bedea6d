//! A supervised child whose whole job is one task: a receive loop, an
//! accept loop, a connection, a flow. The actor exists so that the task's
//! end is a child's exit: the task returns `Ok(())` and the child stops
//! normally; it returns a [`ChildFailure`] (or panics) and the child fails
//! with that value, class and all.
//!
//! The child is built in two steps: `setup` runs in `pre_start` (bind a
//! socket, read a file: its failure is a failed spawn, retried with
//! backoff) and yields the task, which runs in the incarnation's
//! [`TaskScope`], so the supervisor waits for it to be gone, with whatever
//! it owns, before the replacement starts. Whatever must be released when
//! the child dies, however it dies, belongs to the task's future.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures::FutureExt;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use tokio::task::JoinHandle;

use crate::failure::ChildFailure;
use crate::spec::{spawn_linked, ChildSpec, Restart, StartContext, StartFn};
use crate::task_guard::{TaskGuard, TaskScope};

/// The task of a task child.
pub type TaskRun = Pin<Box<dyn Future<Output = Result<(), ChildFailure>> + Send>>;
/// What a task child's `pre_start` awaits: the setup, yielding the task.
pub type TaskSetup = Pin<Box<dyn Future<Output = Result<TaskRun, ChildFailure>> + Send>>;

impl ChildSpec {
    /// A child that runs the task `setup` yields. `setup` is called for
    /// each incarnation, with the context it starts in.
    pub fn task<F, S, R>(
        name: impl Into<String>,
        kind: impl Into<String>,
        restart: Restart,
        setup: F,
    ) -> Self
    where
        F: Fn(&StartContext) -> S + Send + Sync + 'static,
        S: Future<Output = Result<R, ChildFailure>> + Send + 'static,
        R: Future<Output = Result<(), ChildFailure>> + Send + 'static,
    {
        let start: StartFn = Arc::new(move |ctx: StartContext| {
            let args = TaskArgs::new(setup(&ctx), ctx.tasks);
            spawn_linked(TaskChild, args, ctx.supervisor, None)
        });
        Self::new(name, kind, restart, start)
    }
}

/// The actor of a task child.
pub struct TaskChild;

impl TaskChild {
    /// Spawns a task child linked to an actor that supervises it itself
    /// (an upstream's connections, listed in its [`crate::ChildList`]).
    pub async fn spawn_linked<S, R>(
        setup: S,
        supervisor: ActorCell,
        tasks: TaskScope,
    ) -> Result<(ActorRef<TaskMsg>, JoinHandle<()>), SpawnErr>
    where
        S: Future<Output = Result<R, ChildFailure>> + Send + 'static,
        R: Future<Output = Result<(), ChildFailure>> + Send + 'static,
    {
        Actor::spawn_linked(None, TaskChild, TaskArgs::new(setup, tasks), supervisor).await
    }
}

pub struct TaskArgs {
    setup: TaskSetup,
    tasks: TaskScope,
}

impl TaskArgs {
    fn new<S, R>(setup: S, tasks: TaskScope) -> Self
    where
        S: Future<Output = Result<R, ChildFailure>> + Send + 'static,
        R: Future<Output = Result<(), ChildFailure>> + Send + 'static,
    {
        Self {
            setup: Box::pin(async move { Ok(Box::pin(setup.await?) as TaskRun) }),
            tasks,
        }
    }
}

pub enum TaskMsg {
    /// The task ended with this outcome.
    Ended(Result<(), ChildFailure>),
}

/// Aborts the task however the actor ends.
pub struct TaskChildState {
    _task: TaskGuard,
}

impl Actor for TaskChild {
    type Msg = TaskMsg;
    type State = TaskChildState;
    type Arguments = TaskArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TaskMsg>,
        args: TaskArgs,
    ) -> Result<TaskChildState, ActorProcessingErr> {
        let run = args.setup.await?;
        let task = args.tasks.spawn(async move {
            let outcome = match AssertUnwindSafe(run).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(panic) => Err(ChildFailure::panic(panic)),
            };
            let _ = myself.send_message(TaskMsg::Ended(outcome));
        });
        Ok(TaskChildState { _task: task })
    }

    async fn handle(
        &self,
        myself: ActorRef<TaskMsg>,
        message: TaskMsg,
        _state: &mut TaskChildState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TaskMsg::Ended(Ok(())) => {
                myself.stop(None);
                Ok(())
            }
            TaskMsg::Ended(Err(failure)) => Err(failure.into()),
        }
    }
}

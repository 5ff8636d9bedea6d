//! # ward-supervision
//!
//! OTP supervision on ractor: restart types and strategies, restart
//! intensity with escalation, per-child jittered exponential backoff, dynamic
//! children, graceful shutdown, and a live tree that can be listed and
//! addressed by path. It knows nothing of DNS, UDP or sockets.
//!
//! # Layout
//! - [`spec`]: what to supervise — [`ChildSpec`], [`Restart`], [`Strategy`], [`SupervisorConfig`].
//! - [`exit`]: how a child ended — [`ExitReason`], normal or abnormal.
//! - [`failure`]: a failure as a value — [`ChildFailure`], the error and
//!   its class, which the tree and metrics show.
//! - [`backoff`]: restart delays — [`BackoffPolicy`], and [`Backoff`] for
//!   every other retry loop.
//! - [`intensity`]: the restart-rate window that makes a supervisor escalate.
//! - `lifecycle`: one child's life as a pure state machine (unit-tested
//!   without the actor runtime).
//! - [`table`]: the children table a supervisor writes and readers snapshot.
//! - [`tree`]: [`TreeNode`] snapshots, lookups by path, and [`Subtree`], what
//!   a child shows below itself ([`ChildList`] for workers with child actors).
//! - [`supervisor`]: the [`Supervisor`] actor itself.
//! - [`live`]: [`Live`], what an actor publishes for others (its
//!   `ActorRef`, its transports), withdrawn however it dies.
//! - [`observer`]: hooks for metrics — [`SupervisionObserver`].
//! - [`task_guard`]: [`TaskGuard`] aborts a helper task when dropped;
//!   [`TaskScope`] lets the supervisor await an incarnation's tasks.
//! - [`task_child`]: [`ChildSpec::task`], a child whose job is one task
//!   (a receive or accept loop, a connection, a flow).

pub mod backoff;
pub mod exit;
pub mod failure;
pub mod intensity;
mod lifecycle;
pub mod live;
pub mod observer;
pub mod spec;
pub mod supervisor;
pub mod table;
pub mod task_child;
pub mod task_guard;
pub mod tree;

pub use backoff::{Backoff, BackoffPolicy};
pub use exit::ExitReason;
pub use failure::{ChildFailure, Classify};
pub use intensity::Intensity;
pub use live::{Attachment, Live};
pub use observer::{NoopObserver, SupervisionObserver};
pub use spec::{ChildSpec, Restart, StartContext, StartedChild, Strategy, SupervisorConfig};
pub use supervisor::{Supervisor, SupervisorArgs, SupervisorError, SupervisorMsg};
pub use table::SupervisorView;
pub use task_child::{TaskChild, TaskMsg, TaskRun, TaskSetup};
pub use task_guard::{TaskGuard, TaskScope};
pub use tree::{ChildList, FoundActor, Subtree, SubtreeRef, TreeNode};

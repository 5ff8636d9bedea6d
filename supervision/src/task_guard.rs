//! Helper tasks owned by an actor: [`TaskGuard`] aborts one when dropped;
//! [`TaskScope`] also lets the supervisor wait until they have really ended.
//!
//! ractor's `kill` skips `post_stop`, and dropping a tokio `JoinHandle`
//! detaches the task instead of stopping it. Whatever task an actor owns (a
//! receive loop, an accept loop, a timer) lives in a guard inside the actor's
//! state, so it is aborted however the actor died. Abort completes
//! asynchronously, though: a task that owns a bound socket may still hold it
//! for a moment. Tasks spawned through the incarnation's [`TaskScope`] are
//! awaited by the supervisor before the replacement starts.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::{AbortHandle, JoinHandle};

/// Aborts the task on drop.
#[derive(Debug)]
pub struct TaskGuard(AbortHandle);

impl TaskGuard {
    /// Spawns `future` on the current runtime and guards it. Use
    /// [`TaskScope::spawn`] instead for tasks that own a bound socket.
    pub fn spawn<F>(future: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Self(tokio::spawn(future).abort_handle())
    }

    /// True once the task has ended.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The helper tasks of one actor incarnation, which its supervisor awaits
/// (after aborting them) before it starts the next incarnation.
#[derive(Clone, Debug, Default)]
pub struct TaskScope(Arc<Mutex<Tasks>>);

#[derive(Debug, Default)]
struct Tasks {
    handles: Vec<JoinHandle<()>>,
    /// Finished tasks are forgotten when the list grows this long: twice
    /// what was left running last time (at least 16), so the list stays
    /// about as long as the number of live tasks at O(1) amortised per
    /// spawn, however many short tasks come and go.
    reap_at: usize,
}

impl TaskScope {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `future` as a task of this incarnation.
    pub fn spawn<F>(&self, future: F) -> TaskGuard
    where
        F: Future<Output = ()> + Send + 'static,
    {
        TaskGuard(self.track(tokio::spawn(future)))
    }

    /// Spawns `future`, which ends by itself (one exchange, under its
    /// deadline), as a task of this incarnation: nobody guards it, it is
    /// aborted with the incarnation.
    pub fn spawn_detached<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.track(tokio::spawn(future));
    }

    fn track(&self, handle: JoinHandle<()>) -> AbortHandle {
        let abort = handle.abort_handle();
        let mut tasks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.handles.len() >= tasks.reap_at {
            tasks.handles.retain(|t| !t.is_finished());
            tasks.reap_at = (tasks.handles.len() * 2).max(16);
        }
        tasks.handles.push(handle);
        abort
    }

    /// Aborts every task of the scope and hands back their handles, to be
    /// awaited by whoever needs them gone.
    pub fn abort_all(&self) -> Vec<JoinHandle<()>> {
        let tasks = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        tasks
            .handles
            .into_iter()
            .filter(|t| !t.is_finished())
            .inspect(|t| t.abort())
            .collect()
    }

    /// Tasks remembered (running, or finished and not yet forgotten).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.0.lock().unwrap().handles.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_guard_aborts_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let guard = TaskGuard::spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(guard);
        // The sender is dropped only when the task is aborted.
        assert!(rx.await.is_err());
    }

    #[tokio::test]
    async fn a_scope_aborts_and_returns_what_is_still_running() {
        let scope = TaskScope::new();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let _guard = scope.spawn(async move {
            let _socket = socket;
            std::future::pending::<()>().await;
        });
        let _done = scope.spawn(async {});
        tokio::task::yield_now().await;
        for task in scope.abort_all() {
            let _ = task.await;
        }
        // The task's socket is closed once the awaited task has ended.
        std::net::UdpSocket::bind(addr).expect("address free again");
    }

    #[tokio::test]
    async fn many_short_tasks_are_forgotten_as_they_end() {
        let scope = TaskScope::new();
        let (_hold, held) = tokio::sync::oneshot::channel::<()>();
        scope.spawn_detached(async move {
            let _ = held.await;
        });
        for _ in 0..10_000 {
            scope.spawn_detached(async {});
            tokio::task::yield_now().await;
        }
        assert!(
            scope.remembered() <= 64,
            "{} remembered",
            scope.remembered()
        );
        // The one still running is aborted with the scope.
        assert_eq!(scope.abort_all().len(), 1);
    }
}

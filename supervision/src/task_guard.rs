//! A guard that aborts a helper task when it is dropped.
//!
//! ractor's `kill` skips `post_stop`, and dropping a tokio `JoinHandle`
//! detaches the task instead of stopping it. Whatever task an actor owns
//! (a receive loop, an accept loop, a timer) lives in a `TaskGuard` inside the
//! actor's state, so it ends when the state is dropped, however the actor died.

use std::future::Future;

use tokio::task::JoinHandle;

/// Aborts the task on drop.
#[derive(Debug)]
pub struct TaskGuard(JoinHandle<()>);

impl TaskGuard {
    /// Spawns `future` on the current runtime and guards it.
    pub fn spawn<F>(future: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Self(tokio::spawn(future))
    }

    /// Guards a task that is already running.
    pub fn new(handle: JoinHandle<()>) -> Self {
        Self(handle)
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
}

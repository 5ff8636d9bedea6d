//! The connections one listener serves, each a task of its own, at most a
//! cap at once. Dropping the set ends them all: the admin and metrics
//! servers' connections go with their accept loop, a SOCKS5 inbound's
//! control connections with its held state (so they outlive a kill of the
//! inbound, and end when its socket is rebuilt).

use std::future::Future;

use tokio::task::JoinSet;

/// Connection tasks, at most `cap` at once.
pub struct Connections {
    tasks: JoinSet<()>,
    cap: usize,
}

impl Connections {
    pub fn new(cap: usize) -> Self {
        Self {
            tasks: JoinSet::new(),
            cap,
        }
    }

    /// True when one more connection fits (those that ended are forgotten
    /// first).
    pub fn has_room(&mut self) -> bool {
        while self.tasks.try_join_next().is_some() {}
        self.tasks.len() < self.cap
    }

    /// Serves one connection; call it when [`Connections::has_room`] said so.
    pub fn serve(&mut self, connection: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(connection);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_the_cap_and_room_again_as_they_end() {
        let mut c = Connections::new(2);
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        assert!(c.has_room());
        c.serve(async {
            let _ = ended.await;
        });
        assert!(c.has_room());
        c.serve(std::future::pending());
        assert!(!c.has_room());
        end.send(()).unwrap();
        while !c.has_room() {
            tokio::task::yield_now().await;
        }
    }
}

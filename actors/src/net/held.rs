//! What a listener or an inbound keeps across restarts of the actor that
//! reads it: its socket and whatever must outlive one incarnation (answers
//! on their way back, the flows of an inbound). Killing the reader loses
//! nothing that was accepted: the replacement adopts the same socket, so
//! datagrams queued in the kernel are read and answers in flight leave
//! through it. The state is built again only when the incarnation using it
//! failed (its socket died, or its code panicked): a killed or stopped one
//! leaves it for the next. Whoever owns the hold releases it when the
//! child is gone for good (ward stopping, the listener removed).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::{Mutex, OwnedMutexGuard};
use ward_supervision::ChildFailure;

/// A listener's state, held across its actor's restarts.
pub struct Held<S> {
    state: Arc<Mutex<Option<S>>>,
    /// Set when an incarnation failed with the state: the next builds anew.
    spoiled: Arc<AtomicBool>,
    /// Set when the hold is released: the state goes as soon as no
    /// incarnation uses it.
    released: Arc<AtomicBool>,
}

impl<S> Clone for Held<S> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            spoiled: self.spoiled.clone(),
            released: self.released.clone(),
        }
    }
}

impl<S> Default for Held<S> {
    fn default() -> Self {
        Self {
            state: Arc::new(Mutex::new(None)),
            spoiled: Arc::new(AtomicBool::new(false)),
            released: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// One incarnation's use of the held state.
pub struct Lease<S> {
    slot: OwnedMutexGuard<Option<S>>,
    released: Arc<AtomicBool>,
}

impl<S> Held<S> {
    /// A hold with a state built already (a socket bound at start).
    pub fn with(state: S) -> Self {
        Self {
            state: Arc::new(Mutex::new(Some(state))),
            spoiled: Arc::new(AtomicBool::new(false)),
            released: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The held state for one incarnation, built by `build` when there is
    /// none (the first start, or the last incarnation failed with it).
    /// The previous incarnation's lease is gone by then: its supervisor
    /// waits for its task to end before starting the next.
    pub async fn lease<E>(&self, build: impl FnOnce() -> Result<S, E>) -> Result<Lease<S>, E> {
        let mut slot = self.state.clone().lock_owned().await;
        if self.spoiled.swap(false, Ordering::AcqRel) {
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(build()?);
        }
        Ok(Lease {
            slot,
            released: self.released.clone(),
        })
    }

    /// The child is gone for good: the state (its socket, a socket file)
    /// is dropped now, or when the incarnation using it ends. A released
    /// hold stays released: a late incarnation's state goes with its lease.
    pub fn release(&self) {
        self.released.store(true, Ordering::Release);
        if let Ok(mut slot) = self.state.try_lock() {
            *slot = None;
        }
    }

    /// Runs one incarnation's task: a failure or a panic spoils the state
    /// (the next incarnation builds it again); an abort (the actor was
    /// killed) keeps it.
    pub async fn guard(
        &self,
        task: impl Future<Output = Result<(), ChildFailure>>,
    ) -> Result<(), ChildFailure> {
        let outcome = match AssertUnwindSafe(task).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => Err(ChildFailure::panic(panic)),
        };
        if outcome.is_err() {
            self.spoiled.store(true, Ordering::Release);
        }
        outcome
    }
}

/// A hold of any state, to be released when ward stops.
pub trait Release: Send + Sync {
    fn release(&self);
}

impl<S: Send> Release for Held<S> {
    fn release(&self) {
        Held::release(self);
    }
}

impl<S> Lease<S> {
    fn state(&self) -> Option<&S> {
        self.slot.as_ref()
    }
}

impl<S> std::ops::Deref for Lease<S> {
    type Target = S;

    fn deref(&self) -> &S {
        match self.state() {
            Some(state) => state,
            // `lease` fills the slot before it makes a lease.
            None => unreachable!("a lease holds a state"),
        }
    }
}

impl<S> std::ops::DerefMut for Lease<S> {
    fn deref_mut(&mut self) -> &mut S {
        match self.slot.as_mut() {
            Some(state) => state,
            None => unreachable!("a lease holds a state"),
        }
    }
}

impl<S> Drop for Lease<S> {
    fn drop(&mut self) {
        if self.released.load(Ordering::Acquire) {
            *self.slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io_class::{IoClass, SocketFailure};
    use std::io;

    fn dead() -> ChildFailure {
        SocketFailure::classed("receive", IoClass::SocketDead, io::Error::other("gone")).into()
    }

    #[tokio::test]
    async fn a_killed_incarnation_leaves_its_state_and_a_failed_one_spoils_it() {
        let held = Held::<u32>::default();
        let mut builds = 0;
        let mut build = || {
            builds += 1;
            Ok::<_, ()>(builds)
        };
        // Killed: the task is dropped mid-way; the next one adopts the state.
        let lease = held.lease(&mut build).await.unwrap();
        assert_eq!(*lease, 1);
        let task = held.guard(async move {
            let _lease = lease;
            std::future::pending::<Result<(), ChildFailure>>().await
        });
        let _ = tokio::time::timeout(std::time::Duration::from_millis(5), task).await;
        let lease = held.lease(&mut build).await.unwrap();
        assert_eq!(*lease, 1, "adopted");
        // Failed: the next incarnation builds a new one.
        let failed = held
            .guard(async move {
                let _lease = lease;
                Err(dead())
            })
            .await;
        assert_eq!(failed.unwrap_err().class(), "socket_dead");
        let lease = held.lease(&mut build).await.unwrap();
        assert_eq!(*lease, 2, "built anew");
        // A panic spoils it too.
        let panicked = held
            .guard(async move {
                let _lease = lease;
                panic!("bug")
            })
            .await;
        assert_eq!(panicked.unwrap_err().class(), "panic");
        assert_eq!(*held.lease(&mut build).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_prebound_state_is_used_first() {
        let held = Held::with(7u32);
        let lease = held.lease(|| Ok::<_, ()>(0)).await.unwrap();
        assert_eq!(*lease, 7);
    }

    #[tokio::test]
    async fn a_released_hold_drops_its_state_once_unused() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let held = Held::with(socket);
        let lease = held.lease(|| Err(())).await.unwrap();
        held.release();
        assert!(std::net::UdpSocket::bind(addr).is_err(), "still in use");
        drop(lease);
        std::net::UdpSocket::bind(addr).expect("released with its last lease");
        let held = Held::with(std::net::UdpSocket::bind(addr).unwrap());
        held.release();
        std::net::UdpSocket::bind(addr).expect("released at once when unused");
    }
}

//! Identical concurrent misses share one upstream query: the first asker of
//! a key leads and resolves; the others wait for its outcome. A leader that
//! is cancelled releases its waiters with an error (they answer SERVFAIL or
//! stale), never leaves them hanging.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::answer::CachedAnswer;

const SHARDS: usize = 16;

/// What the leader found.
pub type Outcome = Result<Arc<CachedAnswer>, FetchError>;

/// Why a fetch brought no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("every upstream failed")]
    AllFailed,
    #[error("no answer within the time budget")]
    Timeout,
    #[error("the upstream answer was truncated")]
    Truncated,
    #[error("the query was cancelled")]
    Cancelled,
    /// No upstream could be asked (their actors were restarting): nothing
    /// is known about the name, so nothing is cached.
    #[error("no upstream could be asked")]
    Unavailable,
}

type Waiters = Vec<oneshot::Sender<Outcome>>;
/// Misses of one shard, by cache key.
type InFlight = HashMap<Box<[u8]>, Waiters, RandomState>;

/// Misses in flight, by cache key.
#[derive(Default)]
pub struct Coalescer {
    shards: [Mutex<InFlight>; SHARDS],
    hasher: RandomState,
}

/// The caller's part in a miss.
pub enum Role<'a> {
    /// Resolve, then [`Leader::finish`].
    Leader(Leader<'a>),
    /// Wait for the leader's outcome.
    Follower(oneshot::Receiver<Outcome>),
}

impl Coalescer {
    fn shard(&self, key: &[u8]) -> &Mutex<InFlight> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Joins the miss for `key`: leads it, or follows the one in flight.
    pub fn join(&self, key: &[u8]) -> Role<'_> {
        let mut map = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiters) = map.get_mut(key) {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            return Role::Follower(rx);
        }
        map.insert(key.into(), Vec::new());
        Role::Leader(Leader {
            coalescer: self,
            key: key.into(),
            done: false,
        })
    }

    /// Misses being resolved now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The asker that resolves a key for everyone.
pub struct Leader<'a> {
    coalescer: &'a Coalescer,
    key: Box<[u8]>,
    done: bool,
}

impl Leader<'_> {
    /// Hands the outcome to every follower.
    pub fn finish(mut self, outcome: &Outcome) {
        self.release(outcome);
    }

    fn release(&mut self, outcome: &Outcome) {
        self.done = true;
        let waiters = self
            .coalescer
            .shard(&self.key)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key)
            .unwrap_or_default();
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.release(&Err(FetchError::Cancelled));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_outcome_and_the_entry_goes() {
        let c = Coalescer::default();
        let Role::Leader(leader) = c.join(b"k") else {
            panic!("first is leader")
        };
        let Role::Follower(a) = c.join(b"k") else {
            panic!("second follows")
        };
        let Role::Follower(b) = c.join(b"k") else {
            panic!("third follows")
        };
        assert!(matches!(c.join(b"other"), Role::Leader(_)));
        leader.finish(&Err(FetchError::AllFailed));
        assert_eq!(a.await.unwrap().unwrap_err(), FetchError::AllFailed);
        assert_eq!(b.await.unwrap().unwrap_err(), FetchError::AllFailed);
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers() {
        let c = Coalescer::default();
        let leader = c.join(b"k");
        let Role::Follower(f) = c.join(b"k") else {
            panic!()
        };
        drop(leader);
        assert_eq!(f.await.unwrap().unwrap_err(), FetchError::Cancelled);
        assert!(matches!(c.join(b"k"), Role::Leader(_)));
    }
}

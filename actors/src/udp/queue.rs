//! The bounded queue between an inbound's receive loop and one endpoint:
//! pushing never waits; when full, the oldest datagram is dropped (a
//! real-time flow wants the newest), and the drop is counted by the caller.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

/// One datagram from a client, with where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub dst: SocketAddr,
    pub bytes: Vec<u8>,
}

pub struct Queue {
    items: Mutex<VecDeque<Datagram>>,
    ready: Notify,
    closed: AtomicBool,
    cap: usize,
}

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued, and the oldest datagram was dropped for it.
    DroppedOldest,
    /// The endpoint is gone: nothing was queued.
    Closed(Datagram),
}

impl Queue {
    pub fn new(cap: usize) -> Queue {
        Queue {
            items: Mutex::new(VecDeque::with_capacity(cap.clamp(1, 8))),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Datagram>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, datagram: Datagram) -> Pushed {
        let mut items = self.lock();
        if self.closed.load(Ordering::Acquire) {
            return Pushed::Closed(datagram);
        }
        let dropped = if items.len() >= self.cap {
            items.pop_front();
            true
        } else {
            false
        };
        items.push_back(datagram);
        drop(items);
        self.ready.notify_one();
        if dropped {
            Pushed::DroppedOldest
        } else {
            Pushed::Queued
        }
    }

    /// The next datagram, waiting for one; `None` once the queue is closed.
    /// Cancel-safe.
    pub async fn pop(&self) -> Option<Datagram> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut items = self.lock();
                if let Some(datagram) = items.pop_front() {
                    return Some(datagram);
                }
                if self.closed.load(Ordering::Acquire) {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// Closes the queue (later pushes are refused, a waiting `pop` returns
    /// `None`) and hands back what was still waiting.
    pub fn close(&self) -> Vec<Datagram> {
        let mut items = self.lock();
        self.closed.store(true, Ordering::Release);
        let left = items.drain(..).collect();
        drop(items);
        self.ready.notify_waiters();
        left
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Datagram {
        Datagram {
            dst: "127.0.0.1:9".parse().unwrap(),
            bytes: vec![n],
        }
    }

    #[tokio::test]
    async fn full_queue_drops_the_oldest_and_close_hands_back_the_rest() {
        let q = Queue::new(2);
        assert_eq!(q.push(d(1)), Pushed::Queued);
        assert_eq!(q.push(d(2)), Pushed::Queued);
        assert_eq!(q.push(d(3)), Pushed::DroppedOldest);
        assert_eq!(q.pop().await, Some(d(2)));
        assert_eq!(q.close(), vec![d(3)]);
        assert_eq!(q.push(d(4)), Pushed::Closed(d(4)));
        assert!(q.is_closed());
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let q = std::sync::Arc::new(Queue::new(4));
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::task::yield_now().await;
        q.push(d(7));
        assert_eq!(waiting.await.unwrap(), Some(d(7)));
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(waiting.await.unwrap(), None, "closing wakes a waiting pop");
    }
}

//! The bounded queue between an inbound's receive loop and one endpoint:
//! pushing never waits; when full, the oldest datagram is dropped (a
//! real-time flow wants the newest), and the drop is counted by the caller.
//! Full means its datagram count (`udp.queue`) or the bytes every queue of
//! the relay holds together (`udp.queue_bytes`, a [`Budget`]): a flood of
//! large datagrams to flows whose paths are slow to open cannot take the
//! router's memory.
//!
//! Once the endpoint's session is open it is published here too: while the
//! queue is empty the inbound sends straight into the session (a
//! non-blocking system call, no task wake-up) and only a failure or a full
//! socket buffer goes through the queue, so the endpoint alone decides
//! what a failure means and never writes into a failed path again.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;

use crate::dialer::UdpSession;

/// One datagram from a client, with where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub dst: SocketAddr,
    pub bytes: Vec<u8>,
}

/// A queued datagram, or one whose direct send already failed (with why).
pub type Item = (Datagram, Option<io::Error>);

/// The bytes every queue of a relay may hold together.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: usize) -> bool {
        let before = self.used.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > self.limit {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

pub struct Queue {
    items: Mutex<VecDeque<Item>>,
    budget: Arc<Budget>,
    ready: Notify,
    closed: AtomicBool,
    cap: usize,
    /// The endpoint's open session, for direct sends.
    direct: ArcSwapOption<UdpSession>,
    /// When the inbound last sent directly (ms since `epoch`).
    touched_ms: AtomicU64,
    epoch: Instant,
    /// The datagram the inbound last sent directly since the session last
    /// answered: the one most likely lost when the path fails under it.
    unanswered: Mutex<Option<Unanswered>>,
    /// Whether `unanswered` holds one (read without the lock on every
    /// answer).
    holding: AtomicBool,
}

/// A copy of a datagram sent directly, its buffer reused for the next.
struct Unanswered {
    at: Instant,
    datagram: Datagram,
    /// Bytes of the budget it holds (its buffer's size).
    held: usize,
}

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued, and the oldest datagram was dropped for it.
    DroppedOldest,
    /// The endpoint is gone: nothing was queued.
    Closed(Datagram),
    /// The relay's queued bytes are at their budget and this flow had
    /// nothing waiting to give up: the datagram was dropped.
    OverBudget,
}

impl Queue {
    pub fn new(cap: usize, budget: Arc<Budget>) -> Queue {
        Queue {
            items: Mutex::new(VecDeque::new()),
            budget,
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            cap: cap.max(1),
            direct: ArcSwapOption::empty(),
            touched_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            unanswered: Mutex::new(None),
            holding: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Item>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, datagram: Datagram) -> Pushed {
        self.push_item((datagram, None))
    }

    /// Hands the endpoint a datagram whose direct send failed.
    pub fn push_failed(&self, datagram: Datagram, error: io::Error) -> Pushed {
        self.push_item((datagram, Some(error)))
    }

    fn push_item(&self, item: Item) -> Pushed {
        let size = item.0.bytes.len();
        let mut items = self.lock();
        if self.closed.load(Ordering::Acquire) {
            return Pushed::Closed(item.0);
        }
        let mut dropped = false;
        if items.len() >= self.cap {
            self.forget_oldest(&mut items);
            dropped = true;
        }
        while !self.budget.take(size) {
            if !self.forget_oldest(&mut items) {
                return Pushed::OverBudget;
            }
            dropped = true;
        }
        items.push_back(item);
        drop(items);
        self.ready.notify_one();
        if dropped {
            Pushed::DroppedOldest
        } else {
            Pushed::Queued
        }
    }

    /// Drops the oldest waiting datagram, giving its bytes back; false
    /// when none waits.
    fn forget_oldest(&self, items: &mut VecDeque<Item>) -> bool {
        match items.pop_front() {
            Some((old, _)) => {
                self.budget.give(old.bytes.len());
                true
            }
            None => false,
        }
    }

    /// The endpoint's session, when it is open and nothing is waiting
    /// before a new datagram: the inbound may then send straight into it.
    pub fn direct(&self) -> Option<Arc<UdpSession>> {
        let session = self.direct.load_full()?;
        self.lock().is_empty().then_some(session)
    }

    /// The inbound sent straight into the session just now, `last` (to
    /// `dst`) the last datagram. A copy of it is kept until the session
    /// answers, within the relay's budget: when the path fails before
    /// that, it goes again through the next path.
    pub fn sent_directly(&self, dst: SocketAddr, last: &[u8]) {
        let now = Instant::now();
        let ms = now.duration_since(self.epoch).as_millis() as u64;
        self.touched_ms.store(ms.max(1), Ordering::Relaxed);
        let mut slot = self.unanswered.lock().unwrap_or_else(|e| e.into_inner());
        let held = slot.as_ref().map_or(0, |u| u.held);
        if last.len() > held && !self.budget.take(last.len() - held) {
            // Out of budget: keep no copy rather than an old one.
            if let Some(old) = slot.take() {
                self.budget.give(old.held);
            }
            self.holding.store(false, Ordering::Release);
            return;
        }
        let held = held.max(last.len());
        match slot.as_mut() {
            Some(u) => {
                u.at = now;
                u.datagram.dst = dst;
                u.datagram.bytes.clear();
                u.datagram.bytes.extend_from_slice(last);
                u.held = held;
            }
            None => {
                *slot = Some(Unanswered {
                    at: now,
                    datagram: Datagram {
                        dst,
                        bytes: last.to_vec(),
                    },
                    held,
                })
            }
        }
        self.holding.store(true, Ordering::Release);
    }

    /// The session answered: the datagram sent directly before got
    /// through, or is not the one to send again.
    pub fn answered(&self) {
        if self.holding.load(Ordering::Acquire) {
            self.take_unanswered();
        }
    }

    /// The datagram sent directly since the last answer, with when.
    pub fn take_unanswered(&self) -> Option<(Instant, Datagram)> {
        let mut slot = self.unanswered.lock().unwrap_or_else(|e| e.into_inner());
        self.holding.store(false, Ordering::Release);
        let u = slot.take()?;
        self.budget.give(u.held);
        Some((u.at, u.datagram))
    }

    /// Publishes (or withdraws) the endpoint's session for direct sends.
    pub fn set_direct(&self, session: Option<Arc<UdpSession>>) {
        self.direct.store(session);
    }

    /// When the inbound last sent directly.
    pub fn touched(&self) -> Option<Instant> {
        match self.touched_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms)),
        }
    }

    /// The next item, waiting for one; `None` once the queue is closed.
    /// Cancel-safe.
    pub async fn pop(&self) -> Option<Item> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut items = self.lock();
                if let Some(datagram) = items.pop_front() {
                    self.budget.give(datagram.0.bytes.len());
                    if items.is_empty() {
                        // Most datagrams go straight into the session: an
                        // idle flow keeps no room for queued ones.
                        items.shrink_to_fit();
                    }
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
        self.direct.store(None);
        let mut items = self.lock();
        self.closed.store(true, Ordering::Release);
        let left: Vec<Datagram> = items.drain(..).map(|(datagram, _)| datagram).collect();
        drop(items);
        self.budget
            .give(left.iter().map(|d| d.bytes.len()).sum::<usize>());
        self.ready.notify_waiters();
        left
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let items = self.items.get_mut().unwrap_or_else(|e| e.into_inner());
        self.budget
            .give(items.iter().map(|(d, _)| d.bytes.len()).sum::<usize>());
        self.take_unanswered();
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
        let q = Queue::new(2, Arc::new(Budget::new(1 << 20)));
        assert_eq!(q.push(d(1)), Pushed::Queued);
        assert_eq!(q.push(d(2)), Pushed::Queued);
        assert_eq!(q.push(d(3)), Pushed::DroppedOldest);
        assert_eq!(q.pop().await.map(|(d, _)| d), Some(d(2)));
        assert_eq!(q.close(), vec![d(3)]);
        assert_eq!(q.push(d(4)), Pushed::Closed(d(4)));
        assert!(q.is_closed());
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let q = std::sync::Arc::new(Queue::new(4, Arc::new(Budget::new(1 << 20))));
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::task::yield_now().await;
        q.push(d(7));
        assert_eq!(waiting.await.unwrap().map(|(d, _)| d), Some(d(7)));
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::task::yield_now().await;
        q.close();
        assert!(
            waiting.await.unwrap().is_none(),
            "closing wakes a waiting pop"
        );
    }

    #[tokio::test]
    async fn the_relay_byte_budget_bounds_every_queue_together() {
        let budget = Arc::new(Budget::new(300));
        let (a, b) = (
            Queue::new(64, budget.clone()),
            Queue::new(64, budget.clone()),
        );
        let sized = |n: usize| Datagram {
            dst: "127.0.0.1:9".parse().unwrap(),
            bytes: vec![0; n],
        };
        assert_eq!(a.push(sized(200)), Pushed::Queued);
        // b has nothing to give up: its datagram goes.
        assert_eq!(b.push(sized(200)), Pushed::OverBudget);
        assert_eq!(budget.used(), 200);
        // a gives up its oldest for a newer one.
        assert_eq!(a.push(sized(150)), Pushed::DroppedOldest);
        assert_eq!(budget.used(), 150);
        assert_eq!(b.push(sized(100)), Pushed::Queued);
        assert_eq!(budget.used(), 250);
        assert_eq!(a.pop().await.map(|(d, _)| d.bytes.len()), Some(150));
        assert_eq!(budget.used(), 100);
        assert_eq!(a.push(sized(10)), Pushed::Queued);
        assert_eq!(a.close().len(), 1);
        drop(b);
        assert_eq!(
            budget.used(),
            0,
            "closing and dropping give every byte back"
        );
    }

    #[test]
    fn the_last_direct_send_is_kept_until_an_answer_within_the_budget() {
        let budget = Arc::new(Budget::new(8));
        let q = Queue::new(4, budget.clone());
        let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
        q.sent_directly(dst, b"abcd");
        q.sent_directly(dst, b"xy");
        assert_eq!(budget.used(), 4, "the buffer is reused, its size held");
        q.answered();
        assert_eq!(q.take_unanswered(), None, "an answer clears it");
        assert_eq!(budget.used(), 0);
        q.sent_directly(dst, b"xyz");
        let (_, kept) = q.take_unanswered().expect("kept");
        assert_eq!(kept.bytes, b"xyz");
        // Past the budget no copy is kept, not even an older one.
        q.sent_directly(dst, b"12345678");
        assert_eq!(budget.used(), 8);
        q.sent_directly(dst, b"123456789");
        assert_eq!((q.take_unanswered(), budget.used()), (None, 0));
        q.sent_directly(dst, b"1");
        drop(q);
        assert_eq!(budget.used(), 0, "dropping the queue gives it back");
    }
}

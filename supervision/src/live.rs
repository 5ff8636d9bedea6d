//! What a supervised actor hands to others while it lives: its `ActorRef`,
//! the transports it opened. Others read it without asking the actor (a
//! hot path reads a snapshot); the actor publishes it through an
//! [`Attachment`], which withdraws it however the actor dies (ractor's
//! `kill` skips `post_stop`, a dropped state does not), and only if no
//! newer incarnation has published since.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwapOption, Guard};
use ractor::ActorId;
use tokio::sync::Notify;

/// A value published by the current incarnation of one actor.
pub struct Live<T> {
    current: ArcSwapOption<Published<T>>,
    /// Woken when an incarnation publishes.
    attached: Notify,
}

/// The published value and the incarnation it belongs to.
pub struct Published<T> {
    pub owner: ActorId,
    pub value: T,
}

impl<T> Default for Live<T> {
    fn default() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            attached: Notify::new(),
        }
    }
}

impl<T> Live<T> {
    /// Publishes `value` for the incarnation `owner`; the attachment
    /// withdraws it when dropped.
    pub fn attach(self: &Arc<Self>, owner: ActorId, value: T) -> Attachment<T> {
        let attachment = Attachment {
            live: Arc::clone(self),
            owner,
        };
        attachment.update(value);
        attachment
    }

    /// What is published now (a cheap snapshot, no lock).
    pub fn load(&self) -> Guard<Option<Arc<Published<T>>>> {
        self.current.load()
    }

    /// True while an incarnation has something published.
    pub fn is_attached(&self) -> bool {
        self.current.load().is_some()
    }

    /// Waits until an incarnation has published, at most until `until`;
    /// true when one has.
    pub async fn wait_attached(&self, until: Instant) -> bool {
        let attached = self.attached.notified();
        tokio::pin!(attached);
        // Registered before the check, so a publish in between still wakes us.
        attached.as_mut().enable();
        if self.is_attached() {
            return true;
        }
        tokio::time::timeout_at(until.into(), attached)
            .await
            .is_ok()
    }
}

impl<T: Clone> Live<T> {
    /// A copy of the published value.
    pub fn get(&self) -> Option<T> {
        self.current.load().as_ref().map(|p| p.value.clone())
    }
}

/// One incarnation's hold on a [`Live`]: publishes, and withdraws on drop.
pub struct Attachment<T> {
    live: Arc<Live<T>>,
    owner: ActorId,
}

impl<T> Attachment<T> {
    /// Publishes a new value for the same incarnation.
    pub fn update(&self, value: T) {
        self.live.current.store(Some(Arc::new(Published {
            owner: self.owner,
            value,
        })));
        self.live.attached.notify_waiters();
    }

    /// What this incarnation published last.
    pub fn load(&self) -> Guard<Option<Arc<Published<T>>>> {
        self.live.load()
    }
}

impl<T> Drop for Attachment<T> {
    fn drop(&mut self) {
        let owner = self.owner;
        // Only what this incarnation published: a newer one may be there.
        self.live.current.rcu(|current| match current {
            Some(published) if published.owner == owner => None,
            other => other.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_attachment_withdraws_only_its_own_value() {
        let live = Arc::new(Live::<u32>::default());
        assert!(!live.is_attached());
        let old = live.attach(ActorId::Local(1), 10);
        assert_eq!(live.get(), Some(10));
        old.update(11);
        assert_eq!(live.get(), Some(11));
        // A replacement published before the old one's state was dropped.
        let new = live.attach(ActorId::Local(2), 20);
        drop(old);
        assert_eq!(live.get(), Some(20));
        drop(new);
        assert!(!live.is_attached());
    }

    #[tokio::test]
    async fn waiting_for_an_attach_wakes_when_one_publishes() {
        let live = Arc::new(Live::<u32>::default());
        let soon = Instant::now() + std::time::Duration::from_millis(50);
        assert!(!live.wait_attached(soon).await, "nobody publishes");
        let waiter = {
            let live = live.clone();
            tokio::spawn(async move {
                live.wait_attached(Instant::now() + std::time::Duration::from_secs(10))
                    .await
            })
        };
        tokio::task::yield_now().await;
        let _attached = live.attach(ActorId::Local(3), 1);
        assert!(waiter.await.unwrap());
    }
}

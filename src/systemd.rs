//! Telling the service manager (systemd) what ward is doing, through the
//! `sd_notify` protocol: [`ready`] once every front door is bound,
//! [`reloading`] when a reload begins, [`stopping`] when shutdown begins,
//! [`status`] lines for `systemctl status`, and the [`watchdog`]'s
//! keep-alive, sent only while the root supervisor answers.
//!
//! Without `NOTIFY_SOCKET` in the environment every call does nothing and
//! no watchdog task runs. The environment is read, never changed: ward
//! starts no child process that could inherit it, and tests observe it.
//! When the tree counts as ready is [`crate::readiness`]'s business.
//!
//! A reload (`ward ctl reload`, SIGHUP) calls [`reloading`] before it
//! applies the new configuration and [`ready`] once it is applied or
//! refused (then with a [`status`] saying why): systemd holds the unit in
//! "reloading" until READY=1 comes, and `systemctl reload` returns then, so
//! send READY=1 before answering the `ctl` client.

use std::future::Future;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::ActorRef;
use sd_notify::NotifyState;
use tokio::time::MissedTickBehavior;
use ward_actors::warn_throttled;
use ward_supervision::{SupervisorMsg, TaskGuard};

/// The variable that names the service manager's socket.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// READY=1: every DNS listener, UDP inbound and the admin socket is bound
/// (startup), or a reload is over.
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// RELOADING=1 with MONOTONIC_USEC, which systemd 253 and later require
/// for `Type=notify-reload` (and `Type=notify` ignores). Send [`ready`]
/// when the reload is over, applied or not.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// STOPPING=1: shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// STATUS=`text`: one line `systemctl status` shows.
pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

/// Sends `states` when there is a service manager to send to. A failure
/// is logged (throttled: the watchdog would repeat it every few seconds)
/// and otherwise ignored: ward serves whether systemd hears it or not.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn_throttled!("sd_notify", error = %e, "cannot notify the service manager");
    }
}

/// The watchdog's keep-alive, when the service manager asked for one
/// (`WATCHDOG_USEC`, with `WATCHDOG_PID` unset or this process) and there
/// is a manager to tell: WATCHDOG=1 every half interval while the root
/// supervisor answers, so a ward whose tree or runtime hangs is restarted.
/// The pings stop when the guard is dropped.
pub fn watchdog(root: ActorRef<SupervisorMsg>) -> Option<TaskGuard> {
    std::env::var_os(NOTIFY_SOCKET)?;
    let interval = sd_notify::watchdog_enabled().filter(|i| !i.is_zero())?;
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog: a ping every half interval while the root supervisor answers"
    );
    let healthy = move |within| root_answers(root.clone(), within);
    let ping = || notify(&[NotifyState::Watchdog]);
    Some(TaskGuard::spawn(keep_alive(interval, healthy, ping)))
}

/// Every `interval / 2`, asks `healthy` (which must answer within
/// `interval / 4`) and pings when it says yes. Two pings are then at most
/// three quarters of the interval apart while ward is healthy, and none
/// comes while it is not.
async fn keep_alive<H, F>(interval: Duration, mut healthy: H, mut ping: impl FnMut())
where
    H: FnMut(Duration) -> F,
    F: Future<Output = bool>,
{
    let mut ticks = tokio::time::interval(interval / 2);
    // After a stall, one check now, then the steady pace again.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if healthy(interval / 4).await {
            ping();
        } else {
            warn_throttled!(
                "watchdog",
                "the root supervisor did not answer: no watchdog ping; systemd restarts ward \
                 if this lasts"
            );
        }
    }
}

/// Whether the root supervisor answers a tree request within `within`:
/// its mailbox moves, and every supervisor's table below it can be read
/// (a snapshot locks each), the same request `ward ctl tree` makes.
async fn root_answers(root: ActorRef<SupervisorMsg>, within: Duration) -> bool {
    matches!(
        root.call(SupervisorMsg::Tree, Some(within)).await,
        Ok(CallResult::Success(_))
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use ractor::{Actor, ActorProcessingErr, RpcReplyPort};
    use ward_supervision::{Strategy, Supervisor, SupervisorConfig, SupervisorView};

    use super::*;

    /// Runs [`keep_alive`] with `interval` for `span` of paused time, with
    /// `healthy` read at each check; the pings sent.
    async fn pings_over(interval: Duration, span: Duration, healthy: Arc<AtomicBool>) -> usize {
        let pings = Arc::new(AtomicUsize::new(0));
        let counted = pings.clone();
        let task = tokio::spawn(keep_alive(
            interval,
            move |_| {
                let healthy = healthy.clone();
                async move { healthy.load(Ordering::SeqCst) }
            },
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
        ));
        tokio::time::sleep(span).await;
        task.abort();
        pings.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_ward_pings_every_half_interval() {
        let healthy = Arc::new(AtomicBool::new(true));
        // Checks at 0, 1, ..., 9 s (and not yet at 10 s).
        let pings = pings_over(
            Duration::from_secs(2),
            Duration::from_millis(9_500),
            healthy,
        )
        .await;
        assert_eq!(pings, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unhealthy_ward_sends_no_ping_until_it_answers_again() {
        let healthy = Arc::new(AtomicBool::new(false));
        let span = Duration::from_millis(9_500);
        let interval = Duration::from_secs(2);
        assert_eq!(pings_over(interval, span, healthy.clone()).await, 0);
        healthy.store(true, Ordering::SeqCst);
        assert_eq!(pings_over(interval, span, healthy).await, 10);
    }

    /// A "root" that takes tree requests and never answers them.
    struct Hung;

    impl Actor for Hung {
        type Msg = SupervisorMsg;
        type State = Vec<RpcReplyPort<ward_supervision::TreeNode>>;
        type Arguments = ();

        async fn pre_start(
            &self,
            _: ActorRef<SupervisorMsg>,
            _: (),
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(Vec::new())
        }

        async fn handle(
            &self,
            _: ActorRef<SupervisorMsg>,
            message: SupervisorMsg,
            held: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let SupervisorMsg::Tree(reply) = message {
                held.push(reply);
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_root_that_answers_is_healthy_and_one_that_hangs_is_not() {
        let config = SupervisorConfig::new(Strategy::OneForOne);
        let (root, _) = Supervisor::spawn_root(config, vec![], SupervisorView::new())
            .await
            .unwrap();
        assert!(root_answers(root.clone(), Duration::from_secs(5)).await);
        let (hung, _) = Actor::spawn(None, Hung, ()).await.unwrap();
        assert!(!root_answers(hung.clone(), Duration::from_millis(50)).await);
        root.stop(None);
        hung.stop(None);
    }
}

//! When ward serves: every front door (each DNS listener, UDP inbound, the
//! admin socket, the metrics endpoint) and every supervisor above them is
//! running, so each socket is bound. A listener that failed its first
//! start (its port taken) is retried by its supervisor; ward is not ready
//! until it is up. Dialers and upstreams do not count: a dead node or
//! nameserver is a path to fail over from, not a reason to hold back.
//!
//! [`Starts`] is the tree's observer that wakes a waiter on every child
//! start, so [`serving`] waits for an event instead of polling. Telling the
//! service manager is [`crate::systemd`]'s business.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use ward_supervision::{ExitReason, SupervisionObserver, SupervisorView, TreeNode};

/// Kinds of the children that hold a socket clients or operators connect to.
const FRONT_DOORS: [&str; 5] = [
    "dns-listener-udp",
    "dns-listener-tcp",
    "udp-inbound",
    "admin",
    "telemetry",
];

/// What ward serves once ready, as `systemctl status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Serving {
    /// DNS listeners: one UDP and one TCP per listen address.
    pub dns_listeners: usize,
    pub udp_inbounds: usize,
}

impl fmt::Display for Serving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "serving: {} DNS listeners, {} UDP inbounds",
            self.dns_listeners, self.udp_inbounds
        )
    }
}

impl Serving {
    /// What `tree` serves when every front door and supervisor in it
    /// runs; `None` while one does not.
    pub fn of(tree: &TreeNode) -> Option<Serving> {
        let mut serving = Serving {
            dns_listeners: 0,
            udp_inbounds: 0,
        };
        for node in tree.walk() {
            let kind = node.kind.as_str();
            if kind != "supervisor" && !FRONT_DOORS.contains(&kind) {
                continue;
            }
            if !started(node) {
                return None;
            }
            match kind {
                "dns-listener-udp" | "dns-listener-tcp" => serving.dns_listeners += 1,
                "udp-inbound" => serving.udp_inbounds += 1,
                _ => {}
            }
        }
        Some(serving)
    }
}

/// Whether `node`'s start is over: its start function returned, so its
/// `pre_start` (where every front door binds its socket) ran. The tree
/// shows such a child `running`, or `starting` with an id for the moment
/// between its start and ractor marking it running (after `post_start`);
/// a child not started yet or waiting for a retry has no id.
fn started(node: &TreeNode) -> bool {
    node.status == "running" || (node.status == "starting" && node.id.is_some())
}

/// Waits until the tree under `root` serves ([`Serving::of`]); `starts`
/// must be the tree's observer.
pub async fn serving(root: &SupervisorView, starts: &Starts) -> Serving {
    loop {
        // Registered before the look, so a start in between is not missed.
        let started = starts.started.notified();
        tokio::pin!(started);
        started.as_mut().enable();
        if let Some(serving) = Serving::of(&root.snapshot("", "supervisor")) {
            return serving;
        }
        started.await;
    }
}

/// The tree's observer: wakes [`serving`] on each child start and passes
/// every event on to `inner` (the metrics).
pub struct Starts {
    inner: Arc<dyn SupervisionObserver>,
    started: Notify,
}

impl Starts {
    pub fn around(inner: Arc<dyn SupervisionObserver>) -> Arc<Starts> {
        Arc::new(Starts {
            inner,
            started: Notify::new(),
        })
    }
}

impl SupervisionObserver for Starts {
    fn child_started(&self, path: &str, kind: &str) {
        self.inner.child_started(path, kind);
        self.started.notify_waiters();
    }

    fn child_exited(&self, path: &str, kind: &str, reason: &ExitReason) {
        self.inner.child_exited(path, kind, reason);
    }

    fn child_restarting(&self, path: &str, kind: &str, delay: Duration) {
        self.inner.child_restarting(path, kind, delay);
    }

    fn escalated(&self, path: &str) {
        self.inner.escalated(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str, kind: &str, status: &str, children: Vec<TreeNode>) -> TreeNode {
        TreeNode {
            path: path.to_string(),
            kind: kind.to_string(),
            detail: None,
            id: None,
            status: status.to_string(),
            restarts: 0,
            last_exit: None,
            last_exit_class: None,
            uptime_ms: 0,
            children,
        }
    }

    fn tree(listener: &str, dialer: &str) -> TreeNode {
        let listeners = vec![
            node("dns/listeners/udp:a", "dns-listener-udp", listener, vec![]),
            node("dns/listeners/tcp:a", "dns-listener-tcp", "running", vec![]),
        ];
        node(
            "",
            "supervisor",
            "running",
            vec![
                node("admin", "admin", "running", vec![]),
                node("dialers/n1", "dialer", dialer, vec![]),
                node("dns/listeners", "supervisor", "running", listeners),
                node("udp/inbounds/forward:b", "udp-inbound", "running", vec![]),
            ],
        )
    }

    #[test]
    fn a_tree_serves_once_every_front_door_runs_whatever_its_dialers_do() {
        let expected = Serving {
            dns_listeners: 2,
            udp_inbounds: 1,
        };
        assert_eq!(Serving::of(&tree("running", "running")), Some(expected));
        assert_eq!(Serving::of(&tree("running", "backoff")), Some(expected));
        assert_eq!(Serving::of(&tree("backoff", "running")), None);
        assert_eq!(Serving::of(&tree("starting", "running")), None);
        let mut bound = tree("starting", "running");
        bound.children[2].children[0].id = Some("0.9".to_string());
        assert_eq!(
            Serving::of(&bound),
            Some(expected),
            "started, not yet marked running"
        );
        assert_eq!(
            expected.to_string(),
            "serving: 2 DNS listeners, 1 UDP inbounds"
        );
    }
}

//! Snapshots of the live tree and lookups by path.
//!
//! A path names a node by the slash-separated names from the root
//! (`dns/upstreams/cf`); the root's path is empty. Snapshots are copied out of
//! each supervisor's [`SupervisorView`] one level at a time, so no lock is held
//! across levels and no supervisor is asked anything.

use std::sync::{Arc, Mutex};

use ractor::{ActorCell, ActorId, ActorStatus};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::table::{Slot, SupervisorView};

/// One node of the tree as `ward ctl tree` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    /// Slash-separated names from the root; empty for the root.
    pub path: String,
    /// Stable kind string (`supervisor`, `admin`, `dns-upstream`, ...).
    pub kind: String,
    /// Shown beside the name: which dialer an endpoint's flow goes
    /// through (`via n1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The actor id of the running incarnation.
    pub id: Option<String>,
    /// `starting`, `running`, `stopping`, `backoff`, `stopped` or `exited`.
    pub status: String,
    /// How many times this child was started again.
    pub restarts: u32,
    /// Why the last incarnation ended.
    pub last_exit: Option<String>,
    /// The class of that exit: `normal`, `killed`, or the failure's class
    /// (`socket_dead`, `path_failed`, `panic`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_class: Option<String>,
    /// Time since the running incarnation started; 0 when not running.
    pub uptime_ms: u64,
    /// Children, in start order.
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// The last segment of the path, or `root`.
    pub fn name(&self) -> &str {
        if self.path.is_empty() {
            "root"
        } else {
            self.path.rsplit('/').next().unwrap_or(&self.path)
        }
    }

    /// The node at `path` inside this subtree.
    pub fn find(&self, path: &str) -> Option<&TreeNode> {
        if self.path == path {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(path))
    }

    /// This node and every node below it, depth first.
    pub fn walk(&self) -> Vec<&TreeNode> {
        let mut out = vec![self];
        for child in &self.children {
            out.extend(child.walk());
        }
        out
    }
}

/// An actor found by path.
#[derive(Clone, Debug)]
pub struct FoundActor {
    pub path: String,
    pub kind: String,
    pub cell: ActorCell,
}

/// Joins a parent path and a child name.
pub fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn status_of_cell(cell: &ActorCell) -> &'static str {
    match cell.get_status() {
        ActorStatus::Unstarted | ActorStatus::Starting => "starting",
        ActorStatus::Running | ActorStatus::Upgrading => "running",
        ActorStatus::Draining | ActorStatus::Stopping => "stopping",
        ActorStatus::Stopped => "exited",
    }
}

fn status_of_slot(slot: &Slot) -> &'static str {
    match (slot.life.status(), &slot.now.cell) {
        ("running", Some(cell)) => status_of_cell(cell),
        (status, _) => status,
    }
}

fn millis_since(start: Option<Instant>, now: Instant) -> u64 {
    start.map_or(0, |s| {
        u64::try_from(now.saturating_duration_since(s).as_millis()).unwrap_or(u64::MAX)
    })
}

/// What a child shows in the tree below itself: a supervisor's children, or
/// the child actors a worker spawned and listed in a [`ChildList`].
pub trait Subtree: Send + Sync + 'static {
    /// The nodes below the owner, whose path is `path`.
    fn child_nodes(&self, path: &str) -> Vec<TreeNode>;
    /// The running actor at `rest`, a non-empty path relative to the owner
    /// (whose path is `owner`).
    fn find(&self, owner: &str, rest: &str) -> Option<FoundActor>;
    /// Tasks below the owner that have not finished (helper tasks are
    /// aborted), so a replacement of the owner can wait until they have.
    fn take_unfinished_joins(&self) -> Vec<JoinHandle<()>>;
}

/// A shared [`Subtree`].
pub type SubtreeRef = Arc<dyn Subtree>;

impl SupervisorView {
    /// The node of the supervisor owning this view, with everything below it.
    pub fn snapshot(&self, path: &str, kind: &str) -> TreeNode {
        let now = Instant::now();
        let me = self.me();
        TreeNode {
            path: path.to_string(),
            kind: kind.to_string(),
            detail: None,
            id: me.as_ref().map(|m| m.cell.get_id().to_string()),
            status: me
                .as_ref()
                .map_or("starting", |m| status_of_cell(&m.cell))
                .to_string(),
            restarts: 0,
            last_exit: None,
            last_exit_class: None,
            uptime_ms: millis_since(me.map(|m| m.started_at), now),
            children: Subtree::child_nodes(self, path),
        }
    }

    /// The running actor at `path` below this supervisor (`""` is the
    /// supervisor itself).
    pub fn find(&self, path: &str) -> Option<FoundActor> {
        let path = path.trim_matches('/');
        if path.is_empty() {
            return self.me().map(|me| FoundActor {
                path: String::new(),
                kind: "supervisor".to_string(),
                cell: me.cell,
            });
        }
        Subtree::find(self, "", path)
    }
}

impl Subtree for SupervisorView {
    fn child_nodes(&self, path: &str) -> Vec<TreeNode> {
        let now = Instant::now();
        let copied: Vec<(TreeNode, Option<SubtreeRef>)> = {
            let table = self.lock();
            table
                .slots
                .values()
                .map(|slot| (node_of_slot(slot, path, now), slot.now.view.clone()))
                .collect()
        };
        copied
            .into_iter()
            .map(|(mut node, view)| {
                if let Some(view) = view {
                    node.children = view.child_nodes(&node.path);
                }
                node
            })
            .collect()
    }

    fn find(&self, owner: &str, rest: &str) -> Option<FoundActor> {
        let (name, deeper) = match rest.split_once('/') {
            Some((name, deeper)) => (name, Some(deeper)),
            None => (rest, None),
        };
        let path = child_path(owner, name);
        let below = {
            let table = self.lock();
            let slot = table
                .seq_of_name(name)
                .and_then(|seq| table.slots.get(&seq))?;
            match deeper {
                None => {
                    return slot.now.cell.as_ref().map(|cell| FoundActor {
                        path,
                        kind: slot.spec.kind.clone(),
                        cell: cell.clone(),
                    })
                }
                Some(_) => slot.now.view.clone()?,
            }
        };
        below.find(&path, deeper?)
    }

    fn take_unfinished_joins(&self) -> Vec<JoinHandle<()>> {
        let mut joins = Vec::new();
        let mut views = Vec::new();
        {
            let mut table = self.lock();
            for slot in table.slots.values_mut() {
                if slot.now.join.as_ref().is_some_and(|j| !j.is_finished()) {
                    joins.extend(slot.now.join.take());
                }
                // A start in flight may hold what its child bound.
                if let Some(start) = slot.now.start.take() {
                    start.task.abort();
                    joins.push(start.task);
                }
                joins.extend(slot.now.tasks.abort_all());
                views.extend(slot.now.view.clone());
            }
        }
        for view in views {
            joins.extend(view.take_unfinished_joins());
        }
        joins
    }
}

/// One child actor a worker spawned and listed.
struct Listed {
    name: String,
    kind: String,
    cell: ActorCell,
    started_at: Instant,
    join: Option<JoinHandle<()>>,
}

/// The child actors of a worker (an upstream's connections), for the tree:
/// the worker adds each one it spawns and removes it when it ends.
#[derive(Default)]
pub struct ChildList {
    children: Mutex<Vec<Listed>>,
}

impl ChildList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Listed>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists a child the worker spawned (linked to itself).
    pub fn add(
        &self,
        name: impl Into<String>,
        kind: impl Into<String>,
        cell: ActorCell,
        join: JoinHandle<()>,
    ) {
        self.lock().push(Listed {
            name: name.into(),
            kind: kind.into(),
            cell,
            started_at: Instant::now(),
            join: Some(join),
        });
    }

    /// Forgets a child that ended.
    pub fn remove(&self, id: &ActorId) {
        self.lock().retain(|c| c.cell.get_id() != *id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Subtree for ChildList {
    fn child_nodes(&self, path: &str) -> Vec<TreeNode> {
        let now = Instant::now();
        self.lock()
            .iter()
            .map(|c| TreeNode {
                path: child_path(path, &c.name),
                kind: c.kind.clone(),
                detail: None,
                id: Some(c.cell.get_id().to_string()),
                status: status_of_cell(&c.cell).to_string(),
                restarts: 0,
                last_exit: None,
                last_exit_class: None,
                uptime_ms: millis_since(Some(c.started_at), now),
                children: Vec::new(),
            })
            .collect()
    }

    fn find(&self, owner: &str, rest: &str) -> Option<FoundActor> {
        self.lock()
            .iter()
            .find(|c| c.name == rest)
            .map(|c| FoundActor {
                path: child_path(owner, &c.name),
                kind: c.kind.clone(),
                cell: c.cell.clone(),
            })
    }

    fn take_unfinished_joins(&self) -> Vec<JoinHandle<()>> {
        self.lock()
            .iter_mut()
            .filter(|c| c.join.as_ref().is_some_and(|j| !j.is_finished()))
            .filter_map(|c| c.join.take())
            .collect()
    }
}

fn node_of_slot(slot: &Slot, parent: &str, now: Instant) -> TreeNode {
    TreeNode {
        path: child_path(parent, &slot.spec.name),
        kind: slot.spec.kind.clone(),
        detail: slot.spec.detail.clone(),
        id: slot.now.cell.as_ref().map(|c| c.get_id().to_string()),
        status: status_of_slot(slot).to_string(),
        restarts: slot.life.restarts,
        last_exit: slot.life.last_exit.as_ref().map(ToString::to_string),
        last_exit_class: slot.life.last_exit.as_ref().map(|e| e.class().to_string()),
        uptime_ms: millis_since(slot.life.up_since(), now),
        children: Vec::new(),
    }
}

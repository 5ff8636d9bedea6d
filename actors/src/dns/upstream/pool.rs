//! The stream connection pool of an upstream's actor: TCP, TLS and HTTPS
//! connections as child actors (kind `dns-upstream-conn`), opened on demand
//! through a dialer of the upstream's `via`. A query is filed in the active
//! connection's pending map and its bytes pushed into the connection's
//! bounded queue, so it never waits in a mailbox. Consecutive connect
//! failures back off, and while backing off queries fail at once so the
//! resolver moves on. When a connection dies its in-flight queries are sent
//! again once on a fresh one, avoiding the dialer that broke.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{ActorCell, ActorId, ActorRef};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use ward_supervision::{Backoff, BackoffPolicy, ChildList, ExitReason, TaskScope};

use super::actor::UpstreamMsg;
use super::conn::{self, frame, outgoing_queue, ConnArgs, Outgoing, StreamTarget};
use super::doh;
use super::failure::UpstreamFailure;
use super::pending::Pending;
use super::{UpstreamError, UpstreamQuery, UpstreamSlot};
use crate::dialer::{Dialer, Track};
use crate::warn_throttled;

/// A connection idle this long is closed.
const CONN_IDLE: Duration = Duration::from_secs(10);
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// How stream queries travel.
pub(super) enum Streams {
    None,
    /// One target per server (TCP or TLS).
    Dns(Vec<StreamTarget>),
    Https {
        target: StreamTarget,
        uri: Arc<str>,
    },
}

struct Conn {
    conn_id: u64,
    /// The dialer it goes through.
    dialer: Arc<Dialer>,
    /// Where its queries go; closed once the connection's task has ended.
    outgoing: mpsc::Sender<Outgoing>,
    pending: Arc<Pending>,
    /// DNS over TCP/TLS frames each query with its length; DoH sends it
    /// bare with id 0 (RFC 8484).
    framed: bool,
    ready: bool,
}

impl Conn {
    fn encode(framed: bool, id: u16, query: &UpstreamQuery) -> Vec<u8> {
        if framed {
            frame(&query.wire(id))
        } else {
            query.wire(0)
        }
    }
}

/// What filing a query with a connection came to.
enum Filed {
    /// Queued, or failed for good.
    Done,
    /// The connection's task has ended: the query comes back for another.
    Closed(UpstreamQuery),
}

/// The connections of one upstream incarnation.
pub(super) struct StreamPool {
    slot: Arc<UpstreamSlot>,
    /// The connections, as the tree shows them.
    children: Arc<ChildList>,
    /// The upstream incarnation's tasks: the connections' run there.
    tasks: TaskScope,
    streams: Streams,
    conns: HashMap<ActorId, Conn>,
    active: Option<ActorId>,
    next_conn_id: u64,
    /// Delays after consecutive connect failures.
    reconnect: Backoff,
    retry_after: Option<Instant>,
    /// The dialer of the last connection that broke: the next connection
    /// avoids it (the queries it carried are being retried).
    avoid: Option<String>,
}

impl StreamPool {
    pub fn new(
        slot: Arc<UpstreamSlot>,
        children: Arc<ChildList>,
        tasks: TaskScope,
        streams: Streams,
    ) -> Self {
        Self {
            slot,
            children,
            tasks,
            streams,
            conns: HashMap::new(),
            active: None,
            next_conn_id: 1,
            reconnect: Backoff::new(BackoffPolicy::doubling(RECONNECT_MIN, RECONNECT_MAX)),
            retry_after: None,
            avoid: None,
        }
    }

    /// True when the upstream has a stream transport at all.
    pub fn has_streams(&self) -> bool {
        !matches!(self.streams, Streams::None)
    }

    fn name(&self) -> &str {
        &self.slot.name
    }

    /// Files the query with the active connection (opening one if needed)
    /// and queues its bytes. A connection whose task has just ended is
    /// replaced at once; its exit event comes later.
    pub async fn send(&mut self, myself: &ActorRef<UpstreamMsg>, mut query: UpstreamQuery) {
        for _ in 0..2 {
            if self.retry_after.is_some_and(|at| Instant::now() < at) {
                return query.fail(UpstreamError::Unavailable);
            }
            let id = match self.active {
                Some(id) => id,
                None => match self.open_conn(myself).await {
                    Ok(id) => id,
                    Err(e) => {
                        warn_throttled!(self.name(), upstream = %self.name(), error = %e, "cannot start an upstream connection");
                        return query.fail(UpstreamError::Unavailable);
                    }
                },
            };
            match self.file(id, query) {
                Filed::Done => return,
                Filed::Closed(back) => {
                    query = back;
                    self.active = None;
                }
            }
        }
        query.fail(UpstreamError::Unavailable);
    }

    /// Files the query with connection `id` and queues its bytes.
    fn file(&self, id: ActorId, query: UpstreamQuery) -> Filed {
        let Some(conn) = self.conns.get(&id) else {
            query.fail(UpstreamError::Unavailable);
            return Filed::Done;
        };
        let framed = conn.framed;
        let (key, wire) = match conn
            .pending
            .insert(query, |id, q| Conn::encode(framed, id, q))
        {
            Ok(filed) => filed,
            Err(query) => {
                query.fail(UpstreamError::Unavailable);
                return Filed::Done;
            }
        };
        let deadline = conn.pending.deadline_of(key).unwrap_or_else(Instant::now);
        match conn.outgoing.try_send(Outgoing {
            key,
            wire,
            deadline,
        }) {
            Ok(()) => Filed::Done,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some(query) = conn.pending.take(key) {
                    query.fail(UpstreamError::Unavailable);
                }
                Filed::Done
            }
            Err(mpsc::error::TrySendError::Closed(_)) => match conn.pending.take(key) {
                Some(query) => Filed::Closed(query),
                None => Filed::Done,
            },
        }
    }

    /// The dialer for a new connection: one that did not just break, if
    /// the group has one.
    fn pick_dialer(&self) -> Option<Arc<Dialer>> {
        let exclude: Vec<&str> = self.avoid.as_deref().into_iter().collect();
        self.slot
            .via
            .select(Track::Tcp, &exclude)
            .or_else(|| self.slot.via.select(Track::Tcp, &[]))
    }

    /// Starts a connection child; it connects in its own task.
    async fn open_conn(
        &mut self,
        myself: &ActorRef<UpstreamMsg>,
    ) -> Result<ActorId, UpstreamFailure> {
        let conn_id = self.next_conn_id;
        self.next_conn_id += 1;
        let pending = Arc::new(Pending::default());
        let (outgoing, queue) = outgoing_queue();
        let dialer = self
            .pick_dialer()
            .ok_or_else(|| UpstreamFailure::NoDialer {
                via: self.slot.via.name().to_string(),
            })?;
        let (cell, join, framed) = self
            .spawn_conn(myself, conn_id, dialer.clone(), pending.clone(), queue)
            .await?;
        let id = cell.get_id();
        self.children
            .add(format!("conn-{conn_id}"), "dns-upstream-conn", cell, join);
        self.conns.insert(
            id,
            Conn {
                conn_id,
                dialer,
                outgoing,
                pending,
                framed,
                ready: false,
            },
        );
        self.active = Some(id);
        Ok(id)
    }

    /// Spawns the connection child for the upstream's stream transport,
    /// linked to the upstream; true when its queries are length-framed.
    async fn spawn_conn(
        &self,
        myself: &ActorRef<UpstreamMsg>,
        conn_id: u64,
        dialer: Arc<Dialer>,
        pending: Arc<Pending>,
        outgoing: mpsc::Receiver<Outgoing>,
    ) -> Result<(ActorCell, JoinHandle<()>, bool), UpstreamFailure> {
        let (upstream, tasks) = (myself.get_cell(), self.tasks.clone());
        let target = match &self.streams {
            Streams::None => return Err(UpstreamFailure::NoStreams),
            Streams::Dns(targets) => targets[self.slot.server_index(targets.len())].clone(),
            Streams::Https { target, .. } => target.clone(),
        };
        let args = ConnArgs {
            target,
            dialer,
            pending,
            outgoing,
            owner: myself.clone(),
            conn_id,
            idle: CONN_IDLE,
        };
        Ok(match &self.streams {
            Streams::Https { uri, .. } => {
                let (cell, join) = doh::spawn(args, uri.clone(), upstream, tasks).await?;
                (cell, join, false)
            }
            _ => {
                let (cell, join) = conn::spawn(args, upstream, tasks).await?;
                (cell, join, true)
            }
        })
    }

    /// A connection finished connecting: the backoff starts over.
    pub fn conn_ready(&mut self, conn_id: u64) {
        if let Some(conn) = self.conns.values_mut().find(|c| c.conn_id == conn_id) {
            conn.ready = true;
            self.reconnect.succeed();
            self.retry_after = None;
            self.avoid = None;
        }
    }

    /// A connection child ended: forget it, back off if it never came up,
    /// and send its queries again once.
    pub async fn conn_ended(
        &mut self,
        myself: &ActorRef<UpstreamMsg>,
        id: ActorId,
        reason: ExitReason,
    ) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        self.children.remove(&id);
        if self.active == Some(id) {
            self.active = None;
        }
        if !reason.is_normal() {
            self.broke(&conn, &reason);
        }
        let now = Instant::now();
        for mut query in conn.pending.take_all() {
            if query.retried || query.deadline <= now {
                query.fail(UpstreamError::ConnectionLost);
            } else {
                query.retried = true;
                self.send(myself, query).await;
            }
        }
    }

    /// A connection failed: the next one avoids its dialer, and backs off
    /// unless the path (not the upstream) is to blame.
    fn broke(&mut self, conn: &Conn, reason: &ExitReason) {
        // Where a group has another member, the retry goes there.
        self.avoid = Some(conn.dialer.name.clone());
        if conn.ready {
            warn_throttled!(self.name(), upstream = %self.name(), %reason, "upstream connection lost");
        } else if !conn.dialer.health(Track::Tcp).is_up()
            && self.slot.via.has_other_up(Track::Tcp, &conn.dialer.name)
        {
            // The path failed, not the upstream: the next connection
            // goes through another member at once.
            warn_throttled!(self.name(), upstream = %self.name(), dialer = %conn.dialer.name, %reason,
                "cannot reach upstream through this dialer; trying another");
        } else {
            let delay = self.reconnect.fail();
            self.retry_after = Some(Instant::now() + delay);
            warn_throttled!(self.name(), upstream = %self.name(), %reason,
                retry_in_ms = delay.as_millis() as u64, "cannot connect to upstream");
        }
    }
}

//! Test actors and helpers for the supervision tests: a probe actor that logs
//! its life (start, stop, state drop) and exits in whichever way it is told.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use ward_supervision::{
    BackoffPolicy, ChildSpec, Intensity, Restart, Strategy, Supervisor, SupervisorConfig,
    SupervisorMsg, SupervisorView, TreeNode,
};

/// What happened to a probe, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Started(String),
    Stopped(String),
    Dropped(String),
}

/// A shared, ordered log of events with their (tokio) times.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<(Instant, Ev)>>>);

impl Log {
    pub fn push(&self, ev: Ev) {
        self.0.lock().unwrap().push((Instant::now(), ev));
    }
    pub fn events(&self) -> Vec<Ev> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }
    pub fn timed(&self) -> Vec<(Instant, Ev)> {
        self.0.lock().unwrap().clone()
    }
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
    pub fn count(&self, ev: &Ev) -> usize {
        self.events().iter().filter(|e| *e == ev).count()
    }
    /// Names in the order they had events of one variant.
    pub fn names(&self, pick: fn(&Ev) -> Option<&String>) -> Vec<String> {
        self.events()
            .iter()
            .filter_map(|e| pick(e).cloned())
            .collect()
    }
    pub fn started(&self) -> Vec<String> {
        self.names(|e| match e {
            Ev::Started(n) => Some(n),
            _ => None,
        })
    }
    pub fn stopped(&self) -> Vec<String> {
        self.names(|e| match e {
            Ev::Stopped(n) => Some(n),
            _ => None,
        })
    }
    pub fn dropped(&self) -> Vec<String> {
        self.names(|e| match e {
            Ev::Dropped(n) => Some(n),
            _ => None,
        })
    }
}

/// How a probe is told to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Normal,
    Error,
    Killed,
    Panicked,
}

pub const ALL_EXITS: [Exit; 4] = [Exit::Normal, Exit::Error, Exit::Killed, Exit::Panicked];

pub enum ProbeMsg {
    ExitNormal,
    Fail,
    Panic,
}

/// A worker that logs its life.
pub struct Probe;

pub struct ProbeArgs {
    pub name: String,
    pub log: Log,
    /// `pre_start` fails while this counter is above zero (counting down).
    pub fail_starts: Arc<AtomicU32>,
    /// Fail by panicking instead of returning an error.
    pub panic_on_start: bool,
    /// `post_stop` never returns (to exercise kill after the shutdown timeout).
    pub hang_on_stop: bool,
}

pub struct ProbeState {
    name: String,
    log: Log,
    hang_on_stop: bool,
}

impl Drop for ProbeState {
    fn drop(&mut self) {
        self.log.push(Ev::Dropped(self.name.clone()));
    }
}

impl Actor for Probe {
    type Msg = ProbeMsg;
    type State = ProbeState;
    type Arguments = ProbeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ProbeMsg>,
        args: ProbeArgs,
    ) -> Result<ProbeState, ActorProcessingErr> {
        let left = args.fail_starts.load(Ordering::SeqCst);
        if left > 0 {
            args.fail_starts.store(left - 1, Ordering::SeqCst);
            if args.panic_on_start {
                panic!("{} cannot start", args.name);
            }
            return Err(test_failure(format!("{} cannot start", args.name)).into());
        }
        args.log.push(Ev::Started(args.name.clone()));
        Ok(ProbeState {
            name: args.name,
            log: args.log,
            hang_on_stop: args.hang_on_stop,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ProbeMsg>,
        state: &mut ProbeState,
    ) -> Result<(), ActorProcessingErr> {
        state.log.push(Ev::Stopped(state.name.clone()));
        if state.hang_on_stop {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ProbeMsg>,
        message: ProbeMsg,
        _state: &mut ProbeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ProbeMsg::ExitNormal => myself.stop(None),
            ProbeMsg::Fail => return Err(test_failure("boom").into()),
            ProbeMsg::Panic => panic!("boom"),
        }
        Ok(())
    }
}

/// The failure class the test children fail with.
pub const TEST_CLASS: &str = "test";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TestError(pub String);

/// A typed failure, as every actor of ward's reports one.
pub fn test_failure(message: impl Into<String>) -> ward_supervision::ChildFailure {
    ward_supervision::ChildFailure::new(TEST_CLASS, TestError(message.into()))
}

/// A probe child spec with the given knobs.
#[derive(Clone)]
pub struct ProbeSpec {
    pub name: String,
    pub restart: Restart,
    pub log: Log,
    pub fail_starts: Arc<AtomicU32>,
    pub panic_on_start: bool,
    pub hang_on_stop: bool,
    pub shutdown: Duration,
}

impl ProbeSpec {
    pub fn new(name: &str, restart: Restart, log: &Log) -> Self {
        Self {
            name: name.to_string(),
            restart,
            log: log.clone(),
            fail_starts: Arc::new(AtomicU32::new(0)),
            panic_on_start: false,
            hang_on_stop: false,
            shutdown: Duration::from_secs(2),
        }
    }

    pub fn build(self) -> ChildSpec {
        let ProbeSpec {
            name,
            restart,
            log,
            fail_starts,
            panic_on_start,
            hang_on_stop,
            shutdown,
        } = self;
        let child_name = name.clone();
        ChildSpec::worker(name, "probe", restart, move |_ctx| {
            (
                Probe,
                ProbeArgs {
                    name: child_name.clone(),
                    log: log.clone(),
                    fail_starts: fail_starts.clone(),
                    panic_on_start,
                    hang_on_stop,
                },
            )
        })
        .with_shutdown(shutdown)
    }
}

pub fn probe(name: &str, restart: Restart, log: &Log) -> ChildSpec {
    ProbeSpec::new(name, restart, log).build()
}

/// A worker that binds a UDP socket: first on port 0, then always on the
/// address its first incarnation got.
pub struct UdpHolder;

/// The socket, released only after a slow teardown, so that a replacement
/// started too early would find the address still taken. With `in_task`
/// the socket lives in a receive-loop task of the incarnation instead.
pub struct HeldSocket {
    _socket: Option<UdpSocket>,
    _task: Option<ward_supervision::TaskGuard>,
}

/// Dropped before the socket next to it (declared first), slowly.
pub struct SlowDrop;

impl Drop for SlowDrop {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for HeldSocket {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub struct UdpHolderArgs {
    pub addr: Arc<Mutex<Option<SocketAddr>>>,
    pub bind_failures: Arc<AtomicU32>,
    /// Hand the socket to a receive loop spawned in this scope.
    pub in_task: Option<ward_supervision::TaskScope>,
}

impl Actor for UdpHolder {
    type Msg = ();
    type State = HeldSocket;
    type Arguments = UdpHolderArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        args: UdpHolderArgs,
    ) -> Result<HeldSocket, ActorProcessingErr> {
        let want = args
            .addr
            .lock()
            .unwrap()
            .unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let socket = UdpSocket::bind(want).inspect_err(|_| {
            args.bind_failures.fetch_add(1, Ordering::SeqCst);
        })?;
        *args.addr.lock().unwrap() = Some(socket.local_addr()?);
        let Some(scope) = args.in_task else {
            return Ok(HeldSocket {
                _socket: Some(socket),
                _task: None,
            });
        };
        socket.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let slow = SlowDrop;
        let task = scope.spawn(async move {
            let _slow = slow;
            let mut buf = [0u8; 64];
            while socket.recv_from(&mut buf).await.is_ok() {}
        });
        Ok(HeldSocket {
            _socket: None,
            _task: Some(task),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<()>,
        _message: (),
        _state: &mut HeldSocket,
    ) -> Result<(), ActorProcessingErr> {
        Err(test_failure("told to fail").into())
    }
}

pub fn udp_holder(
    name: &str,
    addr: &Arc<Mutex<Option<SocketAddr>>>,
    failures: &Arc<AtomicU32>,
    in_task: bool,
) -> ChildSpec {
    let addr = addr.clone();
    let failures = failures.clone();
    ChildSpec::worker(name, "udp-holder", Restart::Permanent, move |ctx| {
        (
            UdpHolder,
            UdpHolderArgs {
                addr: addr.clone(),
                bind_failures: failures.clone(),
                in_task: in_task.then(|| ctx.tasks.clone()),
            },
        )
    })
}

/// A supervisor config for tests.
pub fn config(
    strategy: Strategy,
    backoff: BackoffPolicy,
    intensity: Intensity,
) -> SupervisorConfig {
    SupervisorConfig {
        strategy,
        intensity,
        backoff,
        ..SupervisorConfig::new(strategy)
    }
}

pub fn fast_backoff() -> BackoffPolicy {
    BackoffPolicy {
        min: Duration::from_millis(10),
        max: Duration::from_millis(10),
        reset_after: Duration::from_secs(60),
        jitter: 0.0,
    }
}

pub fn lenient() -> Intensity {
    Intensity {
        max_restarts: 1000,
        within: Duration::from_secs(1),
    }
}

/// A running root supervisor.
pub struct Root {
    pub actor: ActorRef<SupervisorMsg>,
    pub view: SupervisorView,
}

impl Root {
    pub async fn start(config: SupervisorConfig, children: Vec<ChildSpec>) -> Root {
        let view = SupervisorView::new();
        let (actor, _join) = Supervisor::spawn_root(config, children, view.clone())
            .await
            .expect("root starts");
        Root { actor, view }
    }

    pub fn tree(&self) -> TreeNode {
        self.view.snapshot("", "supervisor")
    }

    pub fn node(&self, path: &str) -> Option<TreeNode> {
        self.tree().find(path).cloned()
    }

    pub fn cell(&self, path: &str) -> Option<ActorCell> {
        self.view.find(path).map(|f| f.cell)
    }

    pub fn id(&self, path: &str) -> Option<String> {
        self.cell(path).map(|c| c.get_id().to_string())
    }

    /// Ends the child at `path` in the given way.
    pub fn exit(&self, path: &str, how: Exit) {
        let cell = self.cell(path).expect("child is running");
        match how {
            Exit::Normal => cell.send_message(ProbeMsg::ExitNormal).unwrap(),
            Exit::Error => cell.send_message(ProbeMsg::Fail).unwrap(),
            Exit::Panicked => cell.send_message(ProbeMsg::Panic).unwrap(),
            Exit::Killed => cell.kill(),
        }
    }

    /// Waits until the child at `path` runs with an id other than `old`.
    pub async fn wait_restarted(&self, path: &str, old: &str) -> TreeNode {
        eventually(&format!("{path} restarted"), || {
            self.node(path)
                .is_some_and(|n| n.status == "running" && n.id.as_deref() != Some(old))
        })
        .await;
        self.node(path).unwrap()
    }

    pub async fn wait_running(&self, path: &str) -> TreeNode {
        eventually(&format!("{path} running"), || {
            self.node(path).is_some_and(|n| n.status == "running")
        })
        .await;
        self.node(path).unwrap()
    }
}

/// Polls `check` until it holds, failing the test after a deadline.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Lets every timer due within `span` of virtual time fire (paused clock).
pub async fn let_time_pass(span: Duration) {
    tokio::time::sleep(span).await;
}

/// A worker that spawns two probe children of its own and lists them.
pub struct Parent;

pub struct ParentArgs {
    pub children: Arc<ward_supervision::ChildList>,
    pub log: Log,
}

impl Actor for Parent {
    type Msg = ();
    type State = Arc<ward_supervision::ChildList>;
    type Arguments = ParentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        args: ParentArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        for name in ["conn-1", "conn-2"] {
            let probe_args = ProbeArgs {
                name: name.to_string(),
                log: args.log.clone(),
                fail_starts: Arc::new(AtomicU32::new(0)),
                panic_on_start: false,
                hang_on_stop: false,
            };
            let (child, join) =
                Actor::spawn_linked(None, Probe, probe_args, myself.get_cell()).await?;
            args.children
                .add(name, "probe-conn", child.get_cell(), join);
        }
        Ok(args.children)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: ractor::SupervisionEvent,
        children: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((id, _)) = ward_supervision::ExitReason::from_event(event) {
            children.remove(&id);
        }
        Ok(())
    }
}

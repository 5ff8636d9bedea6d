//! The supervision behaviour, case by case after Erlang/OTP's supervisor
//! test suite: restart types × exit kinds, strategies, intensity and
//! escalation, backoff, failed spawns, resource hand-over, dynamic children
//! and shutdown order. Timers run on tokio's paused clock.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use support::*;
use ward_supervision::{
    BackoffPolicy, ChildSpec, ExitReason, Intensity, Restart, Strategy, SupervisionObserver,
    Supervisor, SupervisorConfig, SupervisorError, SupervisorMsg,
};

async fn exit_and_expect(restart: Restart, how: Exit, expect_restart: bool) {
    let log = Log::default();
    let root = Root::start(
        config(Strategy::OneForOne, fast_backoff(), lenient()),
        vec![probe("c", restart, &log)],
    )
    .await;
    let old = root.wait_running("c").await.id.unwrap();
    root.exit("c", how);
    if expect_restart {
        let node = root.wait_restarted("c", &old).await;
        assert_eq!(node.restarts, 1, "{restart:?} {how:?}");
        let (expected_exit, expected_class) = match how {
            Exit::Normal => ("normal", "normal"),
            Exit::Killed => ("killed", "killed"),
            // The error's own value and class reach the supervisor.
            Exit::Error => ("failed: boom (test)", "test"),
            // ractor hands a panic over as its message.
            Exit::Panicked => ("failed: boom (panic)", "panic"),
        };
        assert_eq!(
            node.last_exit.as_deref(),
            Some(expected_exit),
            "{restart:?} {how:?}"
        );
        assert_eq!(
            node.last_exit_class.as_deref(),
            Some(expected_class),
            "{restart:?} {how:?}"
        );
        assert_eq!(log.started(), vec!["c", "c"]);
    } else {
        eventually("child ended", || {
            root.node("c")
                .is_none_or(|n| n.status == "stopped" && n.id.is_none())
        })
        .await;
        // Any restart would be scheduled within the backoff; let far more pass.
        let_time_pass(Duration::from_secs(3600)).await;
        assert_eq!(
            log.started(),
            vec!["c"],
            "{restart:?} {how:?} must not restart"
        );
        match restart {
            Restart::Temporary => assert!(root.node("c").is_none(), "temporary is forgotten"),
            _ => assert_eq!(root.node("c").unwrap().status, "stopped"),
        }
    }
    root.actor.stop(None);
}

#[tokio::test(start_paused = true)]
async fn permanent_restarts_after_every_kind_of_exit() {
    for how in ALL_EXITS {
        exit_and_expect(Restart::Permanent, how, true).await;
    }
}

#[tokio::test(start_paused = true)]
async fn transient_restarts_only_after_abnormal_exit() {
    for how in ALL_EXITS {
        exit_and_expect(Restart::Transient, how, how != Exit::Normal).await;
    }
}

#[tokio::test(start_paused = true)]
async fn temporary_is_never_restarted() {
    for how in ALL_EXITS {
        exit_and_expect(Restart::Temporary, how, false).await;
    }
}

fn ids(root: &Root, names: &[&str]) -> Vec<String> {
    names.iter().map(|n| root.id(n).unwrap()).collect()
}

/// Every `Started(x)` after the failure comes after `Dropped(x)`.
fn assert_dropped_before_started(log: &Log, names: &[&str]) {
    let events = log.events();
    for name in names {
        let dropped = events
            .iter()
            .position(|e| *e == Ev::Dropped(name.to_string()));
        let started = events
            .iter()
            .position(|e| *e == Ev::Started(name.to_string()));
        assert!(
            dropped.is_some() && started.is_some() && dropped < started,
            "{name}: old state must be dropped before the new start: {events:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_every_sibling_in_start_order() {
    let log = Log::default();
    let root = Root::start(
        config(Strategy::OneForAll, fast_backoff(), lenient()),
        vec![
            probe("a", Restart::Permanent, &log),
            probe("b", Restart::Permanent, &log),
            probe("c", Restart::Permanent, &log),
        ],
    )
    .await;
    root.wait_running("c").await;
    let before = ids(&root, &["a", "b", "c"]);
    log.clear();

    root.exit("b", Exit::Error);
    eventually("all three restarted", || log.started().len() == 3).await;
    for name in ["a", "b", "c"] {
        root.wait_running(name).await;
    }

    assert_eq!(
        log.stopped(),
        vec!["c", "a"],
        "siblings stop in reverse start order"
    );
    assert_eq!(
        log.started(),
        vec!["a", "b", "c"],
        "all start again in start order"
    );
    assert_dropped_before_started(&log, &["a", "b", "c"]);
    let after = ids(&root, &["a", "b", "c"]);
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old, new);
    }
    let restarts: Vec<u32> = ["a", "b", "c"]
        .iter()
        .map(|n| root.node(n).unwrap().restarts)
        .collect();
    assert_eq!(restarts, vec![1, 1, 1]);
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_the_failed_child_and_those_started_after_it() {
    let log = Log::default();
    let root = Root::start(
        config(Strategy::RestForOne, fast_backoff(), lenient()),
        vec![
            probe("a", Restart::Permanent, &log),
            probe("b", Restart::Permanent, &log),
            probe("c", Restart::Permanent, &log),
            probe("d", Restart::Permanent, &log),
        ],
    )
    .await;
    root.wait_running("d").await;
    let a_before = root.id("a").unwrap();
    log.clear();

    root.exit("b", Exit::Killed);
    eventually("b, c, d restarted", || log.started().len() == 3).await;
    root.wait_running("d").await;

    assert_eq!(
        log.stopped(),
        vec!["d", "c"],
        "later siblings stop, last first"
    );
    assert_eq!(log.started(), vec!["b", "c", "d"]);
    assert_dropped_before_started(&log, &["b", "c", "d"]);
    assert_eq!(root.id("a").unwrap(), a_before, "a is untouched");
    assert_eq!(root.node("a").unwrap().restarts, 0);
}

#[tokio::test(start_paused = true)]
async fn one_for_all_stops_temporary_siblings_without_restarting_them() {
    let log = Log::default();
    let root = Root::start(
        config(Strategy::OneForAll, fast_backoff(), lenient()),
        vec![
            probe("a", Restart::Permanent, &log),
            probe("t", Restart::Temporary, &log),
        ],
    )
    .await;
    root.wait_running("t").await;
    log.clear();
    root.exit("a", Exit::Error);
    eventually("a restarted", || log.started() == vec!["a"]).await;
    let_time_pass(Duration::from_secs(60)).await;
    assert_eq!(log.stopped(), vec!["t"]);
    assert_eq!(log.started(), vec!["a"]);
    assert!(root.node("t").is_none());
}

#[derive(Default)]
struct Recorder {
    escalations: Mutex<Vec<String>>,
    restarts: AtomicU32,
}

impl SupervisionObserver for Recorder {
    fn child_restarting(&self, _path: &str, _kind: &str, _delay: Duration) {
        self.restarts.fetch_add(1, Ordering::SeqCst);
    }
    fn escalated(&self, path: &str) {
        self.escalations.lock().unwrap().push(path.to_string());
    }
}

#[tokio::test(start_paused = true)]
async fn exceeding_intensity_stops_children_and_escalates_to_the_parent() {
    let log = Log::default();
    let recorder = Arc::new(Recorder::default());
    let mut sub_config = config(
        Strategy::OneForOne,
        fast_backoff(),
        Intensity {
            max_restarts: 2,
            within: Duration::from_secs(60),
        },
    );
    sub_config.observer = recorder.clone();
    let sub = Supervisor::spec(
        "sub",
        Restart::Permanent,
        sub_config,
        vec![
            probe("x", Restart::Permanent, &log),
            probe("y", Restart::Permanent, &log),
            probe("z", Restart::Permanent, &log),
        ],
    );
    let root = Root::start(
        config(Strategy::OneForOne, fast_backoff(), lenient()),
        vec![sub],
    )
    .await;
    root.wait_running("sub/z").await;
    let sub_before = root.id("sub").unwrap();

    for round in 0..2 {
        let old = root.id("sub/y").unwrap();
        root.exit("sub/y", Exit::Error);
        let node = root.wait_restarted("sub/y", &old).await;
        assert_eq!(node.restarts, round + 1);
    }
    log.clear();
    root.exit("sub/y", Exit::Error);

    let sub_after = root.wait_restarted("sub", &sub_before).await;
    assert_eq!(sub_after.restarts, 1);
    assert!(
        sub_after
            .last_exit
            .as_deref()
            .is_some_and(|e| e.contains("restart intensity exceeded")),
        "{sub_after:?}"
    );
    assert_eq!(
        *recorder.escalations.lock().unwrap(),
        vec!["sub".to_string()]
    );
    eventually("children back", || log.started().len() == 3).await;
    assert_eq!(
        log.stopped(),
        vec!["z", "x"],
        "remaining children stop in reverse order"
    );
    assert_eq!(log.started(), vec!["x", "y", "z"]);
    for name in ["sub/x", "sub/y", "sub/z"] {
        let node = root.wait_running(name).await;
        assert_eq!(
            node.restarts, 0,
            "a new supervisor incarnation starts fresh"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn restart_delays_grow_exponentially_cap_and_reset_after_a_stable_run() {
    let log = Log::default();
    let backoff = BackoffPolicy {
        min: Duration::from_secs(1),
        max: Duration::from_secs(8),
        reset_after: Duration::from_secs(30),
        jitter: 0.0,
    };
    let root = Root::start(
        config(Strategy::OneForOne, backoff, lenient()),
        vec![probe("c", Restart::Permanent, &log)],
    )
    .await;
    root.wait_running("c").await;

    let mut gaps = Vec::new();
    for _ in 0..6 {
        let old = root.id("c").unwrap();
        let failed_at = tokio::time::Instant::now();
        root.exit("c", Exit::Error);
        root.wait_restarted("c", &old).await;
        let started_at = log.timed().last().unwrap().0;
        gaps.push((started_at - failed_at).as_millis());
    }
    assert_eq!(gaps, vec![1000, 2000, 4000, 8000, 8000, 8000]);

    let_time_pass(Duration::from_secs(31)).await;
    let old = root.id("c").unwrap();
    let failed_at = tokio::time::Instant::now();
    root.exit("c", Exit::Error);
    root.wait_restarted("c", &old).await;
    assert_eq!(
        (log.timed().last().unwrap().0 - failed_at).as_millis(),
        1000
    );
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_answers_tree_requests_while_a_child_waits_in_backoff() {
    let log = Log::default();
    let backoff = BackoffPolicy {
        min: Duration::from_secs(600),
        ..BackoffPolicy::default()
    };
    let root = Root::start(
        config(Strategy::OneForOne, backoff, lenient()),
        vec![
            probe("waiting", Restart::Permanent, &log),
            probe("fine", Restart::Permanent, &log),
        ],
    )
    .await;
    root.wait_running("waiting").await;
    root.exit("waiting", Exit::Error);
    eventually("backoff", || {
        root.node("waiting").unwrap().status == "backoff"
    })
    .await;

    let reply = root
        .actor
        .call(SupervisorMsg::Tree, Some(Duration::from_secs(1)))
        .await
        .expect("supervisor alive");
    let CallResult::Success(tree) = reply else {
        panic!("no tree while a child is in backoff: {reply:?}");
    };
    let statuses: Vec<(&str, &str)> = tree
        .children
        .iter()
        .map(|c| (c.path.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(statuses, vec![("waiting", "backoff"), ("fine", "running")]);
}

async fn failing_spawn_is_retried_and_siblings_survive(panic_on_start: bool) {
    let log = Log::default();
    let mut flaky = ProbeSpec::new("b", Restart::Permanent, &log);
    flaky.fail_starts = Arc::new(AtomicU32::new(3));
    flaky.panic_on_start = panic_on_start;
    let root = Root::start(
        config(
            Strategy::OneForOne,
            fast_backoff(),
            Intensity {
                max_restarts: 1,
                within: Duration::from_secs(60),
            },
        ),
        vec![
            probe("a", Restart::Permanent, &log),
            flaky.build(),
            probe("c", Restart::Permanent, &log),
        ],
    )
    .await;
    root.wait_running("c").await;
    let siblings = ids(&root, &["a", "c"]);

    let b = root.wait_running("b").await;
    assert!(
        b.last_exit
            .as_deref()
            .is_some_and(|e| e.starts_with("spawn failed")),
        "{b:?}"
    );
    assert_eq!(ids(&root, &["a", "c"]), siblings, "siblings keep running");
    assert_eq!(log.started(), vec!["a", "c", "b"]);
    assert_eq!(root.node("").unwrap().status, "running", "no escalation");
}

#[tokio::test(start_paused = true)]
async fn a_failing_spawn_is_retried_with_backoff_and_siblings_survive() {
    failing_spawn_is_retried_and_siblings_survive(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_spawn_is_retried_with_backoff_and_siblings_survive() {
    failing_spawn_is_retried_and_siblings_survive(true).await;
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_holds_later_children_until_a_failing_spawn_succeeds() {
    let log = Log::default();
    let mut flaky = ProbeSpec::new("b", Restart::Permanent, &log);
    flaky.fail_starts = Arc::new(AtomicU32::new(2));
    let root = Root::start(
        config(Strategy::RestForOne, fast_backoff(), lenient()),
        vec![
            probe("a", Restart::Permanent, &log),
            flaky.build(),
            probe("c", Restart::Permanent, &log),
        ],
    )
    .await;
    root.wait_running("c").await;
    assert_eq!(log.started(), vec!["a", "b", "c"]);
}

// Several worker threads, so an old incarnation can still be tearing down
// on one thread while the supervisor handles its exit on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_child_holding_a_udp_socket_is_replaced_on_the_same_address() {
    let addr = Arc::new(Mutex::new(None));
    let bind_failures = Arc::new(AtomicU32::new(0));
    let root = Root::start(
        config(Strategy::OneForOne, BackoffPolicy::IMMEDIATE, lenient()),
        vec![udp_holder("socket", &addr, &bind_failures, false)],
    )
    .await;
    root.wait_running("socket").await;
    let first = addr.lock().unwrap().expect("bound");

    for round in 0..40u32 {
        let old = root.id("socket").unwrap();
        let cell = root.cell("socket").unwrap();
        if round % 2 == 0 {
            cell.kill();
        } else {
            // A handler error: ractor drops this state after notifying us.
            cell.send_message(()).unwrap();
        }
        let node = root.wait_restarted("socket", &old).await;
        assert_eq!(node.restarts, round + 1);
    }
    assert_eq!(
        bind_failures.load(Ordering::SeqCst),
        0,
        "every rebind succeeded"
    );
    assert_eq!(addr.lock().unwrap().unwrap(), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_child_whose_receive_loop_holds_the_socket_is_replaced_on_the_same_address() {
    let addr = Arc::new(Mutex::new(None));
    let bind_failures = Arc::new(AtomicU32::new(0));
    let root = Root::start(
        config(Strategy::OneForOne, BackoffPolicy::IMMEDIATE, lenient()),
        vec![udp_holder("socket", &addr, &bind_failures, true)],
    )
    .await;
    root.wait_running("socket").await;
    for round in 0..40u32 {
        let old = root.id("socket").unwrap();
        root.cell("socket").unwrap().kill();
        let node = root.wait_restarted("socket", &old).await;
        assert_eq!(node.restarts, round + 1);
    }
    assert_eq!(
        bind_failures.load(Ordering::SeqCst),
        0,
        "every rebind succeeded"
    );
}

// Several worker threads, so an old incarnation can still be tearing down
// on one thread while the supervisor handles its exit on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_subtree_releases_its_sockets_before_it_is_started_again() {
    let addr = Arc::new(Mutex::new(None));
    let bind_failures = Arc::new(AtomicU32::new(0));
    let sub = Supervisor::spec(
        "sub",
        Restart::Permanent,
        config(Strategy::OneForOne, BackoffPolicy::IMMEDIATE, lenient()),
        vec![udp_holder("socket", &addr, &bind_failures, false)],
    );
    let root = Root::start(
        config(Strategy::OneForOne, BackoffPolicy::IMMEDIATE, lenient()),
        vec![sub],
    )
    .await;
    root.wait_running("sub/socket").await;
    for _ in 0..20 {
        let old = root.id("sub/socket").unwrap();
        root.cell("sub").unwrap().kill();
        root.wait_restarted("sub/socket", &old).await;
    }
    assert_eq!(
        bind_failures.load(Ordering::SeqCst),
        0,
        "every rebind succeeded"
    );
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_dynamic_children_come_and_go_without_residue() {
    const N: usize = 10_000;
    let log = Log::default();
    let root = Root::start(
        config(Strategy::OneForOne, fast_backoff(), lenient()),
        vec![],
    )
    .await;
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();

    for i in 0..N {
        let spec = probe(&format!("flow-{i}"), Restart::Temporary, &log);
        let reply = root
            .actor
            .call(|r| SupervisorMsg::AddChild(spec, r), None)
            .await;
        let CallResult::Success(Ok(_)) = reply.unwrap() else {
            panic!("add {i} failed");
        };
    }
    assert_eq!(root.view.child_count(), N);
    assert_eq!(root.actor.get_children().len(), N);
    let duplicate = probe("flow-0", Restart::Temporary, &log);
    let reply = root
        .actor
        .call(|r| SupervisorMsg::AddChild(duplicate, r), None)
        .await;
    assert!(matches!(
        reply.unwrap(),
        CallResult::Success(Err(SupervisorError::NameTaken(_)))
    ));

    // Half are removed by the supervisor, half end by themselves.
    for i in 0..N {
        let name = format!("flow-{i}");
        if i % 2 == 0 {
            let reply = root
                .actor
                .call(|r| SupervisorMsg::RemoveChild(name, r), None)
                .await;
            assert!(matches!(reply.unwrap(), CallResult::Success(Ok(()))));
        } else {
            root.exit(&name, Exit::Normal);
        }
    }
    eventually("all gone", || root.view.child_count() == 0).await;
    eventually("ractor links gone", || root.actor.get_children().is_empty()).await;
    eventually("states dropped", || log.dropped().len() == N).await;
    eventually("tasks gone", || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            <= tasks_before
    })
    .await;
    assert!(root.tree().children.is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_children_in_reverse_order_and_kills_those_that_hang() {
    let log = Log::default();
    let mut hanging = ProbeSpec::new("b", Restart::Permanent, &log);
    hanging.hang_on_stop = true;
    hanging.shutdown = Duration::from_millis(500);
    let inner = Supervisor::spec(
        "inner",
        Restart::Permanent,
        config(Strategy::OneForOne, fast_backoff(), lenient()),
        vec![
            probe("i1", Restart::Permanent, &log),
            probe("i2", Restart::Permanent, &log),
        ],
    );
    let root = Root::start(
        config(Strategy::OneForOne, fast_backoff(), lenient()),
        vec![
            probe("a", Restart::Permanent, &log),
            hanging.build(),
            inner,
            probe("c", Restart::Permanent, &log),
        ],
    )
    .await;
    root.wait_running("c").await;
    log.clear();

    root.actor
        .stop_and_wait(None, Some(Duration::from_secs(30)))
        .await
        .expect("root stops");
    assert_eq!(log.stopped(), vec!["c", "i2", "i1", "b", "a"]);
    // A cleanly stopped child's state travels in its exit event, which a
    // stopping supervisor drops when it ends; by then every state is gone.
    let mut dropped = log.dropped();
    dropped.sort();
    assert_eq!(dropped, vec!["a", "b", "c", "i1", "i2"]);
}

#[tokio::test(start_paused = true)]
async fn paths_name_nested_nodes_and_find_resolves_them() {
    let log = Log::default();
    let upstreams = Supervisor::spec(
        "upstreams",
        Restart::Permanent,
        SupervisorConfig::new(Strategy::OneForOne),
        vec![probe("cf", Restart::Permanent, &log)],
    );
    let dns = Supervisor::spec(
        "dns",
        Restart::Permanent,
        SupervisorConfig::new(Strategy::RestForOne),
        vec![upstreams],
    );
    let root = Root::start(SupervisorConfig::new(Strategy::OneForOne), vec![dns]).await;
    root.wait_running("dns/upstreams/cf").await;

    let tree = root.tree();
    let paths: Vec<&str> = tree.walk().iter().map(|n| n.path.as_str()).collect();
    assert_eq!(paths, vec!["", "dns", "dns/upstreams", "dns/upstreams/cf"]);
    let kinds: Vec<&str> = tree.walk().iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["supervisor", "supervisor", "supervisor", "probe"]
    );
    let found = root.view.find("dns/upstreams/cf").unwrap();
    assert_eq!(found.kind, "probe");
    assert_eq!(
        Some(found.cell.get_id().to_string()),
        tree.find("dns/upstreams/cf").unwrap().id
    );
    assert!(root.view.find("dns/nope").is_none());
    assert!(root.view.find("dns/upstreams/cf/deeper").is_none());
}

#[test]
fn exit_reason_display_is_stable() {
    assert_eq!(ExitReason::Killed.to_string(), "killed");
    assert_eq!(
        ExitReason::Failed(support::test_failure("x")).to_string(),
        "failed: x (test)"
    );
    let _unused: Option<ChildSpec> = None;
}

#[tokio::test(start_paused = true)]
async fn a_workers_own_child_actors_show_in_the_tree_and_are_found_by_path() {
    let log = Log::default();
    let child_log = log.clone();
    let parent = ChildSpec::worker_with_children(
        "up",
        "parent",
        Restart::Permanent,
        move |_ctx, children| {
            (
                Parent,
                ParentArgs {
                    children,
                    log: child_log.clone(),
                },
            )
        },
    );
    let root = Root::start(
        config(Strategy::OneForOne, fast_backoff(), lenient()),
        vec![parent],
    )
    .await;
    root.wait_running("up/conn-2").await;
    let tree = root.tree();
    let paths: Vec<&str> = tree.walk().iter().map(|n| n.path.as_str()).collect();
    assert_eq!(paths, vec!["", "up", "up/conn-1", "up/conn-2"]);
    assert_eq!(root.view.find("up/conn-1").unwrap().kind, "probe-conn");

    // A killed child is forgotten by its parent; the parent stays.
    let parent_id = root.id("up").unwrap();
    root.cell("up/conn-1").unwrap().kill();
    eventually("conn-1 gone", || root.node("up/conn-1").is_none()).await;
    assert_eq!(root.id("up").unwrap(), parent_id);

    // A killed parent takes its children along and comes back with new ones.
    log.clear();
    root.cell("up").unwrap().kill();
    let up = root.wait_restarted("up", &parent_id).await;
    assert_eq!(up.restarts, 1);
    root.wait_running("up/conn-1").await;
    assert_dropped_before_started(&log, &["conn-2"]);
}

#[tokio::test(start_paused = true)]
async fn a_child_with_its_own_backoff_uses_it() {
    let log = Log::default();
    let slow = BackoffPolicy {
        min: Duration::from_secs(10),
        max: Duration::from_secs(10),
        reset_after: Duration::from_secs(60),
        jitter: 0.0,
    };
    let quick = BackoffPolicy {
        min: Duration::from_millis(20),
        ..slow
    };
    let fast_child = ProbeSpec::new("fast", Restart::Permanent, &log)
        .build()
        .with_backoff(quick);
    let root = Root::start(
        config(Strategy::OneForOne, slow, lenient()),
        vec![fast_child, probe("slow", Restart::Permanent, &log)],
    )
    .await;
    root.wait_running("slow").await;
    for (name, expected_ms) in [("fast", 20), ("slow", 10_000)] {
        let old = root.id(name).unwrap();
        let failed_at = tokio::time::Instant::now();
        root.exit(name, Exit::Error);
        root.wait_restarted(name, &old).await;
        let started_at = log.timed().last().unwrap().0;
        assert_eq!((started_at - failed_at).as_millis(), expected_ms, "{name}");
    }
}

// Several worker threads, so the old incarnation's teardown can overlap the
// new add on another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_childs_name_is_free_only_once_its_sockets_are_released() {
    let addr = Arc::new(Mutex::new(None));
    let bind_failures = Arc::new(AtomicU32::new(0));
    let root = Root::start(
        config(Strategy::OneForOne, fast_backoff(), lenient()),
        vec![],
    )
    .await;
    for round in 0..20 {
        let spec = udp_holder("flow", &addr, &bind_failures, true);
        let reply = root
            .actor
            .call(|r| SupervisorMsg::AddChild(spec, r), None)
            .await
            .unwrap();
        assert!(matches!(reply, CallResult::Success(Ok(_))), "add {round}");
        let reply = root
            .actor
            .call(|r| SupervisorMsg::RemoveChild("flow".to_string(), r), None)
            .await
            .unwrap();
        assert!(
            matches!(reply, CallResult::Success(Ok(()))),
            "remove {round}"
        );
    }
    assert_eq!(
        bind_failures.load(Ordering::SeqCst),
        0,
        "every re-add bound the same address"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sibling_crashing_while_its_group_restarts_is_counted_once() {
    let log = Log::default();
    let mut slow = ProbeSpec::new("c", Restart::Permanent, &log);
    slow.hang_on_stop = true;
    slow.shutdown = Duration::from_secs(1);
    let group = Supervisor::spec(
        "group",
        Restart::Permanent,
        config(
            Strategy::OneForAll,
            fast_backoff(),
            Intensity {
                max_restarts: 1,
                within: Duration::from_secs(60),
            },
        ),
        vec![
            probe("a", Restart::Permanent, &log),
            probe("b", Restart::Permanent, &log),
            slow.build(),
        ],
    );
    let root = Root::start(
        config(Strategy::OneForOne, fast_backoff(), lenient()),
        vec![group],
    )
    .await;
    root.wait_running("group/c").await;
    let group_id = root.id("group").unwrap();

    root.exit("group/a", Exit::Error);
    // c hangs on its way down; b is queued behind it and crashes meanwhile.
    eventually("c stopping", || {
        root.node("group/c").is_some_and(|n| n.status == "stopping")
    })
    .await;
    root.exit("group/b", Exit::Error);
    for name in ["group/a", "group/b", "group/c"] {
        root.wait_running(name).await;
    }
    assert_eq!(
        root.id("group").unwrap(),
        group_id,
        "one group restart: no escalation"
    );
    assert_eq!(root.node("group/b").unwrap().restarts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_child_waiting_in_backoff_shows_no_dead_subtree() {
    let log = Log::default();
    let sub = Supervisor::spec(
        "sub",
        Restart::Permanent,
        config(Strategy::OneForOne, fast_backoff(), lenient()),
        vec![probe("inner", Restart::Permanent, &log)],
    )
    .with_backoff(BackoffPolicy {
        min: Duration::from_secs(600),
        ..BackoffPolicy::default()
    });
    let root = Root::start(
        config(Strategy::OneForOne, fast_backoff(), lenient()),
        vec![sub],
    )
    .await;
    root.wait_running("sub/inner").await;
    root.cell("sub").unwrap().kill();
    eventually("sub in backoff", || {
        root.node("sub").is_some_and(|n| n.status == "backoff")
    })
    .await;
    assert!(root.node("sub").unwrap().children.is_empty());
    assert!(
        root.view.find("sub/inner").is_none(),
        "no dead cell to kill by path"
    );
}

/// A task child ends the way its task does: `Ok` is a normal stop (a
/// transient child stays down), a typed failure or a panic is a failure
/// with its class (and the child comes back), and its task is gone before
/// the next incarnation starts.
#[tokio::test(start_paused = true)]
async fn a_task_child_exits_as_its_task_ends() {
    use tokio::sync::mpsc;
    let (tell, told) = mpsc::unbounded_channel::<&'static str>();
    let told = Arc::new(tokio::sync::Mutex::new(told));
    let starts = Arc::new(AtomicU32::new(0));
    let spec = {
        let (told, starts) = (told.clone(), starts.clone());
        ChildSpec::task("t", "test-task", Restart::Transient, move |_| {
            let (told, starts) = (told.clone(), starts.clone());
            async move {
                starts.fetch_add(1, Ordering::SeqCst);
                Ok(async move {
                    match told.lock().await.recv().await {
                        Some("fail") => Err(test_failure("told to fail")),
                        Some("panic") => panic!("told to panic"),
                        _ => Ok(()),
                    }
                })
            }
        })
    };
    let root = Root::start(
        config(Strategy::OneForOne, fast_backoff(), lenient()),
        vec![spec],
    )
    .await;
    let first = root.wait_running("t").await.id.unwrap();
    tell.send("fail").unwrap();
    let node = root.wait_restarted("t", &first).await;
    assert_eq!(node.last_exit_class.as_deref(), Some("test"));
    assert_eq!(
        node.last_exit.as_deref(),
        Some("failed: told to fail (test)")
    );
    let second = node.id.unwrap();
    tell.send("panic").unwrap();
    let node = root.wait_restarted("t", &second).await;
    assert_eq!(node.last_exit_class.as_deref(), Some("panic"));
    tell.send("done").unwrap();
    eventually("the task child stopped normally", || {
        root.node("t").is_some_and(|n| {
            n.status == "stopped" && n.last_exit_class.as_deref() == Some("normal")
        })
    })
    .await;
    let_time_pass(Duration::from_secs(60)).await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        3,
        "a normal end is not restarted"
    );
    root.actor.stop(None);
}

/// A child whose start function waits for `gate` before it starts the
/// probe `inner`.
fn gated(inner: ChildSpec, gate: Arc<tokio::sync::Notify>) -> ChildSpec {
    let start = inner.start.clone();
    let gated: ward_supervision::spec::StartFn = Arc::new(move |ctx| {
        let (start, gate) = (start.clone(), gate.clone());
        Box::pin(async move {
            gate.notified().await;
            start(ctx).await
        })
    });
    ChildSpec::new(inner.name, inner.kind, inner.restart, gated)
}

/// A slow start runs beside the supervisor's mailbox: meanwhile it adds
/// and restarts other children and answers requests.
#[tokio::test(start_paused = true)]
async fn a_child_that_starts_slowly_does_not_stall_its_supervisor() {
    let log = Log::default();
    let gate = Arc::new(tokio::sync::Notify::new());
    let root = Root::start(
        config(Strategy::OneForOne, fast_backoff(), lenient()),
        vec![],
    )
    .await;
    let slow = gated(probe("slow", Restart::Permanent, &log), gate.clone());
    let adding = {
        let actor = root.actor.clone();
        tokio::spawn(async move { actor.call(|r| SupervisorMsg::AddChild(slow, r), None).await })
    };
    eventually("the slow child is starting", || {
        root.node("slow").is_some_and(|n| n.status == "starting")
    })
    .await;
    let fast = probe("fast", Restart::Permanent, &log);
    let added = root
        .actor
        .call(
            |r| SupervisorMsg::AddChild(fast, r),
            Some(Duration::from_secs(1)),
        )
        .await;
    assert!(matches!(added.unwrap(), CallResult::Success(Ok(_))));
    let old = root.wait_running("fast").await.id.unwrap();
    root.exit("fast", Exit::Error);
    root.wait_restarted("fast", &old).await;
    let tree = root
        .actor
        .call(SupervisorMsg::Tree, Some(Duration::from_secs(1)))
        .await;
    assert!(matches!(tree.unwrap(), CallResult::Success(_)));
    assert_eq!(root.node("slow").unwrap().status, "starting");
    gate.notify_one();
    let added = adding.await.unwrap();
    assert!(matches!(added.unwrap(), CallResult::Success(Ok(_))));
    root.wait_running("slow").await;
    root.actor.stop(None);
}

/// Fails in `post_start` while `deaths` lasts, then runs.
struct DiesAtOnce;

impl Actor for DiesAtOnce {
    type Msg = ();
    type State = ();
    type Arguments = Arc<AtomicU32>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        deaths: Arc<AtomicU32>,
    ) -> Result<(), ActorProcessingErr> {
        if deaths
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            // Fails once started, before its supervisor took the answer.
            _myself.send_message(()).unwrap();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<()>,
        _message: (),
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Err(test_failure("died at once").into())
    }
}

/// A start function that returns only once the child it started has
/// ended: its exit reaches the supervisor before the answer of its start.
fn dies_before_its_start_is_answered(
    name: &str,
    restart: Restart,
    deaths: Arc<AtomicU32>,
) -> ChildSpec {
    let start: ward_supervision::spec::StartFn = Arc::new(move |ctx| {
        let deaths = deaths.clone();
        Box::pin(async move {
            let dies = deaths.load(Ordering::SeqCst) > 0;
            let (actor, join) =
                Actor::spawn_linked(None, DiesAtOnce, deaths, ctx.supervisor).await?;
            if dies {
                while actor.get_status() != ractor::ActorStatus::Stopped {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Ok(ward_supervision::StartedChild {
                cell: actor.get_cell(),
                join,
                view: None,
            })
        })
    });
    ChildSpec::new(name, "dies-at-once", restart, start)
}

/// An exit that comes before the answer of its child's start is still
/// that child's: a permanent child is restarted (its failure shown), a
/// temporary one is forgotten.
#[tokio::test(start_paused = true)]
async fn a_child_that_dies_before_its_start_is_answered_is_handled() {
    let root = Root::start(
        config(Strategy::OneForOne, fast_backoff(), lenient()),
        vec![],
    )
    .await;
    let deaths = Arc::new(AtomicU32::new(1));
    let spec = dies_before_its_start_is_answered("p", Restart::Permanent, deaths.clone());
    let added = root
        .actor
        .call(|r| SupervisorMsg::AddChild(spec, r), None)
        .await;
    assert!(matches!(added.unwrap(), CallResult::Success(Ok(_))));
    eventually("restarted after dying at once", || {
        root.node("p")
            .is_some_and(|n| n.status == "running" && n.restarts == 1)
    })
    .await;
    assert_eq!(
        root.node("p").unwrap().last_exit.as_deref(),
        Some("failed: died at once (test)")
    );
    let deaths = Arc::new(AtomicU32::new(1));
    let spec = dies_before_its_start_is_answered("t", Restart::Temporary, deaths);
    let added = root
        .actor
        .call(|r| SupervisorMsg::AddChild(spec, r), None)
        .await;
    assert!(matches!(added.unwrap(), CallResult::Success(Ok(_))));
    eventually("the temporary child is forgotten", || {
        root.node("t").is_none()
    })
    .await;
    root.actor.stop(None);
}

/// A sibling still starting when its group restarts is not left behind:
/// once up it is stopped, and the group starts again in order.
#[tokio::test(start_paused = true)]
async fn a_sibling_starting_when_its_group_restarts_restarts_with_it() {
    let log = Log::default();
    let gate = Arc::new(tokio::sync::Notify::new());
    let starts = Arc::new(AtomicU32::new(0));
    let b = {
        let inner = probe("b", Restart::Permanent, &log);
        let start = inner.start.clone();
        let (gate, starts) = (gate.clone(), starts.clone());
        // b's second start waits for the gate.
        let slow: ward_supervision::spec::StartFn = Arc::new(move |ctx| {
            let (start, gate, starts) = (start.clone(), gate.clone(), starts.clone());
            Box::pin(async move {
                if starts.fetch_add(1, Ordering::SeqCst) == 1 {
                    gate.notified().await;
                }
                start(ctx).await
            })
        });
        ChildSpec::new("b", "probe", Restart::Permanent, slow)
    };
    let root = Root::start(
        config(Strategy::RestForOne, fast_backoff(), lenient()),
        vec![probe("a", Restart::Permanent, &log), b],
    )
    .await;
    let a1 = root.wait_running("a").await.id.unwrap();
    root.wait_running("b").await;
    root.exit("a", Exit::Error);
    root.wait_restarted("a", &a1).await;
    eventually("b's second start waits", || {
        root.node("b").is_some_and(|n| n.status == "starting")
    })
    .await;
    // The group restarts while b is still starting.
    root.exit("a", Exit::Error);
    let_time_pass(Duration::from_secs(1)).await;
    assert_eq!(log.started(), vec!["a", "b", "a"], "a waits for b");
    gate.notify_one();
    eventually("the group started again in order", || {
        log.started().len() == 6
    })
    .await;
    assert_eq!(log.started(), vec!["a", "b", "a", "b", "a", "b"]);
    let (a, b) = (root.wait_running("a").await, root.wait_running("b").await);
    assert_eq!((a.restarts, b.restarts), (2, 2));
    root.actor.stop(None);
}

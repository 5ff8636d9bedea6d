//! The observer hears every start: the static children at the tree's own
//! start, nested ones with their paths, a restart again, and a start that
//! failed only once it succeeds. Timers run on tokio's paused clock.

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use support::*;
use ward_supervision::{Restart, Strategy, SupervisionObserver, Supervisor};

/// The paths of every `child_started`, in order.
#[derive(Default)]
struct Starts(Mutex<Vec<String>>);

impl SupervisionObserver for Starts {
    fn child_started(&self, path: &str, kind: &str) {
        self.0.lock().unwrap().push(format!("{path} ({kind})"));
    }
}

impl Starts {
    fn seen(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test(start_paused = true)]
async fn the_observer_hears_each_child_start_and_restart_but_not_a_failed_start() {
    let log = Log::default();
    let starts = Arc::new(Starts::default());
    let mut config = config(Strategy::OneForOne, fast_backoff(), lenient());
    config.observer = starts.clone();
    let flaky = ProbeSpec::new("flaky", Restart::Permanent, &log);
    flaky.fail_starts.store(1, Ordering::SeqCst);
    let sub = Supervisor::spec(
        "sub",
        Restart::Permanent,
        config.clone(),
        vec![probe("b", Restart::Permanent, &log)],
    );
    let root = Root::start(
        config,
        vec![probe("a", Restart::Permanent, &log), sub, flaky.build()],
    )
    .await;
    assert_eq!(
        starts.seen(),
        vec!["a (probe)", "sub/b (probe)", "sub (supervisor)"],
        "children are heard once started; the flaky one failed its first start"
    );
    root.wait_running("flaky").await;
    assert_eq!(starts.seen().last().unwrap(), "flaky (probe)");
    let old = root.id("sub/b").unwrap();
    root.exit("sub/b", Exit::Error);
    root.wait_restarted("sub/b", &old).await;
    assert_eq!(starts.seen().len(), 5);
    assert_eq!(starts.seen().last().unwrap(), "sub/b (probe)");
}

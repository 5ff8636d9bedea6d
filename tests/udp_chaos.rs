//! Chaos under steady UDP flows: endpoints (and their supervisor), the
//! inbound and the dialers are
//! killed at random, about 2.5 times a second for 20 seconds, while eight
//! clients echo datagrams through a forward inbound and a group of two
//! SOCKS5 nodes. A kill costs at most what was in flight through what it
//! killed, and relaying resumes at once: each client has one datagram out
//! at a time and sends the next when it is answered or after 500 ms, and
//! the inbound and `udp/endpoints` come back within 300 ms, so killing
//! either (every flow goes through both) loses at most one datagram per
//! client, an endpoint at most its client's one, a dialer none (it owns no
//! flow's socket). Afterwards the tree has its full shape again, the
//! endpoints idle out to none, and the process holds as many file
//! descriptors as before (within 4).
//! Supervision intensity is raised: this many kills a minute would
//! otherwise, rightly, escalate.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::socks::{Dante, NoContent};
use support::udp::{Client, Peer};
use support::{eventually, kill_at_random, walk, Ward};

const RUN: Duration = Duration::from_secs(20);
const KILL_EVERY: Duration = Duration::from_millis(400);
const CLIENTS: usize = 8;

/// Paths of the tree without the endpoints (they come and go).
fn shape(tree: &Value) -> BTreeSet<String> {
    walk(tree)
        .iter()
        .map(|n| n["path"].as_str().unwrap().to_string())
        .filter(|p| !p.starts_with("udp/endpoints/"))
        .collect()
}

#[test]
fn killing_relay_actors_under_load_loses_almost_nothing() {
    if !support::require(&["danted"], false) {
        return;
    }
    let echo = Peer::echo();
    let nodes = [Dante::start(), Dante::start()];
    let probe = NoContent::start();
    let ward = Ward::start(&format!(
        "supervision: (max_restarts: 1000, within_s: 30),\n\
         dialers: {{ \"n1\": Socks5((server: \"{}\")), \"n2\": Socks5((server: \"{}\")) }},\n\
         groups: {{ \"nodes\": (dialers: [\"n1\", \"n2\"], policy: RoundRobin) }},\n\
         health: (interval_s: 5, timeout_ms: 1000, tcp_url: Some(\"http://{}/generate_204\")),\n\
         udp: (inbounds: [ Forward((listen: \"127.0.0.1:0\", to: \"{}\")) ], default: \"nodes\", idle: (other_s: 2)),",
        nodes[0].addr(),
        nodes[1].addr(),
        probe.addr,
        echo.addr,
    ));
    // A restarted inbound binds the port ward chose at start again.
    let inbound = ward.bound("UDP inbound listening", "127.0.0.1:0");
    let full_shape = shape(&ward.tree());
    let fds_before = ward.open_fds();

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, lost) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, sent, lost) = (stop.clone(), sent.clone(), lost.clone());
            std::thread::spawn(move || {
                let client = Client::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !client.echo(inbound, i) {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    // The pace of a steady flow.
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();

    let kills = kill_at_random(&ward, RUN, KILL_EVERY, |n| {
        matches!(
            n["kind"].as_str(),
            Some("udp-endpoint" | "udp-inbound" | "dialer")
        ) || n["path"] == "udp/endpoints"
    });
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }

    let (sent, lost) = (sent.load(Ordering::Relaxed), lost.load(Ordering::Relaxed));
    let kind = |prefix: &str| kills.iter().filter(|k| k.starts_with(prefix)).count();
    let supervisor = kills.iter().filter(|k| *k == "udp/endpoints").count();
    eprintln!(
        "udp chaos: {} kills ({} endpoints, {} of their supervisor, {} inbound, {} dialers), {sent} datagrams, {lost} lost",
        kills.len(),
        kind("udp/endpoints/"),
        supervisor,
        kind("udp/inbounds/"),
        kind("dialers/"),
    );
    assert!(
        kills.len() as f64 >= 2.0 * RUN.as_secs_f64(),
        "only {} kills",
        kills.len()
    );
    assert!(kind("udp/endpoints/") > 0 && kind("udp/inbounds/") + kind("dialers/") > 0);
    assert!(sent > 5000, "the flows were steady: {sent}");
    let bound = CLIENTS * (kind("udp/inbounds/") + supervisor) + kind("udp/endpoints/");
    assert!(
        lost <= bound,
        "{lost} of {sent} datagrams lost, more than the {bound} in flight through what was killed\n{}",
        ward.log()
    );

    eventually(
        "the tree back in full shape",
        Duration::from_secs(30),
        || {
            let tree = ward.try_request(r#"{"cmd":"tree"}"#).ok()?["tree"].clone();
            let running = walk(&tree).iter().all(|n| n["status"] == "running");
            (running && shape(&tree) == full_shape).then_some(())
        },
    );
    eventually("every endpoint idled out", Duration::from_secs(10), || {
        let tree = ward.try_request(r#"{"cmd":"tree"}"#).ok()?["tree"].clone();
        let endpoints = walk(&tree)
            .iter()
            .filter(|n| n["kind"] == "udp-endpoint")
            .count();
        (endpoints == 0).then_some(())
    });
    let stats = ward.request(r#"{"cmd":"stats"}"#);
    assert_eq!(stats["stats"]["udp"]["endpoints"], 0, "{stats}");
    let fds_after = ward.open_fds();
    assert!(
        fds_after.abs_diff(fds_before) <= 4,
        "open fds {fds_before} before, {fds_after} after"
    );
    assert!(Client::new().echo(inbound, 0), "still relaying");
}

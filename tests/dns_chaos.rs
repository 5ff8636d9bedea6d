//! Chaos under load: with queries streaming in, actors under `dns/` are
//! killed at random, about 2.8 times a second for 20 seconds. At least 99.5% of
//! queries must be answered (a client may retry once after 1 s), and
//! afterwards the tree has its full shape and the restarts are counted.
//! The supervision intensity is raised for this run: tens of kills a
//! minute would otherwise, rightly, escalate to the root.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::Value;
use support::dns::*;
use support::{eventually, kill_at_random, seed, walk, Rng, Ward};

const RUN: Duration = Duration::from_secs(20);
const KILL_EVERY: Duration = Duration::from_millis(350);
const CLIENTS: usize = 4;

fn answered(dns: SocketAddr, name: &str) -> bool {
    let q = query(name, RecordType::A);
    udp_exchange(dns, &q, Duration::from_secs(1))
        .and_then(|a| Message::from_vec(&a).ok())
        .is_some_and(|m| m.metadata.response_code == ResponseCode::NoError && m.answers.len() == 1)
}

/// Paths of the tree, without upstream connections (they come and go).
fn shape(tree: &Value) -> BTreeSet<String> {
    walk(tree)
        .iter()
        .map(|n| n["path"].as_str().unwrap().to_string())
        .filter(|p| !p.contains("/conn-"))
        .collect()
}

#[test]
fn killing_dns_actors_under_load_loses_almost_nothing() {
    if !support::require(&["knotd"], false) {
        return;
    }
    let knot = Knot::start("");
    let upstream = knot.addr();
    let ward = Ward::start_with(|dir| {
        format!(
            "(\n    admin: (socket: \"{}/admin.sock\"),\n    metrics: (listen: \"127.0.0.1:0\"),\n\
             supervision: (max_restarts: 1000, within_s: 30),\n    dns: (\n        listen: [\"{LISTEN}\"],\n\
             upstreams: {{ \"udp\": (url: \"udp://{upstream}\"), \"tcp\": (url: \"tcp://{upstream}\") }},\n\
             default: [\"udp\", \"tcp\"],\n\
             routes: [ (qname_suffix: [\"tcp.load.test\"], to: [\"tcp\", \"udp\"]) ],\n    ),\n)\n",
            dir.display()
        )
    });
    // Restarted listeners bind the port ward chose at start again.
    let dns = ward.dns_bound(LISTEN);
    let full_shape = shape(&ward.tree());

    let stop = Arc::new(AtomicBool::new(false));
    let (asked, lost) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (stop, asked, lost) = (stop.clone(), asked.clone(), lost.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(seed() + c as u64);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    // Hits, UDP misses and TCP misses, mixed.
                    let name = match rng.next() % 3 {
                        0 => "www.test.".to_string(),
                        1 => format!("c{c}-{i}.load.test."),
                        _ => format!("c{c}-{i}.tcp.load.test."),
                    };
                    asked.fetch_add(1, Ordering::Relaxed);
                    // Like a stub resolver: one retry, a second after the first try.
                    let first_try = Instant::now();
                    if !answered(dns, &name) {
                        // The stub's retry schedule, not a wait for anything.
                        std::thread::sleep(
                            (first_try + Duration::from_secs(1))
                                .saturating_duration_since(Instant::now()),
                        );
                        if !answered(dns, &name) {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // The pace of the load.
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();

    let killed = kill_at_random(&ward, RUN, KILL_EVERY, |n| {
        n["path"].as_str().is_some_and(|p| p.starts_with("dns/"))
    });
    let kills = killed.len();
    let supervised_kills = killed.iter().filter(|p| !p.contains("/conn-")).count();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }

    let (asked, lost) = (asked.load(Ordering::Relaxed), lost.load(Ordering::Relaxed));
    eprintln!("chaos: {kills} kills ({supervised_kills} of supervised actors), {asked} queries, {lost} lost");
    assert!(
        kills as f64 >= 2.0 * RUN.as_secs_f64(),
        "only {kills} kills"
    );
    assert!(asked > 1000, "the load was steady: {asked}");
    assert!(
        (lost as f64) <= 0.005 * asked as f64,
        "{lost} of {asked} queries lost"
    );

    let tree = eventually(
        "the tree back in full shape",
        Duration::from_secs(30),
        || {
            let tree = ward.try_request(r#"{"cmd":"tree"}"#).ok()?["tree"].clone();
            let running = walk(&tree).iter().all(|n| n["status"] == "running");
            (running && shape(&tree) == full_shape).then_some(tree)
        },
    );
    assert!(shape(&tree).contains(&format!("dns/listeners/udp:{LISTEN}")));
    let stats = ward.request(r#"{"cmd":"stats"}"#);
    let restarts = stats["stats"]["restarts_total"].as_u64().unwrap() as usize;
    // A kill of a supervisor takes its children along unrestarted, and a
    // kill can land on a child whose parent dies next; so restarts may be
    // fewer than kills, but every one of them is counted.
    assert!(
        restarts * 2 >= supervised_kills && restarts > 0,
        "{restarts} restarts for {supervised_kills} kills"
    );
    let metrics = ward.http_get("/metrics");
    let counted: usize = metrics
        .lines()
        .filter(|l| l.starts_with("ward_restarts_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(counted, restarts, "metrics and stats agree");
    assert!(answered(dns, "www.test."));
}

//! A DNS listener's socket outlives the actor that reads it: dnsperf sends
//! 3,000 queries a second (cache misses, answered by knot) while the UDP
//! listener is killed five times, and not one query is lost. A socket
//! destroyed from outside (`ss -K`) is rebuilt on the same port and
//! answers again within a second.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use support::dns::*;
use support::{eventually, Ward};

const QPS: u32 = 3_000;
const RUN_S: u32 = 8;
const KILLS: usize = 5;

/// dnsperf's summary figures.
struct Perf {
    sent: u64,
    completed: u64,
    lost: u64,
}

fn figure(out: &str, label: &str) -> u64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in dnsperf's output:\n{out}"))
}

/// Runs dnsperf against `dns` in the background: misses, a name each.
fn dnsperf(dns: SocketAddr, dir: &std::path::Path) -> std::process::Child {
    let names: String = (0..QPS * RUN_S)
        .map(|i| format!("q{i}.load.test A\n"))
        .collect();
    let file = dir.join("queries");
    std::fs::write(&file, names).unwrap();
    Command::new("dnsperf")
        .args(["-s", &dns.ip().to_string(), "-p", &dns.port().to_string()])
        .args(["-d", file.to_str().unwrap(), "-n", "1"])
        .args(["-l", &RUN_S.to_string(), "-Q", &QPS.to_string(), "-t", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dnsperf runs")
}

fn summary(child: std::process::Child) -> Perf {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "dnsperf failed:\n{text}");
    Perf {
        sent: figure(&text, "Queries sent:"),
        completed: figure(&text, "Queries completed:"),
        lost: figure(&text, "Queries lost:"),
    }
}

fn ward_before(knot: &Knot) -> (Ward, SocketAddr) {
    ward_with(&format!(
        "upstreams: {{ \"knot\": (url: \"udp://{}\") }}, default: [\"knot\"],",
        knot.addr()
    ))
}

#[test]
fn killing_the_udp_listener_five_times_under_load_loses_no_query() {
    if !support::require(&["knotd", "dnsperf"], false) {
        return;
    }
    let knot = Knot::start("");
    let (ward, dns) = ward_before(&knot);
    let path = format!("dns/listeners/udp:{LISTEN}");
    let dir = tempfile::tempdir().unwrap();
    let perf = dnsperf(dns, dir.path());
    let every = Duration::from_secs(RUN_S as u64) / (KILLS as u32 + 1);
    let started = Instant::now();
    for kill in 1..=KILLS {
        // Paced: the kills are spread over the run (this is not a wait
        // for a condition).
        std::thread::sleep(
            (started + every * kill as u32).saturating_duration_since(Instant::now()),
        );
        let before = ward.node(&path).unwrap();
        let out = ward.ctl(&["kill", &path]);
        assert!(out.status.success(), "{out:?}");
        eventually("the listener back", Duration::from_secs(5), || {
            ward.node(&path)
                .filter(|n| n["status"] == "running" && n["id"] != before["id"])
        });
    }
    let perf = summary(perf);
    eprintln!(
        "dnsperf: {} sent, {} completed, {} lost across {KILLS} kills",
        perf.sent, perf.completed, perf.lost
    );
    let node = ward.node(&path).unwrap();
    assert_eq!(node["restarts"], KILLS as u64, "{node}");
    assert_eq!(node["last_exit_class"], "killed", "{node}");
    assert!(
        perf.sent >= (QPS * RUN_S) as u64 * 9 / 10,
        "sent {}",
        perf.sent
    );
    assert_eq!(
        (perf.lost, perf.completed),
        (0, perf.sent),
        "{} of {} queries lost across {KILLS} kills",
        perf.lost,
        perf.sent
    );
}

#[test]
fn a_udp_listener_socket_destroyed_from_outside_answers_again_within_a_second() {
    if !support::require(&["knotd", "ss"], false) {
        return;
    }
    let knot = Knot::start("");
    let (ward, dns) = ward_before(&knot);
    let path = format!("dns/listeners/udp:{LISTEN}");
    let q = query("www.test.", RecordType::A);
    assert!(udp_exchange(dns, &q, Duration::from_secs(2)).is_some());
    let before = ward.node(&path).unwrap();
    let destroyed = Instant::now();
    let killed = Command::new("ss")
        .args(["-K", "-u", "-a", "src", &dns.to_string()])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    let answered = eventually("answered again", Duration::from_secs(5), || {
        udp_exchange(dns, &q, Duration::from_millis(50)).map(|_| Instant::now())
    });
    let took = answered - destroyed;
    assert!(
        took < Duration::from_secs(1),
        "answered again after {took:?}"
    );
    let node = ward.node(&path).unwrap();
    assert_ne!(node["id"], before["id"]);
    assert_eq!(node["last_exit_class"], "socket_dead", "{node}");
}

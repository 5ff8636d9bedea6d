//! ward's web page in a real browser: Debian's headless Chromium, driven
//! by tests/browser/ui.py (python3-selenium and chromium-driver), loads
//! `/ui/` from ward's API address and nothing else, takes the secret,
//! shows the tree, sees an actor's restart count go up after its kill
//! button and, pushed over the tree's WebSocket, after a kill from outside
//! the page, and picks the other member of a group, which `ward ctl dialers`
//! then reports. Any SEVERE entry in the browser console fails it.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::Value;
use support::dns::{query, udp_exchange, Recorder};
use support::socks::Dante;
use support::udp::{Client, Peer};
use support::Ward;

/// Debian's Python: python3-selenium is installed for it, not for
/// another python3 that may come first on PATH.
const PYTHON: &str = "/usr/bin/python3";
const SECRET: &str = "page-secret";

fn selenium_installed() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import selenium"])
        .status()
        .is_ok_and(|s| s.success())
}

/// The group `nodes` as `ward ctl dialers --json` reports it.
fn group(ward: &Ward, name: &str) -> Value {
    let out = ward.ctl(&["dialers", "--json"]);
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    reply["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no group {name} in {reply}"))
}

/// DNS queries and a UDP flow while the page watches, so its charts and
/// flow table have something to show.
fn traffic(dns: SocketAddr, inbound: SocketAddr, stop: Arc<AtomicBool>) {
    let client = Client::new();
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed) {
        // A few names again and again: misses first, then cache hits.
        let name = format!("host{}.example.", i % 4);
        let _ = udp_exchange(dns, &query(&name, RecordType::A), Duration::from_secs(1));
        if i % 5 == 0 {
            client.echo(inbound, i);
        }
        i += 1;
        // The pace of the traffic, not a wait for anything.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_page_shows_the_tree_kills_an_actor_and_picks_a_member() {
    if !support::require(&["danted", "chromium", "chromedriver"], false)
        || !support::skip::require_that("python3-selenium", selenium_installed())
    {
        return;
    }
    let (n1, n2) = (Dante::start(), Dante::start());
    let upstream = Recorder::start();
    let echo = Peer::echo();
    let ward = Ward::start(&format!(
        "api: (listen: \"127.0.0.1:0\", secret: \"{SECRET}\"),\n\
         dialers: {{ \"n1\": Socks5((server: \"{}\")), \"n2\": Socks5((server: \"{}\")) }},\n\
         groups: {{ \"nodes\": (dialers: [\"n1\", \"n2\"], policy: Fixed(0)) }},\n\
         udp: (inbounds: [ Forward((listen: \"127.0.0.2:0\", to: \"{}\")) ], default: \"nodes\"),\n\
         dns: (listen: [\"127.0.0.1:0\"], upstreams: {{ \"recorder\": (url: \"udp://{}\") }}, default: [\"recorder\"]),",
        n1.addr(),
        n2.addr(),
        echo.addr,
        upstream.addr(),
    ));
    let api = ward.bound("API served", "127.0.0.1:0");
    let inbound = ward.bound("UDP inbound listening", "127.0.0.2:0");
    let dns = ward.dns_bound("127.0.0.1:0");
    assert_ne!(group(&ward, "nodes")["udp"], "n2", "n2 is not picked yet");

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || traffic(dns, inbound, stop))
    };
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui.png");
    let _ = std::fs::remove_file(&screenshot);
    let out = Command::new(PYTHON)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/ui.py"))
        .args(["--base", &format!("http://{api}"), "--secret", SECRET])
        .args(["--expect", "dialers/n1", "--expect", "dialers/n2"])
        .args(["--expect", "dns/listeners/", "--expect", "udp/inbounds/"])
        .args(["--kill", "dialers/n1", "--group", "nodes", "--member", "n2"])
        .arg("--screenshot")
        .arg(&screenshot)
        .output()
        .expect("python3 runs");
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser script failed:\n{said}");
    println!("{said}screenshot: {}", screenshot.display());

    assert_eq!(
        group(&ward, "nodes")["udp"],
        "n2",
        "the pick made on the page"
    );
    assert!(
        ward.node("dialers/n1").unwrap()["restarts"].as_u64() >= Some(1),
        "the kill on the page restarted dialers/n1"
    );
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
}

//! Hot reload (`ward ctl reload`, SIGHUP) against real peers: knot as the
//! upstream, danted as the nodes, a UDP echo behind a forward inbound. An
//! unchanged file changes nothing; a changed one adds, replaces and removes
//! exactly what changed and keeps the rest running (same actor ids); an
//! invalid one is refused with its line and column while the old
//! configuration serves on; dnsperf loses no query across ten reloads; a
//! flow whose path stays keeps its endpoint.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::dns::{kdig, Knot};
use support::skip::require;
use support::socks::{Dante, NoContent};
use support::udp::{Client, Peer};
use support::{dialer, eventually, walk, Ward};

/// Every actor's id by path.
fn ids(ward: &Ward) -> std::collections::BTreeMap<String, String> {
    walk(&ward.tree())
        .into_iter()
        .map(|n| {
            let path = n["path"].as_str().unwrap_or_default().to_string();
            (path, n["id"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

fn id(ward: &Ward, path: &str) -> Option<String> {
    ward.node(path)
        .and_then(|n| n["id"].as_str().map(String::from))
}

/// `ward ctl reload --json`: the report, or the failed command's stderr.
fn reload(ward: &Ward) -> Result<Value, String> {
    let out = ward.ctl(&["reload", "--json"]);
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("a JSON report"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn listed(report: &Value, key: &str) -> Vec<String> {
    report[key]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// What a test's config is made of.
struct Parts<'a> {
    listen: &'a [&'a str],
    upstreams: &'a str,
    dialers: &'a str,
    inbounds: &'a str,
}

fn config(dir: &std::path::Path, probe: SocketAddr, knot: SocketAddr, p: &Parts) -> String {
    let listen: Vec<String> = p.listen.iter().map(|l| format!("\"{l}\"")).collect();
    format!(
        "(\n    admin: (socket: \"{dir}/admin.sock\"),\n    metrics: (listen: \"127.0.0.1:0\"),\n    log: (level: \"debug\"),\n    \
         dialers: {{ {dialers} }},\n    \
         health: (interval_s: 30, timeout_ms: 1000, tcp_url: Some(\"http://{probe}/generate_204\"), udp_dns: Some(\"{knot}\")),\n    \
         dns: (listen: [{listen}], upstreams: {{ {upstreams} }}, default: [\"a\"]),\n    \
         udp: (inbounds: [ {inbounds} ], default: \"direct\"),\n)\n",
        dir = dir.display(),
        listen = listen.join(", "),
        dialers = p.dialers,
        upstreams = p.upstreams,
        inbounds = p.inbounds,
    )
}

#[test]
fn an_unchanged_file_changes_nothing() {
    if !require(&["knotd", "kdig", "danted"], false) {
        return;
    }
    let knot = Knot::start("");
    let node = Dante::start();
    let probe = NoContent::start();
    let echo = Peer::echo();
    let parts = Parts {
        listen: &["127.0.0.1:0"],
        upstreams: &format!("\"a\": (url: \"udp://{}\", via: \"n1\")", knot.addr()),
        dialers: &format!("\"n1\": Socks5((server: \"{}\"))", node.addr()),
        inbounds: &format!("Forward((listen: \"127.0.0.2:0\", to: \"{}\"))", echo.addr),
    };
    let text = |dir: &std::path::Path| config(dir, probe.addr, knot.addr(), &parts);
    let ward = Ward::start_with(text);
    let dns = ward.dns_bound("127.0.0.1:0");
    // Something in the cache and in the dialer's history.
    assert!(kdig(dns, "www.test", "A", &[]).is_some());
    assert!(ward.ctl(&["probe", "n1"]).status.success());
    eventually("a probe's latency", Duration::from_secs(5), || {
        let reply = ward.request(r#"{"cmd":"dialers"}"#);
        dialer(&reply, "n1")["tcp"]["last_ms"].as_f64()
    });
    let before = (ids(&ward), ward.request(r#"{"cmd":"dialers"}"#));
    let cached = ward.request(r#"{"cmd":"stats"}"#)["stats"]["dns"]["cache_entries"].clone();

    let report = reload(&ward).expect("the same file reloads");
    assert_eq!(report["generation"], 2, "{report}");
    for key in ["added", "replaced", "removed", "needs_restart"] {
        assert!(listed(&report, key).is_empty(), "{key}: {report}");
    }
    assert!(listed(&report, "kept").contains(&"dialers/n1".to_string()));
    let after = (ids(&ward), ward.request(r#"{"cmd":"dialers"}"#));
    assert_eq!(before.0, after.0, "every actor keeps its id");
    assert_eq!(
        before.1["dialers"], after.1["dialers"],
        "the dialers' history stays"
    );
    let stats = ward.request(r#"{"cmd":"stats"}"#);
    assert_eq!(stats["stats"]["dns"]["cache_entries"], cached, "{stats}");
    assert!(cached.as_u64().unwrap_or(0) >= 1, "{stats}");
    let root = ward.node("").expect("the root");
    assert_eq!(root["detail"], "config generation 2", "{root}");
}

#[test]
fn a_changed_file_adds_replaces_and_removes_only_what_changed() {
    if !require(&["knotd", "kdig", "danted"], false) {
        return;
    }
    let knot = Knot::start("");
    let nodes = [Dante::start(), Dante::start(), Dante::start()];
    let probe = NoContent::start();
    let echo = Peer::echo();
    let dialers = |second: SocketAddr| {
        format!(
            "\"n1\": Socks5((server: \"{}\")), \"n2\": Socks5((server: \"{second}\"))",
            nodes[0].addr()
        )
    };
    let inbound = |ip: &str| format!("Forward((listen: \"{ip}:0\", to: \"{}\"))", echo.addr);
    let a = format!("\"a\": (url: \"udp://{}\")", knot.addr());
    let before = Parts {
        listen: &["127.0.0.1:0"],
        upstreams: &a,
        dialers: &dialers(nodes[1].addr()),
        inbounds: &format!("{}, {}", inbound("127.0.0.2"), inbound("127.0.0.3")),
    };
    // Flows go through n2, which the new file changes.
    // (but for the client at 127.0.0.9, which goes direct).
    let through_n2 = |text: String| {
        text.replace(
            "default: \"direct\"",
            "default: \"n2\", routes: [ (src: [\"127.0.0.9/32\"], to: \"direct\") ]",
        )
    };
    let ward = Ward::start_with(|dir| through_n2(config(dir, probe.addr, knot.addr(), &before)));
    let old_dns = ward.dns_bound("127.0.0.1:0");
    let kept_inbound = ward.bound("UDP inbound listening", "127.0.0.2:0");
    // A flow through the inbound the new file removes.
    let doomed = ward.bound("UDP inbound listening", "127.0.0.3:0");
    let client = Client(std::net::UdpSocket::bind("127.0.0.9:0").unwrap());
    client
        .0
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(client.echo(doomed, 0));
    let source = client.0.local_addr().unwrap().to_string();
    let flows_of = |ward: &Ward| {
        walk(&ward.tree())
            .iter()
            .filter(|n| n["kind"] == "udp-endpoint")
            .filter(|n| n["path"].as_str().is_some_and(|p| p.contains(&source)))
            .map(|n| n["detail"].clone())
            .collect::<Vec<_>>()
    };
    // Direct: only the inbound's removal can end it.
    assert_eq!(flows_of(&ward), ["via direct"]);
    let was = ids(&ward);

    let two = format!("{a}, \"b\": (url: \"tcp://{}\")", knot.addr());
    let after = Parts {
        listen: &["127.0.0.4:0"],
        upstreams: &two,
        dialers: &dialers(nodes[2].addr()),
        inbounds: &inbound("127.0.0.2"),
    };
    // A flow through n2 from the inbound that stays.
    let moving = Client::new();
    assert!(moving.echo(kept_inbound, 0));
    let mover = moving.0.local_addr().unwrap().to_string();
    let flow_of = |ward: &Ward| {
        walk(&ward.tree())
            .into_iter()
            .find(|n| n["path"].as_str().is_some_and(|p| p.contains(&mover)))
            .map(|n| (n["id"].clone(), n["detail"].clone()))
    };
    let first = flow_of(&ward).expect("the flow's endpoint");
    assert_eq!(first.1, "via n2");
    let text = config(ward.dir.path(), probe.addr, knot.addr(), &after);
    std::fs::write(&ward.config, through_n2(text)).unwrap();
    let report = reload(&ward).expect("the new file reloads");
    let (added, replaced, removed) = (
        listed(&report, "added"),
        listed(&report, "replaced"),
        listed(&report, "removed"),
    );
    assert!(added.contains(&"dns/upstreams/b".to_string()), "{report}");
    assert!(
        added.contains(&"dns/listeners/udp:127.0.0.4:0".to_string()),
        "{report}"
    );
    assert_eq!(replaced, ["dialers/n2"], "{report}");
    assert!(
        removed.contains(&"udp/inbounds/forward:127.0.0.3:0".to_string()),
        "{report}"
    );
    assert!(
        removed.contains(&"dns/listeners/udp:127.0.0.1:0".to_string()),
        "{report}"
    );

    // What stayed runs on, untouched.
    for path in [
        "dialers/n1",
        "dialers/direct",
        "dns/upstreams/a",
        "udp/inbounds/forward:127.0.0.2:0",
    ] {
        assert_eq!(
            id(&ward, path),
            was.get(path).cloned(),
            "{path} kept its actor"
        );
    }
    // What changed is new; what went is gone.
    assert_ne!(id(&ward, "dialers/n2"), was.get("dialers/n2").cloned());
    assert!(ward.node("dns/upstreams/b").is_some());
    assert!(ward.node("udp/inbounds/forward:127.0.0.3:0").is_none());
    eventually(
        "the removed inbound's flow ended",
        Duration::from_secs(2),
        || flows_of(&ward).is_empty().then_some(()),
    );
    assert!(ward.node("dns/listeners/udp:127.0.0.1:0").is_none());
    // The new listener answers; the old address does not any more.
    let new_dns = ward.bound("DNS listening on UDP", "127.0.0.4:0");
    assert!(kdig(new_dns, "www.test", "A", &[]).is_some());
    assert!(kdig(old_dns, "www.test", "A", &["+timeout=1", "+retry=0"]).is_none());
    // The kept inbound relays as before; the flow through the old n2
    // ended, and its next datagram went through the new one.
    assert!(Client::new().echo(kept_inbound, 1));
    assert!(
        moving.echo(kept_inbound, 1),
        "the flow goes on through the new n2"
    );
    let second = flow_of(&ward).expect("the flow's new endpoint");
    assert_ne!(first.0, second.0, "a new endpoint");
    assert_eq!(second.1, "via n2");
    // The changed dialer is the new node's.
    let reply = ward.request(r#"{"cmd":"dialers"}"#);
    assert_eq!(dialer(&reply, "n2")["kind"], "socks5");
}

#[test]
fn an_invalid_file_is_refused_with_where_and_everything_serves_on() {
    if !require(&["knotd", "kdig"], false) {
        return;
    }
    let knot = Knot::start("");
    let probe = NoContent::start();
    let parts = Parts {
        listen: &["127.0.0.1:0"],
        upstreams: &format!("\"a\": (url: \"udp://{}\")", knot.addr()),
        dialers: "",
        inbounds: "",
    };
    let ward = Ward::start_with(|dir| config(dir, probe.addr, knot.addr(), &parts));
    let dns = ward.dns_bound("127.0.0.1:0");
    let was = ids(&ward);
    let good = std::fs::read_to_string(&ward.config).unwrap();
    let bad = good.replace("default: [\"a\"]", "default: [\"nowhere\"]");
    assert_ne!(good, bad);
    std::fs::write(&ward.config, &bad).unwrap();

    let error = reload(&ward).expect_err("an invalid file is refused");
    let line = bad
        .lines()
        .position(|l| l.contains("nowhere"))
        .map(|i| i + 1)
        .unwrap();
    assert!(
        error.contains(&format!(":{line}:")),
        "names the line: {error}"
    );
    assert!(error.contains("nowhere"), "{error}");
    assert_eq!(ids(&ward), was, "nothing changed");
    assert_eq!(ward.node("").unwrap()["detail"], "config generation 1");
    assert!(kdig(dns, "www.test", "A", &[]).is_some(), "still serving");
    // SIGHUP with the same file logs the errors once and changes nothing.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ward.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    eventually("the refusal logged", Duration::from_secs(5), || {
        ward.log()
            .contains("reload on SIGHUP refused")
            .then_some(())
    });
    assert_eq!(ids(&ward), was);
    assert!(kdig(dns, "www.test", "A", &[]).is_some());
}

#[test]
fn dnsperf_loses_no_query_across_ten_reloads() {
    if !require(&["knotd", "dnsperf"], false) {
        return;
    }
    const QPS: u32 = 5_000;
    const RUN_S: u32 = 6;
    let knot = Knot::start("");
    let probe = NoContent::start();
    let a = format!("\"a\": (url: \"udp://{}\")", knot.addr());
    let spare = format!("{a}, \"spare\": (url: \"tcp://{}\")", knot.addr());
    let write = |dir: &std::path::Path, upstreams: &str| {
        let parts = Parts {
            listen: &["127.0.0.1:0"],
            upstreams,
            dialers: "",
            inbounds: "",
        };
        config(dir, probe.addr, knot.addr(), &parts)
    };
    let ward = Ward::start_with(|dir| write(dir, &a));
    let dns = ward.dns_bound("127.0.0.1:0");
    let names: String = (0..QPS * RUN_S)
        .map(|i| format!("q{i}.load.test A\n"))
        .collect();
    let file = ward.dir.path().join("queries");
    std::fs::write(&file, names).unwrap();
    let perf = Command::new("dnsperf")
        .args(["-s", &dns.ip().to_string(), "-p", &dns.port().to_string()])
        .args(["-d", file.to_str().unwrap(), "-n", "1"])
        .args(["-l", &RUN_S.to_string(), "-Q", &QPS.to_string(), "-t", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dnsperf runs");
    // Ten reloads while the load runs, each adding or dropping an upstream
    // (the cache is flushed each time: the misses go to knot).
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(400));
        let text = write(ward.dir.path(), if i % 2 == 0 { &spare } else { &a });
        std::fs::write(&ward.config, text).unwrap();
        let report = reload(&ward).expect("reloads");
        assert_eq!(report["generation"], i + 2);
    }
    let out = perf.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "dnsperf failed:\n{text}");
    let figure = |label: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
    };
    assert!(
        figure("Queries sent:") >= u64::from(QPS * RUN_S) * 9 / 10,
        "{text}"
    );
    assert_eq!(figure("Queries lost:"), 0, "{text}");
}

#[test]
fn a_flow_on_an_unchanged_path_keeps_its_endpoint() {
    if !require(&["knotd"], false) {
        return;
    }
    let knot = Knot::start("");
    let probe = NoContent::start();
    let echo = Peer::echo();
    let inbounds = format!("Forward((listen: \"127.0.0.2:0\", to: \"{}\"))", echo.addr);
    let a = format!("\"a\": (url: \"udp://{}\")", knot.addr());
    let write = |dir: &std::path::Path, upstreams: &str| {
        let parts = Parts {
            listen: &["127.0.0.1:0"],
            upstreams,
            dialers: "",
            inbounds: &inbounds,
        };
        config(dir, probe.addr, knot.addr(), &parts)
    };
    let ward = Ward::start_with(|dir| write(dir, &a));
    let inbound = ward.bound("UDP inbound listening", "127.0.0.2:0");
    let client = Client::new();
    assert!(client.echo(inbound, 0));
    let endpoint = || {
        ward.node("udp/endpoints")
            .and_then(|n| n["children"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|c| (c["path"].clone(), c["id"].clone()))
            .collect::<Vec<_>>()
    };
    let before = endpoint();
    assert_eq!(before.len(), 1, "{before:?}");

    let more = format!("{a}, \"b\": (url: \"tcp://{}\")", knot.addr());
    std::fs::write(&ward.config, write(ward.dir.path(), &more)).unwrap();
    let report = reload(&ward).expect("reloads");
    assert!(listed(&report, "added").contains(&"dns/upstreams/b".to_string()));
    for i in 1..=5 {
        assert!(client.echo(inbound, i), "datagram {i} answered");
    }
    assert_eq!(endpoint(), before, "the flow kept its endpoint");

    // Under load: four steady flows while ten reloads come and go lose
    // no datagram.
    let flows = support::udp::paced(4, inbound, 150, Duration::from_millis(10), |flowing| {
        flowing.wait_answered(4);
        for i in 0..10 {
            let upstreams = if i % 2 == 0 { &a } else { &more };
            std::fs::write(&ward.config, write(ward.dir.path(), upstreams)).unwrap();
            reload(&ward).expect("reloads");
        }
    });
    for flow in flows {
        assert!(flow.lost.is_empty(), "{flow:?}");
    }
}

#[test]
fn what_needs_a_restart_is_named_not_applied_and_named_again() {
    if !require(&["knotd"], false) {
        return;
    }
    let knot = Knot::start("");
    let probe = NoContent::start();
    let echo = Peer::echo();
    let inbounds = format!("Forward((listen: \"127.0.0.2:0\", to: \"{}\"))", echo.addr);
    let parts = Parts {
        listen: &["127.0.0.1:0"],
        upstreams: &format!("\"a\": (url: \"udp://{}\")", knot.addr()),
        dialers: "",
        inbounds: &inbounds,
    };
    let ward = Ward::start_with(|dir| config(dir, probe.addr, knot.addr(), &parts));
    let inbound = ward.bound("UDP inbound listening", "127.0.0.2:0");
    let was = ids(&ward);
    // No udp section, and another log level: neither is applied.
    let text = std::fs::read_to_string(&ward.config).unwrap();
    let start = text.find("    udp: (").unwrap();
    let end = start + text[start..].find("),\n").unwrap() + 3;
    let changed = format!("{}{}", &text[..start], &text[end..]).replace("\"debug\"", "\"info\"");
    assert!(!changed.contains("udp: ("), "{changed}");
    std::fs::write(&ward.config, &changed).unwrap();
    for generation in [2, 3] {
        let report = reload(&ward).expect("reloads");
        assert_eq!(report["generation"], generation);
        assert_eq!(listed(&report, "needs_restart"), ["log", "udp"], "{report}");
        assert!(listed(&report, "removed").is_empty(), "{report}");
    }
    assert_eq!(ids(&ward), was, "nothing stopped");
    assert!(Client::new().echo(inbound, 0), "the relay runs on");
}

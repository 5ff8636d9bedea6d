//! ward under a service manager: a datagram socket of the test's own
//! stands in for systemd's. READY=1 comes only once every listener is
//! bound (and not while one waits for its port), WATCHDOG=1 every half
//! interval (and not for a watchdog meant for another process), STOPPING=1
//! on SIGTERM; nothing changes without `NOTIFY_SOCKET`; `ward run` and
//! `ward ctl` meet in `$RUNTIME_DIRECTORY`. The shipped unit file passes
//! `systemd-analyze verify`, and its user file `systemd-sysusers`.

mod support;

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};
use nix::sys::signal::Signal;
use support::dns::{query, tcp_exchange, udp_exchange, write_framed, LISTEN};
use support::systemd::Manager;
use support::{eventually, Ward, WARD};

/// The static name every config here answers, without an upstream.
const NAME: &str = "router.lan.";
const ADDRESS: &str = "192.168.1.1";

/// A config with a DNS listener on `listen` answering [`NAME`] itself, an
/// upstream that never answers (nothing here goes upstream), a UDP
/// inbound on port 0 and metrics.
fn config(dir: &Path, silent: SocketAddr, listen: &str) -> String {
    format!(
        "(\n    admin: (socket: \"{}/admin.sock\"),\n    metrics: (listen: \"127.0.0.1:0\"),\n    \
         log: (level: \"debug\"),\n    \
         dns: (listen: [\"{listen}\"], upstreams: {{ \"silent\": (url: \"udp://{silent}\") }},\n        \
         records: [ (name: \"router.lan\", type: A, value: \"{ADDRESS}\") ]),\n    \
         udp: (inbounds: [ Forward((listen: \"127.0.0.2:0\", to: \"{silent}\")) ], default: \"direct\"),\n)\n",
        dir.display()
    )
}

/// A loopback UDP socket that never answers: the upstream and the
/// inbound's destination.
fn silent() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// ward with that [`config`] and `env`, not waited for.
fn spawn(silent: &UdpSocket, listen: &str, env: &[(&str, &OsStr)]) -> Ward {
    let silent = silent.local_addr().unwrap();
    let listen = listen.to_string();
    Ward::spawn_with_env(
        move |dir| config(dir, silent, &listen),
        |dir| dir.join("admin.sock"),
        env,
    )
}

/// The A record of a DNS answer.
fn address(answer: &[u8]) -> String {
    let message = Message::from_vec(answer).unwrap();
    match message.answers.first().map(|record| &record.data) {
        Some(RData::A(a)) => a.to_string(),
        other => panic!("no A record: {other:?}"),
    }
}

/// Asks [`NAME`] over UDP and TCP, allowing a second for each: answered
/// at once, not after a retry.
fn answered_over_udp_and_tcp(dns: SocketAddr) {
    let asked = query(NAME, RecordType::A);
    let udp = udp_exchange(dns, &asked, Duration::from_secs(1)).expect("a UDP answer at once");
    assert_eq!(address(&udp), ADDRESS);
    let mut tcp = TcpStream::connect(dns).expect("the TCP listener accepts");
    tcp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    write_framed(&mut tcp, &asked);
    let answer = tcp_exchange(&mut tcp, 1).remove(0);
    assert_eq!(address(&answer.to_vec().unwrap()), ADDRESS);
}

#[test]
fn ready_comes_once_every_listener_is_bound_and_they_answer_at_once() {
    let manager = Manager::new();
    let upstream = silent();
    let ward = spawn(&upstream, LISTEN, &[manager.env()]);
    let first = manager
        .next(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no READY=1\n{}", ward.log()));
    // Read the log the moment READY=1 arrives: every listener had logged
    // that it listens before ward said it was ready.
    let log = ward.log();
    assert_eq!(first, vec!["READY=1"], "the first word is READY=1");
    for line in [
        "DNS listening on UDP",
        "DNS listening on TCP",
        "UDP inbound listening",
    ] {
        assert!(log.contains(line), "READY=1 before {line:?}:\n{log}");
    }
    answered_over_udp_and_tcp(ward.dns_bound(LISTEN));
    let tree = ward
        .try_request(r#"{"cmd":"tree"}"#)
        .expect("the admin socket answers at once");
    assert!(support::walk(&tree["tree"])
        .iter()
        .all(|node| node["status"] == "running"));
    assert_eq!(
        manager.next(Duration::from_secs(5)),
        Some(vec![
            "STATUS=serving: 2 DNS listeners, 1 UDP inbounds".to_string()
        ])
    );
}

#[test]
fn ready_waits_for_a_listener_whose_port_is_taken() {
    let manager = Manager::new();
    let upstream = silent();
    let port = support::free_port();
    let blocker = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let ward = spawn(&upstream, &listen, &[manager.env()]);
    let child = format!("child=dns/listeners/udp:{listen}");
    // Two failed binds: the tree finished its own start in between.
    eventually("two failed binds", Duration::from_secs(20), || {
        let log = ward.log();
        let failed = log
            .lines()
            .filter(|l| l.contains("child failed to start") && l.contains(&child))
            .count();
        (failed >= 2).then_some(())
    });
    assert_eq!(
        manager.arrived(),
        None,
        "nothing said while the UDP listener has no socket"
    );
    drop(blocker);
    let ready = manager.until("READY=1", Duration::from_secs(20));
    assert_eq!(ready, vec![vec!["READY=1".to_string()]]);
    answered_over_udp_and_tcp(listen.parse().unwrap());
}

#[test]
fn watchdog_pings_come_every_half_interval() {
    let manager = Manager::new();
    let upstream = silent();
    // 400 ms: a ping every 200 ms, about ten in two seconds.
    let usec = OsStr::new("400000");
    let ward = spawn(&upstream, LISTEN, &[manager.env(), ("WATCHDOG_USEC", usec)]);
    manager.until("READY=1", Duration::from_secs(20));
    let window = Duration::from_secs(2);
    let deadline = Instant::now() + window;
    let mut pings = 0;
    while let Some(message) = manager.next_by(deadline) {
        if message == ["WATCHDOG=1"] {
            pings += 1;
        }
    }
    assert!(
        (7..=13).contains(&pings),
        "{pings} pings in {window:?}, not about 10\n{}",
        ward.log()
    );
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_fed() {
    let manager = Manager::new();
    let upstream = silent();
    let env = [
        manager.env(),
        ("WATCHDOG_USEC", OsStr::new("200000")),
        ("WATCHDOG_PID", OsStr::new("1")),
    ];
    let mut ward = spawn(&upstream, LISTEN, &env);
    manager.until("READY=1", Duration::from_secs(20));
    assert!(manager.next(Duration::from_secs(5)).is_some(), "STATUS");
    // Five intervals in which a fed watchdog would have heard ten pings.
    assert_eq!(manager.next(Duration::from_secs(1)), None);
    ward.stop(Signal::SIGTERM);
}

#[test]
fn reloading_then_ready_come_around_a_reload_applied_or_refused() {
    let manager = Manager::new();
    let upstream = silent();
    let ward = spawn(&upstream, LISTEN, &[manager.env()]);
    manager.until("READY=1", Duration::from_secs(20));
    manager.next(Duration::from_secs(5)); // the STATUS line
    let out = ward.ctl(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    // Both arrived before `ward ctl reload` returned.
    let reloading = manager.arrived().expect("RELOADING=1 sent");
    assert_eq!(reloading[0], "RELOADING=1", "{reloading:?}");
    assert!(reloading.iter().any(|l| l.starts_with("MONOTONIC_USEC=")));
    assert_eq!(manager.arrived(), Some(vec!["READY=1".to_string()]));

    // An invalid file: refused, and READY=1 all the same.
    let text = std::fs::read_to_string(&ward.config).unwrap();
    std::fs::write(&ward.config, text.replace("records:", "bogus: 1, records:")).unwrap();
    let out = ward.ctl(&["reload"]);
    assert!(!out.status.success(), "an invalid file is refused");
    assert_eq!(manager.arrived().unwrap()[0], "RELOADING=1");
    let status = manager.arrived().expect("the refusal's status");
    assert!(status[0].starts_with("STATUS=reload refused"), "{status:?}");
    assert_eq!(manager.arrived(), Some(vec!["READY=1".to_string()]));
}

#[test]
fn stopping_is_said_when_sigterm_begins_the_shutdown() {
    let manager = Manager::new();
    let upstream = silent();
    let mut ward = spawn(&upstream, LISTEN, &[manager.env()]);
    manager.until("READY=1", Duration::from_secs(20));
    let (status, _) = ward.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}");
    let said = manager.until("STOPPING=1", Duration::from_secs(5));
    assert_eq!(said.last().unwrap(), &vec!["STOPPING=1".to_string()]);
    assert_eq!(manager.arrived(), None, "nothing after STOPPING=1");
}

#[test]
fn without_notify_socket_ward_serves_and_stops_as_before() {
    let upstream = silent();
    // A watchdog interval alone, with nobody to ping.
    let mut ward = spawn(
        &upstream,
        LISTEN,
        &[("WATCHDOG_USEC", OsStr::new("200000"))],
    );
    ward.wait_ready();
    answered_over_udp_and_tcp(ward.dns_bound(LISTEN));
    let (status, _) = ward.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}");
    let log = ward.log();
    assert!(!log.contains("systemd watchdog"), "{log}");
    assert!(!log.contains("cannot notify"), "{log}");
}

#[test]
fn run_and_ctl_meet_in_the_runtime_directory() {
    let runtime = tempfile::tempdir().unwrap();
    // Only the first of several directories is ward's.
    let dirs = format!("{}:/nonexistent", runtime.path().display());
    let socket = runtime.path().join("admin.sock");
    let ward = Ward::spawn_with_env(
        |_| "(log: (level: \"debug\"))".to_string(),
        |_| socket.clone(),
        &[("RUNTIME_DIRECTORY", OsStr::new(&dirs))],
    );
    ward.wait_ready();
    // `ward ctl` without --socket or --config, as ExecReload runs it.
    let ctl = Command::new(WARD)
        .args(["ctl", "version"])
        .env("RUNTIME_DIRECTORY", &dirs)
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(
        ctl.status.success(),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    assert!(String::from_utf8_lossy(&ctl.stdout).contains("ward 0.1.0"));
}

/// A file under the repository's `scripts/package/`.
fn package_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/package")
        .join(name)
}

/// `systemd-analyze verify` on `unit`: whether it passed, and every line
/// it printed about the unit.
fn verify(unit: &Path) -> (bool, Vec<String>) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .unwrap();
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let about = said
        .lines()
        .filter(|l| l.contains(&name))
        .map(str::to_string)
        .collect();
    (out.status.success(), about)
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    if !support::require(&["systemd-analyze"], false) {
        return;
    }
    let shipped = std::fs::read_to_string(package_file("ward.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/ward run --config /etc/ward/ward.ron",
        "ExecReload=/usr/bin/ward ctl reload",
        "WatchdogSec=30s",
        "RuntimeDirectory=ward",
    ] {
        assert!(shipped.lines().any(|l| l == line), "no {line}");
    }
    // verify wants the commands to exist: the binary just built stands in
    // for /usr/bin/ward.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("ward.service");
    std::fs::write(&unit, shipped.replace("/usr/bin/ward", WARD)).unwrap();
    let (passed, about) = verify(&unit);
    assert!(passed && about.is_empty(), "{about:#?}");
    // The check sees a mistake: an unknown key is only a warning.
    std::fs::write(
        &unit,
        shipped.replace("/usr/bin/ward", WARD) + "[Service]\nProtectEverything=yes\n",
    )
    .unwrap();
    let (_, about) = verify(&unit);
    assert!(
        about.iter().any(|l| l.contains("ProtectEverything")),
        "{about:#?}"
    );
}

#[test]
fn the_sysusers_file_creates_the_ward_user_and_group() {
    if !support::require(&["systemd-sysusers"], false) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(package_file("ward.sysusers"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("ward:")), "{passwd}");
    assert!(group.lines().any(|l| l.starts_with("ward:")), "{group}");
}

//! What ward runs as. Started as root with `user: "nobody"`, every thread
//! of it is nobody's and holds exactly the capabilities its config needs
//! (permitted, effective, inheritable and ambient alike), and what its
//! supervisors rebuild binds as the first did: a DNS listener on port 53,
//! a TPROXY inbound (in network namespaces this test builds) whose
//! answers leave from port 443. Its admin socket is nobody's, and
//! `ward ctl` as nobody drives it. Started as nobody (setpriv) without
//! those capabilities, it refuses to start and names each; given more
//! ambient capabilities than it needs (systemd's AmbientCapabilities=),
//! it keeps only those. Needs root.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use support::dns::{query, udp_exchange};
use support::netns::{echo_server, echo_to, link, Netns};
use support::tproxy::route_to_tproxy;
use support::{eventually, Ward, WARD};

const NOBODY: u32 = 65534;
const NET_BIND_SERVICE: u64 = 1 << 10;
const NET_ADMIN: u64 = 1 << 12;
/// setpriv as nobody: uid and gid 65534, no supplementary groups, and
/// (leaving uid 0 without keep-caps) no capabilities.
const AS_NOBODY: [&str; 4] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];
const TPROXY_PORT: u16 = 12345;
/// Where the echo server of the TPROXY test answers: below 1024, so an
/// answer must leave from a port only CAP_NET_BIND_SERVICE may bind.
const ECHO: &str = "10.77.2.2:443";

/// One thread's credentials, from /proc/<pid>/task/<tid>/status.
#[derive(Debug, PartialEq, Eq)]
struct Creds {
    uids: Vec<u32>,
    gids: Vec<u32>,
    groups: Vec<u32>,
    /// CapPrm, CapEff, CapInh, CapAmb.
    caps: [u64; 4],
}

/// The credentials of every thread of `pid`.
fn threads(pid: i32) -> Vec<Creds> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .map(|task| {
            let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .unwrap_or_else(|| panic!("no {name} in {status}"))
                    .trim()
                    .to_string()
            };
            let ids = |name: &str| -> Vec<u32> {
                field(name)
                    .split_whitespace()
                    .map(|n| n.parse().unwrap())
                    .collect()
            };
            let caps = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
            Creds {
                uids: ids("Uid"),
                gids: ids("Gid"),
                groups: ids("Groups"),
                caps: ["CapPrm", "CapEff", "CapInh", "CapAmb"].map(caps),
            }
        })
        .collect()
}

/// Every thread of `ward` is nobody's (with `groups`) and holds exactly
/// `caps` in each set; more than one thread (the runtime's) was checked.
fn assert_nobody_with(ward: &Ward, groups: &[u32], caps: u64) {
    let expected = Creds {
        uids: vec![NOBODY; 4],
        gids: vec![NOBODY; 4],
        groups: groups.to_vec(),
        caps: [caps; 4],
    };
    let threads = threads(ward.pid());
    assert!(threads.len() > 1, "{threads:?}");
    for thread in &threads {
        assert_eq!(thread, &expected, "a thread of ward\n{}", ward.log());
    }
}

/// Nobody must be able to run the binary (setpriv runs it as nobody).
fn nobody_can_run_ward() {
    let ok = Command::new(AS_NOBODY[0])
        .args(&AS_NOBODY[1..])
        .args(["test", "-x", WARD])
        .status()
        .unwrap()
        .success();
    assert!(
        ok,
        "user nobody cannot run {WARD}: the test needs a build it can reach"
    );
}

/// A temp dir nobody can reach, and the admin socket in a directory of
/// its own inside it (`run/`, made by whoever binds the socket).
fn dir_for_nobody() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("run/admin.sock");
    (dir, socket)
}

/// `ward ctl --socket <ward's> args` run as nobody.
fn ctl_as_nobody(ward: &Ward, args: &[&str]) -> Output {
    Command::new(AS_NOBODY[0])
        .args(&AS_NOBODY[1..])
        .arg(WARD)
        .arg("ctl")
        .arg("--socket")
        .arg(&ward.socket)
        .args(args)
        .output()
        .unwrap()
}

/// Kills `path` with `ward ctl` as nobody and waits for its replacement.
fn kill_as_nobody(ward: &Ward, path: &str) {
    let before = ward.node(path).expect("the node exists");
    let out = ctl_as_nobody(ward, &["kill", path]);
    assert!(out.status.success(), "ward ctl kill as nobody: {out:?}");
    eventually("the replacement", Duration::from_secs(5), || {
        ward.node(path)
            .filter(|n| n["status"] == "running" && n["id"] != before["id"])
    });
}

/// Waits until `path` was rebuilt after its socket was destroyed.
fn rebuilt_after_socket_death(ward: &Ward, path: &str, before: &serde_json::Value) {
    let node = eventually("the rebuilt node", Duration::from_secs(5), || {
        ward.node(path)
            .filter(|n| n["status"] == "running" && n["id"] != before["id"])
    });
    assert_eq!(node["last_exit_class"], "socket_dead", "{node}");
}

/// A DNS config answering `router.lan` from an inline record on `listen`.
fn dns_section(listen: &str) -> String {
    format!(
        "dns: (listen: [\"{listen}\"], records: [ (name: \"router.lan\", type: A, value: \"192.0.2.1\") ]),"
    )
}

/// Whether `dns` answers `router.lan` with its record within `timeout`.
fn answers(dns: SocketAddr, timeout: Duration) -> bool {
    udp_exchange(dns, &query("router.lan.", RecordType::A), timeout)
        .and_then(|reply| Message::from_vec(&reply).ok())
        .is_some_and(|reply| reply.answers.len() == 1)
}

#[test]
fn as_nobody_ward_keeps_net_bind_service_alone_and_binds_port_53_again() {
    if !support::require(&["setpriv", "ss"], true) {
        return;
    }
    nobody_can_run_ward();
    const DNS: &str = "127.0.0.77:53";
    let (dir, socket) = dir_for_nobody();
    let config = format!(
        "(\n user: \"nobody\",\n admin: (socket: \"{}\"),\n metrics: (listen: \"127.0.0.1:0\"),\n\
         log: (level: \"debug\"),\n {}\n)\n",
        socket.display(),
        dns_section(DNS)
    );
    let ward = Ward::launch(dir, socket.clone(), &config, &[]);
    // initgroups: nobody's groups, none of root's.
    assert_nobody_with(&ward, &[NOBODY], NET_BIND_SERVICE);
    for file in [&socket, socket.parent().unwrap()] {
        let meta = std::fs::symlink_metadata(file).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY), "{file:?}");
    }
    let dns: SocketAddr = DNS.parse().unwrap();
    assert!(answers(dns, Duration::from_secs(2)), "{}", ward.log());

    // Killed: the replacement adopts the socket.
    let path = format!("dns/listeners/udp:{DNS}");
    kill_as_nobody(&ward, &path);
    assert!(answers(dns, Duration::from_secs(2)), "{}", ward.log());

    // Destroyed: the replacement binds port 53 again, as nobody.
    let before = ward.node(&path).unwrap();
    let killed = Command::new("ss")
        .args(["-K", "-u", "-a", "src", DNS])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    eventually("answered on port 53 again", Duration::from_secs(5), || {
        answers(dns, Duration::from_millis(100)).then_some(())
    });
    rebuilt_after_socket_death(&ward, &path, &before);
    assert_nobody_with(&ward, &[NOBODY], NET_BIND_SERVICE);
}

/// Sends `i` to [`ECHO`] and waits for it to come back from there.
fn echo(client: &UdpSocket, i: u32) -> bool {
    echo_to(client, ECHO, i)
}

#[test]
fn a_tproxy_inbound_run_by_nobody_answers_from_port_443_and_is_rebuilt() {
    if !support::require(&["setpriv", "nft", "ip", "ss", "sysctl"], true) {
        return;
    }
    nobody_can_run_ward();
    let (client_ns, router, upstream) = (Netns::new("pc"), Netns::new("pr"), Netns::new("pu"));
    link(&client_ns, "10.77.1.2/24", &router, "10.77.1.1/24", "p");
    link(&router, "10.77.2.1/24", &upstream, "10.77.2.2/24", "q");
    client_ns.exec(&["ip", "route", "add", "default", "via", "10.77.1.1"]);
    upstream.exec(&["ip", "route", "add", "default", "via", "10.77.2.1"]);
    route_to_tproxy(&router, TPROXY_PORT);
    let stop = Arc::new(AtomicBool::new(false));
    echo_server(&upstream, ECHO, stop.clone());

    let (dir, socket) = dir_for_nobody();
    // The mark: SO_MARK on each flow's socket, opened as nobody.
    let config = format!(
        "(\n user: \"nobody\",\n admin: (socket: \"{}\"),\n log: (level: \"debug\"),\n\
         dialers: {{ \"direct\": Direct((mark: Some(255))) }},\n\
         udp: (inbounds: [ Tproxy((listen: \"0.0.0.0:{TPROXY_PORT}\")) ]),\n)\n",
        socket.display()
    );
    let ward = Ward::launch(dir, socket, &config, &["ip", "netns", "exec", &router.name]);
    assert_nobody_with(&ward, &[NOBODY], NET_BIND_SERVICE | NET_ADMIN);

    let client = client_ns.enter(|| UdpSocket::bind("10.77.1.2:0").unwrap());
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(echo(&client, 1), "answered from {ECHO}\n{}", ward.log());

    let path = format!("udp/inbounds/tproxy:0.0.0.0:{TPROXY_PORT}");
    kill_as_nobody(&ward, &path);
    assert!(echo(&client, 2), "after a kill\n{}", ward.log());

    // Destroyed: rebuilt, a transparent socket bound again by nobody.
    let before = ward.node(&path).unwrap();
    let port = format!(":{TPROXY_PORT}");
    router.exec(&["ss", "-K", "-u", "-a", "sport", "=", &port]);
    let mut i = 2;
    eventually("relayed again", Duration::from_secs(5), || {
        i += 1;
        echo(&client, i).then_some(())
    });
    rebuilt_after_socket_death(&ward, &path, &before);
    // A new flow after the rebuild: a new socket with the mark, a reply
    // socket on port 443.
    let other = client_ns.enter(|| UdpSocket::bind("10.77.1.2:0").unwrap());
    other
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(echo(&other, 100), "a new flow\n{}", ward.log());
    stop.store(true, Ordering::Relaxed);
}

/// Runs `ward run` on `config` as nobody, with no capabilities, until it
/// exits (at most 10 s); its exit status and stderr.
fn run_as_nobody_to_exit(dir: &Path, config: &str) -> (std::process::ExitStatus, String) {
    let path = dir.join("ward.ron");
    std::fs::write(&path, config).unwrap();
    let stderr = dir.join("stderr");
    let mut child = Command::new(AS_NOBODY[0])
        .args(&AS_NOBODY[1..])
        .args([WARD, "run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let status = eventually("ward exits", Duration::from_secs(10), || {
        child.try_wait().unwrap()
    });
    (status, std::fs::read_to_string(stderr).unwrap())
}

#[test]
fn without_root_or_capabilities_ward_refuses_to_start_naming_what_is_missing() {
    if !support::require(&["setpriv"], true) {
        return;
    }
    nobody_can_run_ward();
    let (dir, socket) = dir_for_nobody();
    let body = format!(
        " admin: (socket: \"{}\"),\n dialers: {{ \"direct\": Direct((mark: Some(255))) }},\n {}\n",
        socket.display(),
        dns_section("127.0.0.79:53")
    );
    let (status, stderr) = run_as_nobody_to_exit(dir.path(), &format!("(\n{body})\n"));
    assert_eq!(status.code(), Some(1), "{stderr}");
    for needs in [
        "binding 127.0.0.79:53 (dns.listen) needs CAP_NET_BIND_SERVICE",
        "the mark 255 of dialer direct (SO_MARK) needs CAP_NET_ADMIN",
    ] {
        assert!(stderr.contains(needs), "{needs:?} in {stderr}");
    }
    assert!(!socket.exists(), "nothing started: {stderr}");

    // Only root can become another user.
    let config = format!("(\n user: \"daemon\",\n{body})\n");
    let (status, stderr) = run_as_nobody_to_exit(dir.path(), &config);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("user: \"daemon\" is set, but ward runs as uid 65534, not as root"),
        "{stderr}"
    );
    assert!(!socket.exists(), "nothing started: {stderr}");
}

#[test]
fn given_more_ambient_capabilities_than_it_needs_unprivileged_ward_keeps_only_those() {
    if !support::require(&["setpriv"], true) {
        return;
    }
    nobody_can_run_ward();
    const DNS: &str = "127.0.0.78:53";
    let (dir, socket) = dir_for_nobody();
    // Where systemd's RuntimeDirectory= would be: nobody's already.
    let run = socket.parent().unwrap();
    std::fs::create_dir(run).unwrap();
    std::os::unix::fs::chown(run, Some(NOBODY), Some(NOBODY)).unwrap();
    let config = format!(
        "(\n admin: (socket: \"{}\"),\n log: (level: \"debug\"),\n {}\n)\n",
        socket.display(),
        dns_section(DNS)
    );
    // As systemd's User=nobody with AmbientCapabilities= of three.
    let given = "+net_bind_service,+net_admin,+net_raw";
    let inh = format!("--inh-caps={given}");
    let ambient = format!("--ambient-caps={given}");
    let mut wrap = AS_NOBODY.to_vec();
    wrap.extend([inh.as_str(), ambient.as_str()]);
    let ward = Ward::launch(dir, socket.clone(), &config, &wrap);
    assert_nobody_with(&ward, &[], NET_BIND_SERVICE);
    assert!(answers(DNS.parse().unwrap(), Duration::from_secs(2)));
    let out = ctl_as_nobody(&ward, &["version"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_reload_needing_a_capability_given_up_at_start_changes_nothing() {
    if !support::require(&["setpriv"], true) {
        return;
    }
    nobody_can_run_ward();
    const HIGH: &str = "127.0.0.78:5353";
    let (dir, socket) = dir_for_nobody();
    let config = |dns: &str| {
        format!(
            "(\n user: \"nobody\",\n admin: (socket: \"{}\"),\n log: (level: \"debug\"),\n {}\n)\n",
            socket.display(),
            dns_section(dns)
        )
    };
    let ward = Ward::launch(dir, socket.clone(), &config(HIGH), &[]);
    // Nothing needed a capability: none was kept.
    assert_nobody_with(&ward, &[NOBODY], 0);
    let before = ward.tree();
    let low = config(HIGH).replace(
        &format!("[\"{HIGH}\"]"),
        &format!("[\"{HIGH}\", \"127.0.0.78:53\"]"),
    );
    std::fs::write(&ward.config, low).unwrap();
    let out = ward.ctl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {out:?}");
    assert!(
        stderr.contains("binding 127.0.0.78:53 (dns.listen) needs CAP_NET_BIND_SERVICE"),
        "{stderr}"
    );
    let after = ward.tree();
    let ids = |tree: &serde_json::Value| {
        support::walk(tree)
            .iter()
            .map(|n| (n["path"].clone(), n["id"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&before), ids(&after), "nothing changed");
    assert!(answers(HIGH.parse().unwrap(), Duration::from_secs(2)));
}

//! What ward runs as. Started as nobody (setpriv) without the
//! capabilities its config needs, it refuses to start and names each;
//! given more ambient capabilities than it needs (systemd's
//! AmbientCapabilities=), every thread of it holds exactly those it needs
//! (permitted, effective, inheritable and ambient alike) and it serves
//! port 53. Needs root (for setpriv).

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use support::dns::{query, udp_exchange};
use support::{eventually, Ward, WARD};

const NOBODY: u32 = 65534;
const NET_BIND_SERVICE: u64 = 1 << 10;
/// setpriv as nobody: uid and gid 65534, no supplementary groups, and
/// (leaving uid 0 without keep-caps) no capabilities.
const AS_NOBODY: [&str; 4] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];
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

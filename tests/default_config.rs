//! The shipped default config, run the way a new user runs it: as an
//! unprivileged user (here `nobody`, switched to with setpriv when the tests
//! run as root), with and without XDG_RUNTIME_DIR. The admin socket lands
//! where the docs say, `ward ctl` finds it without being told, and DNS is
//! served on 127.0.0.1:5353. (Only questions ward answers itself are asked:
//! the `system` upstream points off this machine.)

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use support::dns::{query, udp_exchange};
use support::{eventually, WARD};

const NOBODY: u32 = 65534;

fn as_nobody(xdg: Option<&Path>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", WARD]);
    cmd.env_remove("XDG_RUNTIME_DIR").env_remove("RUST_LOG");
    if let Some(dir) = xdg {
        cmd.env("XDG_RUNTIME_DIR", dir);
    }
    cmd
}

/// A CHAOS-class question: ward refuses it itself, nothing goes upstream.
fn chaos_query() -> Vec<u8> {
    let mut q = query("version.bind.", RecordType::TXT);
    let class_at = q.len() - 2;
    q[class_at..].copy_from_slice(&u16::from(DNSClass::CH).to_be_bytes());
    q
}

fn run_default_and_check(xdg: Option<&Path>, expected_socket: &Path) {
    let mut ward: Child = as_nobody(xdg)
        .arg("run")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tree = eventually("ctl tree as nobody", Duration::from_secs(10), || {
        let out = as_nobody(xdg)
            .args(["ctl", "tree", "--json"])
            .output()
            .ok()?;
        out.status.success().then_some(out.stdout)
    });
    let tree: serde_json::Value = serde_json::from_slice(&tree).unwrap();
    assert_eq!(tree["children"][0]["path"], "admin");
    let meta = std::fs::symlink_metadata(expected_socket).expect("socket where documented");
    assert_eq!(meta.uid(), NOBODY);
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(expected_socket.parent().unwrap())
            .unwrap()
            .mode()
            & 0o777,
        0o700
    );

    let dns: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let reply = eventually("DNS on 127.0.0.1:5353", Duration::from_secs(10), || {
        udp_exchange(dns, &chaos_query(), Duration::from_millis(300))
    });
    assert_eq!(
        Message::from_vec(&reply).unwrap().metadata.response_code,
        ResponseCode::Refused
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ward.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = eventually("ward exits", Duration::from_secs(5), || {
        ward.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
    assert!(!expected_socket.exists());
}

#[test]
fn the_default_config_runs_as_a_user_with_and_without_xdg_runtime_dir() {
    // Root to switch to an unprivileged user.
    if !support::require(&["setpriv"], true) {
        return;
    }
    // Without XDG_RUNTIME_DIR: under /tmp.
    let socket = PathBuf::from(format!("/tmp/ward-{NOBODY}/admin.sock"));
    run_default_and_check(None, &socket);
    // With it: there.
    let dir = tempfile::tempdir().unwrap();
    nix::unistd::chown(dir.path(), Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    run_default_and_check(Some(dir.path()), &dir.path().join("ward/admin.sock"));
}

//! The shipped default config, run the way a new user runs it: as an
//! unprivileged user (here `nobody`, switched to with setpriv when the tests
//! run as root), with and without XDG_RUNTIME_DIR. The admin socket lands
//! where the docs say and `ward ctl` finds it without being told.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

fn skip_unless_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    eprintln!("skipped: needs root to switch to an unprivileged user");
    true
}

fn run_default_and_check(xdg: Option<&Path>, expected_socket: &Path) {
    let mut ward: Child = as_nobody(xdg)
        .arg("run")
        .stderr(Stdio::piped())
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
fn default_config_as_a_user_without_xdg_runtime_dir_uses_tmp() {
    if skip_unless_root() {
        return;
    }
    let socket = PathBuf::from(format!("/tmp/ward-{NOBODY}/admin.sock"));
    run_default_and_check(None, &socket);
}

#[test]
fn default_config_as_a_user_with_xdg_runtime_dir_uses_it() {
    if skip_unless_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    nix::unistd::chown(dir.path(), Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    let socket = dir.path().join("ward/admin.sock");
    run_default_and_check(Some(dir.path()), &socket);
}

//! The one way a test skips: [`require`] says whether what the test needs
//! from the machine (tools, found by [`find_tool`]; root) is there. No
//! test passes by skipping unnoticed: a missing need fails the test when
//! `CI` is set or when the test runs as root (scripts/test.sh installs
//! every tool, as root); otherwise the skip is printed and appended to the
//! file that `WARD_SKIP_LOG` names, which scripts/test.sh counts and
//! reports.
//! The unit tests of `ward-actors` include this file by path, so it uses
//! nothing but std and nix.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// True when every tool in `tools` is found ([`find_tool`]) and, with
/// `root`, the test runs as root. Otherwise fails the test (under `CI`, or
/// as root), or records the skip and returns false: the test then returns
/// at once.
pub fn require(tools: &[&str], root: bool) -> bool {
    let is_root = nix::unistd::geteuid().is_root();
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_tool(t).is_none())
        .collect();
    let mut needs = Vec::new();
    if root && !is_root {
        needs.push("needs root".to_string());
    }
    if !missing.is_empty() {
        needs.push(format!("{} not installed", missing.join(", ")));
    }
    decide(&needs)
}

/// As [`require`], for a need that is not a tool on PATH (a Python module,
/// say): `present` says whether `what` is there.
// ward-actors' unit tests include this file and do not use it.
#[allow(dead_code)]
pub fn require_that(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    decide(&[format!("{what} not installed")])
}

/// True without `needs`; otherwise fails the test or records the skip.
fn decide(needs: &[String]) -> bool {
    if needs.is_empty() {
        return true;
    }
    let is_root = nix::unistd::geteuid().is_root();
    let reason = needs.join("; ");
    if std::env::var_os("CI").is_some() {
        panic!("{reason} (CI is set: tests do not skip)");
    }
    if is_root {
        panic!("{reason}: scripts/test.sh installs every tool the tests use");
    }
    skip(&reason);
    false
}

/// Where the executable `tool` is: on PATH, or else in cargo's bin
/// directory (`$CARGO_HOME/bin`, `~/.cargo/bin`), where `cargo install`
/// puts tools (ssserver) and which a test's PATH may lack.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .map(|home| home.join("bin"));
    std::env::split_paths(&path)
        .chain(cargo_bin)
        .map(|dir| dir.join(tool))
        .find(|candidate| executable(candidate))
}

fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Reports the running test as skipped for `reason`: on stderr, and as a
/// line `<binary>/<test>\t<reason>` in `WARD_SKIP_LOG` when it is set (a
/// skip that cannot be recorded there fails the test instead).
fn skip(reason: &str) {
    let name = test_name();
    eprintln!("skipped: {name}: {reason}");
    let Some(log) = std::env::var_os("WARD_SKIP_LOG") else {
        return;
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        // One write per line: tests skip from parallel threads.
        .and_then(|mut file| file.write_all(format!("{name}\t{reason}\n").as_bytes()));
    if let Err(e) = written {
        panic!(
            "skipped ({reason}), and cannot record it in WARD_SKIP_LOG={}: {e}",
            Path::new(&log).display()
        );
    }
}

/// `<test binary>/<test>`: the binary without cargo's hash suffix, and
/// the test's name (libtest names each test's thread after it).
fn test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "?".to_string());
    let binary = match binary.rsplit_once('-') {
        Some((stem, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => stem.to_string(),
        _ => binary,
    };
    let thread = std::thread::current();
    format!("{binary}/{}", thread.name().unwrap_or("?"))
}

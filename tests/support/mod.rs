//! Test harness: starts the real `ward` binary with a config of the test's
//! own (admin socket in a temp dir, metrics on 127.0.0.1:0), talks to it over
//! its admin socket, and stops it. Its log goes to a file in the temp dir and
//! is printed when a test using it fails; the addresses its listeners bound
//! (configured with port 0) are read from it.
//!
//! Ports: servers the tests run in-process bind port 0 and keep their
//! socket. External daemons that must be told a port in their config get
//! one from [`free_port`] and start through [`on_a_free_port`], which tries
//! another port when the picked one was taken in the meantime.

#![allow(dead_code)]

pub mod dns;
pub mod netns;
pub mod nodes;
pub mod skip;
pub mod socks;
pub mod systemd;
pub mod tls;
pub mod tproxy;
pub mod udp;

// Not every test binary has a test that can skip.
#[allow(unused_imports)]
pub use skip::require;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const WARD: &str = env!("CARGO_BIN_EXE_ward");

/// A small xorshift: chaos tests need variety, not cryptography.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A seed from the clock (odd, so never zero).
pub fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1
}

/// Polls `check` until it returns `Some`, failing after `within`.
pub fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // The poll interval.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port free for both UDP and TCP right now, for an external
/// daemon that must be told its port (start it with [`on_a_free_port`]).
/// Nothing holds the port afterwards: in-process servers bind port 0
/// instead.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Starts an external daemon that must be told its port in its config (it
/// cannot be handed a socket): `launch(port)` starts it on a port from
/// [`free_port`] and says whether it came up. Tests run in parallel, so the
/// port may be taken by the time the daemon binds it; the daemon then
/// exits, and `launch` runs again on another port, a few times.
pub fn on_a_free_port<T>(what: &str, mut launch: impl FnMut(u16) -> Result<T, String>) -> T {
    const ATTEMPTS: usize = 5;
    let mut failures = Vec::new();
    for _ in 0..ATTEMPTS {
        match launch(free_port()) {
            Ok(started) => return started,
            Err(why) => failures.push(why),
        }
    }
    panic!("{what} did not start on any of {ATTEMPTS} ports: {failures:#?}");
}

/// Waits until `ready` holds for the daemon `child`; an error when the
/// daemon exits first (it could not bind its port, say) or is not ready
/// within 10 s. The caller stops a daemon that failed.
pub fn wait_started(
    child: &mut Child,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("{what} exited ({status})"));
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{what} not ready within 10 s"));
        }
        // The poll interval.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The harness's configuration: the admin socket in `dir`, metrics on a
/// free port, debug logs, then `extra` (top-level RON fields, each ending
/// with a comma).
fn harness_config(dir: &Path, extra: &str) -> String {
    format!(
        "(\n    admin: (socket: \"{}/admin.sock\"),\n    metrics: (listen: \"127.0.0.1:0\"),\n    log: (level: \"debug\"),\n    {extra}\n)\n",
        dir.display()
    )
}

/// A running `ward run`.
pub struct Ward {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
}

impl Ward {
    /// Starts ward with the admin socket and metrics set by the harness and
    /// `extra` (more top-level RON fields, each ending with a comma).
    pub fn start(extra: &str) -> Ward {
        Self::start_with(|dir| harness_config(dir, extra))
    }

    /// As [`Ward::start`], but waits only until the admin socket answers:
    /// for a ward some of whose actors are meant to fail and restart (over
    /// a path that refuses them), so that all never run at once.
    pub fn start_answering(extra: &str) -> Ward {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let text = harness_config(dir.path(), extra);
        let ward = Self::spawn(dir, socket, &text, &[], &[]);
        eventually(
            "ward's admin socket answers",
            Duration::from_secs(10),
            || ward.try_request(r#"{"cmd":"tree"}"#).ok().map(drop),
        );
        ward
    }

    /// Starts ward with a config written by `config(dir)`; the admin socket
    /// must be `dir/admin.sock`.
    pub fn start_with(config: impl FnOnce(&Path) -> String) -> Ward {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let text = config(dir.path());
        Self::start_in(dir, socket, &text)
    }

    /// Starts ward with `config`, whose admin socket is `socket`.
    pub fn start_in(dir: tempfile::TempDir, socket: PathBuf, config: &str) -> Ward {
        Self::launch(dir, socket, config, &[])
    }

    /// As [`Ward::start`], with at most `nofile` file descriptors (soft and
    /// hard limit, set with prlimit).
    pub fn start_with_nofile(nofile: u64, extra: &str) -> Ward {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let text = format!(
            "(\n    admin: (socket: \"{}/admin.sock\"),\n    log: (level: \"debug\"),\n    {extra}\n)\n",
            dir.path().display()
        );
        let limit = format!("--nofile={nofile}:{nofile}");
        Self::launch(dir, socket, &text, &["prlimit", &limit])
    }

    /// Starts ward inside the network namespace `netns`, with a config
    /// written by `config(dir)` (admin socket `dir/admin.sock`).
    pub fn start_in_netns(netns: &str, config: impl FnOnce(&Path) -> String) -> Ward {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let text = config(dir.path());
        Self::launch(dir, socket, &text, &["ip", "netns", "exec", netns])
    }

    /// Starts ward with a config written by `config(dir)`, whose admin
    /// socket is `socket(dir)`, and these environment variables set (the
    /// service manager's: `NOTIFY_SOCKET`, `WATCHDOG_USEC`, ...). Does not
    /// wait for it: the caller waits for what it tests (READY=1).
    pub fn spawn_with_env(
        config: impl FnOnce(&Path) -> String,
        socket: impl FnOnce(&Path) -> PathBuf,
        env: &[(&str, &OsStr)],
    ) -> Ward {
        let dir = tempfile::tempdir().unwrap();
        let socket = socket(dir.path());
        let text = config(dir.path());
        Self::spawn(dir, socket, &text, &[], env)
    }

    /// Runs ward with `config` (whose admin socket is `socket`) under the
    /// command `wrap` names (none: directly): `ip netns exec`, `setpriv`,
    /// ...; and waits until it is ready.
    pub fn launch(dir: tempfile::TempDir, socket: PathBuf, config: &str, wrap: &[&str]) -> Ward {
        let ward = Self::spawn(dir, socket, config, wrap, &[]);
        ward.wait_ready();
        ward
    }

    /// Runs ward's binary under the command `wrap` names, with `env` set
    /// and no service manager's variables of the test's own.
    fn spawn(
        dir: tempfile::TempDir,
        socket: PathBuf,
        config: &str,
        wrap: &[&str],
        env: &[(&str, &OsStr)],
    ) -> Ward {
        let config_path = dir.path().join("ward.ron");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("ward.log")).unwrap();
        let mut command = match wrap.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(WARD);
                c
            }
            None => Command::new(WARD),
        };
        // The config's log level holds: the harness reads the log.
        command
            .args(["run", "--config"])
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log);
        // Tests run under a service manager must not talk to it.
        for name in systemd::VARIABLES {
            command.env_remove(name);
        }
        let child = command
            .envs(env.iter().copied())
            .spawn()
            .expect("ward starts");
        Ward {
            child: Some(child),
            socket,
            config: config_path,
            dir,
        }
    }

    /// Waits until the admin socket answers and every node runs.
    pub fn wait_ready(&self) {
        eventually("ward ready", Duration::from_secs(10), || {
            let tree = self.try_request(r#"{"cmd":"tree"}"#).ok()?;
            let all_running = walk(&tree["tree"]).iter().all(|n| n["status"] == "running");
            all_running.then_some(())
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ward.log")).unwrap_or_default()
    }

    /// The address a listener bound, from its log line (text, the format
    /// the harness leaves set): the latest line with the message `what`
    /// that names `configured` as its address (`addr=<configured>`, or an
    /// inbound's `inbound=<kind>:<configured>`), and its `bound=`. A listen
    /// address with port 0 gets its port there.
    pub fn bound(&self, what: &str, configured: &str) -> SocketAddr {
        let ours = |word: &str| {
            word.split_once('=').is_some_and(|(key, value)| match key {
                "addr" => value == configured,
                "inbound" => value
                    .strip_suffix(configured)
                    .is_some_and(|kind| kind.ends_with(':')),
                _ => false,
            })
        };
        eventually(
            &format!("\"{what}\" for {configured} in the log"),
            Duration::from_secs(10),
            || {
                self.log()
                    .lines()
                    .rev()
                    .filter(|line| line.contains(what))
                    .filter(|line| line.split_whitespace().any(ours))
                    .find_map(|line| {
                        line.split_whitespace()
                            .find_map(|w| w.strip_prefix("bound=")?.parse().ok())
                    })
            },
        )
    }

    /// The address a DNS listen address configured as `configured` answers
    /// on: its UDP and TCP listeners bound the same one.
    pub fn dns_bound(&self, configured: &str) -> SocketAddr {
        let udp = self.bound("DNS listening on UDP", configured);
        let tcp = self.bound("DNS listening on TCP", configured);
        assert_eq!(udp, tcp, "UDP and TCP of {configured} on one port");
        udp
    }

    /// One request, one reply, on a fresh connection.
    pub fn try_request(&self, line: &str) -> std::io::Result<Value> {
        let mut stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        // A refused client may find the socket closed before it writes; the
        // refusal is still there to read.
        let _ = writeln!(stream, "{line}");
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply)?;
        serde_json::from_str(&reply).map_err(std::io::Error::other)
    }

    pub fn request(&self, line: &str) -> Value {
        self.try_request(line)
            .unwrap_or_else(|e| panic!("admin request {line}: {e}\n{}", self.log()))
    }

    pub fn tree(&self) -> Value {
        self.request(r#"{"cmd":"tree"}"#)["tree"].clone()
    }

    pub fn node(&self, path: &str) -> Option<Value> {
        walk(&self.tree()).into_iter().find(|n| n["path"] == path)
    }

    /// Runs `ward ctl --socket <ours> <args>`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(WARD)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// The file descriptors the process holds now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// `GET path` on the metrics endpoint.
    pub fn http_get(&self, path: &str) -> String {
        http_get(&self.metrics_addr(), path)
    }

    /// Where the metrics endpoint listens (to reach it from a thread in
    /// ward's network namespace, with [`http_get`]).
    pub fn metrics_addr(&self) -> String {
        let stats = self.request(r#"{"cmd":"stats"}"#);
        stats["stats"]["metrics_addr"]
            .as_str()
            .expect("metrics on")
            .to_string()
    }

    /// Sends `signal` and waits for the exit; the time it took.
    /// Stops ward with SIGTERM and starts it again on the same directory
    /// and configuration (its state files kept), waiting until it is ready.
    pub fn restart(mut self) -> Ward {
        let (status, _) = self.stop(nix::sys::signal::Signal::SIGTERM);
        assert!(status.success(), "ward stopped: {status}\n{}", self.log());
        let config = std::fs::read_to_string(&self.config).unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Ward::start_in(dir, self.socket.clone(), &config)
    }

    pub fn stop(&mut self, signal: nix::sys::signal::Signal) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let sent = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let status = eventually("ward exits", Duration::from_secs(30), || {
            child.try_wait().unwrap()
        });
        (status, sent.elapsed())
    }
}

impl Drop for Ward {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- ward log ---\n{}", self.log());
        }
    }
}

/// `GET path` on the HTTP server at `addr`: the whole response.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: ward\r\n\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample `name` (with its labels, if any) in a
/// Prometheus text exposition.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The dialer `name` in a reply to `{"cmd":"dialers"}`.
pub fn dialer<'a>(reply: &'a Value, name: &str) -> &'a Value {
    reply["dialers"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["name"] == name))
        .unwrap_or_else(|| panic!("no dialer {name} in {reply}"))
}

/// Every node of a JSON tree, depth first.
pub fn walk(node: &Value) -> Vec<Value> {
    let mut out = vec![node.clone()];
    if let Some(children) = node["children"].as_array() {
        for child in children {
            out.extend(walk(child));
        }
    }
    out
}

/// How far the flows of [`while_flowing`] got, for `during` to act on
/// traffic that is really flowing rather than after a guessed delay.
#[derive(Default)]
pub struct Flowing {
    answered: AtomicUsize,
}

impl Flowing {
    /// Exchanges answered so far, every client together.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Waits until `n` exchanges in all have been answered.
    pub fn wait_answered(&self, n: usize) {
        eventually(
            &format!("{n} exchanges answered"),
            Duration::from_secs(10),
            || (self.answered() >= n).then_some(()),
        );
    }
}

/// Runs `flow(client, i)` for `i` in `1..=count` on every client at once,
/// one every 20 ms, while `during` runs on this thread (told how far the
/// flows got); how many of each client's exchanges failed.
pub fn while_flowing<C: Sync>(
    clients: &[C],
    count: u32,
    flow: impl Fn(&C, u32) -> bool + Sync,
    during: impl FnOnce(&Flowing),
) -> Vec<usize> {
    let flowing = Flowing::default();
    std::thread::scope(|scope| {
        let (flow, flowing) = (&flow, &flowing);
        let running: Vec<_> = clients
            .iter()
            .map(|client| {
                scope.spawn(move || {
                    (1..=count)
                        .filter(|&i| {
                            // The pace of a steady client, not a wait.
                            std::thread::sleep(Duration::from_millis(20));
                            let answered = flow(client, i);
                            if answered {
                                flowing.answered.fetch_add(1, Ordering::SeqCst);
                            }
                            !answered
                        })
                        .count()
                })
            })
            .collect();
        during(flowing);
        running.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

/// For `run`, every `every`, kills one running actor of the tree that
/// `target` picks, at random; the paths it killed.
pub fn kill_at_random(
    ward: &Ward,
    run: Duration,
    every: Duration,
    target: impl Fn(&Value) -> bool,
) -> Vec<String> {
    let mut rng = Rng(seed());
    let started = Instant::now();
    let mut kills = Vec::new();
    for round in 1.. {
        let due = started + every * round;
        if due > started + run {
            break;
        }
        // The pace of the kills, not a wait for anything.
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let Ok(tree) = ward.try_request(r#"{"cmd":"tree"}"#) else {
            continue;
        };
        let targets: Vec<String> = walk(&tree["tree"])
            .iter()
            .filter(|n| n["status"] == "running" && target(n))
            .map(|n| n["path"].as_str().unwrap().to_string())
            .collect();
        if targets.is_empty() {
            continue;
        }
        let chosen = &targets[(rng.next() % targets.len() as u64) as usize];
        let request = serde_json::json!({"cmd": "kill", "path": chosen}).to_string();
        if ward.try_request(&request).is_ok_and(|r| r["ok"] == true) {
            kills.push(chosen.clone());
        }
    }
    kills
}

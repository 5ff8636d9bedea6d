//! Network namespaces a test builds for itself: named after the test
//! process, removed when dropped. Sockets for a namespace are made by a
//! thread that entered it (a socket stays in the namespace it was made in).

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs a command and fails the test if it fails.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let name = format!("{name}{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all);
    }

    /// Output of a command inside the namespace.
    pub fn output(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Calls `f` on a thread inside the namespace (to make its sockets).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(path).expect("the namespace exists");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair between two namespaces with an address on each end; the
/// interface names, a's first.
pub fn link(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str, tag: &str) -> (String, String) {
    let (a_if, b_if) = (
        format!("{tag}a{}", std::process::id() % 100000),
        format!("{tag}b{}", std::process::id() % 100000),
    );
    run(&[
        "ip", "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if,
        "netns", &b.name,
    ]);
    a.exec(&["ip", "addr", "add", a_addr, "dev", &a_if]);
    a.exec(&["ip", "link", "set", &a_if, "up"]);
    b.exec(&["ip", "addr", "add", b_addr, "dev", &b_if]);
    b.exec(&["ip", "link", "set", &b_if, "up"]);
    (a_if, b_if)
}

/// Echoes every datagram to `at` in `ns` until `stop`.
pub fn echo_server(ns: &Netns, at: &'static str, stop: Arc<AtomicBool>) {
    let socket = ns.enter(move || UdpSocket::bind(at).unwrap());
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], from);
            }
        }
    });
}

/// Sends datagram `i` to `to` and waits (500 ms at most) for it to come
/// back from there.
pub fn echo_to(client: &UdpSocket, to: &str, i: u32) -> bool {
    let to: SocketAddr = to.parse().unwrap();
    let sent = format!("datagram {i}");
    client.send_to(sent.as_bytes(), to).unwrap();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        match client.recv_from(&mut buf) {
            Ok((n, from)) if from == to && &buf[..n] == sent.as_bytes() => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
    false
}

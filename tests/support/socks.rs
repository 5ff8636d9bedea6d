//! SOCKS5 test peers: a real dante server (danted) on a free loopback
//! port, killed and restarted on the same port; a minimal HTTP server
//! answering 204, the dialers' TCP probe target (or any other status); and
//! a TCP hop that can reset every connection through it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{on_a_free_port, wait_started};

/// A danted on 127.0.0.1, relaying CONNECT and UDP ASSOCIATE for loopback
/// clients to loopback destinations.
pub struct Dante {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    ip: std::net::IpAddr,
    netns: Option<String>,
}

impl Dante {
    pub fn start() -> Dante {
        let mut dante = Self::new(None, [127, 0, 0, 1].into(), 0);
        on_a_free_port("danted", |port| {
            dante.port = port;
            dante.launch()
        });
        dante
    }

    /// A danted on `ip:port` (a port the test chose, which ward may already
    /// be configured with: there is no other to try) inside the network
    /// namespace `netns`.
    pub fn start_at(netns: Option<&str>, ip: std::net::IpAddr, port: u16) -> Dante {
        let mut dante = Self::new(netns, ip, port);
        if let Err(why) = dante.launch() {
            panic!("{why}");
        }
        dante
    }

    fn new(netns: Option<&str>, ip: std::net::IpAddr, port: u16) -> Dante {
        Dante {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            port,
            ip,
            netns: netns.map(str::to_string),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// Starts danted on `self.port`; an error (danted killed) when it
    /// does not listen there.
    fn launch(&mut self) -> Result<(), String> {
        let conf = self.dir.path().join("danted.conf");
        std::fs::write(
            &conf,
            format!(
                "logoutput: stderr\ninternal: {ip} port = {}\nexternal: {ip}\n\
                 clientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
                 client pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 }}\n\
                 socks pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect udpassociate bindreply udpreply }}\n",
                self.port,
                ip = self.ip,
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("danted.log")).unwrap();
        // danted forks helpers that hold the clients' sockets: its own
        // process group lets a kill take them all.
        let mut command = match &self.netns {
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns, "danted"]);
                c
            }
            None => Command::new("danted"),
        };
        let mut child = command
            .args(["-N", "1", "-f"])
            .arg(&conf)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("danted starts");
        let addr = self.addr();
        let log = self.dir.path().join("danted.log");
        let in_netns = self.netns.is_some();
        let started = wait_started(&mut child, "danted", || {
            // Its log says it runs (it bound its port), not only the port
            // answering: another process holding the port could answer
            // before ours exits. In a namespace of its own the port is
            // not reachable from here.
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("running"))
                && (in_netns || std::net::TcpStream::connect(addr).is_ok())
        });
        self.child = Some(child);
        started.map_err(|why| {
            self.kill();
            format!("{why} on {addr}: {}", self.log())
        })
    }

    /// Kills the node's processes with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGCONT);
            let _ = child.wait();
        }
    }

    /// Stops the node's processes (SIGSTOP) without closing anything: its
    /// connections stay open and nothing answers, like a partition.
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(child) = &self.child {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            nix::sys::signal::kill(group, signal).expect("signal the node");
        }
    }

    /// Starts it again on the same port (ward is configured with it, so
    /// there is no other port to try).
    pub fn restart(&mut self) {
        self.kill();
        if let Err(why) = self.launch() {
            panic!("danted did not come back: {why}");
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("danted.log")).unwrap_or_default()
    }
}

impl Drop for Dante {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP server on 127.0.0.1 answering every request with 204: the
/// dialers' TCP probe target.
pub struct NoContent {
    pub addr: SocketAddr,
    _server: HttpStatus,
}

impl NoContent {
    pub fn start() -> NoContent {
        let server = HttpStatus::start("204 No Content");
        NoContent {
            addr: server.addr,
            _server: server,
        }
    }
}

/// An HTTP server on 127.0.0.1 answering every request with one status
/// (`"204 No Content"`, `"400 Bad Request"`) and closing the connection.
pub struct HttpStatus {
    pub addr: SocketAddr,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HttpStatus {
    pub fn start(status: &'static str) -> HttpStatus {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let served = Arc::new(AtomicUsize::new(0));
        let counted = served.clone();
        let answer = format!("HTTP/1.1 {status}\r\nConnection: close\r\n\r\n");
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 1024];
                        let _ = stream.read(&mut buf);
                        let _ = stream.write_all(answer.as_bytes());
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    // Non-blocking, to see `stop`: the poll interval.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HttpStatus { addr, served, stop }
    }

    /// Connections answered so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for HttpStatus {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// ward's TCP sockets in CLOSE-WAIT whose peer is `peer`.
pub fn close_wait(ward_pid: i32, peer: SocketAddr) -> usize {
    let out = Command::new("ss")
        .args(["-Htnp", "state", "close-wait"])
        .output()
        .expect("ss runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={ward_pid},")) && l.contains(&peer.to_string()))
        .count()
}

/// ward's established TCP connections to `peer`.
pub fn established_to(ward_pid: i32, peer: SocketAddr) -> usize {
    let out = Command::new("ss")
        .args(["-Htnp", "state", "established"])
        .arg(format!("dst {peer}"))
        .output()
        .expect("ss runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={ward_pid},")))
        .count()
}

/// A TCP hop in front of a node, as a middlebox on the path: it relays
/// every connection and can reset them all at once (ward sees a reset, the
/// node sees its client leave) while the node stays up. Needs no
/// privileges, unlike `ss -K`.
pub struct Cutter {
    pub addr: SocketAddr,
    conns: Arc<std::sync::Mutex<Vec<Relayed>>>,
    stop: Arc<AtomicBool>,
}

/// One relayed connection: ward's side, the node's side, and whether it is
/// being cut (its relaying threads then pass no FIN on: the reset must be
/// the first thing ward sees).
struct Relayed(std::net::TcpStream, std::net::TcpStream, Arc<AtomicBool>);

impl Cutter {
    pub fn start(node: SocketAddr) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (kept, stopped) = (conns.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    // Non-blocking, to see `stop`: the poll interval.
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(upstream) = std::net::TcpStream::connect(node) else {
                    continue;
                };
                let cut = Arc::new(AtomicBool::new(false));
                let pipe = |from: &std::net::TcpStream, to: &std::net::TcpStream| {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let cut = cut.clone();
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        if !cut.load(Ordering::SeqCst) {
                            let _ = to.shutdown(std::net::Shutdown::Write);
                        }
                    });
                };
                pipe(&client, &upstream);
                pipe(&upstream, &client);
                kept.lock().unwrap().push(Relayed(client, upstream, cut));
            }
        });
        Cutter { addr, conns, stop }
    }

    /// Resets every relayed connection: ward's side gets an RST (linger
    /// 0), the node's side is closed. Returns how many there were.
    pub fn reset_all(&self) -> usize {
        let conns: Vec<Relayed> = self.conns.lock().unwrap().drain(..).collect();
        for Relayed(client, upstream, cut) in &conns {
            cut.store(true, Ordering::SeqCst);
            let linger = nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            nix::sys::socket::setsockopt(client, nix::sys::socket::sockopt::Linger, &linger)
                .expect("SO_LINGER");
            // The relaying threads see their reads end and drop their
            // copies; the last close sends the reset.
            let _ = client.shutdown(std::net::Shutdown::Read);
            let _ = upstream.shutdown(std::net::Shutdown::Read);
        }
        conns.len()
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.reset_all();
    }
}

//! Shadowsocks and Trojan nodes as real servers on loopback, for the
//! dialers of those protocols: shadowsocks-libev's `ss-server` (the classic
//! AEAD methods), shadowsocks-rust's `ssserver` (the 2022 methods) and
//! trojan-gfw's `trojan` (TLS with a certificate for [`SNI`] from a CA the
//! test makes; what is not Trojan goes to an HTTP server answering 400).
//! Each serves on one free port (TCP, and UDP for Shadowsocks) and is
//! killed and restarted on that port, like [`Dante`](super::socks::Dante). Beside them: the text
//! that declares them in ward's `dialers`, and their share links.
//! Not clients: tests/node_servers.rs proves these servers with v2ray and
//! sslocal, without ward.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use super::skip::find_tool;
use super::socks::HttpStatus;
use super::{on_a_free_port, wait_started, Rng};

/// The name a Trojan node's certificate is for.
pub const SNI: &str = "node.test";

/// The classic AEAD methods, served by [`SsLibev`].
pub const LIBEV_METHODS: [&str; 3] = ["aes-128-gcm", "aes-256-gcm", "chacha20-ietf-poly1305"];

/// The 2022 methods (SIP022), served by [`SsRust`], and the length of
/// their keys in bytes.
pub const METHODS_2022: [(&str, usize); 3] = [
    ("2022-blake3-aes-128-gcm", 16),
    ("2022-blake3-aes-256-gcm", 32),
    ("2022-blake3-chacha20-poly1305", 32),
];

/// A password no other test uses, of letters and digits only (nothing to
/// escape in RON, JSON or a URL), to look for where it must not be.
pub fn password(what: &str) -> String {
    format!("{what}pw{:x}", rng().next() & 0xffff_ffff)
}

/// A random 2022 key (PSK) of `len` bytes (16 or 32), base64 as the
/// servers and ward take it.
pub fn key_2022(len: usize) -> String {
    let mut rng = rng();
    let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    base64(&bytes, STANDARD, true)
}

/// A generator seeded apart from every other one of this process: two
/// secrets made in one clock tick still differ.
fn rng() -> Rng {
    static MADE: AtomicU64 = AtomicU64::new(0);
    let made = MADE.fetch_add(1, Ordering::Relaxed);
    let mut rng = Rng(super::seed() ^ made.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    // Past the first outputs, which differ little for close seeds.
    for _ in 0..8 {
        rng.next();
    }
    rng
}

/// How to run a daemon on a port, given its directory.
type CommandFor = dyn Fn(&Path, u16) -> Command + Send + Sync;

/// A daemon on 127.0.0.1 told its port (a node server, or a client proxy a
/// test runs), in a process group of its own (a kill takes everything it
/// started), with its log in a directory of its own. `command(dir, port)` writes whatever config the server needs into
/// `dir` and says how to run it on `port`.
pub struct Daemon {
    what: &'static str,
    command: Box<CommandFor>,
    /// Log text saying the server bound every socket it serves on.
    started: &'static str,
    /// Whether it serves TCP on its port (probed for readiness).
    tcp: bool,
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Daemon {
    /// Starts it on a free port (another one when the picked port turns out
    /// taken).
    pub fn start(
        what: &'static str,
        started: &'static str,
        tcp: bool,
        command: impl Fn(&Path, u16) -> Command + Send + Sync + 'static,
    ) -> Daemon {
        let mut daemon = Daemon {
            what,
            command: Box::new(command),
            started,
            tcp,
            child: None,
            dir: tempfile::tempdir().unwrap(),
            port: 0,
        };
        on_a_free_port(what, |port| {
            daemon.port = port;
            daemon.launch()
        });
        daemon
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs it on `self.port`; an error (it is killed) when it does not
    /// serve there alone.
    fn launch(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join(format!("{}.log", self.what));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = (self.command)(self.dir.path(), self.port)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.what));
        let (addr, pid, tcp, started) = (self.addr(), child.id(), self.tcp, self.started);
        let ready = wait_started(&mut child, self.what, || {
            // Its log says it bound its sockets, they answer, and no other
            // process holds the port: some servers set SO_REUSEPORT and
            // would share a port taken in the meantime instead of failing.
            std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains(started))
                && (!tcp || std::net::TcpStream::connect(addr).is_ok())
                && held_only_by(addr.port(), pid)
        });
        self.child = Some(child);
        ready.map_err(|why| {
            self.kill();
            format!("{why} on {addr}: {}", self.log())
        })
    }

    /// Kills the server with SIGKILL, as a crash would: its connections
    /// are closed by the kernel, its port answers nothing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (ward is configured with it, so
    /// there is no other port to try).
    pub fn restart(&mut self) {
        self.kill();
        if let Err(why) = self.launch() {
            panic!("{} did not come back: {why}", self.what);
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.what)))
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether every socket bound to `port` on loopback (TCP or UDP) belongs
/// to the process `pid`.
fn held_only_by(port: u16, pid: u32) -> bool {
    let Ok(out) = Command::new("ss")
        .args(["-Htulnp", "src", &format!("127.0.0.1:{port}")])
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mine = format!("pid={pid},");
    text.lines().count() > 0 && text.lines().all(|l| l.contains(&mine))
}

/// A tool to run: where [`find_tool`] found it (`ssserver` may be in
/// cargo's bin directory only).
fn tool(name: &str) -> Command {
    Command::new(find_tool(name).unwrap_or_else(|| PathBuf::from(name)))
}

/// shadowsocks-libev's `ss-server`, TCP and UDP, one classic AEAD method.
pub struct SsLibev {
    daemon: Daemon,
    pub method: String,
    pub password: String,
}

impl SsLibev {
    pub fn start(method: &str, password: &str) -> SsLibev {
        let (m, p) = (method.to_string(), password.to_string());
        let daemon = Daemon::start(
            "ss-server",
            "udp server listening at",
            true,
            move |_, port| {
                let mut c = tool("ss-server");
                c.args(["-s", "127.0.0.1", "-p", &port.to_string()])
                    .args(["-k", &p, "-m", &m, "-u"]);
                c
            },
        );
        SsLibev {
            daemon,
            method: method.to_string(),
            password: password.to_string(),
        }
    }
}

/// shadowsocks-rust's `ssserver`, TCP and UDP, one 2022 method; its
/// password is a base64 key ([`key_2022`]).
pub struct SsRust {
    daemon: Daemon,
    pub method: String,
    pub password: String,
}

impl SsRust {
    pub fn start(method: &str, key: &str) -> SsRust {
        let (m, k) = (method.to_string(), key.to_string());
        let daemon = Daemon::start(
            "ssserver",
            "shadowsocks udp server listening on",
            true,
            move |_, port| {
                let mut c = tool("ssserver");
                c.args(["-s", &format!("127.0.0.1:{port}")])
                    .args(["-m", &m, "-k", &k, "-U"]);
                c
            },
        );
        SsRust {
            daemon,
            method: method.to_string(),
            password: key.to_string(),
        }
    }
}

/// trojan-gfw's `trojan` server with a certificate for [`SNI`] from a CA
/// of its own ([`TrojanServer::ca_path`]). A client that does not give the
/// password is handed to `fallback`, an HTTP server answering 400.
pub struct TrojanServer {
    daemon: Daemon,
    pub password: String,
    pub fallback: HttpStatus,
    ca: PathBuf,
    _certs: tempfile::TempDir,
}

impl TrojanServer {
    pub fn start(password: &str) -> TrojanServer {
        let certs = tempfile::tempdir().unwrap();
        let made = super::tls::certificates(certs.path(), &[SNI]);
        let fallback = HttpStatus::start("400 Bad Request");
        let config = serde_json::json!({
            "run_type": "server",
            "local_addr": "127.0.0.1",
            "remote_addr": "127.0.0.1",
            "remote_port": fallback.addr.port(),
            "password": [password],
            // 1: connections and errors, not every datagram.
            "log_level": 1,
            "ssl": {
                "cert": made.cert,
                "key": made.key,
                "sni": SNI,
            },
        });
        let daemon = Daemon::start("trojan", "trojan service (server) started", true, {
            move |dir, port| {
                let mut config = config.clone();
                config["local_port"] = port.into();
                let path = dir.join("server.json");
                std::fs::write(&path, config.to_string()).unwrap();
                let mut c = tool("trojan");
                c.arg("-c").arg(path);
                c
            }
        });
        TrojanServer {
            daemon,
            password: password.to_string(),
            fallback,
            ca: made.ca,
            _certs: certs,
        }
    }

    /// The CA (PEM) the node's certificate is signed by.
    pub fn ca_path(&self) -> &Path {
        &self.ca
    }
}

macro_rules! a_daemon {
    ($($node:ty),*) => {$(
        impl Deref for $node {
            type Target = Daemon;
            fn deref(&self) -> &Daemon {
                &self.daemon
            }
        }
        impl DerefMut for $node {
            fn deref_mut(&mut self) -> &mut Daemon {
                &mut self.daemon
            }
        }
    )*};
}

a_daemon!(SsLibev, SsRust, TrojanServer);

/// A Shadowsocks dialer `name` at `server`, an entry of ward's `dialers`.
pub fn shadowsocks(name: &str, server: SocketAddr, method: &str, password: &str) -> String {
    format!(
        "\"{name}\": Shadowsocks((server: \"{server}\", method: \"{method}\", password: \"{password}\")),"
    )
}

/// A Trojan dialer `name` at `server` for a node certified for [`SNI`],
/// trusting the CA `ca` (without one, only the built-in web roots: a
/// test CA's certificate is refused).
pub fn trojan(name: &str, server: SocketAddr, password: &str, ca: Option<&Path>) -> String {
    let ca = ca.map_or(String::new(), |ca| {
        format!(", ca: Some(\"{}\")", ca.display())
    });
    format!("\"{name}\": Trojan((server: \"{server}\", password: \"{password}\", sni: Some(\"{SNI}\"){ca})),")
}

/// A dialer `name` given as a share link, an entry of ward's `dialers`.
pub fn link(name: &str, url: &str) -> String {
    format!("\"{name}\": Link(\"{url}\"),")
}

/// A SIP002 link to a Shadowsocks node: the user info is base64url
/// (unpadded) `method:password` for the classic methods, and
/// percent-encoded plain text for the 2022 ones, as SIP002 says.
pub fn ss_link(server: SocketAddr, method: &str, password: &str, tag: &str) -> String {
    let plain = format!("{method}:{password}");
    let userinfo = if method.starts_with("2022-") {
        percent(&plain)
    } else {
        base64(plain.as_bytes(), URL_SAFE, false)
    };
    format!("ss://{userinfo}@{server}#{}", percent(tag))
}

/// A trojan link to a node certified for [`SNI`]. A link cannot carry a
/// CA, so it allows any certificate (`allowInsecure=1`).
pub fn trojan_link(server: SocketAddr, password: &str, tag: &str) -> String {
    format!(
        "trojan://{}@{server}?sni={SNI}&allowInsecure=1#{}",
        percent(password),
        percent(tag)
    )
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn percent(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 (RFC 4648) in `alphabet`, with or without `=` padding: the
/// tests need it for two strings, not a crate.
fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if pad {
            out.push_str(&"=="[..3 - chunk.len()]);
        }
    }
    out
}

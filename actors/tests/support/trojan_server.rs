//! A real Trojan node for the interop tests: trojan-gfw's `trojan` (the
//! Debian package) with a CA and a certificate for `node.test` made for
//! it, listening on a port the kernel picks (read back from its log), and
//! the HTTP fallback it hands every request with a wrong password.
//! Dropping it kills the server.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The one password the server accepts.
pub const PASSWORD: &str = "ward interop: pässword";
/// What the fallback answers, whatever it is sent.
pub const FALLBACK_REPLY: &[u8] =
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

pub struct TrojanServer {
    pub addr: SocketAddr,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// A CA that signed nothing the server shows.
    pub other_ca: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TrojanServer {
    /// Starts `trojan` on 127.0.0.1, port 0, and waits until it listens.
    pub async fn start() -> TrojanServer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_pki(d);
        let fallback = http_fallback().await;
        let config = d.join("server.json");
        std::fs::write(&config, server_config(d, fallback)).unwrap();
        let log = d.join("trojan.log");
        let child = Command::new("trojan")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = TrojanServer {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ca: d.join("ca.pem"),
            other_ca: d.join("other-ca.pem"),
            child,
            _dir: dir,
        };
        server.addr = server.listening_on(&log).await;
        server
    }

    /// The address in the server's "started at" line; panics when it
    /// exits first or does not start within 10 s.
    async fn listening_on(&mut self, log: &Path) -> SocketAddr {
        const MARK: &str = "started at ";
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let started = text.lines().find_map(|line| line.split_once(MARK));
            if let Some((_, addr)) = started {
                return addr.trim().parse().unwrap();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("trojan exited ({status}):\n{text}");
            }
            assert!(Instant::now() < deadline, "trojan did not start:\n{text}");
            // The poll interval.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TrojanServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ca.pem` and the server's `server.pem`/`server.key` for `node.test`,
/// and `other-ca.pem`, a CA of its own.
fn make_pki(dir: &Path) {
    let ca_params = || {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ward trojan test CA");
        params
    };
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params().self_signed(&ca_key).unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other = ca_params().self_signed(&other_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["node.test".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "node.test");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params
        .signed_by(&key, &rcgen::Issuer::new(ca_params(), ca_key))
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// trojan's server config: port 0, our password, our certificate, and
/// `fallback` for everything that is not a valid Trojan request.
fn server_config(dir: &Path, fallback: SocketAddr) -> String {
    let path = |name: &str| json_string(&dir.join(name).to_string_lossy());
    format!(
        r#"{{
    "run_type": "server",
    "local_addr": "127.0.0.1",
    "local_port": 0,
    "remote_addr": "127.0.0.1",
    "remote_port": {port},
    "password": [{password}],
    "log_level": 1,
    "ssl": {{ "cert": {cert}, "key": {key}, "alpn": ["http/1.1"] }},
    "tcp": {{ "prefer_ipv4": true }}
}}
"#,
        port = fallback.port(),
        password = json_string(PASSWORD),
        cert = path("server.pem"),
        key = path("server.key"),
    )
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => write!(out, "\\{c}").unwrap(),
            c if c.is_control() => write!(out, "\\u{:04x}", u32::from(c)).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An HTTP server on 127.0.0.1 that answers [`FALLBACK_REPLY`] to the
/// first bytes of each connection and closes it.
async fn http_fallback() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                    let _ = stream.write_all(FALLBACK_REPLY).await;
                }
            });
        }
    });
    addr
}

//! DNS test peers: a real knot authoritative server on a free loopback
//! port, kdig as the client (JSON output), raw UDP/TCP exchanges for what
//! kdig will not send, and ward with a DNS listener on a port the kernel
//! picked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::Value;

use super::udp::Peer;
use super::{on_a_free_port, wait_started, Ward};

/// The zone every test's knot serves.
pub const ZONE: &str = r#"$ORIGIN test.
$TTL 3600
@       IN SOA ns.test. admin.test. 1 3600 600 86400 60
@       IN NS  ns.test.
ns      IN A   127.0.0.1
www     IN A   192.0.2.1
www     IN AAAA 2001:db8::1
short 1 IN A   192.0.2.2
*.load  IN A   192.0.2.3
"#;

/// A knotd serving [`ZONE`] (plus `extra` records) on 127.0.0.1.
pub struct Knot {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Knot {
    pub fn start(extra: &str) -> Knot {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test.zone"), format!("{ZONE}{extra}")).unwrap();
        let mut knot = Knot {
            child: None,
            dir,
            port: 0,
        };
        on_a_free_port("knotd", |port| {
            knot.port = port;
            knot.launch()
        });
        knot
    }

    fn conf(&self) -> PathBuf {
        let d = self.dir.path().display();
        let conf = format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
             database:\n    storage: {d}\nzone:\n  - domain: test\n    file: {d}/test.zone\n    zonefile-load: whole\n    journal-content: none\n\
             log:\n  - target: stderr\n    any: info\n",
            port = self.port
        );
        let path = self.dir.path().join("knot.conf");
        std::fs::write(&path, conf).unwrap();
        path
    }

    /// Starts knotd on `self.port`; an error (knotd stopped) when it does
    /// not answer there.
    fn launch(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("knot.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new("knotd")
            .arg("-c")
            .arg(self.conf())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("knotd starts");
        let addr = self.addr();
        let started = wait_started(&mut child, "knotd", || {
            // Its log says it started (it bound its port), not only the
            // port answering: another process holding the port could
            // answer before ours exits.
            std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("server started"))
                && udp_exchange(
                    addr,
                    &query("www.test.", RecordType::A),
                    Duration::from_millis(200),
                )
                .is_some()
        });
        self.child = Some(child);
        started.map_err(|why| {
            self.stop();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            format!("{why} on port {}: {log}", self.port)
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops knot: its port answers ICMP port-unreachable from now on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (ward is configured with it, so
    /// there is no other port to try).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.launch() {
            panic!("knotd did not come back: {why}");
        }
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An upstream on loopback that answers every A query with 192.0.2.1,
/// first sending a forgery to the same port (the id off by one, the
/// address 198.51.100.66), and remembers the source port of each query.
pub struct Recorder {
    peer: Peer,
    ports: Arc<Mutex<Vec<u16>>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let ports: Arc<Mutex<Vec<u16>>> = Arc::default();
        let seen = Arc::clone(&ports);
        let peer = Peer::start(move |socket, bytes, from| {
            let Ok(query) = Message::from_vec(bytes) else {
                return;
            };
            seen.lock().unwrap().push(from.port());
            let id = query.metadata.id;
            for (id, ip) in [
                (id.wrapping_add(1), [198, 51, 100, 66]),
                (id, [192, 0, 2, 1]),
            ] {
                let mut answer = Message::response(id, OpCode::Query);
                answer.metadata.recursion_available = true;
                answer.add_queries(query.queries.clone());
                answer.add_answer(Record::from_rdata(
                    query.queries[0].name().clone(),
                    300,
                    RData::A(A::new(ip[0], ip[1], ip[2], ip[3])),
                ));
                let _ = socket.send_to(&answer.to_vec().unwrap(), from);
            }
        });
        Recorder { peer, ports }
    }

    pub fn addr(&self) -> SocketAddr {
        self.peer.addr
    }

    /// The source port of every query so far.
    pub fn ports(&self) -> Vec<u16> {
        self.ports.lock().unwrap().clone()
    }
}

/// A query built with hickory (RD set, no EDNS).
pub fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.id = rand_id();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg.to_vec().unwrap()
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        & 0xffff) as u16
}

/// One UDP exchange; None on timeout.
pub fn udp_exchange(server: SocketAddr, packet: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    socket.send_to(packet, server).ok()?;
    let mut buf = vec![0u8; 65_535];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// Writes framed queries on one TCP connection and reads `answers` answers.
pub fn tcp_exchange(stream: &mut TcpStream, answers: usize) -> Vec<Message> {
    let mut out = Vec::new();
    for _ in 0..answers {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut buf).unwrap();
        out.push(Message::from_vec(&buf).unwrap());
    }
    out
}

pub fn write_framed(stream: &mut TcpStream, packet: &[u8]) {
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    stream.write_all(&framed).unwrap();
}

/// kdig's JSON answer (RFC 8427) for `name`/`qtype` at `server`, with
/// `extra` kdig options; None when kdig got no answer.
pub fn kdig(server: SocketAddr, name: &str, qtype: &str, extra: &[&str]) -> Option<Value> {
    let out = Command::new("kdig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+json",
            "+timeout=2",
            "+retry=0",
        ])
        .args(extra)
        .args([name, qtype])
        .output()
        .expect("kdig runs");
    // kdig prints `{}` when it got nothing: its status says so.
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The A/AAAA/TXT data of an answer, in order.
pub fn answers(reply: &Value) -> Vec<String> {
    reply["answerRRs"]
        .as_array()
        .map(|rrs| {
            rrs.iter()
                .filter_map(|rr| {
                    rr.get("rdataA")
                        .or_else(|| rr.get("rdataAAAA"))
                        .or_else(|| rr.get("rdataTXT"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// TTLs of the answer section.
pub fn ttls(reply: &Value) -> Vec<u64> {
    reply["answerRRs"]
        .as_array()
        .map(|rrs| rrs.iter().filter_map(|rr| rr["TTL"].as_u64()).collect())
        .unwrap_or_default()
}

/// ward's DNS listen address in the tests: the kernel picks the port
/// ([`Ward::dns_bound`] tells which); the listeners' paths in the tree keep
/// this name (`dns/listeners/udp:127.0.0.1:0`).
pub const LISTEN: &str = "127.0.0.1:0";

/// ward listening on [`LISTEN`] with this `dns` section body (upstreams,
/// chains, options), metrics on, and the DNS address it answers on.
pub fn ward_with(dns_body: &str) -> (Ward, SocketAddr) {
    let body = dns_body.to_string();
    let ward = Ward::start_with(move |dir| {
        format!(
            "(\n    admin: (socket: \"{}/admin.sock\"),\n    metrics: (listen: \"127.0.0.1:0\"),\n    log: (level: \"debug\"),\n    dns: (\n        listen: [\"{LISTEN}\"],\n        {body}\n    ),\n)\n",
            dir.display()
        )
    });
    let dns = ward.dns_bound(LISTEN);
    (ward, dns)
}

//! UDP relay throughput and flow setup, beside a plain socat relay and the
//! raw loopback rate, in one run (`scripts/bench-udp.sh`, as root: it needs
//! danted and socat, and raises the open-files limit).
//!
//! - Throughput: one sender blasts datagrams of 64 B and 1200 B for a few
//!   seconds; a sink counts what arrives per second. Raw loopback: sender
//!   to sink. socat: sender to `socat` to sink. ward direct: sender to a
//!   forward inbound to sink. ward via SOCKS5: the same through a danted
//!   node. Medians of 3 runs, interleaved.
//! - Answers: the same paths the other way: a client's datagram reaches a
//!   target through the path, and the target blasts back to where it came
//!   from (ward's session, socat's socket, or the client itself for raw
//!   loopback); the client counts arrivals.
//! - Flow setup: 10,000 client sockets each send one datagram to a
//!   forward inbound; new flows per second until ward counts them all.
//! - Memory: RSS with 10,000 idle flows, minus RSS before them.
//!
//! Prints a markdown table. With `WARD_BENCH_FLOWS_ONLY=1` only flow setup
//! and memory are measured (seconds instead of minutes, for working on
//! them).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WARD: &str = env!("CARGO_BIN_EXE_ward");
const BLAST: Duration = Duration::from_secs(3);
const RUNS: usize = 3;
const FLOWS: usize = 10_000;

fn free_udp_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Counts datagrams arriving at a socket.
struct Sink {
    addr: SocketAddr,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    fn start() -> Sink {
        Self::start_with(None)
    }

    /// A sink whose socket holds `bytes` of datagrams (as root), so a
    /// burst is counted whole instead of overflowing its buffer.
    fn start_with(buffer: Option<usize>) -> Sink {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        if let Some(bytes) = buffer {
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &bytes)
                .expect("SO_RCVBUFFORCE (the bench runs as root)");
        }
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let (count, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, s) = (count.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if socket.recv(&mut buf).is_ok() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Sink { addr, count, stop }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends `size`-byte datagrams from `socket` (connected to the path) as
/// fast as it can for [`BLAST`]; the sink's count per second.
fn blast(socket: &UdpSocket, sink: &Sink, size: usize) -> f64 {
    let payload = vec![0x5a; size];
    // Warm up: the flow exists before counting starts.
    for _ in 0..100 {
        let _ = socket.send(&payload);
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let before = sink.count.load(Ordering::Relaxed);
    while started.elapsed() < BLAST {
        let _ = socket.send(&payload);
    }
    let received = sink.count.load(Ordering::Relaxed) - before;
    let rate = received as f64 / started.elapsed().as_secs_f64();
    // Let queues drain before the next path.
    std::thread::sleep(Duration::from_millis(300));
    rate
}

/// The answer direction: a target that, once a client's datagram reaches
/// it (through the path), blasts datagrams back to where it came from; the
/// client counts what arrives per second.
fn blast_back(client: &UdpSocket, target: &UdpSocket, size: usize) -> f64 {
    client.send(b"start").unwrap();
    let mut buf = [0u8; 2048];
    let (_, peer) = target
        .recv_from(&mut buf)
        .expect("the client's datagram arrives");
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = client.try_clone().unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (c, s) = (count.clone(), stop.clone());
    let counting = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !s.load(Ordering::Relaxed) {
            if receiver.recv(&mut buf).is_ok() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let payload = vec![0x5a; size];
    for _ in 0..100 {
        let _ = target.send_to(&payload, peer);
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let before = count.load(Ordering::Relaxed);
    while started.elapsed() < BLAST {
        let _ = target.send_to(&payload, peer);
    }
    let received = count.load(Ordering::Relaxed) - before;
    let rate = received as f64 / started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    counting.join().unwrap();
    rate
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let group = -(self.0.id() as i32);
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group.to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Proc {
    use std::os::unix::process::CommandExt;
    Proc(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn"),
    )
}

fn wait_tcp(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A danted on loopback.
fn dante(dir: &std::path::Path) -> (Proc, SocketAddr) {
    let port = free_udp_port();
    let conf = dir.join(format!("danted-{port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "logoutput: stderr\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
             clientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
             client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
             socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 command: udpassociate udpreply }}\n"
        ),
    )
    .unwrap();
    let proc = spawn(Command::new("danted").args(["-N", "1", "-f"]).arg(&conf));
    wait_tcp(local(port));
    (proc, local(port))
}

/// ward with a forward inbound per (listen, to, via).
fn ward(
    dir: &std::path::Path,
    node: SocketAddr,
    inbounds: &[(SocketAddr, SocketAddr, &str)],
) -> (Proc, SocketAddr) {
    let metrics = local(free_udp_port());
    let routes: Vec<String> = inbounds
        .iter()
        .map(|(_, to, via)| {
            format!(
                "(dst: [\"{}/32\"], dst_port: [{}], to: \"{via}\")",
                to.ip(),
                to.port()
            )
        })
        .collect();
    let inbounds: Vec<String> = inbounds
        .iter()
        .map(|(listen, to, _)| format!("Forward((listen: \"{listen}\", to: \"{to}\"))"))
        .collect();
    let config = dir.join("ward.ron");
    std::fs::write(
        &config,
        format!(
            "(\n admin: (socket: \"{}/admin.sock\"),\n log: (level: \"warn\"),\n metrics: (listen: \"{metrics}\"),\n\
             dialers: {{ \"node\": Socks5((server: \"{node}\")) }},\n\
             udp: (inbounds: [{}], routes: [{}], max_endpoints: 20000, idle: (other_s: 600), queue: 256),\n)\n",
            dir.display(),
            inbounds.join(", "),
            routes.join(", ")
        ),
    )
    .unwrap();
    let proc = spawn(Command::new(WARD).args(["run", "--config"]).arg(&config));
    wait_tcp(metrics);
    (proc, metrics)
}

fn metric(metrics: SocketAddr, name: &str) -> f64 {
    let mut stream = TcpStream::connect(metrics).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: ward\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Measures every path with `measure(path, socket, size)` (a socket
/// connected to the path's entry, one per path for the whole run: socat
/// relays for the first peer it hears only), 64 B and 1200 B, RUNS times
/// interleaved; prints the medians as a table. Returns ward direct's 64 B
/// rate over raw loopback's (the first path).
fn table(paths: &[(&str, SocketAddr)], measure: impl Fn(usize, &UdpSocket, usize) -> f64) -> f64 {
    let sockets: Vec<UdpSocket> = paths
        .iter()
        .map(|(_, to)| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect(to).unwrap();
            socket
        })
        .collect();
    let mut results: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); 2]; paths.len()];
    for _ in 0..RUNS {
        for (p, socket) in sockets.iter().enumerate() {
            for (s, size) in [64usize, 1200].into_iter().enumerate() {
                results[p][s].push(measure(p, socket, size));
            }
        }
    }
    println!("| path | 64 B: packets/s | 64 B: Mbit/s | 1200 B: packets/s | 1200 B: Mbit/s |");
    println!("|---|---|---|---|---|");
    let (mut raw, mut direct) = (0.0, 0.0);
    for (p, (name, _)) in paths.iter().enumerate() {
        let small = median(results[p][0].clone());
        let large = median(results[p][1].clone());
        if p == 0 {
            raw = small;
        }
        if *name == "ward direct" {
            direct = small;
        }
        println!(
            "| {name} | {:.0} | {:.1} | {:.0} | {:.1} |",
            small,
            small * 64.0 * 8.0 / 1e6,
            large,
            large * 1200.0 * 8.0 / 1e6
        );
    }
    println!();
    direct / raw
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Both directions through every path: client to target, then the
/// targets blasting back to whoever reached them.
fn throughput(
    sink: &Sink,
    targets: &[UdpSocket],
    [socat_in, direct_in, proxied_in]: [SocketAddr; 3],
    [socat_back_in, back_direct_in, back_proxied_in]: [SocketAddr; 3],
) {
    let target = |i: usize| targets[i].local_addr().unwrap();
    let paths = [
        ("raw loopback", sink.addr),
        ("socat", socat_in),
        ("ward direct", direct_in),
        ("ward via SOCKS5 (danted)", proxied_in),
    ];
    let ratio = table(&paths, |_, sender, size| blast(sender, sink, size));
    println!("- ward direct / raw loopback, 64 B: {ratio:.2}");

    // The answer direction: targets blast back to whoever reached them.
    let back_paths = [
        ("raw loopback", target(0)),
        ("socat", socat_back_in),
        ("ward direct", back_direct_in),
        ("ward via SOCKS5 (danted)", back_proxied_in),
    ];
    println!();
    println!("Answers (target back to client):");
    println!();
    let ratio = table(&back_paths, |p, client, size| {
        blast_back(client, &targets[p], size)
    });
    println!("- answers, ward direct / raw loopback, 64 B: {ratio:.2}");
}

fn main() {
    // `cargo bench` passes --bench; a plain `cargo test --benches` run must not blast.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let (_dante, node) = dante(dir.path());
    let (direct_in, proxied_in, flows_in) = (
        local(free_udp_port()),
        local(free_udp_port()),
        local(free_udp_port()),
    );
    // The first datagrams of 10,000 new flows arrive in a burst.
    let flow_sink = Sink::start_with(Some(8 << 20));
    // Targets for the answer direction, one per path.
    let targets: Vec<UdpSocket> = (0..4)
        .map(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            socket
        })
        .collect();
    let target = |i: usize| targets[i].local_addr().unwrap();
    let (back_direct_in, back_proxied_in) = (local(free_udp_port()), local(free_udp_port()));
    let (ward_proc, metrics) = ward(
        dir.path(),
        node,
        &[
            (direct_in, sink.addr, "direct"),
            (proxied_in, sink.addr, "node"),
            (flows_in, flow_sink.addr, "direct"),
            (back_direct_in, target(2), "direct"),
            (back_proxied_in, target(3), "node"),
        ],
    );
    let socat = |to: SocketAddr| {
        let listen = local(free_udp_port());
        let proc = spawn(Command::new("socat").args([
            &format!("UDP4-LISTEN:{},bind=127.0.0.1,reuseaddr", listen.port()),
            &format!("UDP4:{to}"),
        ]));
        (proc, listen)
    };
    let (_socat, socat_in) = socat(sink.addr);
    let (_socat_back, socat_back_in) = socat(target(1));
    std::thread::sleep(Duration::from_millis(500));

    if std::env::var_os("WARD_BENCH_FLOWS_ONLY").is_none() {
        throughput(
            &sink,
            &targets,
            [socat_in, direct_in, proxied_in],
            [socat_back_in, back_direct_in, back_proxied_in],
        );
    }

    // Flow setup and memory: FLOWS client sockets, one datagram each.
    let rss_before = rss_kib(ward_proc.0.id());
    let created_before = metric(metrics, "ward_udp_endpoints_created_total");
    let clients: Vec<UdpSocket> = (0..FLOWS)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("raise the open-files limit"))
        .collect();
    // Paced at 50,000 new flows a second, past the target of 10,000: the
    // rate measured is ward's.
    let started = Instant::now();
    for (i, client) in clients.iter().enumerate() {
        let due = started + Duration::from_micros(20 * i as u64);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let _ = client.send_to(b"hello", flows_in);
    }
    let deadline = started + Duration::from_secs(60);
    let mut created = 0.0;
    while Instant::now() < deadline {
        created = metric(metrics, "ward_udp_endpoints_created_total") - created_before;
        if created >= FLOWS as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let setup = started.elapsed();
    // Let the first datagrams arrive and allocations settle.
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = rss_kib(ward_proc.0.id());
    println!(
        "- new flows: {created:.0} of {FLOWS} in {:.2} s = {:.0} flows/s, sent at 50,000/s ({} first datagrams reached the sink)",
        setup.as_secs_f64(),
        created / setup.as_secs_f64(),
        flow_sink.count.load(Ordering::Relaxed),
    );
    println!(
        "- RSS: {rss_before} KiB before, {rss_after} KiB with {FLOWS} idle flows = {:.2} KiB per flow",
        (rss_after.saturating_sub(rss_before)) as f64 / FLOWS as f64
    );
    drop(clients);
}

//! DNS over TCP under attack from the LAN side: many addresses together
//! cannot hold every descriptor ward has, and a client trickling bytes
//! (slowloris) does not keep its place. 5,000 connections are opened from
//! 250 loopback addresses, a fifth of them trickling a byte now and then;
//! meanwhile clients from other addresses are answered over TCP and UDP,
//! and ward's open descriptors stay under its cap.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use support::dns::*;
use support::{eventually, Ward};

const TCP_CLIENTS: usize = 256;
const ATTACKERS: u8 = 250;
const PER_ATTACKER: usize = 20;

/// A TCP connection to `to` from `from` (any port).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> Option<TcpStream> {
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(from, 0)),
    )
    .ok()?;
    let SocketAddr::V4(to) = to else { return None };
    let stream = TcpStream::from(fd);
    // Bounds a connect the kernel's accept queue keeps waiting.
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&stream),
        &SockaddrIn::from(to),
    )
    .ok()?;
    Some(stream)
}

/// This process needs a descriptor per attacking connection.
fn raise_own_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

fn answered_over_tcp(dns: SocketAddr, from: Ipv4Addr) -> bool {
    let Some(mut stream) = connect_from(from, dns) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    write_framed(&mut stream, &query("www.test.", RecordType::A));
    let mut len = [0u8; 2];
    if stream.read_exact(&mut len).is_err() {
        return false;
    }
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer).is_ok()
}

fn dropped(ward: &Ward, reason: &str) -> u64 {
    let text = ward.http_get("/metrics");
    let key = format!("ward_dns_dropped_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_slowloris_client_trickling_bytes_loses_its_place() {
    if !support::require(&["knotd"], false) {
        return;
    }
    let knot = Knot::start("");
    let (ward, dns) = ward_with(&format!(
        "upstreams: {{ \"knot\": (url: \"udp://{}\") }}, limits: (tcp_query_s: 2, tcp_idle_s: 30),",
        knot.addr()
    ));
    let mut slow: Vec<TcpStream> = (1..=10)
        .map(|n| connect_from(Ipv4Addr::new(127, 0, 3, n), dns).expect("connects"))
        .collect();
    let started = Instant::now();
    // A 40-byte query announced, then one byte of it every 300 ms, until
    // ward closes them all.
    for stream in &mut slow {
        stream.write_all(&[0, 40]).unwrap();
    }
    let mut closed = vec![false; slow.len()];
    while closed.iter().any(|c| !c) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still open after {:?}: {closed:?}",
            started.elapsed()
        );
        for (stream, closed) in slow.iter_mut().zip(&mut closed) {
            if !*closed && stream.write_all(&[0]).is_err() {
                *closed = true;
            }
            let _ = stream.set_read_timeout(Some(Duration::from_millis(1)));
            if !*closed && matches!(stream.read(&mut [0u8; 1]), Ok(0)) {
                *closed = true;
            }
        }
        // The trickle's pace (the behaviour under test, not a wait).
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed too early"
    );
    assert_eq!(dropped(&ward, "tcp_slow"), 10);
}

#[test]
fn five_thousand_connections_from_250_addresses_hold_no_more_than_the_cap() {
    if !support::require(&["knotd"], false) {
        return;
    }
    raise_own_nofile();
    let knot = Knot::start("");
    let (ward, dns) = ward_with(&format!(
        "upstreams: {{ \"knot\": (url: \"udp://{}\") }}, limits: (tcp_clients: {TCP_CLIENTS}, tcp_query_s: 2),",
        knot.addr()
    ));
    assert!(answered_over_tcp(dns, Ipv4Addr::new(127, 0, 2, 1)));
    let baseline = ward.open_fds();
    let done = Arc::new(AtomicBool::new(false));
    let most_fds = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (done, most) = (done.clone(), most_fds.clone());
        let pid = ward.pid();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
                most.fetch_max(fds, Ordering::Relaxed);
                // The sampling pace, not a wait for anything.
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut held = Vec::with_capacity(ATTACKERS as usize * PER_ATTACKER);
    let mut served = 0;
    for round in 0..PER_ATTACKER {
        for a in 1..=ATTACKERS {
            if let Some(mut stream) = connect_from(Ipv4Addr::new(127, 0, 1, a), dns) {
                // A fifth of them trickle: a length, then a byte.
                if held.len() % 5 == 0 {
                    let _ = stream.write_all(&[0, 40, 0]);
                }
                held.push(stream);
            }
        }
        // Legitimate clients from elsewhere, over TCP and UDP, meanwhile.
        let client = Ipv4Addr::new(127, 0, 2, 10 + round as u8);
        assert!(
            answered_over_tcp(dns, client),
            "TCP client {client} not answered in round {round}"
        );
        let q = query("www.test.", RecordType::A);
        assert!(
            udp_exchange(dns, &q, Duration::from_secs(2)).is_some(),
            "UDP in round {round}"
        );
        served += 2;
    }
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let most = most_fds.load(Ordering::Relaxed);
    eprintln!(
        "{} connections opened, {served} clients served, ward's descriptors: {baseline} before, at most {most}",
        held.len()
    );
    assert!(
        held.len() >= 4_000,
        "only {} connections opened",
        held.len()
    );
    // The cap, plus the answering clients' own connections and upstream
    // sockets in flight.
    assert!(
        most <= baseline + TCP_CLIENTS + 8,
        "{most} descriptors at most, {baseline} before, cap {TCP_CLIENTS}"
    );
    assert!(dropped(&ward, "tcp_shed") > 4_000 - TCP_CLIENTS as u64);
    drop(held);
    eventually(
        "the attackers' connections gone",
        Duration::from_secs(10),
        || (ward.open_fds() <= baseline + 2).then_some(()),
    );
}

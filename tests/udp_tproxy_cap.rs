//! The tproxy reply pool under a peer that answers from a different
//! address every time, in network namespaces this test builds: a client
//! namespace, a router namespace running ward (`reply_sockets: 256`)
//! behind nftables TPROXY rules, and an upstream namespace where all of
//! 10.99.0.0/16 is local and one echo socket answers each datagram from
//! the address it was sent to. The client sends one datagram to each of
//! 20,000 addresses: the answers come back, each from its own address,
//! while ward's descriptors stay within its cap and every socket past the
//! cap is an eviction. Needs root (namespaces, nftables).

mod support;

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::libc::in_pktinfo;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn,
};
use support::netns::{link, Netns};
use support::tproxy::route_to_tproxy;
use support::{eventually, http_get, metric_value, Ward};

const TPROXY_PORT: u16 = 12345;
/// Distinct addresses the answers come from.
const SOURCES: u32 = 20_000;
/// ward's `udp.reply_sockets`: small, so it evicts thousands of times.
const CAP: usize = 256;
/// Datagrams in flight at once: enough to keep ward busy, few enough for
/// the client's receive buffer.
const WINDOW: usize = 128;
/// A datagram unanswered this long is counted lost.
const GIVE_UP: Duration = Duration::from_secs(2);
const PORT: u16 = 9000;

/// The `i`th address answers come from: 10.99.0.1 to 10.99.79.250.
fn source(i: u32) -> SocketAddr {
    SocketAddrV4::new(
        Ipv4Addr::new(10, 99, (i / 250) as u8, (i % 250 + 1) as u8),
        PORT,
    )
    .into()
}

/// One UDP socket on 0.0.0.0:9000 of the upstream namespace that answers
/// each datagram from the address it was sent to (`IP_PKTINFO` in,
/// `ipi_spec_dst` out), as a server with many addresses does.
fn echo_from_destination(ns: &Netns, stop: Arc<AtomicBool>) {
    let socket = ns.enter(|| UdpSocket::bind(("0.0.0.0", PORT)).unwrap());
    setsockopt(&socket, sockopt::Ipv4PacketInfo, &true).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let fd = socket.as_raw_fd();
        let mut buf = [0u8; 2048];
        let mut cmsg = nix::cmsg_space!(in_pktinfo);
        while !stop.load(Ordering::Relaxed) {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let Ok(msg) = recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
            else {
                continue;
            };
            let to_addr = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|c| match c {
                    ControlMessageOwned::Ipv4PacketInfo(info) => Some(info.ipi_addr),
                    _ => None,
                })
            });
            let (Some(client), Some(to_addr), n) = (msg.address, to_addr, msg.bytes) else {
                continue;
            };
            let info = in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: to_addr,
                ipi_addr: to_addr,
            };
            let _ = sendmsg(
                fd,
                &[IoSlice::new(&buf[..n])],
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&client),
            );
        }
    });
}

/// What the client saw.
#[derive(Debug)]
struct Run {
    /// Distinct sources that answered, each from its own address.
    answered: usize,
    /// Answers from an address other than the one asked.
    wrong: usize,
    /// Answers that came twice (nothing is sent twice).
    twice: usize,
    took: Duration,
}

/// Sends `source-{i}` to each source in turn, `WINDOW` at a time, and
/// checks each answer against the address it comes from, for at most
/// `within`.
fn ask_every_source(client: &UdpSocket, within: Duration) -> Run {
    let started = Instant::now();
    let mut answered = vec![false; SOURCES as usize];
    let (mut count, mut wrong, mut twice) = (0, 0, 0);
    let mut in_flight: VecDeque<(u32, Instant)> = VecDeque::new();
    let mut next = 0;
    let mut buf = [0u8; 64];
    while (next < SOURCES || !in_flight.is_empty()) && started.elapsed() < within {
        while next < SOURCES && in_flight.len() < WINDOW {
            client
                .send_to(format!("source-{next}").as_bytes(), source(next))
                .unwrap();
            in_flight.push_back((next, Instant::now()));
            next += 1;
        }
        if let Ok((n, from)) = client.recv_from(&mut buf) {
            // Anything else is a late answer to the warm-up.
            let asked = std::str::from_utf8(&buf[..n])
                .ok()
                .and_then(|text| text.strip_prefix("source-")?.parse::<u32>().ok())
                .filter(|&i| i < SOURCES);
            match asked {
                Some(i) if from != source(i) => wrong += 1,
                Some(i) if answered[i as usize] => twice += 1,
                Some(i) => {
                    answered[i as usize] = true;
                    count += 1;
                }
                None => {}
            }
        }
        // Answers come back in order, near enough: the oldest in flight
        // leaves the window once answered or given up.
        while in_flight
            .front()
            .is_some_and(|&(i, at)| answered[i as usize] || at.elapsed() > GIVE_UP)
        {
            in_flight.pop_front();
        }
    }
    Run {
        answered: count,
        wrong,
        twice,
        took: started.elapsed(),
    }
}

/// Counts the descriptors `pid` holds, again and again until `stop`: the
/// most seen, and how many samples were taken.
fn sample_descriptors(pid: i32, stop: Arc<AtomicBool>) -> JoinHandle<(usize, usize)> {
    std::thread::spawn(move || {
        let (mut max, mut samples) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                max = max.max(dir.count());
                samples += 1;
            }
            // A sampling period, not a wait for a condition: the bound
            // must hold at every instant, and this looks often.
            std::thread::sleep(Duration::from_millis(2));
        }
        (max, samples)
    })
}

#[test]
fn answers_from_20000_sources_keep_ward_within_its_reply_socket_cap() {
    // Root for the network namespaces and the nftables rules.
    if !support::require(&["nft", "ip", "sysctl"], true) {
        return;
    }
    let (client_ns, router, upstream) = (Netns::new("kc"), Netns::new("kr"), Netns::new("ku"));
    link(&client_ns, "10.77.1.2/24", &router, "10.77.1.1/24", "k");
    link(&router, "10.77.2.1/24", &upstream, "10.77.2.2/24", "m");
    client_ns.exec(&["ip", "route", "add", "default", "via", "10.77.1.1"]);
    upstream.exec(&["ip", "route", "add", "default", "via", "10.77.2.1"]);
    // Every 10.99.x.y is the upstream's own, behind one gateway: the
    // router keeps one neighbour entry, not 20,000.
    upstream.exec(&["ip", "route", "add", "local", "10.99.0.0/16", "dev", "lo"]);
    router.exec(&["ip", "route", "add", "10.99.0.0/16", "via", "10.77.2.2"]);
    route_to_tproxy(&router, TPROXY_PORT);
    let stop = Arc::new(AtomicBool::new(false));
    echo_from_destination(&upstream, stop.clone());

    let ward = Ward::start_in_netns(&router.name, |dir| {
        format!(
            "(\n admin: (socket: \"{}/admin.sock\"),\n metrics: (listen: \"127.0.0.1:0\"),\n\
             log: (level: \"info\"),\n\
             udp: (inbounds: [ Tproxy((listen: \"0.0.0.0:{TPROXY_PORT}\")) ], reply_sockets: {CAP}),\n)\n",
            dir.display()
        )
    });
    let metrics_addr = ward.metrics_addr();
    let scrape = |ns: &Netns| {
        let addr = metrics_addr.clone();
        ns.enter(move || http_get(&addr, "/metrics"))
    };
    let before = ward.open_fds();
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_descriptors(ward.pid(), stop_sampling.clone());

    let client = client_ns.enter(|| UdpSocket::bind("10.77.1.2:0").unwrap());
    setsockopt(&client, sockopt::RcvBufForce, &(4 << 20)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // The flow's session opens on its first datagram, which waits for it
    // in a queue of 64: the run starts once it is open, so the window
    // never waits there. Its address is none of the run's.
    let warm_up: SocketAddr = "10.99.200.1:9000".parse().unwrap();
    eventually("the flow's first answer", Duration::from_secs(10), || {
        client.send_to(b"warm-up", warm_up).unwrap();
        let mut buf = [0u8; 16];
        client
            .recv_from(&mut buf)
            .ok()
            .filter(|&(_, from)| from == warm_up)
    });

    let run = ask_every_source(&client, Duration::from_secs(90));
    stop_sampling.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let (max, samples) = sampler.join().unwrap();
    let max = max.max(ward.open_fds());
    let text = scrape(&router);
    let metric = |name| metric_value(&text, name).unwrap_or(-1.0);
    let evicted = metric("ward_udp_reply_sockets_evicted_total");
    let open = metric("ward_udp_reply_sockets");
    eprintln!(
        "{}/{SOURCES} answered in {:?}; descriptors: {before} before, {max} at most \
         ({samples} samples); reply sockets: {evicted} evicted, {open} open",
        run.answered, run.took
    );

    // (a) A datagram may be lost between namespaces under load (a full
    // socket buffer anywhere on the way: nothing here retransmits), so a
    // few may go unanswered; every answer that comes is from its own
    // address.
    assert_eq!(
        (run.wrong, run.twice),
        (0, 0),
        "answers from the wrong address, or twice: {run:?}"
    );
    assert!(
        run.answered >= (SOURCES as usize) * 99 / 100,
        "answered: {run:?}\n{}",
        ward.log()
    );
    // (b) The pool's cap, plus what else the run opens in ward: the
    // flow's session socket, and the new reply socket, bound before the
    // least recently used one is closed for it (a bind that fails evicts
    // nothing). One more for a socket a send still holds as it is evicted:
    // the one endpoint here lets go of each before asking for the next, so
    // that one is margin.
    let slack = 3;
    assert!(
        samples >= 10,
        "the descriptors were sampled {samples} times"
    );
    assert!(
        max <= before + CAP + slack,
        "{max} descriptors, {before} before the run, cap {CAP}"
    );
    // (c) Each answer came from its own address and needed its own
    // socket, and so did the warm-up's: every one past the cap was an
    // eviction. Counted from the answers that came, since a datagram
    // lost before ward answered binds nothing; with none lost this is
    // 20,001 - 256.
    assert!(
        evicted >= (run.answered + 1 - CAP) as f64,
        "{evicted} evicted for {} answers",
        run.answered
    );
    assert!(open <= CAP as f64, "{open} reply sockets open");
}

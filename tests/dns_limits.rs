//! The DNS forwarder's limits and local answers through the real binary:
//! the in-flight bound answers REFUSED at once, the per-client rate limit
//! drops and counts, TCP connections per client are capped and idle ones
//! closed, identical concurrent misses share one upstream query, hosts
//! file and inline records are answered without an upstream, and what the
//! kernel drops at a listener that fell behind is counted.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use support::dns::*;
use support::eventually;

/// A UDP upstream that counts queries and answers each through `knot` after
/// `delay` (or never, without knot).
fn counting_upstream(knot: Option<SocketAddr>, delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            counted.fetch_add(1, Ordering::SeqCst);
            let Some(knot) = knot else { continue };
            let query = buf[..n].to_vec();
            let reply = socket.try_clone().unwrap();
            std::thread::spawn(move || {
                // A slow upstream is the behaviour under test.
                std::thread::sleep(delay);
                if let Some(answer) = udp_exchange(knot, &query, Duration::from_secs(1)) {
                    let _ = reply.send_to(&answer, from);
                }
            });
        }
    });
    (addr, count)
}

fn rcode_of(reply: &[u8]) -> ResponseCode {
    Message::from_vec(reply).unwrap().metadata.response_code
}

#[test]
fn past_the_in_flight_bound_queries_are_refused_at_once() {
    if !support::require(&["knotd"], false) {
        return;
    }
    let (silent, _) = counting_upstream(None, Duration::ZERO);
    let (ward, dns) = ward_with(&format!(
        "upstreams: {{ \"silent\": (url: \"udp://{silent}\") }}, limits: (in_flight: 1), timeout_ms: 3000,"
    ));
    // The first miss holds the only permit while the upstream stays silent.
    let first = std::thread::spawn(move || {
        udp_exchange(
            dns,
            &query("a.test.", RecordType::A),
            Duration::from_secs(5),
        )
    });
    eventually("the first query in flight", Duration::from_secs(5), || {
        let stats = ward.try_request(r#"{"cmd":"stats"}"#).ok()?;
        (stats["stats"]["dns"]["in_flight"] == 1).then_some(())
    });
    let started = Instant::now();
    let refused = udp_exchange(
        dns,
        &query("b.test.", RecordType::A),
        Duration::from_secs(2),
    )
    .expect("an answer");
    assert_eq!(rcode_of(&refused), ResponseCode::Refused);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once"
    );
    assert_eq!(
        rcode_of(&first.join().unwrap().unwrap()),
        ResponseCode::ServFail
    );
    let metrics = ward.http_get("/metrics");
    assert!(
        metrics.contains("ward_dns_refused_total{reason=\"overload\"} 1"),
        "{metrics}"
    );
}

#[test]
fn identical_concurrent_misses_share_one_upstream_query() {
    if !support::require(&["knotd"], false) {
        return;
    }
    let knot = Knot::start("");
    let (upstream, count) = counting_upstream(Some(knot.addr()), Duration::from_millis(300));
    let (_ward, dns) = ward_with(&format!(
        "upstreams: {{ \"slow\": (url: \"udp://{upstream}\") }},"
    ));
    let askers: Vec<_> = (0..10)
        .map(|_| {
            std::thread::spawn(move || {
                udp_exchange(
                    dns,
                    &query("www.test.", RecordType::A),
                    Duration::from_secs(3),
                )
            })
        })
        .collect();
    for asker in askers {
        let reply = Message::from_vec(&asker.join().unwrap().expect("an answer")).unwrap();
        assert_eq!(reply.answers.len(), 1);
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "one upstream query for ten askers"
    );
}

#[test]
fn a_client_over_its_rate_is_dropped_and_counted() {
    if !support::require(&["knotd"], false) {
        return;
    }
    let knot = Knot::start("");
    let (ward, dns) = ward_with(&format!(
        "upstreams: {{ \"knot\": (url: \"udp://{}\") }}, limits: (per_client_qps: 5),",
        knot.addr()
    ));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    for i in 0..20u16 {
        let mut q = query("www.test.", RecordType::A);
        q[0..2].copy_from_slice(&i.to_be_bytes());
        socket.send_to(&q, dns).unwrap();
    }
    let mut answered = 0;
    let mut buf = [0u8; 512];
    while socket.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    assert!(
        (5..=7).contains(&answered),
        "a burst of 5 (and what refills meanwhile): {answered}"
    );
    let metrics = ward.http_get("/metrics");
    let dropped: u64 = metrics
        .lines()
        .find(|l| l.starts_with("ward_dns_dropped_total{reason=\"rate_limited\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert_eq!(dropped as usize + answered, 20);
}

#[test]
fn tcp_connections_per_client_are_capped_and_idle_ones_closed() {
    if !support::require(&["knotd"], false) {
        return;
    }
    let knot = Knot::start("");
    let (_ward, dns) = ward_with(&format!(
        "upstreams: {{ \"knot\": (url: \"udp://{}\") }}, limits: (tcp_clients_per_ip: 2, tcp_idle_s: 1),",
        knot.addr()
    ));
    let mut kept: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(dns).unwrap()).collect();
    for stream in &mut kept {
        write_framed(stream, &query("www.test.", RecordType::A));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(tcp_exchange(stream, 1)[0].answers.len(), 1);
    }
    let mut third = TcpStream::connect(dns).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 2];
    assert!(
        matches!(third.read(&mut buf), Ok(0) | Err(_)),
        "the third connection is closed at once"
    );

    // Idle for a second: ward closes both.
    let started = Instant::now();
    for stream in &mut kept {
        assert_eq!(stream.read(&mut buf).unwrap(), 0);
    }
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn hosts_file_and_inline_records_are_answered_without_an_upstream() {
    if !support::require(&["kdig"], false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "192.168.1.10 nas.lan nas\n").unwrap();
    let (silent, count) = counting_upstream(None, Duration::ZERO);
    let (_ward, dns) = ward_with(&format!(
        "upstreams: {{ \"silent\": (url: \"udp://{silent}\") }}, hosts_file: \"{}\",\n\
         records: [ (name: \"router.lan\", type: A, value: \"192.168.1.1\", ttl: 60), (name: \"www.lan\", type: CNAME, value: \"router.lan\") ],",
        hosts.display()
    ));
    let nas = kdig(dns, "nas.lan.", "A", &[]).unwrap();
    assert_eq!(answers(&nas), vec!["192.168.1.10"]);
    assert_eq!(nas["AA"], 1);
    let reverse = kdig(dns, "10.1.168.192.in-addr.arpa.", "PTR", &[]).unwrap();
    assert_eq!(reverse["answerRRs"][0]["rdataPTR"], "nas.lan.");
    let chased = kdig(dns, "www.lan.", "A", &[]).unwrap();
    assert_eq!(chased["answerRRs"].as_array().unwrap().len(), 2);
    assert_eq!(answers(&chased), vec!["192.168.1.1"]);
    assert_eq!(
        ttls(&chased),
        vec![300, 60],
        "the CNAME at the default TTL, the A at its own"
    );
    let nodata = kdig(dns, "router.lan.", "AAAA", &[]).unwrap();
    assert_eq!(nodata["RCODE"], 0);
    assert!(answers(&nodata).is_empty());
    assert_eq!(count.load(Ordering::SeqCst), 0, "nothing went upstream");
}

/// A listener that cannot keep up (ward stopped while datagrams pour in):
/// what its full socket buffer drops is counted under its path, and the
/// listener answers again once ward runs.
#[test]
fn what_the_kernel_drops_at_a_full_listener_is_counted() {
    if !support::require(&["kdig"], false) {
        return;
    }
    let (silent, _) = counting_upstream(None, Duration::ZERO);
    let (ward, dns) = ward_with(&format!(
        "upstreams: {{ \"silent\": (url: \"udp://{silent}\") }},\n\
         records: [ (name: \"router.lan\", type: A, value: \"192.168.1.1\") ],"
    ));
    let pid = nix::unistd::Pid::from_raw(ward.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // Short datagrams (not even a header): ward drops them at once when
    // it reads them, so nothing goes upstream. Far more than any receive
    // buffer holds.
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..20_000 {
        let _ = flood.send_to(b"xx", dns);
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let answer = kdig(dns, "router.lan.", "A", &[]).expect("answered after the flood");
    assert_eq!(answers(&answer), vec!["192.168.1.1"]);
    let metrics = ward.http_get("/metrics");
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "ward_socket_drops_total{{path=\"dns/listeners/udp:{LISTEN}\"}} "
            ))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no drops counted for the listener:\n{metrics}"));
    assert!(dropped >= 1.0, "{dropped}");
}

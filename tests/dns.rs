//! The DNS forwarder against a real authoritative server (knot) on
//! loopback, with kdig as the client: UDP, TCP, TC->TCP, negative caching,
//! answers while the upstream is down, serve-stale, fallback chains, race,
//! FORMERR, ACL refusals, half-closed TCP clients, a listener whose socket
//! is destroyed from outside, a TCP upstream that closes connections
//! mid-load, and (against an in-process upstream that records them) a
//! fresh source port per upstream query, forgeries skipped, and sockets
//! closed at the deadline.

mod support;

use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::Value;
use support::dns::*;
use support::udp::Refusing;
use support::{eventually, walk, Ward};

fn knot_upstream(knot: &Knot, scheme: &str) -> String {
    format!(
        "upstreams: {{ \"knot\": (url: \"{scheme}://{}\") }}, default: [\"knot\"],",
        knot.addr()
    )
}

fn rcode(reply: &Value) -> u64 {
    reply["RCODE"].as_u64().unwrap()
}

#[test]
fn answers_over_udp_and_tcp_with_the_clients_id_and_case() {
    if !support::require(&["knotd", "kdig"], false) {
        return;
    }
    let knot = Knot::start("");
    let (ward, dns) = ward_with(&knot_upstream(&knot, "udp"));
    let a = kdig(dns, "www.test.", "A", &[]).expect("udp answer");
    assert_eq!(rcode(&a), 0);
    assert_eq!(answers(&a), vec!["192.0.2.1"]);
    assert_eq!(a["RA"], 1);
    // kdig lowercases names; a raw query shows the answer keeps the asker's
    // id and case, also when it comes from the cache.
    let asked = query("WwW.TeSt.", RecordType::A);
    let reply =
        Message::from_vec(&udp_exchange(dns, &asked, Duration::from_secs(2)).unwrap()).unwrap();
    assert_eq!(reply.metadata.id, u16::from_be_bytes([asked[0], asked[1]]));
    assert_eq!(reply.queries[0].name().to_ascii(), "WwW.TeSt.");
    assert_eq!(reply.answers.len(), 1);
    let aaaa = kdig(dns, "www.test.", "AAAA", &["+tcp"]).expect("tcp answer");
    assert_eq!(answers(&aaaa), vec!["2001:db8::1"]);
    // The second ask of the same question is a cache hit, and its TTL counts down.
    let again = kdig(dns, "www.test.", "A", &[]).unwrap();
    assert_eq!(answers(&again), vec!["192.0.2.1"]);
    assert!(ttls(&again)[0] <= 3600);
    let stats = ward.request(r#"{"cmd":"stats"}"#);
    assert!(
        stats["stats"]["dns"]["cache_hits"].as_u64().unwrap() >= 1,
        "{stats}"
    );
}

fn txt_records(name: &str, count: usize, len: usize) -> String {
    (0..count)
        .map(|i| format!("{name} IN TXT \"{}{}\"\n", i, "x".repeat(len)))
        .collect()
}

#[test]
fn truncated_udp_answers_send_the_client_to_tcp() {
    if !support::require(&["knotd", "kdig"], false) {
        return;
    }
    // ~700 bytes: fits ward's 1232 upstream, not a plain client's 512.
    let mut extra = txt_records("medium", 6, 100);
    // ~3000 bytes: needs TCP upstream too.
    extra.push_str(&txt_records("large", 12, 240));
    let knot = Knot::start(&extra);
    let (_ward, dns) = ward_with(&knot_upstream(&knot, "tcp+udp"));

    let truncated = kdig(dns, "medium.test.", "TXT", &["+ignore", "+noedns"]).expect("a reply");
    assert_eq!(truncated["TC"], 1, "{truncated}");
    assert!(answers(&truncated).is_empty());
    // kdig retries over TCP on its own and gets everything.
    let full = kdig(dns, "medium.test.", "TXT", &["+noedns"]).unwrap();
    assert_eq!(answers(&full).len(), 6);

    let large_udp = kdig(dns, "large.test.", "TXT", &["+ignore", "+bufsize=1232"]).unwrap();
    assert_eq!(large_udp["TC"], 1);
    let large = kdig(dns, "large.test.", "TXT", &["+tcp"]).unwrap();
    assert_eq!(
        answers(&large).len(),
        12,
        "ward fetched it over TCP from knot"
    );
}

#[test]
fn nxdomain_is_cached_for_the_soa_minimum_even_with_the_upstream_gone() {
    if !support::require(&["knotd", "kdig"], false) {
        return;
    }
    let mut knot = Knot::start("");
    let (_ward, dns) = ward_with(&knot_upstream(&knot, "udp"));
    let nx = kdig(dns, "nope.test.", "A", &[]).unwrap();
    assert_eq!(rcode(&nx), 3);
    let soa_ttl = nx["authorityRRs"][0]["TTL"].as_u64().unwrap();
    assert!(soa_ttl <= 60, "negative TTL is the SOA minimum: {soa_ttl}");
    knot.stop();
    let cached = kdig(dns, "nope.test.", "A", &[]).unwrap();
    assert_eq!(rcode(&cached), 3, "answered from the negative cache");
    assert!(cached["authorityRRs"][0]["TTL"].as_u64().unwrap() <= soa_ttl);
}

#[test]
fn a_cached_answer_is_served_while_the_upstream_is_stopped() {
    if !support::require(&["knotd", "kdig"], false) {
        return;
    }
    let mut knot = Knot::start("");
    let (_ward, dns) = ward_with(&knot_upstream(&knot, "udp"));
    assert_eq!(
        answers(&kdig(dns, "www.test.", "A", &[]).unwrap()),
        vec!["192.0.2.1"]
    );
    knot.stop();
    let hit = kdig(dns, "www.test.", "A", &[]).unwrap();
    assert_eq!(answers(&hit), vec!["192.0.2.1"]);
    // A name never asked is not in the cache: SERVFAIL, quickly.
    let started = Instant::now();
    let miss = kdig(dns, "load-miss.test.", "A", &[]).unwrap();
    assert_eq!(rcode(&miss), 2);
    assert!(started.elapsed() < Duration::from_secs(2));
    knot.restart();
    let after = eventually("knot back", Duration::from_secs(10), || {
        kdig(dns, "www.test.", "AAAA", &[]).filter(|r| rcode(r) == 0)
    });
    assert_eq!(answers(&after), vec!["2001:db8::1"]);
}

#[test]
fn expired_answers_are_served_stale_when_every_upstream_fails() {
    if !support::require(&["knotd", "kdig"], false) {
        return;
    }
    let mut knot = Knot::start("");
    let body = format!(
        "{} cache: (max_ttl_s: 1, serve_stale_s: 3600),",
        knot_upstream(&knot, "udp")
    );
    let (ward, dns) = ward_with(&body);
    let fresh = kdig(dns, "www.test.", "A", &[]).unwrap();
    assert_eq!(ttls(&fresh), vec![1]);
    knot.stop();
    // Once the second has passed, the answer is expired; knot is gone.
    let stale = eventually("a stale answer", Duration::from_secs(10), || {
        kdig(dns, "www.test.", "A", &[]).filter(|r| ttls(r) == vec![30])
    });
    assert_eq!(rcode(&stale), 0);
    assert_eq!(answers(&stale), vec!["192.0.2.1"]);
    let stats = ward.request(r#"{"cmd":"stats"}"#);
    assert!(
        stats["stats"]["dns"]["cache_stale"].as_u64().unwrap() >= 1,
        "{stats}"
    );
}

/// A UDP socket that takes queries and never answers (a blackholed path).
fn silent_upstream() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

#[test]
fn the_fallback_chain_moves_past_dead_and_silent_upstreams() {
    if !support::require(&["knotd", "kdig"], false) {
        return;
    }
    let knot = Knot::start("");
    let refusing = Refusing::new();
    let closed = refusing.addr;
    let silent = silent_upstream();
    let body = format!(
        "upstreams: {{ \"dead\": (url: \"udp://{closed}\"), \"silent\": (url: \"udp://{}\"), \"knot\": (url: \"udp://{}\") }},\n\
         default: [\"dead\", \"knot\"],\n\
         routes: [ (qname_suffix: [\"www.test\"], qtype: [\"AAAA\"], to: [\"silent\", \"knot\"]) ],",
        silent.local_addr().unwrap(),
        knot.addr()
    );
    let (ward, dns) = ward_with(&body);
    let started = Instant::now();
    let reply = kdig(dns, "www.test.", "A", &[]).unwrap();
    assert_eq!(answers(&reply), vec!["192.0.2.1"]);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a refused port fails at once"
    );

    let started = Instant::now();
    let reply = kdig(dns, "www.test.", "AAAA", &[]).unwrap();
    assert_eq!(answers(&reply), vec!["2001:db8::1"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let metrics = ward.http_get("/metrics");
    assert!(
        metrics
            .contains("ward_dns_upstream_failures_total{upstream=\"silent\",kind=\"timeout\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("upstream=\"dead\",kind=\"peer_gone\""),
        "{metrics}"
    );

    // Three failures in a row mark the dead upstream down; from then on the
    // chain asks knot first and the dead one is left alone.
    for name in ["a1.load.test.", "a2.load.test."] {
        assert_eq!(rcode(&kdig(dns, name, "A", &[]).unwrap()), 0);
    }
    let dead = |ward: &Ward| {
        let stats = ward.request(r#"{"cmd":"stats"}"#);
        let dead = stats["stats"]["dns"]["upstreams"]["dead"].clone();
        (
            dead["up"].as_bool().unwrap(),
            dead["failures"].as_u64().unwrap(),
        )
    };
    let (up, failures) = dead(&ward);
    assert!(!up, "marked down after {failures} failures");
    for name in ["a3.load.test.", "a4.load.test."] {
        let started = Instant::now();
        assert_eq!(rcode(&kdig(dns, name, "A", &[]).unwrap()), 0);
        assert!(started.elapsed() < Duration::from_millis(300));
    }
    assert_eq!(
        dead(&ward),
        (false, failures),
        "a downed upstream is asked last"
    );
}

#[test]
fn ipv6_listeners_answer_and_the_cache_can_be_flushed() {
    if !support::require(&["knotd", "kdig"], false) {
        return;
    }
    let knot = Knot::start("");
    let upstream = knot.addr();
    let ward = Ward::start_with(|dir| {
        format!(
            "(admin: (socket: \"{}/admin.sock\"), dns: (listen: [\"127.0.0.1:0\", \"[::1]:0\"], \
             upstreams: {{ \"knot\": (url: \"udp://{upstream}\") }}))",
            dir.display()
        )
    });
    let (v4, v6) = (ward.dns_bound("127.0.0.1:0"), ward.dns_bound("[::1]:0"));
    assert_eq!(
        answers(&kdig(v6, "www.test.", "AAAA", &[]).unwrap()),
        vec!["2001:db8::1"]
    );
    assert_eq!(
        answers(&kdig(v6, "www.test.", "A", &["+tcp"]).unwrap()),
        vec!["192.0.2.1"]
    );
    assert_eq!(
        answers(&kdig(v4, "www.test.", "A", &[]).unwrap()),
        vec!["192.0.2.1"]
    );
    let flushed = ward.ctl(&["cache", "flush"]);
    assert!(flushed.status.success());
    assert_eq!(
        String::from_utf8(flushed.stdout).unwrap(),
        "flushed 2 cached answers\n"
    );
    let stats = ward.request(r#"{"cmd":"stats"}"#);
    assert_eq!(stats["stats"]["dns"]["cache_entries"], 0);
}

#[test]
fn race_takes_the_first_good_answer() {
    if !support::require(&["knotd", "kdig"], false) {
        return;
    }
    let knot = Knot::start("");
    let silent = silent_upstream();
    let body = format!(
        "upstreams: {{ \"silent\": (url: \"udp://{}\"), \"knot\": (url: \"udp://{}\") }},\n\
         default: [\"silent\", \"knot\"], strategy: Race,",
        silent.local_addr().unwrap(),
        knot.addr()
    );
    let (_ward, dns) = ward_with(&body);
    let started = Instant::now();
    let reply = kdig(dns, "www.test.", "A", &[]).unwrap();
    assert_eq!(answers(&reply), vec!["192.0.2.1"]);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "no waiting for the silent one"
    );
}

#[test]
fn malformed_queries_get_formerr_and_stray_responses_are_dropped() {
    if !support::require(&["knotd", "kdig"], false) {
        return;
    }
    let knot = Knot::start("");
    let (ward, dns) = ward_with(&knot_upstream(&knot, "udp"));
    let wait = Duration::from_millis(500);

    let mut garbage = query("www.test.", RecordType::A);
    garbage.truncate(16);
    let reply = Message::from_vec(&udp_exchange(dns, &garbage, wait).expect("FORMERR")).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(
        reply.metadata.id,
        u16::from_be_bytes([garbage[0], garbage[1]])
    );

    let mut notify = query("www.test.", RecordType::A);
    notify[2] |= 4 << 3;
    let reply = Message::from_vec(&udp_exchange(dns, &notify, wait).unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);

    let mut response = query("www.test.", RecordType::A);
    response[2] |= 0x80;
    assert!(
        udp_exchange(dns, &response, wait).is_none(),
        "QR=1 is never answered"
    );
    assert!(
        udp_exchange(dns, &[1, 2, 3, 4, 5], wait).is_none(),
        "no header, no answer"
    );

    // The listener is fine and counted what it dropped.
    assert_eq!(
        answers(&kdig(dns, "www.test.", "A", &[]).unwrap()),
        vec!["192.0.2.1"]
    );
    let metrics = ward.http_get("/metrics");
    assert!(
        metrics.contains("ward_dns_dropped_total{reason=\"response\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ward_dns_dropped_total{reason=\"short\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ward_dns_queries_total{transport=\"udp\",rcode=\"FORMERR\"} 1"),
        "{metrics}"
    );
}

#[test]
fn clients_outside_allow_get_refused() {
    if !support::require(&["knotd", "kdig"], false) {
        return;
    }
    let knot = Knot::start("");
    let body = format!("{} allow: [\"10.0.0.0/8\"],", knot_upstream(&knot, "udp"));
    let (ward, dns) = ward_with(&body);
    let reply = kdig(dns, "www.test.", "A", &[]).unwrap();
    assert_eq!(rcode(&reply), 5);
    let tcp = kdig(dns, "www.test.", "A", &["+tcp"]).unwrap();
    assert_eq!(rcode(&tcp), 5);
    let metrics = ward.http_get("/metrics");
    assert!(
        metrics.contains("ward_dns_refused_total{reason=\"acl\"} 2"),
        "{metrics}"
    );
}

#[test]
fn a_half_closed_tcp_client_gets_every_answer_then_ward_closes() {
    if !support::require(&["knotd", "kdig"], false) {
        return;
    }
    let knot = Knot::start("");
    let (_ward, dns) = ward_with(&knot_upstream(&knot, "udp"));
    let mut stream = TcpStream::connect(dns).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for (name, qtype) in [
        ("www.test.", RecordType::A),
        ("www.test.", RecordType::AAAA),
        ("nope.test.", RecordType::A),
    ] {
        write_framed(&mut stream, &query(name, qtype));
    }
    stream.shutdown(Shutdown::Write).unwrap();
    let mut replies = tcp_exchange(&mut stream, 3);
    replies.sort_by_key(|m| {
        (
            m.queries[0].query_type() == RecordType::AAAA,
            m.metadata.response_code == ResponseCode::NXDomain,
        )
    });
    assert_eq!(replies[0].answers.len(), 1);
    assert_eq!(replies[1].metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(replies[2].queries[0].query_type(), RecordType::AAAA);
    let mut rest = Vec::new();
    assert_eq!(
        stream.read_to_end(&mut rest).unwrap(),
        0,
        "ward closed its side"
    );
}

fn node(ward: &Ward, path: &str) -> Value {
    ward.node(path).unwrap_or_else(|| panic!("no {path}"))
}

#[test]
fn a_listener_whose_socket_is_destroyed_comes_back() {
    if !support::require(&["knotd", "kdig", "ss"], false) {
        return;
    }
    let knot = Knot::start("");
    let (ward, dns) = ward_with(&knot_upstream(&knot, "udp"));
    for (proto, path) in [
        ("-u", format!("dns/listeners/udp:{LISTEN}")),
        ("-t", format!("dns/listeners/tcp:{LISTEN}")),
    ] {
        let before = node(&ward, &path);
        let killed = Command::new("ss")
            .args(["-K", proto, "-a", "src", &dns.to_string()])
            .output()
            .unwrap();
        assert!(killed.status.success(), "{killed:?}");
        let after = eventually("listener rebound", Duration::from_secs(10), || {
            let n = ward.node(&path)?;
            (n["status"] == "running" && n["id"] != before["id"]).then_some(n)
        });
        assert_eq!(after["restarts"], 1);
        // The socket's own failure, typed where it was seen.
        assert_eq!(after["last_exit_class"], "socket_dead", "{after}");
    }
    assert_eq!(
        answers(&kdig(dns, "www.test.", "A", &[]).unwrap()),
        vec!["192.0.2.1"]
    );
    assert_eq!(
        answers(&kdig(dns, "www.test.", "AAAA", &["+tcp"]).unwrap()),
        vec!["2001:db8::1"]
    );
}

/// A DNS-over-TCP server in front of knot that, like a server with a
/// per-connection query limit, answers `per_conn` queries on a connection
/// and then closes it (with further queries unread).
fn closing_tcp_upstream(
    knot: SocketAddr,
    per_conn: usize,
    stop: Arc<AtomicBool>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    let closed_count = closed.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut stream) = stream else { continue };
            let closed = closed_count.clone();
            std::thread::spawn(move || {
                for _ in 0..per_conn {
                    let mut len = [0u8; 2];
                    if stream.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    if stream.read_exact(&mut q).is_err() {
                        return;
                    }
                    let Some(answer) = udp_exchange(knot, &q, Duration::from_secs(1)) else {
                        return;
                    };
                    write_framed(&mut stream, &answer);
                }
                closed.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    (addr, closed)
}

#[test]
fn a_tcp_upstream_that_closes_connections_mid_load_loses_no_query() {
    if !support::require(&["knotd", "kdig"], false) {
        return;
    }
    let knot = Knot::start("");
    let stop = Arc::new(AtomicBool::new(false));
    let (proxy, closed) = closing_tcp_upstream(knot.addr(), 40, stop.clone());
    let body = format!("upstreams: {{ \"knot\": (url: \"tcp://{proxy}\") }}, default: [\"knot\"],");
    let (_ward, dns) = ward_with(&body);

    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 100;
    let failures = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let failures = failures.clone();
            std::thread::spawn(move || {
                for i in 0..PER_CLIENT {
                    let q = query(&format!("c{c}-q{i}.load.test."), RecordType::A);
                    let ok = udp_exchange(dns, &q, Duration::from_secs(3))
                        .and_then(|a| Message::from_vec(&a).ok())
                        .is_some_and(|m| {
                            m.metadata.response_code == ResponseCode::NoError
                                && m.answers.len() == 1
                        });
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(
        closed.load(Ordering::Relaxed) >= 10,
        "the upstream closed connections mid-load"
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no query lost");
}

#[test]
fn the_dns_subtree_shows_upstreams_listeners_and_connections() {
    if !support::require(&["knotd", "kdig"], false) {
        return;
    }
    let knot = Knot::start("");
    let (ward, dns) = ward_with(&knot_upstream(&knot, "tcp"));
    assert_eq!(
        answers(&kdig(dns, "www.test.", "A", &[]).unwrap()),
        vec!["192.0.2.1"]
    );
    let tree = ward.tree();
    let kinds: Vec<(String, String)> = walk(&tree)
        .iter()
        .filter(|n| n["path"].as_str().unwrap().starts_with("dns/"))
        .map(|n| {
            (
                n["path"].as_str().unwrap().to_string(),
                n["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = vec![
        ("dns/upstreams".to_string(), "supervisor".to_string()),
        ("dns/upstreams/knot".to_string(), "dns-upstream".to_string()),
        (
            "dns/upstreams/knot/conn-1".to_string(),
            "dns-upstream-conn".to_string(),
        ),
        ("dns/listeners".to_string(), "supervisor".to_string()),
        (
            format!("dns/listeners/udp:{LISTEN}"),
            "dns-listener-udp".to_string(),
        ),
        (
            format!("dns/listeners/tcp:{LISTEN}"),
            "dns-listener-tcp".to_string(),
        ),
    ];
    assert_eq!(kinds, expected);
    // Killing the connection by path: the next query opens another.
    let out = ward.ctl(&["kill", "dns/upstreams/knot/conn-1"]);
    assert!(out.status.success());
    assert_eq!(
        answers(&kdig(dns, "www.test.", "AAAA", &[]).unwrap()),
        vec!["2001:db8::1"]
    );
    eventually("conn-2", Duration::from_secs(5), || {
        ward.node("dns/upstreams/knot/conn-2")
    });
}

/// Direct, every UDP query to an upstream leaves from a socket of its own
/// on a fresh random port (RFC 5452), and a forgery with the wrong id that
/// reaches that port first is skipped.
#[test]
fn every_upstream_query_has_its_own_port_and_forgeries_are_skipped() {
    let upstream = Recorder::start();
    let (_ward, dns) = ward_with(&format!(
        "upstreams: {{ \"rec\": (url: \"udp://{}\") }}, default: [\"rec\"],",
        upstream.addr()
    ));
    const QUERIES: usize = 40;
    for i in 0..QUERIES {
        let q = query(&format!("q{i}.example."), RecordType::A);
        let reply = udp_exchange(dns, &q, Duration::from_secs(2)).expect("an answer");
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            reply.answers[0].data.to_string(),
            "192.0.2.1",
            "the forgery was taken"
        );
    }
    let ports = upstream.ports();
    assert_eq!(ports.len(), QUERIES, "one upstream query per miss");
    let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
    // The kernel picks each port at random: two of forty may meet.
    assert!(distinct.len() >= QUERIES - 2, "ports {ports:?}");
}

/// A query that gets no answer gives its socket back at its deadline.
#[test]
fn unanswered_upstream_queries_close_their_sockets() {
    let silent = silent_upstream();
    let (ward, dns) = ward_with(&format!(
        "upstreams: {{ \"silent\": (url: \"udp://{}\") }}, default: [\"silent\"], timeout_ms: 5000,",
        silent.local_addr().unwrap()
    ));
    // One query first, so whatever ward opens once is open.
    let _ = udp_exchange(
        dns,
        &query("first.example.", RecordType::A),
        Duration::from_secs(6),
    );
    let before = ward.open_fds();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..30 {
        let q = query(&format!("n{i}.example."), RecordType::A);
        client.send_to(&q, dns).unwrap();
    }
    // Well within the queries' 5 s deadline, even on a loaded machine.
    eventually("a socket per waiting query", Duration::from_secs(4), || {
        (ward.open_fds() >= before + 30).then_some(())
    });
    eventually(
        "the sockets closed at the deadline",
        Duration::from_secs(8),
        || (ward.open_fds() <= before).then_some(()),
    );
}

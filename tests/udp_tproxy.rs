//! The UDP relay on a router, in network namespaces this test builds:
//! a client namespace, a router namespace running ward behind nftables
//! TPROXY rules, and an upstream namespace with a UDP echo server and two
//! SOCKS5 nodes (danted). Flows from the client reach the echo server
//! through the group, and answers come back from the original destination.
//! The node in use is killed while flows run: each flow loses at most one
//! datagram, moves to the other node, fails over once, and ward keeps no
//! CLOSE-WAIT socket. The client's DNS to ward's own address is answered by
//! ward's DNS (the rules leave local destinations alone), not relayed.
//! Needs root (namespaces, nftables).

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use support::dns::query;
use support::netns::{echo_server, echo_to, link, Netns};
use support::socks::Dante;
use support::tproxy::route_to_tproxy;
use support::{dialer, while_flowing, Ward};

const TPROXY_PORT: u16 = 12345;
const ECHO: &str = "10.77.2.2:9000";
const ECHO6: &str = "[fd77:2::2]:9000";

/// Sends `i` to the echo server and waits for it, checking it comes back
/// from the echo server's address.
fn echo(client: &UdpSocket, i: u32) -> bool {
    echo_to(client, ECHO, i)
}

#[test]
fn a_router_relays_tproxied_flows_and_moves_them_off_a_dead_node() {
    // Root for the network namespaces and the nftables rules.
    if !support::require(&["danted", "nft", "ip", "ss", "sysctl"], true) {
        return;
    }
    let (client_ns, router, upstream) = (Netns::new("wc"), Netns::new("wr"), Netns::new("wu"));
    let (client_if, router_c) = link(&client_ns, "10.77.1.2/24", &router, "10.77.1.1/24", "c");
    let (router_u, upstream_if) = link(&router, "10.77.2.1/24", &upstream, "10.77.2.2/24", "u");
    for (ns, addr, dev) in [
        (&client_ns, "fd77:1::2/64", &client_if),
        (&router, "fd77:1::1/64", &router_c),
        (&router, "fd77:2::1/64", &router_u),
        (&upstream, "fd77:2::2/64", &upstream_if),
    ] {
        ns.exec(&["ip", "-6", "addr", "add", addr, "dev", dev, "nodad"]);
    }
    client_ns.exec(&["ip", "route", "add", "default", "via", "10.77.1.1"]);
    upstream.exec(&["ip", "route", "add", "default", "via", "10.77.2.1"]);
    client_ns.exec(&["ip", "-6", "route", "add", "default", "via", "fd77:1::1"]);
    upstream.exec(&["ip", "-6", "route", "add", "default", "via", "fd77:2::1"]);
    // The rules a router uses (docs/operations.md): datagrams for other
    // hosts go to ward's tproxy socket; local destinations are left alone.
    route_to_tproxy(&router, TPROXY_PORT);

    let stop = Arc::new(AtomicBool::new(false));
    echo_server(&upstream, ECHO, stop.clone());
    echo_server(&upstream, ECHO6, stop.clone());
    let mut nodes = [
        Dante::start_at(Some(&upstream.name), [10, 77, 2, 2].into(), 1081),
        Dante::start_at(Some(&upstream.name), [10, 77, 2, 2].into(), 1082),
    ];
    let ward = Ward::start_in_netns(&router.name, |dir| {
        format!(
            "(\n admin: (socket: \"{}/admin.sock\"),\n log: (level: \"debug\"),\n\
             dialers: {{ \"n1\": Socks5((server: \"10.77.2.2:1081\")), \"n2\": Socks5((server: \"10.77.2.2:1082\")) }},\n\
             groups: {{ \"nodes\": (dialers: [\"n1\", \"n2\"], policy: Fixed(0)) }},\n\
             dns: (listen: [\"10.77.1.1:53\"], upstreams: {{ \"up\": (url: \"udp://10.77.2.2:53\") }}, default: [\"up\"],\n\
             records: [ (name: \"router.lan\", type: A, value: \"10.77.1.1\") ]),\n\
             udp: (inbounds: [ Tproxy((listen: \"0.0.0.0:{TPROXY_PORT}\")), Tproxy((listen: \"[::]:{TPROXY_PORT}\")) ],\n\
             routes: [ (dst: [\"fd77::/16\"], to: \"direct\") ], default: \"nodes\"),\n)\n",
            dir.display()
        )
    });

    let clients: Vec<UdpSocket> = (0..4)
        .map(|_| {
            let socket = client_ns.enter(|| UdpSocket::bind("10.77.1.2:0").unwrap());
            socket
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            socket
        })
        .collect();
    for client in &clients {
        assert!(
            echo(client, 0),
            "answered from the original destination\n{}",
            ward.log()
        );
    }

    let lost = while_flowing(&clients, 40, echo, |flowing| {
        // Every flow is going through n1.
        flowing.wait_answered(3 * clients.len());
        nodes[0].kill();
        let killed = Instant::now();
        // The claim is about ward's sockets 1 s after the kill: sleep to
        // that moment and look. Not a wait for a condition: a poll could
        // pass before the dead node's FINs even arrived.
        std::thread::sleep(Duration::from_secs(1).saturating_sub(killed.elapsed()));
        let waiting = router.output(&["ss", "-Htn", "state", "close-wait"]);
        assert!(
            !waiting.contains("10.77.2.2:1081"),
            "CLOSE-WAIT to n1: {waiting}"
        );
    });
    assert!(
        lost.iter().all(|&n| n <= 1),
        "lost per flow: {lost:?}\n{}",
        ward.log()
    );
    let stats = ward.request(r#"{"cmd":"stats"}"#);
    assert_eq!(
        stats["stats"]["udp"]["failovers"], 4,
        "one failover per flow: {stats}"
    );

    // DNS to ward's own address on the router: answered by ward's DNS.
    let asker = client_ns.enter(|| UdpSocket::bind("10.77.1.2:0").unwrap());
    asker
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    asker
        .send_to(&query("router.lan.", RecordType::A), "10.77.1.1:53")
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = asker.recv_from(&mut buf).expect("a DNS answer");
    assert_eq!(from, "10.77.1.1:53".parse::<SocketAddr>().unwrap());
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(answer.answers.len(), 1, "{answer:?}");
    assert!(!ward.log().contains("Address already in use"));

    let created = ward.request(r#"{"cmd":"stats"}"#)["stats"]["udp"]["created"].clone();
    // Rules that capture even traffic for the router itself: DNS to
    // ward's own address is still answered by ward, from its listener's
    // socket, without binding :53 again.
    router.exec(&["nft", "flush", "chain", "inet", "ward", "prerouting"]);
    router.exec(&[
        "nft",
        "add",
        "rule",
        "inet",
        "ward",
        "prerouting",
        "meta",
        "l4proto",
        "udp",
        "tproxy",
        "ip",
        "to",
        &format!(":{TPROXY_PORT}"),
        "meta",
        "mark",
        "set",
        "1",
        "accept",
    ]);
    asker
        .send_to(&query("router.lan.", RecordType::A), "10.77.1.1:53")
        .unwrap();
    let (n, from) = asker
        .recv_from(&mut buf)
        .expect("a DNS answer through tproxy");
    assert_eq!(from, "10.77.1.1:53".parse::<SocketAddr>().unwrap());
    assert_eq!(Message::from_vec(&buf[..n]).unwrap().answers.len(), 1);
    assert!(
        !ward.log().contains("Address already in use"),
        "{}",
        ward.log()
    );
    assert_eq!(
        ward.request(r#"{"cmd":"stats"}"#)["stats"]["udp"]["created"],
        created,
        "not relayed: no flow for it"
    );

    // IPv6 through the [::] inbound, routed direct: answered from the
    // original IPv6 destination.
    let client6 = client_ns.enter(|| UdpSocket::bind("[fd77:1::2]:0").unwrap());
    client6
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Fresh links: the first IPv6 datagram may wait on neighbour
    // discovery longer than the client's timeout.
    assert!(
        (1..=3).any(|i| echo_to(&client6, ECHO6, i)),
        "IPv6 flow\n{}",
        ward.log()
    );
    assert!(echo_to(&client6, ECHO6, 4) && echo_to(&client6, ECHO6, 5));

    // The flows told n1's dialer what happened to them.
    let reply = ward.request(r#"{"cmd":"dialers"}"#);
    let n1 = &dialer(&reply, "n1")["udp"];
    assert!(n1["traffic_failures"].as_u64().unwrap() >= 1, "{n1}");
    stop.store(true, Ordering::Relaxed);
    drop(nodes);
}

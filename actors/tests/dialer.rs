//! A dialer's paths against peers on loopback: TCP through a SOCKS5 node
//! and what a dead node or a refusing destination does to its health, UDP
//! sessions and flows (direct and through an association) carrying every
//! datagram in order, an association's end seen at once, a direct dialer
//! bound to a device. Health bookkeeping without sockets is unit-tested in
//! the crate.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ward_actors::dialer::settings::DialerSpec;
use ward_actors::dialer::ProxyStream;
use ward_actors::dialer::{socks5, Blame, Stage, Track};
use ward_actors::net::udp_batch::Datagrams;
use ward_actors::IoClass;

use support::socks5_server::{tcp_echo, udp_echo, TestProxy};
use support::{dialer, direct, socks5_dialer};

async fn round_trip(stream: &mut ProxyStream) {
    stream.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn tcp_through_a_node_reports_latency_and_a_dead_node_downs_both_tracks() {
    let echo = tcp_echo().await;
    let proxy = TestProxy::start(None).await;
    let d = socks5_dialer(proxy.addr);
    let mut stream = d.connect_tcp(echo, Duration::from_secs(2)).await.unwrap();
    round_trip(&mut stream).await;
    assert!(d.health(Track::Tcp).last_latency().is_some());

    proxy.kill();
    let failure = d
        .connect_tcp(echo, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(
        (failure.stage, failure.blame),
        (Stage::ProxyConnect, Blame::Path)
    );
    // Reaching the node failed: the UDP track cannot work either.
    assert!(!d.health(Track::Tcp).is_up());
    assert!(!d.health(Track::Udp).is_up());
}

#[tokio::test]
async fn a_destination_refusing_through_a_node_is_not_the_nodes_fault() {
    let proxy = TestProxy::start(None).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let d = socks5_dialer(proxy.addr);
    let failure = d
        .connect_tcp(closed, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(failure.blame, Blame::Target);
    assert!(d.health(Track::Tcp).is_up());
}

/// Runs to one destination of one size leave segmented; every datagram
/// arrives whole and in order, direct and through a node. (Two
/// threads: the sinks block one while the test node relays.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_many_keeps_every_datagram_and_its_order() {
    let proxy = TestProxy::start(None).await;
    for dialer in [direct(), socks5_dialer(proxy.addr)] {
        let sinks = [
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        ];
        let [a, b] = [0, 1].map(|i| sinks[i].local_addr().unwrap());
        let session = dialer.udp_flow(a, Duration::from_secs(2)).await.unwrap();
        let mut sent: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        for i in 0..5 {
            sent.push((a, vec![i; 100]));
        }
        sent.push((a, vec![9; 30]));
        for i in 0..3 {
            sent.push((b, vec![20 + i; 100]));
        }
        for i in 0..2 {
            sent.push((a, vec![30 + i; 50]));
        }
        let datagrams: Vec<(SocketAddr, &[u8])> =
            sent.iter().map(|(to, d)| (*to, &d[..])).collect();
        session
            .send_many(&datagrams, &mut Datagrams::default())
            .unwrap();
        assert!(
            session.segments(),
            "loopback segments: the runs went as segmented sends"
        );
        for (i, sink) in sinks.iter().enumerate() {
            sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 256];
            for (_, expected) in sent.iter().filter(|(to, _)| *to == [a, b][i]) {
                let n = sink.recv(&mut buf).expect("every datagram arrives");
                assert_eq!(&buf[..n], &expected[..], "{:?}", dialer.spec);
            }
        }
    }
}

#[tokio::test]
async fn udp_through_an_association_and_its_end_is_seen() {
    let echo = udp_echo().await;
    let proxy = TestProxy::start(None).await;
    let d = socks5_dialer(proxy.addr);
    let mut session = d.udp_session(echo, Duration::from_secs(2)).await.unwrap();
    let mut control = session.take_control().expect("an association");
    session.try_send(b"hello").unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), session.recv(&mut buf))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&buf[..n], b"hello", "the relay's header is stripped");

    proxy.kill();
    let closed =
        tokio::time::timeout(Duration::from_secs(2), socks5::control_closed(&mut control)).await;
    assert!(closed.is_ok(), "the association's end is seen at once");
}

#[tokio::test]
async fn direct_binds_to_an_interface_and_fails_cleanly_on_a_missing_one() {
    let echo = tcp_echo().await;
    let lo = dialer(DialerSpec::Direct {
        mark: None,
        interface: Some("lo".into()),
    });
    let missing = dialer(DialerSpec::Direct {
        mark: None,
        interface: Some("nonexistent0".into()),
    });
    // Binding to a device needs CAP_NET_RAW: without root only the
    // missing device's half runs, and the skip of the other is recorded.
    if support::require(&[], true) {
        match lo.connect_tcp(echo, Duration::from_secs(2)).await {
            Ok(mut stream) => round_trip(&mut stream).await,
            Err(failure) => panic!("bound to lo: {failure}"),
        }
    }
    let failure = missing
        .connect_tcp(echo, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(failure.stage, Stage::TargetConnect);
    assert_ne!(failure.class, IoClass::Normal);
}

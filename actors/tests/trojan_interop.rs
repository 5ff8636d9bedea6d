//! The Trojan client against the real thing: trojan-gfw's `trojan` server
//! on loopback (`support::trojan_server`). CONNECT and UDP ASSOCIATE
//! round trips to echo servers, certificates checked against the right CA,
//! the wrong CA and none, and a wrong password that the node hands to its
//! fallback. Without `trojan` installed these tests fail as root or under
//! CI and record a skip otherwise (`support::require`).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use ward_actors::dialer::socks5::TargetAddr;
use ward_actors::dialer::trojan::{decode_udp, encode_udp, TrojanError, TrojanNode};

use support::socks5_server::{tcp_echo, udp_echo};
use support::trojan_server::{TrojanServer, FALLBACK_REPLY, PASSWORD};

const BOUND: Duration = Duration::from_secs(5);

fn have_trojan() -> bool {
    support::require(&["trojan"], false)
}

/// A node for `server` checked against its own CA, by the name `node.test`.
fn verified_node(server: &TrojanServer, password: &str) -> TrojanNode {
    let addr = server.addr.to_string();
    TrojanNode::new(&addr, password, Some("node.test"), Some(&server.ca), false).unwrap()
}

async fn echoes<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0; message.len()];
    timeout(BOUND, stream.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, message);
}

#[tokio::test]
async fn connect_round_trips_through_a_real_trojan_server() {
    if !have_trojan() {
        return;
    }
    let server = TrojanServer::start().await;
    let echo = tcp_echo().await;
    let node = verified_node(&server, PASSWORD);
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut tls = timeout(BOUND, node.connect(tcp, &TargetAddr::Ip(echo)))
        .await
        .unwrap()
        .unwrap();
    echoes(&mut tls, b"hello through trojan").await;
    echoes(&mut tls, &[0x5A; 20_000]).await;
}

#[tokio::test]
async fn udp_associate_round_trips_several_datagrams() {
    if !have_trojan() {
        return;
    }
    let server = TrojanServer::start().await;
    let echo = udp_echo().await;
    let node = verified_node(&server, PASSWORD);
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut tls = timeout(BOUND, node.udp_associate(tcp))
        .await
        .unwrap()
        .unwrap();
    let payloads: Vec<Vec<u8>> = (0..6u8)
        .map(|i| vec![i; 1 + usize::from(i) * 300])
        .collect();
    // One frame per write, then the rest in a single write.
    let target = TargetAddr::Ip(echo);
    for (i, payload) in payloads.iter().enumerate() {
        let mut frame = Vec::new();
        assert!(encode_udp(&target, payload, &mut frame));
        tls.write_all(&frame).await.unwrap();
        if i < 3 {
            let (from, back) = timeout(BOUND, read_datagram(&mut tls, &mut Vec::new()))
                .await
                .unwrap();
            assert_eq!((from, &back), (echo, payload));
        }
    }
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for _ in 3..payloads.len() {
        let (from, back) = timeout(BOUND, read_datagram(&mut tls, &mut buf))
            .await
            .unwrap();
        assert_eq!(from, echo);
        got.push(back);
    }
    got.sort();
    assert_eq!(got, payloads[3..]);
}

/// Reads until `buf` holds a whole frame; takes it off `buf`.
async fn read_datagram<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> (SocketAddr, Vec<u8>) {
    loop {
        if let Some(frame) = decode_udp(buf).unwrap() {
            let payload = buf[frame.payload.clone()].to_vec();
            buf.drain(..frame.len);
            return (frame.from, payload);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the node closed the association");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    if !have_trojan() {
        return;
    }
    let server = TrojanServer::start().await;
    let addr = server.addr.to_string();
    let node = TrojanNode::new(
        &addr,
        PASSWORD,
        Some("node.test"),
        Some(&server.other_ca),
        false,
    )
    .unwrap();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let target = TargetAddr::Ip(tcp_echo().await);
    let err = timeout(BOUND, node.connect(tcp, &target))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, TrojanError::Tls(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("certificate"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[tokio::test]
async fn skip_verify_accepts_the_node_by_its_address() {
    if !have_trojan() {
        return;
    }
    let server = TrojanServer::start().await;
    let echo = tcp_echo().await;
    // No sni: the name is 127.0.0.1, which the certificate does not carry.
    let node = TrojanNode::new(&server.addr.to_string(), PASSWORD, None, None, true).unwrap();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut tls = timeout(BOUND, node.connect(tcp, &TargetAddr::Ip(echo)))
        .await
        .unwrap()
        .unwrap();
    echoes(&mut tls, b"unverified but encrypted").await;
}

#[tokio::test]
async fn a_wrong_password_lands_on_the_fallback() {
    if !have_trojan() {
        return;
    }
    let server = TrojanServer::start().await;
    let echo = tcp_echo().await;
    let node = verified_node(&server, "not the password");
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut tls = timeout(BOUND, node.connect(tcp, &TargetAddr::Ip(echo)))
        .await
        .unwrap()
        .unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: node.test\r\n\r\n")
        .await
        .unwrap();
    let mut reply = vec![0; FALLBACK_REPLY.len()];
    timeout(BOUND, tls.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, FALLBACK_REPLY);
}

//! The SOCKS5 client against a real server on loopback (the crate's own
//! server side, in `support::socks5_server`): CONNECT with and without
//! authentication, to an address and to a name, a refused destination, UDP
//! ASSOCIATE, and a node killed under its connections. And against
//! scripted proxies, byte by byte: what it sends, how exactly it reads,
//! and what it makes of proxies that misbehave.

mod support;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use ward_actors::dialer::socks5::{
    connect, control_closed, decapsulate, encapsulate, udp_associate, Credentials, ReplyCode,
    Socks5Error, TargetAddr,
};
use ward_actors::IoClass;

use support::socks5_server::{tcp_echo, udp_echo, TestProxy};

const BOUND: Duration = Duration::from_secs(2);

// RFC 1928 and RFC 1929 bytes, as the scripted proxies write them.
const VERSION: u8 = 0x05;
const AUTH_VERSION: u8 = 0x01;
const METHOD_NONE: u8 = 0x00;
const METHOD_USER_PASS: u8 = 0x02;
const METHOD_UNACCEPTABLE: u8 = 0xFF;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

fn creds(username: &str, password: &str) -> Credentials {
    Credentials {
        username: username.into(),
        password: password.into(),
    }
}

/// A fake proxy for one connection: for each scripted response it reads
/// once (one client message) and writes the response; then it reads once
/// more, for a short while, and closes (with nothing unread, so a FIN and
/// not a reset). Returns what it read, one entry per read.
async fn fake_proxy(script: Vec<Vec<u8>>) -> (SocketAddr, JoinHandle<Vec<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut reads = Vec::new();
        let mut buf = [0u8; 1024];
        for response in script {
            let len = stream.read(&mut buf).await.unwrap();
            reads.push(buf[..len].to_vec());
            stream.write_all(&response).await.unwrap();
        }
        let last = timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
        if let Ok(Ok(len)) = last {
            reads.push(buf[..len].to_vec());
        }
        reads
    });
    (addr, task)
}

async fn connect_via(
    proxy: SocketAddr,
    credentials: Option<&Credentials>,
    target: &TargetAddr,
) -> Result<(TcpStream, TargetAddr), Socks5Error> {
    let stream = TcpStream::connect(proxy).await.unwrap();
    timeout(BOUND, connect(stream, credentials, target))
        .await
        .expect("handshake in time")
}

async fn assert_echoes(stream: &mut TcpStream) {
    stream.write_all(b"hello through socks").await.unwrap();
    let mut buf = [0u8; 19];
    timeout(BOUND, stream.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&buf, b"hello through socks");
}

#[tokio::test]
async fn connect_without_auth_carries_bytes() {
    let proxy = TestProxy::start(None).await;
    let echo = tcp_echo().await;
    let (mut stream, bound) = connect_via(proxy.addr, None, &TargetAddr::Ip(echo))
        .await
        .unwrap();
    assert!(matches!(bound, TargetAddr::Ip(addr) if addr.ip().is_loopback()));
    assert_echoes(&mut stream).await;
    assert_eq!(proxy.accepted(), 1);
}

#[tokio::test]
async fn connect_to_a_domain_name() {
    let proxy = TestProxy::start(None).await;
    let echo = tcp_echo().await;
    let target = TargetAddr::Domain("localhost".into(), echo.port());
    let (mut stream, _) = connect_via(proxy.addr, None, &target).await.unwrap();
    assert_echoes(&mut stream).await;
}

#[tokio::test]
async fn connect_with_auth() {
    let good = creds("ward", "s3cret");
    let proxy = TestProxy::start(Some(good.clone())).await;
    let target = TargetAddr::Ip(tcp_echo().await);

    let (mut stream, _) = connect_via(proxy.addr, Some(&good), &target).await.unwrap();
    assert_echoes(&mut stream).await;

    let err = connect_via(proxy.addr, Some(&creds("ward", "wrong")), &target)
        .await
        .unwrap_err();
    assert!(matches!(err, Socks5Error::AuthRejected), "{err:?}");
    assert_eq!(err.class(), IoClass::PathFailed);

    let err = connect_via(proxy.addr, None, &target).await.unwrap_err();
    assert!(matches!(err, Socks5Error::NoAcceptableMethod), "{err:?}");
}

#[tokio::test]
async fn connect_to_a_closed_port_is_refused() {
    let proxy = TestProxy::start(None).await;
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let err = connect_via(proxy.addr, None, &TargetAddr::Ip(closed))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Socks5Error::Reply(ReplyCode::ConnectionRefused)),
        "{err:?}"
    );
    assert_eq!(err.class(), IoClass::PeerGone);
}

#[tokio::test]
async fn udp_associate_relays_datagrams() {
    let proxy = TestProxy::start(None).await;
    let echo = udp_echo().await;
    let control = TcpStream::connect(proxy.addr).await.unwrap();
    let association = timeout(
        BOUND,
        udp_associate(control, None, SocketAddr::from(([0, 0, 0, 0], 0))),
    )
    .await
    .expect("associate in time")
    .unwrap();
    assert!(association.relay.ip().is_loopback());

    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut out = Vec::new();
    encapsulate(&TargetAddr::Ip(echo), b"ping", &mut out);
    socket.send_to(&out, association.relay).await.unwrap();

    let mut buf = [0u8; 1500];
    let (len, from) = timeout(BOUND, socket.recv_from(&mut buf))
        .await
        .expect("reply in time")
        .unwrap();
    assert_eq!(from, association.relay);
    let (source, payload) = decapsulate(&buf[..len]).unwrap();
    assert_eq!(source, TargetAddr::Ip(echo));
    assert_eq!(payload, b"ping");
}

#[tokio::test]
async fn kill_resets_connections_and_refuses() {
    let proxy = TestProxy::start(None).await;
    let echo = tcp_echo().await;
    let control = TcpStream::connect(proxy.addr).await.unwrap();
    let mut association = udp_associate(control, None, SocketAddr::from(([0, 0, 0, 0], 0)))
        .await
        .unwrap();
    let (mut tunnel, _) = connect_via(proxy.addr, None, &TargetAddr::Ip(echo))
        .await
        .unwrap();
    assert_eq!(proxy.accepted(), 2);

    proxy.kill();
    let refused = TcpStream::connect(proxy.addr).await.unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

    let closed = timeout(BOUND, control_closed(&mut association.control))
        .await
        .expect("control connection closed in time");
    assert_eq!(
        closed.map(|err| err.kind()),
        Some(io::ErrorKind::ConnectionReset)
    );
    let mut buf = [0u8; 1];
    let read = timeout(BOUND, tunnel.read(&mut buf))
        .await
        .expect("tunnel closed in time");
    assert_eq!(read.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(proxy.accepted(), 2);
}

#[tokio::test]
async fn credentials_that_cannot_be_encoded_fail_before_sending() {
    let target = TargetAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 9)));
    for bad in [creds(&"u".repeat(256), "p"), creds("u", ""), creds("", "p")] {
        let (addr, server) = fake_proxy(Vec::new()).await;
        let err = connect_via(addr, Some(&bad), &target).await.unwrap_err();
        assert!(matches!(err, Socks5Error::Protocol(_)), "{err:?}");
        assert_eq!(server.await.unwrap(), [Vec::<u8>::new()], "nothing sent");
    }
}

#[tokio::test]
async fn requests_are_sent_whole() {
    let (addr, server) = fake_proxy(vec![
        vec![VERSION, METHOD_USER_PASS],
        vec![AUTH_VERSION, 0],
        vec![VERSION, 0, 0, ATYP_IPV4, 10, 0, 0, 1, 0, 80],
    ])
    .await;
    let target = TargetAddr::Domain("example.org".into(), 443);
    connect_via(addr, Some(&creds("user", "pw")), &target)
        .await
        .unwrap();
    let reads = server.await.unwrap();
    assert_eq!(reads[0], [VERSION, 2, METHOD_NONE, METHOD_USER_PASS]);
    assert_eq!(reads[1], b"\x01\x04user\x02pw");
    assert_eq!(reads[2], b"\x05\x01\x00\x03\x0bexample.org\x01\xbb");
}

#[tokio::test]
async fn reply_is_read_exactly() {
    let mut reply = vec![VERSION, 0, 0, ATYP_DOMAIN, 5];
    reply.extend_from_slice(b"proxy\x10\x00tunnelled");
    let (addr, _server) = fake_proxy(vec![vec![VERSION, METHOD_NONE], reply]).await;
    let target = TargetAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 80)));
    let (mut stream, bound) = connect_via(addr, None, &target).await.unwrap();
    assert_eq!(bound, TargetAddr::Domain("proxy".into(), 0x1000));
    let mut rest = [0u8; 9];
    stream.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"tunnelled");

    let v6_reply = [&[VERSION, 0, 0, ATYP_IPV6][..], &[0; 15], &[1, 0, 53, b'!']].concat();
    let (addr, _server) = fake_proxy(vec![vec![VERSION, METHOD_NONE], v6_reply]).await;
    let (mut stream, bound) = connect_via(addr, None, &target).await.unwrap();
    assert_eq!(bound, TargetAddr::Ip("[::1]:53".parse().unwrap()));
    let mut rest = [0u8; 1];
    stream.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"!");
}

#[tokio::test]
async fn unspecified_relay_means_the_proxy() {
    let (addr, _server) = fake_proxy(vec![
        vec![VERSION, METHOD_NONE],
        vec![VERSION, 0, 0, ATYP_IPV4, 0, 0, 0, 0, 0x12, 0x34],
    ])
    .await;
    let control = TcpStream::connect(addr).await.unwrap();
    let association = udp_associate(control, None, "127.0.0.1:5000".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        association.relay,
        SocketAddr::from(([127, 0, 0, 1], 0x1234))
    );
}

#[tokio::test]
async fn misbehaving_proxies() {
    let target = TargetAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 80)));
    let ok_method = vec![VERSION, METHOD_NONE];
    // Each script, and the error it must give (as Debug shows it).
    let cases = [
        // A SOCKS4-ish answer to the greeting.
        (vec![vec![4, 0]], "Protocol"),
        // Accepts the method, then closes on the request.
        (vec![ok_method.clone()], "Closed"),
        (
            vec![vec![VERSION, METHOD_UNACCEPTABLE]],
            "NoAcceptableMethod",
        ),
        // Picks username/password, which was not offered.
        (vec![vec![VERSION, METHOD_USER_PASS]], "NoAcceptableMethod"),
        (
            vec![ok_method.clone(), vec![4, 0, 0, 1, 0, 0, 0, 0, 0, 0]],
            "Protocol",
        ),
        (
            vec![ok_method.clone(), vec![VERSION, 0, 0, 9, 0, 0]],
            "Protocol",
        ),
        // A reply cut short.
        (
            vec![ok_method.clone(), vec![VERSION, 0, 0, ATYP_IPV4, 1]],
            "Closed",
        ),
        (
            vec![ok_method.clone(), vec![VERSION, 2, 0, ATYP_IPV4]],
            "Reply(NotAllowed)",
        ),
    ];
    for (script, expected) in cases {
        let (addr, _server) = fake_proxy(script.clone()).await;
        let err = connect_via(addr, None, &target).await.unwrap_err();
        let shown = format!("{err:?}");
        assert!(
            shown.starts_with(expected),
            "script {script:?} gave {shown}"
        );
    }
}

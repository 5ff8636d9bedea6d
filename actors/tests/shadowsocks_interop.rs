//! The Shadowsocks client against real nodes started on loopback:
//! shadowsocks-libev's `ss-server` for the classic methods and
//! shadowsocks-rust's `ssserver` for the 2022 ones. Through each, a TCP
//! echo server answers what was sent (a short message and one of many
//! chunks) and a UDP echo server answers a datagram.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::process::{Child, Command};
use tokio::time::timeout;
use ward_actors::dialer::shadowsocks::{client, Key, Method, UdpCodec};
use ward_actors::dialer::socks5::TargetAddr;

use support::socks5_server::{tcp_echo, udp_echo};

const BOUND: Duration = Duration::from_secs(10);

/// Which implementation serves a method.
#[derive(Clone, Copy)]
enum Server {
    Libev,
    Rust,
}

impl Server {
    fn tool(self) -> &'static str {
        match self {
            Server::Libev => "ss-server",
            Server::Rust => "ssserver",
        }
    }

    fn command(self, port: u16, method: Method, password: &str) -> Command {
        let mut command = Command::new(self.tool());
        match self {
            // -u: UDP relay as well as TCP.
            Server::Libev => command.args(["-s", "127.0.0.1", "-p", &port.to_string(), "-u"]),
            // -U: TCP and UDP.
            Server::Rust => command.args(["-s", &format!("127.0.0.1:{port}"), "-U"]),
        };
        command.args(["-m", method.name(), "-k", password]);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        command
    }
}

/// A node running on loopback; killed when dropped.
struct Node {
    addr: SocketAddr,
    _child: Child,
}

/// A port free for both TCP and UDP just now.
async fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).await.is_ok() {
            return port;
        }
    }
}

/// Starts `server` on a free port; another port if it fails to start
/// (the port was taken between choosing and binding).
async fn start(server: Server, method: Method, password: &str) -> Node {
    for _ in 0..5 {
        let port = free_port().await;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut child = server.command(port, method, password).spawn().unwrap();
        let deadline = Instant::now() + BOUND;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if TcpStream::connect(addr).await.is_ok() {
                return Node {
                    addr,
                    _child: child,
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("{} does not start with {method}", server.tool());
}

/// The password for `method`: a phrase, or a fixed base64 PSK.
fn password(method: Method) -> String {
    match method {
        Method::Blake3Aes128Gcm => "MDEyMzQ1Njc4OWFiY2RlZg==".into(),
        Method::Blake3Aes256Gcm | Method::Blake3Chacha20Poly1305 => {
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into()
        }
        _ => "ward interop password".into(),
    }
}

async fn echoes_through(server: Server, method: Method) {
    if !support::require(&[server.tool()], false) {
        return;
    }
    let password = password(method);
    let key = Arc::new(Key::new(method, &password).unwrap());
    let node = start(server, method, &password).await;
    tcp_echoes(&node, &key, b"hello through shadowsocks").await;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    tcp_echoes(&node, &key, &big).await;
    udp_echoes(&node, &key).await;
}

/// Sends `data` to a TCP echo server through the node and reads it back.
async fn tcp_echoes(node: &Node, key: &Arc<Key>, data: &[u8]) {
    let echo = TargetAddr::Ip(tcp_echo().await);
    let stream = TcpStream::connect(node.addr).await.unwrap();
    let mut stream = client(stream, key.clone(), &echo).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(&mut stream);
    let write = async {
        writer.write_all(data).await.unwrap();
        writer.flush().await.unwrap();
    };
    let read = async {
        let mut back = vec![0u8; data.len()];
        reader.read_exact(&mut back).await.map(|_| back)
    };
    let ((), back) = timeout(BOUND, async { tokio::join!(write, read) })
        .await
        .expect("the echo in time");
    let back = back.unwrap_or_else(|e| panic!("{}: {e}", key.method()));
    assert!(back == data, "{}: the echo differs", key.method());
}

/// Sends a datagram to a UDP echo server through the node and decodes
/// the reply (sent again, a few times, if lost).
async fn udp_echoes(node: &Node, key: &Arc<Key>) {
    let echo = udp_echo().await;
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let mut codec = UdpCodec::new(key.clone());
    let mut datagram = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..10 {
        datagram.clear();
        codec
            .encode(&TargetAddr::Ip(echo), b"ping", &mut datagram)
            .unwrap();
        socket.send_to(&datagram, node.addr).await.unwrap();
        let Ok(received) = timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await else {
            continue;
        };
        let (len, from) = received.unwrap();
        assert_eq!(from, node.addr);
        let (source, payload) = codec.decode(&mut buf[..len]).unwrap();
        assert_eq!(source, echo, "{}", key.method());
        assert_eq!(&buf[payload], b"ping", "{}", key.method());
        return;
    }
    panic!("{}: no UDP echo through the node", key.method());
}

#[tokio::test]
async fn aes_128_gcm_echoes_through_shadowsocks_libev() {
    echoes_through(Server::Libev, Method::Aes128Gcm).await;
}

#[tokio::test]
async fn aes_256_gcm_echoes_through_shadowsocks_libev() {
    echoes_through(Server::Libev, Method::Aes256Gcm).await;
}

#[tokio::test]
async fn chacha20_ietf_poly1305_echoes_through_shadowsocks_libev() {
    echoes_through(Server::Libev, Method::Chacha20IetfPoly1305).await;
}

#[tokio::test]
async fn blake3_aes_128_gcm_echoes_through_shadowsocks_rust() {
    echoes_through(Server::Rust, Method::Blake3Aes128Gcm).await;
}

#[tokio::test]
async fn blake3_aes_256_gcm_echoes_through_shadowsocks_rust() {
    echoes_through(Server::Rust, Method::Blake3Aes256Gcm).await;
}

#[tokio::test]
async fn blake3_chacha20_poly1305_echoes_through_shadowsocks_rust() {
    echoes_through(Server::Rust, Method::Blake3Chacha20Poly1305).await;
}

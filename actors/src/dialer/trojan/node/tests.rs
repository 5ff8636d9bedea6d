//! The client against a scripted node on loopback (rustls as the server):
//! the exact bytes of each request, that they leave without a reply, and
//! how certificates are checked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use super::*;

const BOUND: Duration = Duration::from_secs(5);
/// SHA-224("abc"), the example of FIPS 180-2.
const ABC_HASH: &[u8; HASH_LEN] = b"23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7";

/// A CA, and a certificate it signed for `node.test` and 127.0.0.1.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("ward-trojan-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let names = vec!["node.test".to_string(), "127.0.0.1".to_string()];
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params
            .signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key))
            .unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        Pki {
            dir,
            ca: ca_path,
            chain: vec![cert.der().clone()],
            key: key.serialize_der(),
        }
    }

    /// Accepts one TLS connection and returns the first `n` bytes it got.
    async fn node_reading(&self, n: usize) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut got = vec![0; n];
            tls.read_exact(&mut got).await.unwrap();
            got
        });
        (addr, task)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn expected_request(cmd: u8, addr: &[u8]) -> Vec<u8> {
    [&ABC_HASH[..], b"\r\n", &[cmd], addr, b"\r\n"].concat()
}

#[test]
fn the_password_hash_is_lower_case_hex_sha224() {
    assert_eq!(&password_hash("abc"), ABC_HASH);
}

#[tokio::test]
async fn connect_sends_the_request_without_waiting_for_a_reply() {
    let pki = Pki::new("connect");
    let target = TargetAddr::Domain("example.org".into(), 443);
    let want = expected_request(CMD_CONNECT, b"\x03\x0bexample.org\x01\xbb");
    let (addr, node) = pki.node_reading(want.len()).await;
    let trojan = TrojanNode::new("node.test:443", "abc", None, Some(&pki.ca), false).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    // The node never writes: connect must return on its own.
    let _tls = timeout(BOUND, trojan.connect(tcp, &target))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(timeout(BOUND, node).await.unwrap().unwrap(), want);
}

#[tokio::test]
async fn udp_associate_asks_for_the_unspecified_address() {
    let pki = Pki::new("udp");
    let want = expected_request(CMD_UDP_ASSOCIATE, &[1, 0, 0, 0, 0, 0, 0]);
    let (addr, node) = pki.node_reading(want.len()).await;
    // No sni: the server's IP address is the name checked.
    let server = addr.to_string();
    let trojan = TrojanNode::new(&server, "abc", None, Some(&pki.ca), false).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let _tls = timeout(BOUND, trojan.udp_associate(tcp))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(timeout(BOUND, node).await.unwrap().unwrap(), want);
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_unless_verification_is_skipped() {
    let pki = Pki::new("name");
    let target = TargetAddr::Ip("127.0.0.1:80".parse().unwrap());
    let (addr, _node) = pki.node_reading(1).await;
    let wrong = TrojanNode::new(
        "node.test:443",
        "abc",
        Some("other.test"),
        Some(&pki.ca),
        false,
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = timeout(BOUND, wrong.connect(tcp, &target))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, TrojanError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");

    let want = expected_request(CMD_CONNECT, &[1, 127, 0, 0, 1, 0, 80]);
    let (addr, node) = pki.node_reading(want.len()).await;
    let skip = TrojanNode::new("node.test:443", "abc", Some("other.test"), None, true).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let _tls = timeout(BOUND, skip.connect(tcp, &target))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(timeout(BOUND, node).await.unwrap().unwrap(), want);
}

#[tokio::test]
async fn an_unencodable_target_fails_before_any_io() {
    let trojan = TrojanNode::new("node.test:443", "abc", None, None, false).unwrap();
    let (client, _server) = tokio::io::duplex(64);
    let err = trojan
        .connect(client, &TargetAddr::Domain(String::new(), 80))
        .await
        .unwrap_err();
    assert!(matches!(err, TrojanError::Target(_)), "{err:?}");
}

#[test]
fn server_names_come_from_sni_or_the_host() {
    let name = |server: &str, sni: Option<&str>| {
        TrojanNode::new(server, "pw", sni, None, false).map(|n| n.server_name.to_str().into_owned())
    };
    assert_eq!(name("node.example:443", None).unwrap(), "node.example");
    assert_eq!(name("[2001:db8::1]:443", None).unwrap(), "2001:db8::1");
    assert_eq!(name("192.0.2.1:443", None).unwrap(), "192.0.2.1");
    assert_eq!(
        name("192.0.2.1:443", Some("cdn.example")).unwrap(),
        "cdn.example"
    );
    for bad in ["node.example", "node.example:http", ":443", "[]:443"] {
        let err = name(bad, None).unwrap_err();
        assert!(matches!(err, TrojanError::ServerName(_)), "{bad}: {err:?}");
    }
    assert!(matches!(
        name("node.example:443", Some("bad name!")),
        Err(TrojanError::ServerName(_))
    ));
}

#[test]
fn neither_debug_nor_errors_show_the_password() {
    let node = TrojanNode::new("node.test:443", "s3cret-pw", None, None, false).unwrap();
    let shown = format!("{node:?}");
    let hash = String::from_utf8(password_hash("s3cret-pw").to_vec()).unwrap();
    assert!(
        !shown.contains("s3cret-pw") && !shown.contains(&hash),
        "{shown}"
    );
    let err = TrojanNode::new("node.test", "s3cret-pw", None, None, false).unwrap_err();
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
}

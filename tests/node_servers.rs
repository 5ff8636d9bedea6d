//! The node servers of tests/support/nodes.rs, proven without ward: real
//! clients of each protocol (v2ray for the classic Shadowsocks methods and
//! Trojan, shadowsocks-rust's sslocal for the 2022 methods) relay a UDP
//! datagram through each to a loopback echo server and back. A wrong
//! password gets nothing back (a Trojan one reaches the fallback server
//! instead), a Trojan client that does not trust the test's CA gets
//! nothing, and a killed node relays nothing until it is restarted on its
//! port. What ward's tests through these nodes assume, checked here.

mod support;

use std::net::SocketAddr;

use serde_json::{json, Value};
use support::nodes::{
    key_2022, password, Daemon, SsLibev, SsRust, TrojanServer, LIBEV_METHODS, METHODS_2022, SNI,
};
use support::udp::{Client, Peer};
use support::{eventually, require};

/// Datagrams each check sends through a client; every one must come back.
const ROUND: u32 = 3;

/// Whether `ROUND` datagrams from a fresh client socket each come back
/// through the client proxy listening on `proxy`.
fn relays(proxy: SocketAddr) -> bool {
    let client = Client::new();
    (0..ROUND).all(|i| client.echo(proxy, i))
}

/// v2ray with a dokodemo-door UDP inbound that forwards every datagram to
/// `echo` through `outbound`: the inbound's address is the daemon's.
fn v2ray(outbound: Value, echo: SocketAddr) -> Daemon {
    Daemon::start("v2ray", "listening UDP on", false, move |dir, port| {
        let config = json!({
            "log": {"loglevel": "info"},
            "inbounds": [{
                "listen": "127.0.0.1",
                "port": port,
                "protocol": "dokodemo-door",
                "settings": {"address": echo.ip().to_string(), "port": echo.port(), "network": "udp"},
            }],
            "outbounds": [outbound.clone()],
        });
        let path = dir.join("v2ray.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let mut c = std::process::Command::new("v2ray");
        c.arg("-config").arg(path);
        c
    })
}

fn ss_outbound(node: SocketAddr, method: &str, password: &str) -> Value {
    json!({
        "protocol": "shadowsocks",
        "settings": {"servers": [{
            "address": node.ip().to_string(), "port": node.port(),
            "method": method, "password": password,
        }]},
    })
}

/// A Trojan outbound naming the node [`SNI`] (or `sni`), trusting `ca`
/// when given (otherwise the system's roots only).
fn trojan_outbound(node: SocketAddr, password: &str, sni: &str, ca: Option<&str>) -> Value {
    let certificates: Vec<Value> = ca
        .map(|ca| json!({"usage": "verify", "certificateFile": ca}))
        .into_iter()
        .collect();
    json!({
        "protocol": "trojan",
        "settings": {"servers": [{
            "address": node.ip().to_string(), "port": node.port(), "password": password,
        }]},
        "streamSettings": {
            "security": "tls",
            "tlsSettings": {"serverName": sni, "certificates": certificates},
        },
    })
}

/// shadowsocks-rust's sslocal as a UDP tunnel to `echo` through the node
/// at `node`: the tunnel's address is the daemon's.
fn sslocal(node: SocketAddr, method: &str, key: &str, echo: SocketAddr) -> Daemon {
    let (method, key) = (method.to_string(), key.to_string());
    Daemon::start(
        "sslocal",
        "UDP tunnel listening on",
        false,
        move |_, port| {
            let mut c = std::process::Command::new(
                support::skip::find_tool("sslocal").expect("sslocal installed"),
            );
            c.args(["--protocol", "tunnel", "-U"])
                .args(["-b", &format!("127.0.0.1:{port}")])
                .args(["--forward-addr", &echo.to_string()])
                .args(["-s", &node.to_string(), "-m", &method, "-k", &key]);
            c
        },
    )
}

#[test]
fn ss_server_relays_udp_for_v2ray_with_each_classic_method() {
    if !require(&["ss-server", "v2ray", "ss"], false) {
        return;
    }
    let echo = Peer::echo();
    for method in LIBEV_METHODS {
        let pw = password("libev");
        let mut node = SsLibev::start(method, &pw);
        let client = v2ray(ss_outbound(node.addr(), method, &pw), echo.addr);
        assert!(relays(client.addr()), "{method}\n{}", client.log());

        let wrong = v2ray(ss_outbound(node.addr(), method, "wrong"), echo.addr);
        assert!(!relays(wrong.addr()), "{method}: a wrong password relays");

        node.kill();
        assert!(!relays(client.addr()), "{method}: a killed node relays");
        node.restart();
        assert!(
            relays(client.addr()),
            "{method}: restarted on {}\n{}",
            node.addr(),
            node.log()
        );
    }
}

#[test]
fn ssserver_relays_udp_for_sslocal_with_each_2022_method() {
    if !require(&["ssserver", "sslocal", "ss"], false) {
        return;
    }
    let echo = Peer::echo();
    for (method, len) in METHODS_2022 {
        let key = key_2022(len);
        let mut node = SsRust::start(method, &key);
        let client = sslocal(node.addr(), method, &key, echo.addr);
        assert!(relays(client.addr()), "{method}\n{}", client.log());

        let wrong = sslocal(node.addr(), method, &key_2022(len), echo.addr);
        assert!(!relays(wrong.addr()), "{method}: a wrong key relays");

        node.kill();
        assert!(!relays(client.addr()), "{method}: a killed node relays");
        node.restart();
        assert!(
            relays(client.addr()),
            "{method}: restarted on {}\n{}",
            node.addr(),
            node.log()
        );
    }
}

#[test]
fn trojan_relays_udp_for_v2ray_trusting_the_test_ca() {
    if !require(&["trojan", "v2ray", "ss"], false) {
        return;
    }
    let echo = Peer::echo();
    let pw = password("trojan");
    let mut node = TrojanServer::start(&pw);
    let ca = node.ca_path().display().to_string();
    let client = v2ray(trojan_outbound(node.addr(), &pw, SNI, Some(&ca)), echo.addr);
    assert!(relays(client.addr()), "{}\n{}", client.log(), node.log());

    // Not the test's CA, or not the certificate's name: no TLS, nothing.
    let untrusting = v2ray(trojan_outbound(node.addr(), &pw, SNI, None), echo.addr);
    assert!(!relays(untrusting.addr()), "a client without the CA relays");
    let misnamed = v2ray(
        trojan_outbound(node.addr(), &pw, "other.test", Some(&ca)),
        echo.addr,
    );
    assert!(
        !relays(misnamed.addr()),
        "a certificate for another name passes"
    );

    // A wrong password is not Trojan to the node: it goes to the fallback.
    let before = node.fallback.served();
    let wrong = v2ray(
        trojan_outbound(node.addr(), "wrong", SNI, Some(&ca)),
        echo.addr,
    );
    assert!(!relays(wrong.addr()), "a wrong password relays");
    eventually(
        "the fallback answers the wrong password",
        std::time::Duration::from_secs(5),
        || (node.fallback.served() > before).then_some(()),
    );

    node.kill();
    assert!(!relays(client.addr()), "a killed node relays");
    node.restart();
    assert!(
        relays(client.addr()),
        "restarted on {}\n{}",
        node.addr(),
        node.log()
    );
}

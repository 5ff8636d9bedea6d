//! Share links shaped like those subscription services and clients
//! export, and the malformed ones users paste.

use super::*;

fn ss(server: &str, method: &str, password: &str) -> Link {
    Link::Shadowsocks {
        server: server.into(),
        method: method.into(),
        password: password.into(),
    }
}

fn trojan(server: &str, password: &str, sni: Option<&str>, skip_verify: bool) -> Link {
    Link::Trojan {
        server: server.into(),
        password: password.into(),
        sni: sni.map(Into::into),
        skip_verify,
    }
}

#[test]
fn sip002_with_base64url_userinfo() {
    let cases = [
        (
            "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpleGFtcGxlLXBhc3N3b3Jk@192.0.2.10:8388#Example%20Node",
            ss("192.0.2.10:8388", "chacha20-ietf-poly1305", "example-password"),
        ),
        // Padding kept, or percent-encoded as some exporters write it.
        (
            "ss://YWVzLTI1Ni1nY206cGFzcw==@node.example.com:443/?#JP-01",
            ss("node.example.com:443", "aes-256-gcm", "pass"),
        ),
        (
            "ss://YWVzLTI1Ni1nY206cGFzcw%3D%3D@node.example.com:443",
            ss("node.example.com:443", "aes-256-gcm", "pass"),
        ),
        (
            "ss://YWVzLTI1Ni1nY206cGFzcw@[2001:db8::1]:8388/?group=Zm9v#v6",
            ss("[2001:db8::1]:8388", "aes-256-gcm", "pass"),
        ),
    ];
    for (link, want) in cases {
        assert_eq!(parse_link(link).unwrap(), want, "{link}");
    }
}

#[test]
fn sip002_with_plain_userinfo_as_2022_methods_use_it() {
    let link = "ss://2022-blake3-aes-256-gcm:YctPZ6U7xPPcU%2Bgp3u%2B0tx%2FtRizJN9K8y%2BuKlW2qjlI%3D@192.168.100.1:8888#Example3";
    let want = ss(
        "192.168.100.1:8888",
        "2022-blake3-aes-256-gcm",
        "YctPZ6U7xPPcU+gp3u+0tx/tRizJN9K8y+uKlW2qjlI=",
    );
    assert_eq!(parse_link(link).unwrap(), want);
    // '+' is a '+' (no form encoding), and ':' may be encoded too.
    let link = "ss://2022-blake3-aes-128-gcm%3AIEQR+5tyoNf/0M6y+7QqZQ==:dGVzdA==@[::1]:8388/";
    let want = ss(
        "[::1]:8388",
        "2022-blake3-aes-128-gcm",
        "IEQR+5tyoNf/0M6y+7QqZQ==:dGVzdA==",
    );
    assert_eq!(parse_link(link).unwrap(), want);
}

#[test]
fn legacy_links_are_base64_throughout() {
    let link = "ss://YWVzLTEyOC1nY206dGVzdEAxOTIuMTY4LjEwMC4xOjg4ODg=#Legacy";
    assert_eq!(
        parse_link(link).unwrap(),
        ss("192.168.100.1:8888", "aes-128-gcm", "test")
    );
    // Upper-case method, a password with '@', '/', '+', '?', an IPv6 host.
    let link = "ss://QUVTLTI1Ni1HQ006cEBzcy93K3JkP0BbMjAwMTpkYjg6OjddOjQ0Mw==";
    assert_eq!(
        parse_link(link).unwrap(),
        ss("[2001:db8::7]:443", "aes-256-gcm", "p@ss/w+rd?")
    );
}

#[test]
fn shadowsocks_plugins_and_unknown_methods_are_refused() {
    let plugin = "ss://YWVzLTI1Ni1nY206cGFzcw@192.0.2.1:8388/?plugin=obfs-local%3Bobfs%3Dhttp%3Bobfs-host%3Dexample.com#obfs";
    assert_eq!(parse_link(plugin).unwrap_err(), "plugins are not supported");
    let v2ray = "ss://YWVzLTI1Ni1nY206cGFzcw@192.0.2.1:443?plugin=v2ray-plugin%3Btls";
    assert_eq!(parse_link(v2ray).unwrap_err(), "plugins are not supported");
    // An empty plugin is no plugin.
    assert!(parse_link("ss://YWVzLTI1Ni1nY206cGFzcw@192.0.2.1:443/?plugin=").is_ok());

    let err = parse_link("ss://cmM0LW1kNTpTdXAzclNlY3JldFBX@192.0.2.1:8388").unwrap_err();
    assert!(
        err.contains("unsupported Shadowsocks method \"rc4-md5\""),
        "{err}"
    );
    assert!(err.contains("aes-256-gcm"), "{err}");
}

#[test]
fn trojan_links() {
    let cases = [
        (
            "trojan://p%40ss%3Aword@node.example.com:443?security=tls&sni=cdn.example.com&type=tcp&headerType=none#HK-01",
            trojan("node.example.com:443", "p@ss:word", Some("cdn.example.com"), false),
        ),
        (
            "trojan://f9a2c4e0-1b3d-4c5e-8f7a-9b0c1d2e3f40@203.0.113.5:8443?peer=node.example.org&allowInsecure=1#US",
            trojan(
                "203.0.113.5:8443",
                "f9a2c4e0-1b3d-4c5e-8f7a-9b0c1d2e3f40",
                Some("node.example.org"),
                true,
            ),
        ),
        (
            "trojan://secret@[2001:db8::5]:443/?allowInsecure=0&sni=&fp=chrome&alpn=h2%2Chttp%2F1.1",
            trojan("[2001:db8::5]:443", "secret", None, false),
        ),
        (
            "trojan://secret@node.example.com:443?insecure=true&sni=a.example&peer=b.example",
            trojan("node.example.com:443", "secret", Some("a.example"), true),
        ),
        (
            " trojan://secret@node.example.com:443\n",
            trojan("node.example.com:443", "secret", None, false),
        ),
    ];
    for (link, want) in cases {
        assert_eq!(parse_link(link).unwrap(), want, "{link}");
    }
}

#[test]
fn trojan_transports_other_than_tls_over_tcp_are_refused() {
    let cases = [
        (
            "trojan://pw@h.example:443?type=ws&path=%2Fws",
            "transport \"ws\"",
        ),
        (
            "trojan://pw@h.example:443?type=grpc&serviceName=x",
            "transport \"grpc\"",
        ),
        (
            "trojan://pw@h.example:443?security=reality",
            "security \"reality\"",
        ),
        (
            "trojan://pw@h.example:443?security=none",
            "security \"none\"",
        ),
        (
            "trojan://pw@h.example:443?allowInsecure=yes",
            "allowInsecure",
        ),
    ];
    for (link, want) in cases {
        let err = parse_link(link).unwrap_err();
        assert!(err.contains(want), "{link}: {err}");
    }
}

#[test]
fn malformed_links_say_what_is_wrong() {
    let cases = [
        ("node.example.com:443", "no scheme"),
        (
            "vmess://eyJhZGQiOiIxIn0=",
            "unsupported link scheme \"vmess\"",
        ),
        ("trojan://node.example.com:443", "no password@"),
        ("trojan://@node.example.com:443", "empty password"),
        ("trojan://pw@node.example.com", "no port"),
        ("trojan://pw@node.example.com:0", "not a port"),
        ("trojan://pw@node.example.com:65536", "not a port"),
        ("trojan://pw@2001:db8::1:443", "must be in brackets"),
        ("trojan://pw@[2001:db8::1:443", "no port after"),
        ("trojan://pw@[not-v6]:443", "not an IPv6 address"),
        ("trojan://pw@:443", "not a server host"),
        ("trojan://pw@bad host:443", "not a server host"),
        ("ss://YWVzLTI1Ni1nY206@h.example:1", "empty password"),
        ("ss://!!!@h.example:1", "neither method:password nor base64"),
        ("ss://bm8tY29sb24@h.example:1", "no method:password"),
        (
            "ss://Sup3r:aes-256-gcm@h.example:1",
            "names no Shadowsocks method",
        ),
        ("ss://!!!", "not base64"),
        (
            "ss://YWVzLTI1Ni1nY206cGFzcw",
            "holds no method:password@host:port",
        ),
    ];
    for (link, want) in cases {
        let err = parse_link(link).unwrap_err();
        assert!(err.contains(want), "{link}: {err}");
    }
}

#[test]
fn no_error_and_no_debug_shows_the_password() {
    const PW: &str = "Sup3rSecretPW";
    let encoded = "U3VwM3JTZWNyZXRQVw"; // base64 of the password
    let bad = [
        "ss://cmM0LW1kNTpTdXAzclNlY3JldFBX@192.0.2.1:8388".to_string(),
        format!("ss://aes-256-gcm:{PW}@192.0.2.1"),
        format!("ss://aes-256-gcm:{PW}@192.0.2.1:8388/?plugin=obfs"),
        format!("ss://{PW}:aes-256-gcm@192.0.2.1:8388"),
        format!("ss://aes-256-gcm:{PW}"),
        format!("ss://{PW}@192.0.2.1:8388"),
        "ss://YWVzLTI1Ni1nY206U3VwM3JTZWNyZXRQVw".to_string(),
        format!("trojan://{PW}@192.0.2.1"),
        format!("trojan://{PW}@192.0.2.1:443?type=ws"),
        format!("trojan://{PW}"),
        format!("trojan://{PW}:443"),
        format!("trojan://{PW}@[::1:443"),
        format!("trojan://x@{PW}%:443"),
    ];
    for link in &bad {
        let err = parse_link(link).unwrap_err().to_lowercase();
        let leaked = [PW, encoded]
            .iter()
            .any(|s| err.contains(&s.to_lowercase()));
        assert!(!leaked, "{link}: {err}");
    }
    for link in [
        format!("ss://aes-256-gcm:{PW}@192.0.2.1:8388"),
        format!("trojan://{PW}@192.0.2.1:443"),
    ] {
        let shown = format!("{:?}", parse_link(&link).unwrap());
        assert!(!shown.contains(PW), "{shown}");
    }
}

#[test]
fn every_supported_method_is_accepted() {
    for method in SHADOWSOCKS_METHODS {
        let link = format!("ss://{method}:pw@h.example:8388");
        assert_eq!(
            parse_link(&link).unwrap(),
            ss("h.example:8388", method, "pw")
        );
    }
}

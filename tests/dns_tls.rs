//! DNS over TLS and DNS over HTTPS upstreams against a real server: unbound
//! serving DoT and DoH (HTTP/2) on loopback with a certificate from a CA the
//! test makes, forwarding `test.` to knot. ward trusts that CA through
//! `ca_file`; a certificate for another name is refused.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::dns::*;
use support::{free_port, on_a_free_port, wait_started, Ward};

struct Unbound {
    child: Child,
    dot: SocketAddr,
    doh: SocketAddr,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_unbound(dir: &Path, knot: SocketAddr) -> Unbound {
    on_a_free_port("unbound", |dot| launch_unbound(dir, knot, dot, free_port()))
}

/// unbound serving DoT on `dot` and DoH on `doh`; an error (unbound
/// stopped) when it does not listen there.
fn launch_unbound(dir: &Path, knot: SocketAddr, dot: u16, doh: u16) -> Result<Unbound, String> {
    let d = dir.display();
    let conf = format!(
        "server:\n  interface: 127.0.0.1@{dot}\n  interface: 127.0.0.1@{doh}\n  tls-port: {dot}\n  https-port: {doh}\n\
         tls-service-key: \"{d}/server.key\"\n  tls-service-pem: \"{d}/server.pem\"\n\
         do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n\
         use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  access-control: 127.0.0.0/8 allow\n\
         do-not-query-localhost: no\n  module-config: \"iterator\"\n  domain-insecure: \"test\"\n\
         local-zone: \"test.\" nodefault\n  num-threads: 1\n\
         forward-zone:\n  name: \"test.\"\n  forward-addr: {}@{}\n",
        knot.ip(),
        knot.port()
    );
    let path = dir.join("unbound.conf");
    std::fs::write(&path, conf).unwrap();
    let mut child = Command::new("unbound")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("unbound.log")).unwrap())
        .spawn()
        .expect("unbound starts");
    let dot = SocketAddr::from(([127, 0, 0, 1], dot));
    let doh = SocketAddr::from(([127, 0, 0, 1], doh));
    let log = dir.join("unbound.log");
    let started = wait_started(&mut child, "unbound", || {
        // Its log says it serves (it bound its ports), not only the ports
        // answering: another process holding one could answer before ours
        // exits.
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("start of service"))
            && std::net::TcpStream::connect(doh).is_ok()
            && std::net::TcpStream::connect(dot).is_ok()
    });
    // Dropped on failure: stopped.
    let unbound = Unbound { child, dot, doh };
    started.map(|()| unbound).map_err(|why| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        format!("{why} on {dot} and {doh}: {log}")
    })
}

#[test]
fn dot_and_doh_upstreams_answer_and_a_wrong_name_is_refused() {
    if !support::require(&["knotd", "kdig", "unbound"], false) {
        return;
    }
    let knot = Knot::start("");
    let certs = tempfile::tempdir().unwrap();
    support::tls::certificates(certs.path(), &["dns.test", "127.0.0.1"]);
    let unbound = start_unbound(certs.path(), knot.addr());
    let ca = certs.path().join("ca.pem");
    let body = format!(
        "upstreams: {{\n\
           \"dot\": (url: \"tls://{dot}\", sni: \"dns.test\", ca_file: \"{ca}\"),\n\
           \"doh\": (url: \"https://dns.test:{doh_port}/dns-query\", addr: \"{doh}\", ca_file: \"{ca}\"),\n\
           \"wrong\": (url: \"tls://{dot}\", sni: \"other.test\", ca_file: \"{ca}\"),\n\
         }},\n\
         default: [\"dot\"],\n\
         routes: [\n\
           (qtype: [\"AAAA\"], to: [\"doh\"]),\n\
           (qtype: [\"TXT\"], to: [\"wrong\"]),\n\
         ],",
        dot = unbound.dot,
        doh = unbound.doh,
        doh_port = unbound.doh.port(),
        ca = ca.display(),
    );
    let ward = Ward::start_with(|dir| {
        format!(
            "(\n admin: (socket: \"{}/admin.sock\"),\n metrics: (listen: \"127.0.0.1:0\"),\n log: (level: \"debug\"),\n dns: (\n listen: [\"{LISTEN}\"],\n {body}\n ),\n)\n",
            dir.display()
        )
    });

    let dns = ward.dns_bound(LISTEN);

    let over_tls = kdig(dns, "www.test.", "A", &[]).expect("an answer over DoT");
    assert_eq!(answers(&over_tls), vec!["192.0.2.1"], "{over_tls}");
    let over_https = kdig(dns, "www.test.", "AAAA", &[]).expect("an answer over DoH");
    assert_eq!(answers(&over_https), vec!["2001:db8::1"], "{over_https}");
    let refused = kdig(dns, "www.test.", "TXT", &[]).expect("a reply");
    assert_eq!(
        refused["RCODE"], 2,
        "a certificate for another name fails: SERVFAIL"
    );

    // Both connections show in the tree; killing the DoH one loses nothing.
    ward.node("dns/upstreams/dot/conn-1")
        .expect("the DoT connection");
    ward.node("dns/upstreams/doh/conn-1")
        .expect("the DoH connection");
    assert!(ward
        .ctl(&["kill", "dns/upstreams/doh/conn-1"])
        .status
        .success());
    let again = kdig(dns, "load-x.load.test.", "AAAA", &[]).expect("an answer on a new connection");
    assert_eq!(again["RCODE"], 0, "{again}");
    let metrics = ward.http_get("/metrics");
    assert!(
        metrics.contains("ward_dns_upstream_duration_seconds_count{upstream=\"doh\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("upstream=\"wrong\",kind=\"unavailable\""),
        "{metrics}"
    );
}

//! The API's streams against the real binary: chunked `/traffic` speaks
//! each second and counts the bytes relayed through a forward inbound,
//! `/memory` gives the resident size, `/logs` streams the lines an action
//! causes at the level asked and not below it, WebSocket `/traffic`,
//! `/connections` and `/tree` (pushed only when it changes) with the token
//! in the query or the header and refused without it, and the cap on
//! streaming clients, whose slots free when their clients go.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::udp::{Client, Peer};
use support::{eventually, walk, Ward};

const SECRET: &str = "s3cret";
/// The API's cap on streaming clients (`api::stream::MAX_STREAMS`).
const MAX_STREAMS: usize = 64;

/// ward with the API (secret [`SECRET`]) and a forward inbound to a UDP
/// echo server through `direct`.
fn start() -> (Ward, Peer, SocketAddr, SocketAddr) {
    let echo = Peer::echo();
    let ward = Ward::start(&format!(
        "api: (listen: \"127.0.0.1:0\", secret: \"{SECRET}\"),\n\
         udp: (inbounds: [ Forward((listen: \"127.0.0.1:0\", to: \"{}\")) ], default: \"direct\"),",
        echo.addr
    ));
    let api = ward.bound("API served", "127.0.0.1:0");
    let inbound = ward.bound("UDP inbound listening", "127.0.0.1:0");
    (ward, echo, api, inbound)
}

/// A chunked stream's body, line by line.
struct Lines {
    head: Vec<String>,
    reader: BufReader<TcpStream>,
    pending: Vec<u8>,
}

impl Lines {
    /// The next JSON line; panics when none comes within the read timeout.
    fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return serde_json::from_slice(&line).unwrap();
            }
            let mut size = String::new();
            self.reader.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            assert!(size > 0, "the stream ended");
            let mut chunk = vec![0u8; size + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            self.pending.extend_from_slice(&chunk[..size]);
        }
    }
}

/// GET `path` with the bearer token: the status and, on 200, the body's lines.
fn open(api: SocketAddr, path: &str) -> (u16, Lines) {
    let stream = TcpStream::connect(api).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        &stream,
        "GET {path} HTTP/1.1\r\nHost: ward\r\nAuthorization: Bearer {SECRET}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        head.push(line);
    }
    let status = head[0].split_whitespace().nth(1).unwrap().parse().unwrap();
    let pending = Vec::new();
    (
        status,
        Lines {
            head,
            reader,
            pending,
        },
    )
}

type Socket = tungstenite::WebSocket<TcpStream>;

/// A WebSocket to `path`, with `header` as the bearer token if given.
fn websocket(
    api: SocketAddr,
    path: &str,
    header: Option<&str>,
) -> Result<Socket, tungstenite::http::StatusCode> {
    use tungstenite::client::IntoClientRequest;
    let stream = TcpStream::connect(api).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = format!("ws://{api}{path}").into_client_request().unwrap();
    if let Some(token) = header {
        let value = format!("Bearer {token}").parse().unwrap();
        request.headers_mut().insert("Authorization", value);
    }
    match tungstenite::client(request, stream) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status())
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

fn message(socket: &mut Socket) -> Value {
    loop {
        match socket.read().unwrap() {
            tungstenite::Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn rate(line: &Value, field: &str) -> u64 {
    line[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {line}"))
}

#[test]
fn chunked_traffic_speaks_each_second_and_counts_relayed_bytes() {
    let (_ward, _echo, api, inbound) = start();
    let (status, mut lines) = open(api, "/traffic");
    assert_eq!(status, 200);
    let chunked = lines.head.iter().any(|h| {
        h.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    assert!(chunked, "{:?}", lines.head);
    let started = Instant::now();
    let quiet = [lines.next(), lines.next()];
    assert!(started.elapsed() < Duration::from_secs(3));
    for line in &quiet {
        assert_eq!((rate(line, "up"), rate(line, "down")), (0, 0), "{line}");
    }
    let client = Client::new();
    let mut sent = 0;
    for i in 0..20 {
        assert!(client.echo(inbound, i), "datagram {i} relayed");
        sent += format!("datagram {i}").len() as u64;
    }
    // Each second's rate covers that second: they add up to what went.
    // Four lines reach past the second the datagrams went in.
    let (mut up, mut down) = (0, 0);
    for _ in 0..4 {
        let line = lines.next();
        up += rate(&line, "up");
        down += rate(&line, "down");
    }
    // A tick a little late spreads its bytes over a little more than a second.
    let near = |n: u64| n >= sent * 85 / 100 && n <= sent + 4;
    assert!(near(up) && near(down), "sent {sent}, up {up}, down {down}");
}

#[test]
fn chunked_memory_gives_the_resident_size_each_second() {
    let (_ward, _echo, api, _) = start();
    let (status, mut lines) = open(api, "/memory");
    assert_eq!(status, 200);
    let started = Instant::now();
    for _ in 0..2 {
        let line = lines.next();
        assert!(rate(&line, "inuse") > 1024 * 1024, "{line}");
        assert_eq!(rate(&line, "oslimit"), 0);
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    let (status, _) = open(api, "/logs?level=verbose");
    assert_eq!(status, 400);
}

fn inbound_path(ward: &Ward) -> String {
    walk(&ward.tree())
        .into_iter()
        .find(|n| n["kind"] == "udp-inbound")
        .and_then(|n| n["path"].as_str().map(String::from))
        .unwrap()
}

/// Lines from `next` until one whose payload contains `text`, that one
/// included.
fn until(mut next: impl FnMut() -> Value, text: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no {text:?} in {seen:?}");
        let line = next();
        let found = line["payload"].as_str().unwrap().contains(text);
        seen.push(line);
        if found {
            return seen;
        }
    }
}

fn types(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["type"].as_str().unwrap()).collect()
}

#[test]
fn logs_stream_what_an_action_logs_at_the_level_asked_and_not_below() {
    // The harness logs at debug: there are debug lines to leave out.
    let (ward, _echo, api, _) = start();
    let (status, mut info) = open(api, "/logs?level=info");
    assert_eq!(status, 200);
    let mut warning = websocket(api, &format!("/logs?level=warning&token={SECRET}"), None).unwrap();
    let path = inbound_path(&ward);
    assert!(ward.ctl(&["kill", &path]).status.success());

    let mut seen = until(|| info.next(), "killing actor on request");
    assert_eq!(types(&seen).last(), Some(&"warning"), "{seen:?}");
    // The inbound comes back, saying so at info.
    seen.extend(until(|| info.next(), "UDP inbound listening"));
    assert_eq!(types(&seen).last(), Some(&"info"));
    assert!(!types(&seen).contains(&"debug"), "{seen:?}");

    // The info line came between the two kills: the warning stream
    // skipped it.
    assert!(ward.ctl(&["kill", &path]).status.success());
    let mut warned = until(|| message(&mut warning), "killing actor on request");
    warned.extend(until(|| message(&mut warning), "killing actor on request"));
    assert!(
        types(&warned)
            .iter()
            .all(|t| *t == "warning" || *t == "error"),
        "{warned:?}"
    );
}

#[test]
fn websockets_need_the_token_and_stream_traffic_connections_and_tree_changes() {
    let (ward, _echo, api, inbound) = start();
    assert_eq!(websocket(api, "/traffic", None).unwrap_err(), 401);
    let wrong = websocket(api, "/traffic?token=wrong", None).unwrap_err();
    assert_eq!(wrong, 401);
    // A token in the query is the one checked, as mihomo.
    let wrong = websocket(api, "/traffic?token=wrong", Some(SECRET)).unwrap_err();
    assert_eq!(wrong, 401);
    let mut by_header = websocket(api, "/memory", Some(SECRET)).unwrap();
    assert!(message(&mut by_header)["inuse"].as_u64().unwrap() > 0);

    let mut traffic = websocket(api, &format!("/traffic?token={SECRET}"), None).unwrap();
    let started = Instant::now();
    for _ in 0..2 {
        let line = message(&mut traffic);
        assert!(line["up"].is_u64() && line["down"].is_u64(), "{line}");
    }
    assert!(started.elapsed() < Duration::from_secs(3));

    assert!(Client::new().echo(inbound, 1));
    let path = format!("/connections?interval=200&token={SECRET}");
    let mut connections = websocket(api, &path, None).unwrap();
    let started = Instant::now();
    for _ in 0..3 {
        let snapshot = message(&mut connections);
        assert_eq!(snapshot["connections"].as_array().unwrap().len(), 1);
    }
    assert!(started.elapsed() < Duration::from_secs(2));

    let mut tree = websocket(api, &format!("/tree?token={SECRET}"), None).unwrap();
    let first = message(&mut tree);
    assert_eq!(first["ok"], true);
    let inbound_node = |reply: &Value| {
        walk(&reply["tree"])
            .into_iter()
            .find(|n| n["kind"] == "udp-inbound")
            .unwrap()
    };
    assert_eq!(inbound_node(&first)["restarts"], 0);
    // Nothing changes: nothing is sent (the tree is looked at each second).
    tree.get_mut()
        .set_read_timeout(Some(Duration::from_millis(2500)))
        .unwrap();
    let quiet = tree.read();
    assert!(
        matches!(&quiet, Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock),
        "{quiet:?}"
    );
    tree.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let path = inbound_path(&ward);
    assert!(ward.ctl(&["kill", &path]).status.success());
    let restarted = eventually("the restart pushed", Duration::from_secs(10), || {
        let reply = message(&mut tree);
        (inbound_node(&reply)["restarts"] == 1).then_some(reply)
    });
    assert_eq!(restarted["ok"], true);
}

#[test]
fn streaming_clients_are_capped_and_a_slot_frees_when_its_client_goes() {
    let (_ward, _echo, api, _) = start();
    let mut streams: Vec<Lines> = (0..MAX_STREAMS)
        .map(|_| {
            let (status, lines) = open(api, "/memory");
            assert_eq!(status, 200);
            lines
        })
        .collect();
    let (status, mut refused) = open(api, "/memory");
    assert_eq!(status, 503);
    let mut body = String::new();
    let _ = refused.reader.read_line(&mut body);
    assert!(body.contains("too many streaming clients"), "{body}");
    assert_eq!(websocket(api, "/traffic", Some(SECRET)).unwrap_err(), 503);
    // Plain requests still get through.
    let (status, _) = open(api, "/version");
    assert_eq!(status, 200);
    // Every stream still speaks.
    for stream in &mut streams {
        assert!(stream.next()["inuse"].is_u64());
    }
    drop(streams.pop());
    let (status, mut again) = eventually("a slot freed", Duration::from_secs(5), || {
        let (status, lines) = open(api, "/memory");
        (status == 200).then_some((status, lines))
    });
    assert_eq!(status, 200);
    assert!(again.next()["inuse"].is_u64());
}

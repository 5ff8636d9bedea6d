//! The HTTP API against the real binary: the bearer token (401 without
//! it or with a wrong one; open without a secret), `ward check` refusing
//! an API off loopback without a secret, every route's status and JSON
//! shape against mihomo's (tests/fixtures/mihomo_shapes.json), a pick that
//! switches a group (seen by the API and by `ward ctl dialers`), delay
//! tests through a live and a dead node, and a flow ended through the API.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use support::socks::{Dante, NoContent};
use support::udp::{Client, Peer};
use support::{eventually, walk, Ward, WARD};

const API: &str = "127.0.0.1:0";

/// One request on a fresh connection: the status and the JSON body
/// (`null` when there is none).
fn call(
    api: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut stream = std::net::TcpStream::connect(api).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: ward\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn shapes() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mihomo_shapes.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `value` has every field of the fixture's `shape`, each of its type.
fn assert_shape(shape: &str, value: &Value) {
    let shapes = shapes();
    let fields = shapes["routes"][shape]["fields"]
        .as_object()
        .unwrap_or_else(|| panic!("no shape {shape} in the fixture"));
    for (field, kind) in fields {
        let got = value.get(field).map_or("missing", type_of);
        assert_eq!(got, kind, "{shape}: field {field:?} in {value}");
    }
}

/// A status the fixture gives for `route`, then the shape of the body.
fn assert_route(route: &str, (status, body): (u16, Value)) -> Value {
    let want = shapes()["routes"][route]["status"].as_u64().unwrap();
    assert_eq!(u64::from(status), want, "{route}: {body}");
    assert_shape(route, &body);
    body
}

fn start(api: &str, extra: &str) -> (Ward, SocketAddr) {
    let ward = Ward::start(&format!("api: {api},\n{extra}"));
    let bound = ward.bound("API served", API);
    (ward, bound)
}

#[test]
fn the_token_is_required_when_a_secret_is_set_and_not_otherwise() {
    let (_ward, api) = start(r#"(listen: "127.0.0.1:0", secret: "s3cret")"#, "");
    assert_eq!(call(api, "GET", "/version", None, "").0, 401);
    let (status, body) = call(api, "GET", "/version", Some("wrong"), "");
    assert_eq!(status, 401);
    assert_eq!(body, json!({"message": "Unauthorized"}));
    assert_eq!(call(api, "GET", "/version", Some("s3cre"), "").0, 401);
    assert_eq!(call(api, "GET", "/version", Some("s3cret"), "").0, 200);
    // The web page's files hold no secret; what they call does.
    assert_eq!(call(api, "GET", "/ui/", None, "").0, 200);
    assert_eq!(call(api, "GET", "/ui/main.js", None, "").0, 200);
    assert_eq!(call(api, "GET", "/tree", None, "").0, 401);

    let (_open, api) = start(r#"(listen: "127.0.0.1:0")"#, "");
    assert_eq!(call(api, "GET", "/version", None, "").0, 200);
    assert_eq!(call(api, "GET", "/tree", None, "").1["ok"], true);
}

#[test]
fn check_refuses_an_api_off_loopback_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.ron");
    std::fs::write(&path, "(\n    api: (listen: \"0.0.0.0:9090\"),\n)\n").unwrap();
    let out = std::process::Command::new(WARD)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let at = format!("{}:2:", path.display());
    assert!(
        stderr.contains(&at) && stderr.contains("api.listen"),
        "{stderr}"
    );
    std::fs::write(
        &path,
        "(\n    api: (listen: \"0.0.0.0:9090\", secret: \"x\"),\n)\n",
    )
    .unwrap();
    let out = std::process::Command::new(WARD)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Lab {
    _node: Dante,
    _probe: NoContent,
    echo: Peer,
    probe_addr: SocketAddr,
    ward: Ward,
    api: SocketAddr,
    inbound: SocketAddr,
}

/// A group of a live SOCKS5 node and a dead one (nothing listens on
/// port 1), a forward inbound through it to a UDP echo server.
fn lab() -> Option<Lab> {
    if !support::require(&["danted"], false) {
        return None;
    }
    let node = Dante::start();
    let probe = NoContent::start();
    let echo = Peer::echo();
    let (ward, api) = start(
        r#"(listen: "127.0.0.1:0")"#,
        &format!(
            "dialers: {{ \"live\": Socks5((server: \"{}\")), \"dead\": Socks5((server: \"127.0.0.1:1\")) }},\n\
             groups: {{ \"nodes\": (dialers: [\"live\", \"dead\"], policy: Fixed(0)) }},\n\
             udp: (inbounds: [ Forward((listen: \"127.0.0.1:0\", to: \"{}\")) ], default: \"nodes\"),",
            node.addr(),
            echo.addr,
        ),
    );
    let inbound = ward.bound("UDP inbound listening", "127.0.0.1:0");
    Some(Lab {
        _node: node,
        probe_addr: probe.addr,
        _probe: probe,
        echo,
        ward,
        api,
        inbound,
    })
}

#[test]
fn routes_answer_in_mihomo_shapes() {
    let Some(lab) = lab() else { return };
    let api = lab.api;
    assert_route("GET /version", call(api, "GET", "/version", None, ""));
    assert_route("GET /configs", call(api, "GET", "/configs", None, ""));
    let proxies = assert_route("GET /proxies", call(api, "GET", "/proxies", None, ""));
    for name in ["live", "dead", "direct", "nodes", "GLOBAL"] {
        assert_shape("proxy", &proxies["proxies"][name]);
    }
    assert_eq!(proxies["proxies"]["live"]["type"], "Socks5");
    assert_eq!(proxies["proxies"]["direct"]["type"], "Direct");
    let group = &proxies["proxies"]["nodes"];
    assert_shape("group", group);
    assert_eq!(
        (group["type"].as_str(), group["all"].clone()),
        (Some("Selector"), json!(["live", "dead"]))
    );
    assert_shape("group", &proxies["proxies"]["GLOBAL"]);
    let (status, one) = call(api, "GET", "/proxies/live", None, "");
    assert_eq!((status, one["name"].as_str()), (200, Some("live")));
    let (status, missing) = call(api, "GET", "/proxies/nobody", None, "");
    assert_eq!(status, 404);
    assert_shape_error(&missing);
    assert_route(
        "GET /providers/proxies",
        call(api, "GET", "/providers/proxies", None, ""),
    );
    let rules = assert_route("GET /rules", call(api, "GET", "/rules", None, ""));
    let last = rules["rules"].as_array().unwrap().last().unwrap().clone();
    assert_shape("rule", &last);
    assert_eq!(
        (last["type"].as_str(), last["proxy"].as_str()),
        (Some("Match"), Some("nodes"))
    );
    assert_route(
        "PATCH /configs",
        call(api, "PATCH", "/configs", None, r#"{"log-level":"debug"}"#),
    );
    assert_eq!(
        call(api, "GET", "/configs", None, "").1["log-level"],
        "debug"
    );
    let (status, refused) = call(api, "PATCH", "/configs", None, r#"{"mode":"global"}"#);
    assert_eq!(status, 400);
    assert_shape_error(&refused);
    // ward's own routes answer as the admin socket does.
    for path in ["/tree", "/dialers", "/stats"] {
        let (status, body) = call(api, "GET", path, None, "");
        assert_eq!((status, &body["ok"]), (200, &json!(true)), "{path}: {body}");
    }
    let (status, body) = call(api, "POST", "/dialers/nobody/probe", None, "");
    assert_eq!((status, &body["ok"]), (404, &json!(false)));
    let (status, body) = call(api, "GET", "/dns/stats", None, "");
    assert_eq!(
        (status, &body["ok"]),
        (400, &json!(false)),
        "no DNS here: {body}"
    );
}

fn assert_shape_error(body: &Value) {
    let shapes = shapes();
    for (field, kind) in shapes["error"]["fields"].as_object().unwrap() {
        assert_eq!(body.get(field).map_or("missing", type_of), kind, "{body}");
    }
}

#[test]
fn a_pick_switches_the_group_and_delay_tests_go_through_the_node() {
    let Some(lab) = lab() else { return };
    let api = lab.api;
    let now = || call(api, "GET", "/proxies/nodes", None, "").1["now"].clone();
    assert_eq!(now(), "live");
    let (status, _) = call(api, "PUT", "/proxies/nodes", None, r#"{"name":"nobody"}"#);
    assert_eq!(status, 400);
    assert_route(
        "PUT /proxies/{name}",
        call(api, "PUT", "/proxies/nodes", None, r#"{"name":"dead"}"#),
    );
    assert_eq!(now(), "dead");
    let out = lab.ward.ctl(&["dialers", "--json"]);
    let dialers: Value = serde_json::from_slice(&out.stdout).unwrap();
    let group = dialers["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "nodes")
        .unwrap()
        .clone();
    assert_eq!(group["udp"], "dead", "{dialers}");
    assert_route(
        "PUT /proxies/{name}",
        call(api, "PUT", "/proxies/nodes", None, r#"{"name":"live"}"#),
    );
    assert_eq!(now(), "live");

    let url = format!("http://{}/generate_204", lab.probe_addr);
    let delay = format!("/proxies/live/delay?url={url}&timeout=3000");
    let body = assert_route(
        "GET /proxies/{name}/delay",
        call(api, "GET", &delay, None, ""),
    );
    assert!(body["delay"].as_u64().unwrap() >= 1);
    let (status, body) = call(
        api,
        "GET",
        &format!("/proxies/dead/delay?url={url}&timeout=3000"),
        None,
        "",
    );
    assert!(status == 503 || status == 504, "{status} {body}");
    assert_shape_error(&body);
    let (status, _) = call(api, "GET", "/proxies/live/delay?timeout=x", None, "");
    assert_eq!(status, 400);
    let (status, members) = call(
        api,
        "GET",
        &format!("/group/nodes/delay?url={url}&timeout=3000"),
        None,
        "",
    );
    assert_eq!(status, 200);
    assert!(
        members["live"].as_u64().is_some() && members.get("dead").is_none(),
        "{members}"
    );
}

#[test]
fn deleting_a_connection_ends_its_flow_endpoint() {
    let Some(lab) = lab() else { return };
    let api = lab.api;
    let client = Client::new();
    assert!(client.echo(lab.inbound, 1), "the flow carries");
    let _ = &lab.echo;
    // The echo reaches the client as ward sends it; its bytes are counted
    // once the send returned: wait for the count, not for the echo.
    let snapshot = eventually("the echo's bytes counted", Duration::from_secs(2), || {
        let snapshot = assert_route(
            "GET /connections",
            call(api, "GET", "/connections", None, ""),
        );
        let downloaded = snapshot["connections"][0]["download"].as_u64().unwrap_or(0);
        (downloaded > 0).then_some(snapshot)
    });
    let flows = snapshot["connections"].as_array().unwrap().clone();
    assert_eq!(flows.len(), 1, "{snapshot}");
    let flow = &flows[0];
    assert_shape("connection", flow);
    assert_shape("metadata", &flow["metadata"]);
    assert_eq!(flow["chains"], json!(["live", "nodes"]));
    assert_eq!(flow["metadata"]["type"], "Tunnel", "a forward inbound");
    assert!(
        flow["upload"].as_u64().unwrap() > 0 && flow["download"].as_u64().unwrap() > 0,
        "{flow}"
    );
    let endpoints = || {
        walk(&lab.ward.tree())
            .into_iter()
            .filter(|n| n["kind"] == "udp-endpoint")
            .count()
    };
    assert_eq!(endpoints(), 1);
    let id = flow["id"].as_str().unwrap();
    assert_route(
        "DELETE /connections/{id}",
        call(api, "DELETE", &format!("/connections/{id}"), None, ""),
    );
    eventually(
        "the endpoint gone from the tree",
        Duration::from_secs(5),
        || (endpoints() == 0).then_some(()),
    );
    let after = call(api, "GET", "/connections", None, "").1;
    assert_eq!(after["connections"], json!([]), "{after}");
    assert!(after["uploadTotal"].as_u64().unwrap() > 0);
}

/// A pick is written to `api.state` and read back when ward starts again;
/// the picked dialer's actor restarting changes nothing; a state file that
/// does not parse is logged and rewritten, never a reason not to start.
#[test]
fn a_pick_is_kept_across_a_restart_of_ward_in_the_state_file() {
    if !support::require(&["danted"], false) {
        return;
    }
    let (a, b) = (Dante::start(), Dante::start());
    let ward = Ward::start_with(|dir| {
        std::fs::write(dir.join("picks.ron"), "(picks: {\"nodes\": ").unwrap();
        format!(
            "(\n    admin: (socket: \"{}/admin.sock\"),\n    log: (level: \"debug\"),\n    \
             api: (listen: \"{API}\", state: \"picks.ron\"),\n    \
             dialers: {{ \"a\": Socks5((server: \"{}\")), \"b\": Socks5((server: \"{}\")) }},\n    \
             groups: {{ \"nodes\": (dialers: [\"a\", \"b\"], policy: Fixed(0)) }},\n)\n",
            dir.display(),
            a.addr(),
            b.addr()
        )
    });
    assert!(
        ward.log().contains("the file does not parse"),
        "{}",
        ward.log()
    );
    let state = ward.dir.path().join("picks.ron");
    let now = |ward: &Ward| {
        let api = ward.bound("API served", API);
        call(api, "GET", "/proxies/nodes", None, "").1["now"].clone()
    };
    let udp_choice = |ward: &Ward| {
        let out = ward.ctl(&["dialers", "--json"]);
        let dialers: Value = serde_json::from_slice(&out.stdout).unwrap();
        let groups = dialers["groups"].as_array().unwrap().clone();
        groups.into_iter().find(|g| g["name"] == "nodes").unwrap()["udp"].clone()
    };
    assert_eq!(now(&ward), "a");
    let api = ward.bound("API served", API);
    let (status, _) = call(api, "PUT", "/proxies/nodes", None, r#"{"name":"b"}"#);
    assert_eq!(status, 204);
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains("\"nodes\": \"b\""), "{saved}");

    // The picked dialer's actor restarts: the group still uses it.
    let (status, body) = call(api, "POST", "/tree/kill?path=dialers/b", None, "");
    assert_eq!((status, &body["ok"]), (200, &json!(true)), "{body}");
    ward.wait_ready();
    assert_eq!(now(&ward), "b");

    let ward = ward.restart();
    assert!(
        ward.log()
            .contains("group member picked before the restart"),
        "{}",
        ward.log()
    );
    assert_eq!(now(&ward), "b");
    assert_eq!(udp_choice(&ward), "b");
}

/// The API serves from a thread of its own. A reload asked through it
/// starts its actors on the tree's runtime: they keep serving after the
/// API's thread is gone (its actor killed) and while it comes back.
#[test]
fn the_api_has_a_thread_of_its_own_and_what_it_reloads_outlives_it() {
    let echo = Peer::echo();
    let inbound = |n: u32| {
        format!(
            "Forward((listen: \"127.0.0.{n}:0\", to: \"{}\"))",
            echo.addr
        )
    };
    let config = |inbounds: &str| {
        format!(
            "api: (listen: \"{API}\"),\n    udp: (inbounds: [ {inbounds} ], default: \"direct\"),"
        )
    };
    let ward = Ward::start(&config(&inbound(1)));
    let api = ward.bound("API served", API);
    // Each thread's name and nice value.
    let threads = || -> Vec<(String, i64)> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", ward.pid())).unwrap();
        tasks
            .filter_map(|t| {
                let path = t.ok()?.path();
                let comm = std::fs::read_to_string(path.join("comm")).ok()?;
                let stat = std::fs::read_to_string(path.join("stat")).ok()?;
                let nice = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(16)?
                    .parse()
                    .ok()?;
                Some((comm.trim().to_string(), nice))
            })
            .collect()
    };
    let api_threads = || {
        threads()
            .into_iter()
            .filter(|(comm, _)| comm == "ward-api")
            .count()
    };
    assert_eq!(api_threads(), 1, "{:?}", threads());
    // Ten nicer than ward's own, whatever that was started with.
    let base = threads()
        .into_iter()
        .find(|(comm, _)| comm != "ward-api")
        .unwrap()
        .1;
    for (comm, nice) in threads() {
        let want = if comm == "ward-api" {
            (base + 10).min(19)
        } else {
            base
        };
        assert_eq!(nice, want, "{comm}: the API yields to the data path");
    }

    let text = std::fs::read_to_string(&ward.config).unwrap();
    let text = text.replace(&inbound(1), &format!("{}, {}", inbound(1), inbound(3)));
    std::fs::write(&ward.config, text).unwrap();
    let (status, body) = call(api, "POST", "/reload", None, "");
    assert_eq!((status, &body["ok"]), (200, &json!(true)), "{body}");
    let added = ward.bound("UDP inbound listening", "127.0.0.3:0");

    assert!(ward.ctl(&["kill", "api"]).status.success());
    let client = Client::new();
    assert!(
        client.echo(added, 1),
        "the reloaded inbound serves while the API restarts"
    );
    ward.wait_ready();
    assert!(client.echo(added, 2), "{}", ward.log());
    let api = ward.bound("API served", API);
    assert_eq!(call(api, "GET", "/version", None, "").0, 200);
    eventually("one API thread again", Duration::from_secs(5), || {
        (api_threads() == 1).then_some(())
    });
}

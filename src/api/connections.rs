//! `/connections`: one mihomo connection per live UDP flow (its endpoint
//! under `udp/endpoints`), with its bytes, its start, the dialer it goes
//! through and the route that sent it there. Deleting one kills its
//! endpoint, which ends the flow as an idle timeout would. Over a
//! WebSocket, the snapshot comes every `?interval=` ms (1000 by default).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Router};
use serde::Serialize;
use ward_actors::udp::live_flows::FlowInfo;
use ward_actors::udp::settings::{UdpRoute, UdpSettings};
use ward_actors::udp::ENDPOINTS_PATH;

use super::rfc3339;
use super::stream::{every, StreamHub, Upgrade};
use crate::context::ServiceContext;
use crate::telemetry::process;

type Ctx = State<Arc<ServiceContext>>;

pub fn routes() -> Router<Arc<ServiceContext>> {
    Router::new()
        .route("/connections", get(list).delete(end_all))
        .route("/connections/{id}", delete(end_one))
}

/// A UDP route as a mihomo rule: its one condition, or `AND` of several,
/// or `Match` with none.
pub fn rule_of(route: &UdpRoute) -> (String, String) {
    let mut conditions: Vec<(&str, String)> = Vec::new();
    for net in &route.dst {
        conditions.push(("IPCIDR", net.to_string()));
    }
    for net in &route.src {
        conditions.push(("SrcIPCIDR", net.to_string()));
    }
    for ports in &route.dst_port {
        let text = if ports.first == ports.last {
            ports.first.to_string()
        } else {
            format!("{}-{}", ports.first, ports.last)
        };
        conditions.push(("DstPort", text));
    }
    match conditions.as_slice() {
        [] => ("Match".into(), String::new()),
        [(kind, payload)] => (kind.to_string(), payload.clone()),
        many => {
            let parts: Vec<String> = many.iter().map(|(k, p)| format!("({k},{p})")).collect();
            ("AND".into(), format!("({})", parts.join(",")))
        }
    }
}

/// mihomo's name of the inbound kind a flow came through: a forward
/// inbound is its `Tunnel`.
fn inbound_type(kind: &str) -> &'static str {
    match kind {
        "tproxy" => "TProxy",
        "socks5" => "Socks5",
        _ => "Tunnel",
    }
}

/// One flow as a mihomo connection, serialized straight from borrowed
/// parts: a snapshot of 10,000 flows builds no tree of values first.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Connection<'a> {
    id: String,
    metadata: Metadata,
    upload: u64,
    download: u64,
    start: String,
    chains: Vec<&'a str>,
    rule: &'a str,
    rule_payload: &'a str,
}

/// mihomo's metadata; what ward has no word for is empty.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    network: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "sourceIP")]
    source_ip: String,
    source_port: String,
    #[serde(rename = "destinationIP")]
    destination_ip: String,
    destination_port: String,
    host: &'static str,
    dns_mode: &'static str,
    process: &'static str,
    process_path: &'static str,
    special_proxy: &'static str,
    special_rules: &'static str,
    remote_destination: &'static str,
    sniff_host: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot<'a> {
    download_total: u64,
    upload_total: u64,
    connections: Vec<Connection<'a>>,
    memory: u64,
}

/// `flow` as a connection; `rules` are the routes' rules, in order.
fn connection<'a>(
    flow: &'a FlowInfo,
    settings: &UdpSettings,
    rules: &'a [(String, String)],
) -> Connection<'a> {
    let dst = flow.key.dst.unwrap_or(flow.first);
    let route = settings
        .routes
        .iter()
        .position(|r| r.matches(flow.key.client, flow.first));
    let (rule, payload) = route.map_or(("Match", ""), |i| (&rules[i].0, &rules[i].1));
    // Leaf first: the dialer, then the group the route named.
    let mut chains = vec![flow.dialer.as_str()];
    if flow.route != flow.dialer {
        chains.push(&flow.route);
    }
    Connection {
        id: flow.id.to_string(),
        metadata: Metadata {
            network: "udp",
            kind: inbound_type(flow.inbound),
            source_ip: flow.key.client.ip().to_canonical().to_string(),
            source_port: flow.key.client.port().to_string(),
            destination_ip: dst.ip().to_canonical().to_string(),
            destination_port: dst.port().to_string(),
            host: "",
            dns_mode: "normal",
            process: "",
            process_path: "",
            special_proxy: "",
            special_rules: "",
            remote_destination: "",
            sniff_host: "",
        },
        upload: flow.upload(),
        download: flow.download(),
        start: rfc3339(flow.started_unix_ms),
        chains,
        rule,
        rule_payload: payload,
    }
}

/// Every live flow and the totals, as mihomo's snapshot, in JSON.
fn snapshot(ctx: &ServiceContext) -> String {
    let memory = process::rss_bytes();
    let Some(relay) = &ctx.udp else {
        let empty = Snapshot {
            download_total: 0,
            upload_total: 0,
            connections: Vec::new(),
            memory,
        };
        return serde_json::to_string(&empty).unwrap_or_default();
    };
    let settings = relay.settings();
    let rules: Vec<(String, String)> = settings.routes.iter().map(rule_of).collect();
    let flows = relay.live_flows.list();
    let (upload_total, download_total) = relay.live_flows.totals();
    let snapshot = Snapshot {
        download_total,
        upload_total,
        connections: flows
            .iter()
            .map(|f| connection(f, &settings, &rules))
            .collect(),
        memory,
    };
    serde_json::to_string(&snapshot).unwrap_or_default()
}

#[derive(serde::Deserialize)]
struct IntervalQuery {
    interval: Option<String>,
}

/// The shortest and longest `?interval=` honoured, in ms.
const INTERVAL_MS: (u64, u64) = (100, 60_000);

/// The last `/connections` snapshot sent to a WebSocket, shared: with
/// 10,000 flows one is megabytes of JSON, and every client whose tick
/// comes while it is fresh (younger than half the client's interval)
/// gets the same bytes instead of a snapshot made for it.
#[derive(Clone, Default)]
pub struct SharedSnapshot(Arc<std::sync::Mutex<Option<(Instant, Utf8Bytes)>>>);

impl SharedSnapshot {
    fn get(&self, ctx: &ServiceContext, fresh: Duration) -> Utf8Bytes {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, json)) = last.as_ref() {
            if at.elapsed() < fresh {
                return json.clone();
            }
        }
        let json = Utf8Bytes::from(snapshot(ctx));
        *last = Some((Instant::now(), json.clone()));
        json
    }
}

async fn list(
    State(ctx): Ctx,
    Extension(hub): Extension<StreamHub>,
    Extension(shared): Extension<SharedSnapshot>,
    Query(query): Query<IntervalQuery>,
    Upgrade(upgrade): Upgrade,
) -> Response {
    if upgrade.is_none() {
        let json = [(header::CONTENT_TYPE, "application/json")];
        return (json, snapshot(&ctx)).into_response();
    }
    let interval = match query.interval.as_deref().map(str::parse::<u64>) {
        None => 1000,
        Some(Ok(ms)) => ms.clamp(INTERVAL_MS.0, INTERVAL_MS.1),
        Some(Err(_)) => return super::error(StatusCode::BAD_REQUEST, "Body invalid"),
    };
    let every_ms = Duration::from_millis(interval);
    let feed = every(every_ms, move || shared.get(&ctx, every_ms / 2));
    hub.deliver(upgrade, feed)
}

/// Kills the endpoint of `flow`, if it still runs.
fn end(ctx: &ServiceContext, flow: &FlowInfo) {
    if let Some(found) = ctx.root.find(&format!("{ENDPOINTS_PATH}/{}", flow.name)) {
        tracing::info!(flow = %flow.name, "ending a UDP flow through the API");
        found.cell.kill();
    }
}

async fn end_all(State(ctx): Ctx) -> Response {
    if let Some(relay) = &ctx.udp {
        for flow in relay.live_flows.list() {
            end(&ctx, &flow);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// 204 whether or not the flow was there, as mihomo.
async fn end_one(State(ctx): Ctx, Path(id): Path<String>) -> Response {
    let flow = id
        .parse::<u64>()
        .ok()
        .and_then(|id| ctx.udp.as_ref()?.live_flows.get(id));
    if let Some(flow) = flow {
        end(&ctx, &flow);
    }
    StatusCode::NO_CONTENT.into_response()
}

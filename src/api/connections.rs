//! `/connections`: one mihomo connection per live UDP flow (its endpoint
//! under `udp/endpoints`), with its bytes, its start, the dialer it goes
//! through and the route that sent it there. Deleting one kills its
//! endpoint, which ends the flow as an idle timeout would. Over a
//! WebSocket, the snapshot comes every `?interval=` ms (1000 by default).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
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

fn flow_json(flow: &FlowInfo, settings: Option<&UdpSettings>) -> Value {
    let dst = flow.key.dst.unwrap_or(flow.first);
    let route = settings.and_then(|s| {
        s.routes
            .iter()
            .find(|r| r.matches(flow.key.client, flow.first))
    });
    let (rule, payload) = route.map_or(("Match".into(), String::new()), rule_of);
    // Leaf first: the dialer, then the group the route named.
    let mut chains = vec![flow.dialer.clone()];
    if flow.route != flow.dialer {
        chains.push(flow.route.clone());
    }
    json!({
        "id": flow.id.to_string(),
        "metadata": {
            "network": "udp",
            "type": "ward",
            "sourceIP": flow.key.client.ip().to_canonical().to_string(),
            "sourcePort": flow.key.client.port().to_string(),
            "destinationIP": dst.ip().to_canonical().to_string(),
            "destinationPort": dst.port().to_string(),
            "host": "",
            "dnsMode": "normal",
            "process": "",
            "processPath": "",
            "specialProxy": "",
            "specialRules": "",
            "remoteDestination": "",
            "sniffHost": "",
        },
        "upload": flow.upload(),
        "download": flow.download(),
        "start": rfc3339(flow.started_unix_ms),
        "chains": chains,
        "rule": rule,
        "rulePayload": payload,
    })
}

/// Every live flow and the totals, as mihomo's snapshot.
fn snapshot(ctx: &ServiceContext) -> Value {
    let (flows, (upload, download)) = match &ctx.udp {
        Some(relay) => {
            let settings = relay.settings();
            let flows: Vec<Value> = relay
                .live_flows
                .list()
                .iter()
                .map(|f| flow_json(f, Some(&settings)))
                .collect();
            (flows, relay.live_flows.totals())
        }
        None => (Vec::new(), (0, 0)),
    };
    json!({
        "downloadTotal": download,
        "uploadTotal": upload,
        "connections": flows,
        "memory": process::rss_bytes(),
    })
}

#[derive(serde::Deserialize)]
struct IntervalQuery {
    interval: Option<String>,
}

/// The shortest and longest `?interval=` honoured, in ms.
const INTERVAL_MS: (u64, u64) = (100, 60_000);

async fn list(
    State(ctx): Ctx,
    Extension(hub): Extension<StreamHub>,
    Query(query): Query<IntervalQuery>,
    Upgrade(upgrade): Upgrade,
) -> Response {
    if upgrade.is_none() {
        return Json(snapshot(&ctx)).into_response();
    }
    let interval = match query.interval.as_deref().map(str::parse::<u64>) {
        None => 1000,
        Some(Ok(ms)) => ms.clamp(INTERVAL_MS.0, INTERVAL_MS.1),
        Some(Err(_)) => return super::error(StatusCode::BAD_REQUEST, "Body invalid"),
    };
    let feed = every(Duration::from_millis(interval), move || {
        snapshot(&ctx).to_string()
    });
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

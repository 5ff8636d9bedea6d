//! The Clash/mihomo REST subset, with mihomo's paths and JSON shapes
//! (its `hub/route`): dialers are proxies, groups are Selector, URLTest
//! or LoadBalance groups by policy, and a `GLOBAL` Selector lists them
//! all. A pick (`PUT /proxies/<group>`) holds while its member is up; the
//! delay routes run a real HTTP GET through the dialer and leave its
//! health alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use ward_actors::dialer::http_probe;
use ward_actors::dialer::settings::{DialerSpec, HttpUrl, Policy};
use ward_actors::dialer::{Dialer, Group, Track, Via};

use super::picks::Picks;
use super::{error, rfc3339};
use crate::admin::protocol::VERSION;
use crate::context::ServiceContext;
use crate::telemetry::logging;

type Ctx = State<Arc<ServiceContext>>;

/// The Selector listing every group and dialer, as mihomo has it.
pub const GLOBAL: &str = "GLOBAL";

pub fn routes() -> Router<Arc<ServiceContext>> {
    Router::new()
        .route("/", get(|| async { Json(json!({"hello": "ward"})) }))
        .route("/version", get(version))
        .route("/configs", get(configs).patch(patch_configs))
        .route("/proxies", get(proxies))
        .route("/proxies/{name}", get(proxy).put(pick))
        .route("/proxies/{name}/delay", get(delay))
        .route("/group/{name}/delay", get(group_delay))
        .route(
            "/providers/proxies",
            get(|| async { Json(json!({"providers": {}})) }),
        )
        .route("/rules", get(rules))
}

async fn version() -> Json<Value> {
    Json(json!({"meta": true, "version": format!("ward {VERSION}")}))
}

/// mihomo's log levels for ward's filter: the filter's own level when it
/// is one word, `info` otherwise.
fn clash_level(filter: &str) -> &'static str {
    match filter.trim() {
        "trace" | "debug" => "debug",
        "warn" => "warning",
        "error" => "error",
        "off" => "silent",
        _ => "info",
    }
}

async fn configs(State(ctx): Ctx) -> Json<Value> {
    let port = |kind: &str| {
        ctx.udp.as_ref().map_or(0, |relay| {
            relay
                .settings()
                .inbounds
                .iter()
                .find(|i| i.name().starts_with(kind))
                .map_or(0, |i| i.listen().port())
        })
    };
    Json(json!({
        "port": 0,
        "socks-port": port("socks5"),
        "redir-port": 0,
        "tproxy-port": port("tproxy"),
        "mixed-port": 0,
        "allow-lan": false,
        "bind-address": "*",
        "mode": "rule",
        "log-level": clash_level(&logging::level()),
        "ipv6": true,
        "tun": {"enable": false},
    }))
}

/// Only `log-level` can change here; anything else is refused, naming it.
async fn patch_configs(Json(body): Json<Map<String, Value>>) -> Response {
    if let Some(key) = body.keys().find(|k| *k != "log-level") {
        let message = format!("ward cannot change {key:?} here; only log-level");
        return error(StatusCode::BAD_REQUEST, &message);
    }
    let Some(level) = body.get("log-level") else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let filter = match level.as_str() {
        Some("debug") => "debug",
        Some("info") => "info",
        Some("warning") => "warn",
        Some("error") => "error",
        Some("silent") => "off",
        _ => return error(StatusCode::BAD_REQUEST, "Body invalid"),
    };
    match logging::set_level(filter) {
        Ok(()) => {
            tracing::warn!(filter, "log level changed through the API");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

fn dialer_type(spec: &DialerSpec) -> &'static str {
    match spec {
        DialerSpec::Direct { .. } => "Direct",
        DialerSpec::Socks5 { .. } => "Socks5",
        DialerSpec::Shadowsocks { .. } => "Shadowsocks",
        DialerSpec::Trojan { .. } => "Trojan",
    }
}

fn group_type(policy: Policy) -> &'static str {
    match policy {
        Policy::Fixed(_) => "Selector",
        Policy::MinLast | Policy::MinAvg10 | Policy::MinMovingAvg => "URLTest",
        Policy::Random | Policy::RoundRobin => "LoadBalance",
    }
}

/// The delay history: TCP probes' latencies when there are some (they
/// time an HTTP GET, as mihomo's do), UDP's otherwise.
fn history(dialer: &Dialer) -> Vec<Value> {
    let tcp = dialer.health(Track::Tcp).history();
    let chosen = if tcp.is_empty() {
        dialer.health(Track::Udp).history()
    } else {
        tcp
    };
    chosen
        .into_iter()
        .map(|(at, latency)| json!({"time": rfc3339(at), "delay": millis(latency)}))
        .collect()
}

fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).clamp(1, u64::from(u16::MAX))
}

/// Fields every mihomo proxy has, with what ward knows of them.
fn proxy_json(name: &str, kind: &str, alive: bool, history: Vec<Value>) -> Map<String, Value> {
    let value = json!({
        "name": name, "type": kind, "id": "", "alive": alive, "history": history,
        "extra": {}, "udp": true, "uot": false, "xudp": false, "tfo": false,
        "mptcp": false, "smux": false, "interface": "", "dialer-proxy": "", "routing-mark": 0,
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn dialer_json(dialer: &Dialer) -> Value {
    let alive = dialer.health(Track::Udp).is_up();
    Value::Object(proxy_json(
        &dialer.name,
        dialer_type(&dialer.spec),
        alive,
        history(dialer),
    ))
}

/// What the group would use now: the pick while it is up, else the
/// current choice (UDP, then TCP), else its first member.
pub fn now(group: &Group) -> Option<&Arc<Dialer>> {
    group
        .picked()
        .filter(|d| d.health(Track::Udp).is_up())
        .or_else(|| group.current(Track::Udp))
        .or_else(|| group.current(Track::Tcp))
        .or_else(|| group.members.first())
}

fn group_json(group: &Group) -> Value {
    let now = now(group);
    let alive = group.members.iter().any(|d| d.health(Track::Udp).is_up());
    let history = now.map(|d| history(d)).unwrap_or_default();
    let mut map = proxy_json(&group.name, group_type(group.policy), alive, history);
    let all: Vec<&str> = group.members.iter().map(|d| d.name.as_str()).collect();
    map.insert("all".into(), json!(all));
    map.insert("now".into(), json!(now.map_or("", |d| d.name.as_str())));
    map.insert("hidden".into(), json!(false));
    map.insert("icon".into(), json!(""));
    Value::Object(map)
}

/// `GLOBAL`: every group, then every dialer; `now` is the UDP relay's
/// default route (or `direct`).
fn global_json(ctx: &ServiceContext) -> Value {
    let mut all: Vec<String> = ctx
        .dialers
        .groups()
        .iter()
        .map(|g| g.name.clone())
        .collect();
    all.extend(ctx.dialers.dialers().iter().map(|d| d.name.clone()));
    let now = ctx
        .udp
        .as_ref()
        .map_or_else(|| "direct".to_string(), |r| r.settings().default.clone());
    let mut map = proxy_json(GLOBAL, "Selector", true, Vec::new());
    map.insert("all".into(), json!(all));
    map.insert("now".into(), json!(now));
    map.insert("hidden".into(), json!(false));
    map.insert("icon".into(), json!(""));
    Value::Object(map)
}

fn via_json(ctx: &ServiceContext, name: &str) -> Option<Value> {
    if name == GLOBAL {
        return Some(global_json(ctx));
    }
    Some(match ctx.dialers.via(name)? {
        Via::Dialer(d) => dialer_json(&d),
        Via::Group(g) => group_json(&g),
    })
}

async fn proxies(State(ctx): Ctx) -> Json<Value> {
    let mut all = Map::new();
    for dialer in ctx.dialers.dialers() {
        all.insert(dialer.name.clone(), dialer_json(&dialer));
    }
    for group in ctx.dialers.groups() {
        all.insert(group.name.clone(), group_json(&group));
    }
    all.insert(GLOBAL.into(), global_json(&ctx));
    Json(json!({ "proxies": all }))
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Resource not found")
}

async fn proxy(State(ctx): Ctx, Path(name): Path<String>) -> Response {
    match via_json(&ctx, &name) {
        Some(proxy) => Json(proxy).into_response(),
        None => not_found(),
    }
}

#[derive(Deserialize)]
struct PickBody {
    name: String,
}

/// Picks a group's member; 204, or 400 as mihomo says it.
async fn pick(
    State(ctx): Ctx,
    Extension(picks): Extension<Arc<Picks>>,
    Path(name): Path<String>,
    body: Option<Json<PickBody>>,
) -> Response {
    let group = match ctx.dialers.via(&name) {
        Some(Via::Group(group)) => group,
        Some(Via::Dialer(_)) => return error(StatusCode::BAD_REQUEST, "Must be a Selector"),
        None if name == GLOBAL => {
            return error(
                StatusCode::BAD_REQUEST,
                "GLOBAL is ward's routes: change them in the configuration",
            )
        }
        None => return not_found(),
    };
    let Some(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "Body invalid");
    };
    if !group.set_pick(&body.name) {
        let message = format!("Selector update error: proxy not exist: {}", body.name);
        return error(StatusCode::BAD_REQUEST, &message);
    }
    tracing::info!(group = %group.name, member = %body.name, "group member picked through the API");
    picks.save(&ctx.dialers).await;
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct DelayQuery {
    url: Option<String>,
    timeout: Option<String>,
}

/// The URL and timeout of a delay test, or why not (mihomo's 400).
fn delay_args(query: &DelayQuery) -> Result<(HttpUrl, Duration), String> {
    let bad = || "Body invalid".to_string();
    let timeout: u64 = query
        .timeout
        .as_deref()
        .and_then(|t| t.parse().ok())
        .ok_or_else(bad)?;
    let url = query.url.as_deref().ok_or_else(bad)?;
    let url = HttpUrl::parse(url)?;
    Ok((url, Duration::from_millis(timeout.clamp(1, 60_000))))
}

/// One HTTP GET through `dialer` within `timeout`: its delay, `None` when
/// it timed out, or why it failed.
async fn measure(dialer: &Dialer, url: &HttpUrl, timeout: Duration) -> Result<Option<u64>, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, http_probe::get(dialer, url, deadline)).await {
        Ok(Ok(latency)) => Ok(Some(millis(latency))),
        Ok(Err(failure)) if failure.is_timeout() => Ok(None),
        Ok(Err(failure)) => Err(failure.to_string()),
        Err(_) => Ok(None),
    }
}

async fn delay(
    State(ctx): Ctx,
    Path(name): Path<String>,
    Query(query): Query<DelayQuery>,
) -> Response {
    let (url, timeout) = match delay_args(&query) {
        Ok(args) => args,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let dialer = match ctx.dialers.via(&name) {
        Some(Via::Dialer(d)) => d,
        Some(Via::Group(g)) => match now(&g) {
            Some(d) => d.clone(),
            None => return error(StatusCode::SERVICE_UNAVAILABLE, "the group has no member"),
        },
        None => return not_found(),
    };
    match measure(&dialer, &url, timeout).await {
        Ok(Some(ms)) => Json(json!({ "delay": ms })).into_response(),
        Ok(None) => error(StatusCode::GATEWAY_TIMEOUT, "Timeout"),
        Err(why) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("An error occurred in the delay test: {why}"),
        ),
    }
}

/// Every member of a group at once: `{member: ms}` for those that answered.
async fn group_delay(
    State(ctx): Ctx,
    Path(name): Path<String>,
    Query(query): Query<DelayQuery>,
) -> Response {
    let (url, timeout) = match delay_args(&query) {
        Ok(args) => args,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let Some(Via::Group(group)) = ctx.dialers.via(&name) else {
        return not_found();
    };
    let tests = group.members.iter().map(|d| {
        let url = &url;
        async move { (d.name.clone(), measure(d, url, timeout).await) }
    });
    let answered: BTreeMap<String, u64> = futures::future::join_all(tests)
        .await
        .into_iter()
        .filter_map(|(name, result)| Some((name, result.ok()??)))
        .collect();
    Json(json!(answered)).into_response()
}

/// ward's DNS routes, then its UDP routes, as mihomo's rule list.
async fn rules(State(ctx): Ctx) -> Json<Value> {
    let mut rules = Vec::new();
    let rule = |kind: &str, payload: String, proxy: &str| json!({"type": kind, "payload": payload, "proxy": proxy, "size": -1});
    if let Some(dns) = &ctx.dns {
        let settings = dns.settings();
        for route in &settings.routes {
            let proxy = format!("dns:{}", route.chain.upstreams.join(","));
            let (kind, payload) = match route.qname_suffix.as_slice() {
                [] => ("Match".to_string(), String::new()),
                names => ("DomainSuffix".to_string(), names.join(",")),
            };
            rules.push(rule(&kind, payload, &proxy));
        }
    }
    if let Some(relay) = &ctx.udp {
        let settings = relay.settings();
        for route in &settings.routes {
            let (kind, payload) = super::connections::rule_of(route);
            rules.push(rule(&kind, payload, &route.to));
        }
        rules.push(rule("Match", String::new(), &settings.default));
    }
    Json(json!({ "rules": rules }))
}

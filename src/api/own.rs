//! ward's own routes, for what Clash has no word for: the same operations
//! and JSON as the admin socket (`admin::operations`), so `ward ctl` and
//! the API answer alike. A reply with `"ok": false` comes with 404 when it
//! names something that does not exist, 400 otherwise. `/tree` over a
//! WebSocket pushes the tree each time it changes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::stream::{every, Feed, StreamHub, Upgrade};
use crate::admin::operations as ops;
use crate::context::ServiceContext;

type Ctx = State<Arc<ServiceContext>>;

pub fn routes() -> Router<Arc<ServiceContext>> {
    Router::new()
        .route("/tree", get(tree))
        .route("/tree/kill", post(kill))
        .route(
            "/stats",
            get(|State(ctx): Ctx| async move { reply(ops::stats(&ctx)) }),
        )
        .route(
            "/dialers",
            get(|State(ctx): Ctx| async move { reply(ops::dialers(&ctx)) }),
        )
        .route("/dialers/{name}/probe", post(probe))
        .route("/dns/stats", get(dns_stats))
        .route(
            "/dns/cache/flush",
            post(|State(ctx): Ctx| async move { reply(ops::cache_flush(&ctx)) }),
        )
        .route("/reload", post(reload))
}

/// How often a `/tree` WebSocket looks at the tree.
const TREE_POLL: Duration = Duration::from_secs(1);

/// The tree; over a WebSocket, the tree at once and again each time it
/// changed (looked at every [`TREE_POLL`]; uptimes alone are no change).
async fn tree(
    State(ctx): Ctx,
    Extension(hub): Extension<StreamHub>,
    Upgrade(upgrade): Upgrade,
) -> Response {
    if upgrade.is_none() {
        return reply(ops::tree(&ctx));
    }
    hub.deliver(
        upgrade,
        tree_changes(every(TREE_POLL, move || ops::tree(&ctx))),
    )
}

/// The trees of `trees` that differ from the one before in more than
/// their uptimes, as JSON texts.
fn tree_changes(trees: BoxStream<'static, Value>) -> Feed {
    let mut last: Option<Value> = None;
    trees
        .filter_map(move |tree| {
            let mut shape = tree.clone();
            forget_uptimes(&mut shape);
            let changed = last.as_ref() != Some(&shape);
            if changed {
                last = Some(shape);
            }
            futures::future::ready(changed.then(|| tree.to_string().into()))
        })
        .boxed()
}

fn forget_uptimes(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("uptime_ms");
            map.values_mut().for_each(forget_uptimes);
        }
        Value::Array(items) => items.iter_mut().for_each(forget_uptimes),
        _ => {}
    }
}

/// An admin reply as an HTTP response.
fn reply(value: Value) -> Response {
    if value["ok"] == json!(false) {
        let error = value["error"].as_str().unwrap_or_default();
        let status = if error.starts_with("no ") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        return (status, Json(value)).into_response();
    }
    Json(value).into_response()
}

#[derive(Deserialize)]
struct KillQuery {
    path: String,
}

/// Kills the actor at `?path=` once the reply is on its way (the API's
/// own actor may be the one killed: its socket is held, its connections go).
async fn kill(State(ctx): Ctx, Query(query): Query<KillQuery>) -> Response {
    let (value, cell) = ops::kill(&query.path, &ctx);
    if let Some(cell) = cell {
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            cell.kill();
        });
    }
    reply(value)
}

/// Reloads on the tree's runtime: a reload starts actors, which must not
/// live on the API's thread.
async fn reload(State(ctx): Ctx) -> Response {
    let runtime = ctx.runtime.clone();
    match runtime.spawn(async move { ops::reload(&ctx).await }).await {
        Ok(value) => reply(value),
        Err(e) => reply(ops::error_reply(&format!("the reload did not finish: {e}"))),
    }
}

async fn probe(State(ctx): Ctx, Path(name): Path<String>) -> Response {
    reply(ops::probe(&name, &ctx))
}

/// The DNS part of `stats`.
async fn dns_stats(State(ctx): Ctx) -> Response {
    let stats = ops::stats(&ctx);
    match stats["stats"].get("dns") {
        Some(dns) if !dns.is_null() => reply(json!({"ok": true, "dns": dns})),
        _ => reply(ops::error_reply("DNS is not configured")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tree_goes_again_only_when_more_than_uptimes_changed() {
        let node = |restarts: u32, uptime: u64| {
            json!({"ok": true, "tree": {"path": "", "uptime_ms": uptime, "restarts": 0,
                "children": [{"path": "api", "uptime_ms": uptime, "restarts": restarts}]}})
        };
        let trees = [node(0, 1), node(0, 1000), node(1, 5), node(1, 2000)];
        let sent: Vec<String> = tree_changes(futures::stream::iter(trees).boxed())
            .map(|json| json.to_string())
            .collect()
            .await;
        assert_eq!(sent, [node(0, 1).to_string(), node(1, 5).to_string()]);
    }
}

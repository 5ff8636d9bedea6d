//! The API child: binds `api.listen` (held across its restarts, so port 0
//! keeps its port), accepts at most [`MAX_CONNECTIONS`] connections at
//! once and serves each with hyper (HTTP/1.1, request heads bounded in
//! size and in time). Requests pass CORS (any origin, as mihomo), then the
//! bearer-token check (constant time; a WebSocket upgrade may carry it as
//! `?token=` instead, as browsers cannot set its headers), then a body
//! limit, then the routes. A write blocked for [`SEND_TIMEOUT`] ends its
//! connection, so a client that stops reading frees its slot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tower_http::cors::{Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use ward_actors::dialer::settings::Secret;
use ward_actors::io_class::{IoSide, SocketFailure};
use ward_actors::net::socket::bind_tcp;
use ward_actors::net::{accept_each, Connections, Held, Lease};
use ward_supervision::{ChildFailure, ChildSpec, Restart};

use super::stream::{asks_websocket, StreamHub, SEND_TIMEOUT};
use super::write_deadline::WriteDeadline;
use crate::context::ServiceContext;

/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// The largest request body accepted (a `PATCH /configs` is a few bytes).
const MAX_BODY: usize = 64 * 1024;
/// The largest request head (hyper's buffer; its floor is 8 KiB).
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API child serves, and with what secret.
#[derive(Clone)]
pub struct ApiArgs {
    pub listen: SocketAddr,
    pub secret: Option<Secret>,
    pub ctx: Arc<ServiceContext>,
    /// Where the groups' picks are kept.
    pub picks: Arc<super::picks::Picks>,
}

/// The API child's spec.
pub fn child_spec(args: ApiArgs, held: Held<TcpListener>) -> ChildSpec {
    ChildSpec::task("api", "api", Restart::Permanent, move |_| {
        let (args, held) = (args.clone(), held.clone());
        async move {
            let listen = args.listen;
            let lease = held.lease(|| bind_tcp(listen)).await.map_err(|e| {
                SocketFailure::new(format!("bind api {listen}"), IoSide::Listener, e)
            })?;
            Ok(async move { held.guard(serve(lease, args)).await })
        }
    })
}

async fn serve(listener: Lease<TcpListener>, args: ApiArgs) -> Result<(), ChildFailure> {
    let bound = listener
        .local_addr()
        .map_err(|e| ChildFailure::from(SocketFailure::new("api address", IoSide::Listener, e)))?;
    tracing::info!(addr = %args.listen, %bound, "API served at http://{bound}");
    // Streams end when this is dropped: when the child stops.
    let (hub, _streams_open) = StreamHub::new();
    let app = router(
        args.ctx.clone(),
        args.secret.clone(),
        hub,
        args.picks.clone(),
    );
    let mut clients = Connections::new(MAX_CONNECTIONS);
    let dead = accept_each(&*listener, "api", |stream, _| {
        // Past the cap the connection is closed at once.
        if !clients.has_room() {
            return;
        }
        let service = TowerToHyperService::new(app.clone());
        clients.serve(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(
                    TokioIo::new(WriteDeadline::new(stream, SEND_TIMEOUT)),
                    service,
                )
                .with_upgrades()
                .await;
        });
    })
    .await;
    Err(dead.into())
}

/// Every route, behind the body limit, the token check and CORS; the web
/// page's static files outside them (they hold no secret).
pub fn router(
    ctx: Arc<ServiceContext>,
    secret: Option<Secret>,
    hub: StreamHub,
    picks: Arc<super::picks::Picks>,
) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .max_age(Duration::from_secs(300));
    super::clash::routes()
        .merge(super::connections::routes())
        .merge(super::own::routes())
        .merge(super::live::routes())
        .with_state(ctx)
        .layer(Extension(hub))
        .layer(Extension(picks))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(middleware::from_fn_with_state(Arc::new(secret), authorize))
        .layer(cors)
        .merge(super::page::routes())
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `Authorization: Bearer <secret>` when a secret is set, or `?token=` on
/// a WebSocket upgrade (mihomo's rule: a token given there is the one
/// checked); 401 otherwise.
async fn authorize(
    State(secret): State<Arc<Option<Secret>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(secret) = secret.as_ref() else {
        return next.run(request).await;
    };
    let query_token = asks_websocket(request.headers())
        .then(|| {
            Query::<TokenQuery>::try_from_uri(request.uri())
                .ok()?
                .0
                .token
        })
        .flatten()
        .filter(|t| !t.is_empty());
    let header_token = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|value| value.strip_prefix(b"Bearer "));
    let given = query_token.as_deref().map(str::as_bytes).or(header_token);
    match given {
        Some(token) if bool::from(token.ct_eq(secret.expose().as_bytes())) => {
            next.run(request).await
        }
        _ => super::error(StatusCode::UNAUTHORIZED, "Unauthorized"),
    }
}

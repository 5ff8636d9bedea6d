//! The API child: binds `api.listen` (held across its restarts, so port 0
//! keeps its port), serves from a thread of its own ([`THREAD`], apart
//! from the data path's runtime), accepts at most [`MAX_CONNECTIONS`] connections at
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
use ward_actors::net::socket::bind_tcp_std;
use ward_actors::net::{accept_each, Connections, Held, Lease};
use ward_supervision::{ChildFailure, ChildSpec, Restart};

use super::stream::{asks_websocket, StreamHub, SEND_TIMEOUT};
use super::write_deadline::WriteDeadline;
use crate::context::ServiceContext;

/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 128;
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
pub fn child_spec(args: ApiArgs, held: Held<std::net::TcpListener>) -> ChildSpec {
    ChildSpec::task("api", "api", Restart::Permanent, move |_| {
        let (args, held) = (args.clone(), held.clone());
        async move {
            let listen = args.listen;
            let failed = |e| SocketFailure::new(format!("bind api {listen}"), IoSide::Listener, e);
            let lease = held.lease(|| bind_tcp_std(listen)).await.map_err(failed)?;
            // A descriptor of its own for the API's thread to register.
            let listener = lease.try_clone().map_err(failed)?;
            Ok(async move { held.guard(on_own_thread(lease, listener, args)).await })
        }
    })
}

/// Serves on a thread of its own ([`THREAD`], a single-threaded runtime)
/// until this future is dropped (the child stopped or was killed) or
/// serving fails. Dashboards' snapshots and streams (a `/connections`
/// of 10,000 flows is megabytes of JSON a second per client) then never
/// wait in a queue before a DNS query or a datagram, and their CPU is
/// the thread's, apart from the data path's. `lease` keeps the socket
/// held while it serves.
async fn on_own_thread(
    lease: Lease<std::net::TcpListener>,
    listener: std::net::TcpListener,
    args: ApiArgs,
) -> Result<(), ChildFailure> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done, outcome) = tokio::sync::oneshot::channel();
    let run = move || {
        yield_to_the_data_path();
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SocketFailure::new("api runtime", IoSide::Listener, e))?;
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener)
                    .map_err(|e| SocketFailure::new("api listener", IoSide::Listener, e))?;
                tokio::select! {
                    served = serve(listener, args) => served,
                    // Stopped: the runtime drops every connection with it.
                    _ = stopped => Ok(()),
                }
            })
        }));
        let _ = done.send(served.unwrap_or_else(|panic| Err(ChildFailure::panic(panic))));
    };
    std::thread::Builder::new()
        .name(THREAD.into())
        .spawn(run)
        .map_err(|e| SocketFailure::new("api thread", IoSide::Listener, e))?;
    let _serving = (lease, stop);
    match outcome.await {
        Ok(outcome) => outcome,
        Err(_) => Err(ChildFailure::from(SocketFailure::new(
            "api thread",
            IoSide::Listener,
            std::io::Error::other("ended without a word"),
        ))),
    }
}

/// The API thread's name (`ps -L`, `/proc/<pid>/task/*/comm`).
pub const THREAD: &str = "ward-api";

/// How much nicer the API thread is than the rest of ward: when the CPU
/// is short (a router's one or two cores), the data path's threads come
/// first and dashboards get what is left.
pub const NICER: i32 = 10;

/// Makes this thread alone (Linux keeps a nice value per thread) [`NICER`]
/// nicer, 19 at most. Lowering a priority needs no privilege; if it fails
/// anyway the API serves as it is.
fn yield_to_the_data_path() {
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    // SAFETY: system calls on this thread's id, no memory passed.
    let set = unsafe {
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (now + NICER).min(19))
    };
    if set != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "the API thread keeps its priority");
    }
}

async fn serve(listener: TcpListener, args: ApiArgs) -> Result<(), ChildFailure> {
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
    let dead = accept_each(&listener, "api", |stream, _| {
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
        .layer(Extension(super::connections::SharedSnapshot::default()))
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

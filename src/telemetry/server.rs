//! The telemetry child (kind `telemetry`): a task child that serves the
//! Prometheus text exposition at `/metrics` over plain HTTP/1.1 (one
//! request per connection) when an address is configured, and flushes the
//! log throttle's summaries every second. Its listening socket is held
//! across its restarts, so a metrics address on port 0 keeps its port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use ward_actors::io_class::{IoSide, SocketFailure};
use ward_actors::net::socket::bind_tcp;
use ward_actors::net::{accept_each, Connections, Held, Lease};
use ward_actors::Throttle;
use ward_supervision::{ChildFailure, ChildSpec, Restart};

use crate::context::ServiceContext;

/// Scrapes served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics address as the service context shows it; cleared however
/// the child dies, so `ward ctl stats` never shows a dead address.
struct Published(Arc<ServiceContext>);

impl Drop for Published {
    fn drop(&mut self) {
        self.0.set_metrics_addr(None);
    }
}

/// The telemetry child's spec: metrics on `listen` (when set), and the
/// throttle's flush.
pub fn child_spec(
    listen: Option<SocketAddr>,
    ctx: Arc<ServiceContext>,
    held: Held<TcpListener>,
) -> ChildSpec {
    ChildSpec::task("telemetry", "telemetry", Restart::Permanent, move |_| {
        let (ctx, held) = (ctx.clone(), held.clone());
        async move {
            let server = match listen {
                Some(addr) => Some(held.lease(|| bind_tcp(addr)).await.map_err(|e| {
                    SocketFailure::new(format!("bind metrics {addr}"), IoSide::Listener, e)
                })?),
                None => None,
            };
            Ok(async move {
                let Some(listener) = server else {
                    flush().await;
                    return Ok(());
                };
                tokio::select! {
                    served = held.guard(metrics(listener, ctx)) => served,
                    () = flush() => Ok(()),
                }
            })
        }
    })
}

/// Logs the throttle's summaries of keys that went quiet, every second.
async fn flush() {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tick.tick().await;
        Throttle::global().flush();
    }
}

/// Serves `/metrics` until the listening socket dies.
async fn metrics(
    listener: Lease<TcpListener>,
    ctx: Arc<ServiceContext>,
) -> Result<(), ChildFailure> {
    let bound = listener.local_addr().map_err(|e| {
        ChildFailure::from(SocketFailure::new("metrics address", IoSide::Listener, e))
    })?;
    ctx.set_metrics_addr(Some(bound));
    let _published = Published(ctx.clone());
    tracing::info!(addr = %bound, "metrics served at http://{bound}/metrics");
    let mut scrapes = Connections::new(MAX_CONNECTIONS);
    let dead = accept_each(&*listener, "metrics", |stream, _| {
        // Past the cap the connection is closed at once.
        if !scrapes.has_room() {
            return;
        }
        let ctx = ctx.clone();
        scrapes.serve(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, serve(stream, &ctx)).await;
        });
    })
    .await;
    Err(dead.into())
}

async fn serve(mut stream: TcpStream, ctx: &ServiceContext) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => {
            let body = ctx.metrics.render(&ctx.tree());
            respond(&mut stream, "200 OK", CONTENT_TYPE, &body).await
        }
        (Some("GET"), Some("/")) => {
            respond(
                &mut stream,
                "200 OK",
                "text/plain",
                "ward: metrics at /metrics\n",
            )
            .await
        }
        (Some("GET"), _) => {
            respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await
        }
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", "").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

//! The telemetry actor: serves the Prometheus text exposition at `/metrics`
//! over plain HTTP/1.1 (one request per connection) when an address is
//! configured, and flushes the log throttle's summaries every second.
//! Its tasks live in guards in its state, so they end however it dies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use ward_actors::{classify_io_error, warn_throttled, IoClass, IoSide, Throttle};
use ward_supervision::{TaskGuard, TaskScope};

use crate::context::ServiceContext;

/// Scrapes served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub struct TelemetryActor;

pub struct TelemetryArgs {
    pub listen: Option<SocketAddr>,
    pub ctx: Arc<ServiceContext>,
    /// The incarnation's task scope, for the metrics listener.
    pub tasks: TaskScope,
}

pub struct TelemetryState {
    _server: Option<TaskGuard>,
    _flush: TaskGuard,
    _published: Option<Published>,
}

/// The metrics address as the service context shows it; cleared however
/// the actor dies, so `ward ctl stats` never shows a dead address.
struct Published(Arc<ServiceContext>);

impl Drop for Published {
    fn drop(&mut self) {
        self.0.set_metrics_addr(None);
    }
}

pub enum TelemetryMsg {
    /// The metrics listener stopped working; the actor ends and is rebound.
    ServerFailed(String),
}

impl Actor for TelemetryActor {
    type Msg = TelemetryMsg;
    type State = TelemetryState;
    type Arguments = TelemetryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TelemetryMsg>,
        args: TelemetryArgs,
    ) -> Result<TelemetryState, ActorProcessingErr> {
        let (server, published) = match args.listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await?;
                let bound = listener.local_addr()?;
                args.ctx.set_metrics_addr(Some(bound));
                tracing::info!(addr = %bound, "metrics served at http://{bound}/metrics");
                let published = Published(args.ctx.clone());
                (
                    Some(args.tasks.spawn(accept_loop(listener, args.ctx, myself))),
                    Some(published),
                )
            }
            None => (None, None),
        };
        let flush = TaskGuard::spawn(async {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            loop {
                tick.tick().await;
                Throttle::global().flush();
            }
        });
        Ok(TelemetryState {
            _server: server,
            _flush: flush,
            _published: published,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<TelemetryMsg>,
        message: TelemetryMsg,
        _state: &mut TelemetryState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TelemetryMsg::ServerFailed(reason) => Err(format!("metrics listener: {reason}").into()),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ServiceContext>,
    owner: ActorRef<TelemetryMsg>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let ctx = ctx.clone();
                connections.spawn(async move {
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, serve(stream, &ctx)).await;
                    drop(permit);
                });
            }
            Err(e) => match classify_io_error(&e, IoSide::Accept) {
                IoClass::Transient | IoClass::Normal | IoClass::PeerGone => {
                    warn_throttled!("metrics accept", error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                IoClass::SocketDead | IoClass::PathFailed => {
                    let _ = owner.send_message(TelemetryMsg::ServerFailed(e.to_string()));
                    return;
                }
            },
        }
    }
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

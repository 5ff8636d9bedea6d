//! A DNS-over-HTTPS connection (RFC 8484) as a task child of its upstream
//! (kind `dns-upstream-conn`): one HTTP/2 connection over TLS, each query a
//! POST on its own stream. Queries reach it as they reach a TCP connection:
//! filed in its pending map by the upstream and pushed into its outgoing
//! queue. When the connection ends (GOAWAY, close, error), queries still in
//! flight stay pending and the upstream sends them again once on a fresh
//! connection.

use std::sync::Arc;
use std::time::Instant;

use crate::dialer::ProxyStream;
use bytes::Bytes;
use h2::client::SendRequest;
use ractor::{ActorCell, SpawnErr};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use ward_supervision::{ChildFailure, TaskChild, TaskScope};

use super::actor::UpstreamMsg;
use super::conn::{
    report_tls_failure, ConnArgs, ConnError, Outgoing, StreamTarget, CONNECT_TIMEOUT, SWEEP,
};
use super::pending::Pending;
use super::UpstreamError;
use crate::dialer::Dialer;
use crate::dns::wire;
use crate::io_class::{classify_io_error, IoClass, IoSide};

/// The largest answer body accepted.
const MAX_BODY: usize = 65_535;
const MEDIA_TYPE: &str = "application/dns-message";

/// Spawns a DoH connection to `uri` (`https://authority/path`), linked to
/// its upstream, its task in the upstream incarnation's scope.
pub async fn spawn(
    args: ConnArgs,
    uri: Arc<str>,
    upstream: ActorCell,
    tasks: TaskScope,
) -> Result<(ActorCell, JoinHandle<()>), SpawnErr> {
    let (actor, join) =
        TaskChild::spawn_linked(async move { Ok(run(args, uri)) }, upstream, tasks).await?;
    Ok((actor.get_cell(), join))
}

enum RequestError {
    Status(u16),
    /// The server reset this one stream; the connection lives on.
    Stream,
    Connection(IoClass, String),
}

fn h2_error(e: h2::Error) -> RequestError {
    if e.is_reset() && !e.is_go_away() {
        return RequestError::Stream;
    }
    let class = match e.get_io() {
        Some(io) => classify_io_error(io, IoSide::Session),
        None => IoClass::PeerGone,
    };
    RequestError::Connection(class, e.to_string())
}

async fn request(
    sender: SendRequest<Bytes>,
    uri: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, RequestError> {
    let mut sender = sender.ready().await.map_err(h2_error)?;
    let request = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, MEDIA_TYPE)
        .header(http::header::ACCEPT, MEDIA_TYPE)
        .body(())
        .map_err(|e| RequestError::Connection(IoClass::PathFailed, e.to_string()))?;
    let (response, mut stream) = sender.send_request(request, false).map_err(h2_error)?;
    stream
        .send_data(Bytes::from(body), true)
        .map_err(h2_error)?;
    let response = response.await.map_err(h2_error)?;
    if response.status() != http::StatusCode::OK {
        return Err(RequestError::Status(response.status().as_u16()));
    }
    let mut body = response.into_body();
    let mut answer = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(h2_error)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        answer.extend_from_slice(&chunk);
        if answer.len() > MAX_BODY {
            return Err(RequestError::Status(413));
        }
    }
    Ok(answer)
}

/// One query: its answer completes it; an HTTP error fails it; a broken
/// connection leaves it pending (for the retry) and ends the connection.
async fn exchange(
    sender: SendRequest<Bytes>,
    uri: Arc<str>,
    out: Outgoing,
    pending: Arc<Pending>,
    broken: mpsc::Sender<ConnError>,
) {
    let result =
        match tokio::time::timeout_at(out.deadline.into(), request(sender, &uri, out.wire)).await {
            Ok(result) => result,
            Err(_) => {
                if let Some(query) = pending.take(out.key) {
                    query.fail(UpstreamError::Timeout);
                }
                return;
            }
        };
    match result {
        Ok(answer) => {
            if let Some(query) = pending.take(out.key) {
                if wire::same_question(&answer, &query.question) {
                    let _ = query.reply.send(Ok(answer));
                } else {
                    query.fail(UpstreamError::Malformed);
                }
            }
        }
        Err(RequestError::Status(_)) => {
            if let Some(query) = pending.take(out.key) {
                query.fail(UpstreamError::Malformed);
            }
        }
        Err(RequestError::Stream) => {
            if let Some(query) = pending.take(out.key) {
                query.fail(UpstreamError::Unavailable);
            }
        }
        Err(RequestError::Connection(class, reason)) => {
            let _ = broken.try_send(ConnError::Broken { class, reason });
        }
    }
}

/// The connection, until it idles (`Ok`) or breaks.
async fn run(args: ConnArgs, uri: Arc<str>) -> Result<(), ChildFailure> {
    let ConnArgs {
        target,
        dialer,
        pending,
        mut outgoing,
        owner,
        conn_id,
        idle,
    } = args;
    let (sender, connection) =
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake(&target, &dialer)).await {
            Ok(Ok(pair)) => pair,
            Ok(Err((class, reason))) => {
                return Err(ChildFailure::of(ConnError::ConnectFailed { class, reason }))
            }
            Err(_) => {
                let class = IoClass::PathFailed;
                let reason = "timed out".to_string();
                return Err(ChildFailure::of(ConnError::ConnectFailed { class, reason }));
            }
        };
    let _ = owner.send_message(UpstreamMsg::ConnReady(conn_id));
    // A request that finds the connection broken says so here.
    let (broken_tx, mut broken) = mpsc::channel(1);
    let mut requests = JoinSet::new();
    let mut connection = std::pin::pin!(connection);
    let mut last_used = Instant::now();
    let mut sweep = tokio::time::interval(SWEEP);
    let failed = loop {
        while requests.try_join_next().is_some() {}
        tokio::select! {
            result = &mut connection => break connection_ended(result),
            Some(failed) = broken.recv() => break failed,
            next = outgoing.recv() => match next {
                Some(out) => {
                    last_used = Instant::now();
                    let exchange = exchange(sender.clone(), uri.clone(), out, pending.clone(), broken_tx.clone());
                    requests.spawn(exchange);
                }
                None => return Ok(()),
            },
            _ = sweep.tick() => {
                let now = Instant::now();
                pending.expire(now);
                if pending.is_empty() && now.duration_since(last_used) >= idle {
                    return Ok(());
                }
            }
        }
    };
    Err(failed.reported(&dialer, &pending))
}

/// Why the HTTP/2 connection ended under its requests.
fn connection_ended(result: Result<(), h2::Error>) -> ConnError {
    let Err(e) = result else {
        let reason = "closed by the server".to_string();
        return ConnError::Broken {
            class: IoClass::PeerGone,
            reason,
        };
    };
    match h2_error(e) {
        RequestError::Connection(class, reason) => ConnError::Broken { class, reason },
        RequestError::Status(code) => ConnError::Broken {
            class: IoClass::PeerGone,
            reason: format!("status {code}"),
        },
        RequestError::Stream => ConnError::Broken {
            class: IoClass::PeerGone,
            reason: "stream reset".to_string(),
        },
    }
}

type Handshake = (
    SendRequest<Bytes>,
    h2::client::Connection<tokio_rustls::client::TlsStream<ProxyStream>, Bytes>,
);

async fn handshake(target: &StreamTarget, dialer: &Dialer) -> Result<Handshake, (IoClass, String)> {
    let StreamTarget::Tls { addr, name, config } = target else {
        return Err((IoClass::PathFailed, "DoH needs TLS".to_string()));
    };
    let io_err = |e: std::io::Error| {
        let class = classify_io_error(&e, IoSide::Dial);
        report_tls_failure(dialer, class, &e.to_string());
        (class, e.to_string())
    };
    let tcp = dialer
        .connect_tcp(*addr, CONNECT_TIMEOUT)
        .await
        .map_err(|failure| (failure.class, failure.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name.clone(), tcp)
        .await
        .map_err(io_err)?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err((
            IoClass::PathFailed,
            "server did not agree to HTTP/2".to_string(),
        ));
    }
    h2::client::handshake(tls)
        .await
        .map_err(|e| (IoClass::PathFailed, e.to_string()))
}

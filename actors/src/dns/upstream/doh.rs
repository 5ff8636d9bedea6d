//! A DNS-over-HTTPS connection (RFC 8484) as a child actor of its upstream
//! (kind `dns-upstream-conn`): one HTTP/2 connection over TLS, each query a
//! POST on its own stream. Queries reach it as they reach a TCP connection:
//! filed in its pending map by the upstream and pushed into its outgoing
//! queue. When the connection ends (GOAWAY, close, error), queries still in
//! flight stay pending and the upstream sends them again once on a fresh
//! connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use ward_supervision::TaskGuard;

use super::actor::UpstreamMsg;
use super::conn::{
    report_broken, report_tls_failure, End, Outgoing, StreamTarget, CONNECT_TIMEOUT, SWEEP,
};
use super::pending::Pending;
use super::UpstreamError;
use crate::dialer::Dialer;
use crate::dns::wire;
use crate::io_class::{classify_io_error, IoClass, IoSide};

/// The largest answer body accepted.
const MAX_BODY: usize = 65_535;
const MEDIA_TYPE: &str = "application/dns-message";

pub struct DohConn;

pub struct DohConnArgs {
    pub target: StreamTarget,
    /// The path it goes through, chosen by the upstream.
    pub dialer: Arc<Dialer>,
    /// `https://authority/path`.
    pub uri: String,
    pub pending: Arc<Pending>,
    pub outgoing: mpsc::Receiver<Outgoing>,
    pub owner: ActorRef<UpstreamMsg>,
    pub conn_id: u64,
    pub idle: Duration,
}

pub enum DohConnMsg {
    /// From the connection's tasks: why it is over.
    Ended(End),
}

pub struct DohConnState {
    _io: TaskGuard,
    dialer: Arc<Dialer>,
    pending: Arc<Pending>,
}

impl Actor for DohConn {
    type Msg = DohConnMsg;
    type State = DohConnState;
    type Arguments = DohConnArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<DohConnMsg>,
        args: DohConnArgs,
    ) -> Result<DohConnState, ActorProcessingErr> {
        let dialer = args.dialer.clone();
        let pending = args.pending.clone();
        let io = TaskGuard::spawn(run(args, myself));
        Ok(DohConnState {
            _io: io,
            dialer,
            pending,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<DohConnMsg>,
        message: DohConnMsg,
        state: &mut DohConnState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DohConnMsg::Ended(End::Idle) => {
                myself.stop(Some("idle".to_string()));
                Ok(())
            }
            DohConnMsg::Ended(End::ConnectFailed(class, reason)) => {
                Err(format!("connect failed ({}): {reason}", class.label()).into())
            }
            DohConnMsg::Ended(End::Broken(class, reason)) => {
                report_broken(&state.dialer, &state.pending, class, &reason);
                Err(format!("connection broken ({}): {reason}", class.label()).into())
            }
        }
    }
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
    conn: ActorRef<DohConnMsg>,
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
            let _ = conn.send_message(DohConnMsg::Ended(End::Broken(class, reason)));
        }
    }
}

async fn run(args: DohConnArgs, conn: ActorRef<DohConnMsg>) {
    let DohConnArgs {
        target,
        dialer,
        uri,
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
                let _ = conn.send_message(DohConnMsg::Ended(End::ConnectFailed(class, reason)));
                return;
            }
            Err(_) => {
                let end = End::ConnectFailed(IoClass::PathFailed, "timed out".to_string());
                let _ = conn.send_message(DohConnMsg::Ended(end));
                return;
            }
        };
    let _ = owner.send_message(UpstreamMsg::ConnReady(conn_id));
    let uri: Arc<str> = uri.into();
    let mut requests = JoinSet::new();
    let mut connection = std::pin::pin!(connection);
    let mut last_used = Instant::now();
    let mut sweep = tokio::time::interval(SWEEP);
    let end = loop {
        while requests.try_join_next().is_some() {}
        tokio::select! {
            result = &mut connection => break match result {
                Ok(()) => End::Broken(IoClass::PeerGone, "closed by the server".to_string()),
                Err(e) => match h2_error(e) {
                    RequestError::Connection(class, reason) => End::Broken(class, reason),
                    other => End::Broken(IoClass::PeerGone, match other {
                        RequestError::Status(code) => format!("status {code}"),
                        _ => "stream reset".to_string(),
                    }),
                },
            },
            next = outgoing.recv() => match next {
                Some(out) => {
                    last_used = Instant::now();
                    requests.spawn(exchange(sender.clone(), uri.clone(), out, pending.clone(), conn.clone()));
                }
                None => return,
            },
            _ = sweep.tick() => {
                let now = Instant::now();
                pending.expire(now);
                if pending.is_empty() && now.duration_since(last_used) >= idle {
                    break End::Idle;
                }
            }
        }
    };
    let _ = conn.send_message(DohConnMsg::Ended(end));
}

type Handshake = (
    SendRequest<Bytes>,
    h2::client::Connection<tokio_rustls::client::TlsStream<TcpStream>, Bytes>,
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

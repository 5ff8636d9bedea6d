//! A DNS-over-HTTPS connection (RFC 8484) as a child actor of its upstream
//! (kind `dns-upstream-conn`): one HTTP/2 connection over TLS, each query a
//! POST on its own stream. When the connection ends (GOAWAY, close, error),
//! queries still in flight stay in the pending map the upstream holds and
//! are sent again once on a fresh connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use ward_supervision::TaskGuard;

use super::actor::UpstreamMsg;
use super::conn::{End, StreamTarget, CONNECT_TIMEOUT};
use super::pending::Pending;
use super::{UpstreamError, UpstreamQuery};
use crate::dns::wire;
use crate::io_class::{classify_io_error, IoClass, IoSide};

/// Queries waiting for the connection to come up, at most.
const WAITING: usize = 512;
/// The largest answer body accepted.
const MAX_BODY: usize = 65_535;
const MEDIA_TYPE: &str = "application/dns-message";

pub struct DohConn;

pub struct DohConnArgs {
    pub target: StreamTarget,
    /// `https://authority/path`.
    pub uri: String,
    pub pending: Arc<Pending>,
    pub owner: ActorRef<UpstreamMsg>,
    pub conn_id: u64,
    pub idle: Duration,
}

pub enum DohConnMsg {
    Send(UpstreamQuery),
    /// From the connection task: HTTP/2 is up.
    Ready(SendRequest<Bytes>),
    Ended(End),
}

pub struct DohConnState {
    uri: Arc<str>,
    sender: Option<SendRequest<Bytes>>,
    waiting: Vec<UpstreamQuery>,
    pending: Arc<Pending>,
    requests: JoinSet<()>,
    last_used: Arc<AtomicU64>,
    started: Instant,
    owner: ActorRef<UpstreamMsg>,
    conn_id: u64,
    _io: TaskGuard,
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
        let last_used = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let io = TaskGuard::spawn(run(
            args.target,
            myself,
            args.pending.clone(),
            last_used.clone(),
            started,
            args.idle,
        ));
        Ok(DohConnState {
            uri: args.uri.into(),
            sender: None,
            waiting: Vec::new(),
            pending: args.pending,
            requests: JoinSet::new(),
            last_used,
            started,
            owner: args.owner,
            conn_id: args.conn_id,
            _io: io,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<DohConnMsg>,
        message: DohConnMsg,
        state: &mut DohConnState,
    ) -> Result<(), ActorProcessingErr> {
        while state.requests.try_join_next().is_some() {}
        match message {
            DohConnMsg::Send(query) => state.send(query, &myself),
            DohConnMsg::Ready(sender) => {
                state.sender = Some(sender);
                let _ = state
                    .owner
                    .send_message(UpstreamMsg::ConnReady(state.conn_id));
                for query in std::mem::take(&mut state.waiting) {
                    state.send(query, &myself);
                }
            }
            DohConnMsg::Ended(End::Idle) => myself.stop(Some("idle".to_string())),
            DohConnMsg::Ended(End::ConnectFailed(class, reason)) => {
                return Err(format!("connect failed ({}): {reason}", class.label()).into())
            }
            DohConnMsg::Ended(End::Broken(class, reason)) => {
                return Err(format!("connection broken ({}): {reason}", class.label()).into())
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<DohConnMsg>,
        state: &mut DohConnState,
    ) -> Result<(), ActorProcessingErr> {
        for query in state.waiting.drain(..) {
            query.fail(UpstreamError::Unavailable);
        }
        Ok(())
    }
}

impl DohConnState {
    fn send(&mut self, query: UpstreamQuery, myself: &ActorRef<DohConnMsg>) {
        let Some(sender) = self.sender.clone() else {
            if self.waiting.len() >= WAITING {
                return query.fail(UpstreamError::Unavailable);
            }
            self.waiting.push(query);
            return;
        };
        // RFC 8484 asks for id 0; the pending key is ours only.
        let (key, body) = match self.pending.insert(query, |_, q| q.wire(0)) {
            Ok(sent) => sent,
            Err(query) => return query.fail(UpstreamError::Unavailable),
        };
        self.last_used
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let uri = self.uri.clone();
        let pending = self.pending.clone();
        let conn = myself.clone();
        self.requests.spawn(async move {
            match request(sender, &uri, body).await {
                Ok(answer) => match pending.take(key) {
                    Some(query) if wire::same_question(&answer, &query.question) => {
                        let _ = query.reply.send(Ok(answer));
                    }
                    Some(query) => query.fail(UpstreamError::Malformed),
                    None => {}
                },
                Err(RequestError::Status(_)) => {
                    if let Some(query) = pending.take(key) {
                        query.fail(UpstreamError::Malformed);
                    }
                }
                // The query stays pending: the upstream retries it on a new
                // connection once this one is gone.
                Err(RequestError::Connection(class, reason)) => {
                    let _ = conn.send_message(DohConnMsg::Ended(End::Broken(class, reason)));
                }
            }
        });
    }
}

enum RequestError {
    Status(u16),
    Connection(IoClass, String),
}

fn h2_error(e: h2::Error) -> RequestError {
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

async fn run(
    target: StreamTarget,
    conn: ActorRef<DohConnMsg>,
    pending: Arc<Pending>,
    last_used: Arc<AtomicU64>,
    started: Instant,
    idle: Duration,
) {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, handshake(&target)).await;
    let (sender, connection) = match connected {
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
    let _ = conn.send_message(DohConnMsg::Ready(sender));
    let mut connection = std::pin::pin!(connection);
    let mut check = tokio::time::interval(idle / 2);
    let end = loop {
        tokio::select! {
            result = &mut connection => break match result {
                Ok(()) => End::Broken(IoClass::PeerGone, "closed by the server".to_string()),
                Err(e) => match h2_error(e) {
                    RequestError::Connection(class, reason) => End::Broken(class, reason),
                    RequestError::Status(code) => End::Broken(IoClass::PeerGone, format!("status {code}")),
                },
            },
            _ = check.tick() => {
                let used = Duration::from_millis(last_used.load(Ordering::Relaxed));
                if pending.is_empty() && started.elapsed().saturating_sub(used) >= idle {
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

async fn handshake(target: &StreamTarget) -> Result<Handshake, (IoClass, String)> {
    let StreamTarget::Tls { addr, name, config } = target else {
        return Err((IoClass::PathFailed, "DoH needs TLS".to_string()));
    };
    let io_err = |e: std::io::Error| (classify_io_error(&e, IoSide::Dial), e.to_string());
    let tcp = TcpStream::connect(addr).await.map_err(io_err)?;
    tcp.set_nodelay(true).map_err(io_err)?;
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

//! How the API streams: a feed of JSON texts goes to the client either as
//! a chunked HTTP body (one JSON object a line) or, when the request asks
//! to upgrade, as WebSocket text messages, as mihomo serves them. At most
//! [`MAX_STREAMS`] streams run at once (503 past that). A stream ends when
//! its client goes (a failed or timed-out send, a close, or a read error),
//! when its feed ends, and when the API child stops. What each feed says
//! is in `live`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream::{BoxStream, SplitSink};
use futures::{SinkExt, StreamExt};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Streams served at once, of both kinds. Below the API's connection cap,
/// so that plain requests still get through while every slot streams.
pub const MAX_STREAMS: usize = 64;
/// How long one WebSocket message may take to go out.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message or frame a client may send (ward reads only to
/// answer pings and to see the client close).
const MAX_INCOMING: usize = 16 * 1024;

/// What a stream sends: one JSON text per item. Shared bytes: one
/// snapshot goes to every client asking for it without a copy each.
pub type Feed = BoxStream<'static, Utf8Bytes>;

/// The streaming slots and the stop signal, shared by every route.
#[derive(Clone)]
pub struct StreamHub {
    slots: Arc<Semaphore>,
    stopped: watch::Receiver<()>,
}

/// Held by the API child while it serves: dropping it ends every stream.
pub struct StreamsOpen(#[allow(dead_code)] watch::Sender<()>);

impl StreamHub {
    pub fn new() -> (Self, StreamsOpen) {
        let (open, stopped) = watch::channel(());
        let hub = Self {
            slots: Arc::new(Semaphore::new(MAX_STREAMS)),
            stopped,
        };
        (hub, StreamsOpen(open))
    }

    /// Resolves once the API child stopped serving.
    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopped = self.stopped.clone();
        async move { while stopped.changed().await.is_ok() {} }
    }

    /// Streams `feed` over `upgrade` when there is one, chunked otherwise;
    /// 503 when every slot is taken.
    pub fn deliver(&self, upgrade: Option<WebSocketUpgrade>, feed: Feed) -> Response {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return super::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many streaming clients",
            );
        };
        let feed = feed.take_until(Box::pin(self.stopped())).boxed();
        match upgrade {
            Some(upgrade) => upgrade
                .max_message_size(MAX_INCOMING)
                .max_frame_size(MAX_INCOMING)
                .on_upgrade(move |socket| over_websocket(socket, feed, slot)),
            None => chunked(feed, slot),
        }
    }
}

/// One JSON object a line; hyper flushes each as it comes. The slot goes
/// when hyper drops the body: the client left or a write failed.
fn chunked(feed: Feed, slot: OwnedSemaphorePermit) -> Response {
    let lines = feed.flat_map(move |json| {
        let _held = &slot;
        let json = Message::Text(json).into_data();
        futures::stream::iter([json, Bytes::from_static(b"\n")].map(Ok::<_, Infallible>))
    });
    let mut response = Body::from_stream(lines).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Sends each item as a text message until the feed ends or the client
/// goes; reads only to see it go and to answer its pings.
async fn over_websocket(socket: WebSocket, mut feed: Feed, _slot: OwnedSemaphorePermit) {
    let (mut out, mut incoming) = socket.split();
    loop {
        tokio::select! {
            item = feed.next() => match item {
                Some(json) => if !send(&mut out, Message::Text(json)).await {
                    return;
                },
                None => break,
            },
            message = incoming.next() => match message {
                // The pong is queued by the read; a flush sends it.
                Some(Ok(Message::Ping(_))) => if !flush(&mut out).await {
                    return;
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = tokio::time::timeout(SEND_TIMEOUT, out.close()).await;
}

async fn send(out: &mut SplitSink<WebSocket, Message>, message: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, out.send(message)).await,
        Ok(Ok(()))
    )
}

async fn flush(out: &mut SplitSink<WebSocket, Message>) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, out.flush()).await,
        Ok(Ok(()))
    )
}

/// The request's WebSocket upgrade, if it asks for one: `None` without an
/// `Upgrade` header, the upgrade's refusal when it asks badly.
pub struct Upgrade(pub Option<WebSocketUpgrade>);

/// True when the request asks for a WebSocket.
pub fn asks_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if !asks_websocket(&parts.headers) {
            return Ok(Self(None));
        }
        WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map(|upgrade| Self(Some(upgrade)))
            .map_err(IntoResponse::into_response)
    }
}

/// What `next` gives every `period`, the first time at once.
pub fn every<T: Send + 'static>(
    period: Duration,
    mut next: impl FnMut() -> T + Send + 'static,
) -> BoxStream<'static, T> {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold(ticks, |mut ticks| async move {
        ticks.tick().await;
        Some(((), ticks))
    })
    .map(move |()| next())
    .boxed()
}

//! Two streaming HTTP transports, alike but for their framing: **Server-Sent Events**
//! (`GET /connection/sse`, read with `EventSource`) and **HTTP streaming** (`POST
//! /connection/stream`, a `fetch` response read as a stream of lines).
//!
//! The response never ends while the session lives. Its first message gives the session's
//! key; every later one is one frame of the realtime protocol (`peregrine.json`):
//!
//! * SSE: `event: session` with the key as data; then one event per frame, each line of the
//!   frame a `data:` line (`EventSource` joins them with `\n`, giving the frame back).
//!   A comment line keeps the connection alive when there is nothing to say.
//! * HTTP streaming: `{"session":"<key>"}` on the first line, then the frames' lines, one
//!   message per line; an empty line keeps the connection alive.
//!
//! Commands come by `POST /connection/send?session=<key>` ([`super::http`]). The first
//! ones may come with the opening request: SSE's `?commands=` (URL-encoded), the stream's
//! body. The session ends when the client drops the response.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use peregrine_wire::{Encoding, ServerMessage, encode_server_messages};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Interval;

use super::http::HttpSessions;
use super::{Outbound, Transport};
use crate::app::router::{ClientRequest, Peer, admit};
use crate::disconnect::Disconnect;
use crate::node::Node;
use crate::outbox::Queued;
use crate::session::run;

/// Chunks waiting to be written to one response (the writer waits when they are there:
/// the outbox then fills and a client too slow to read is disconnected as a slow consumer).
const CHUNKS: usize = 16;

/// How a streaming transport frames what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-Sent Events.
    Sse,
    /// Newline-delimited JSON.
    Lines,
}

impl Framing {
    fn transport(self) -> Transport {
        match self {
            Framing::Sse => Transport::Sse,
            Framing::Lines => Transport::HttpStream,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Framing::Sse => "text/event-stream",
            Framing::Lines => "application/x-ndjson",
        }
    }

    fn session(self, key: &str) -> Bytes {
        match self {
            Framing::Sse => Bytes::from(format!("event: session\ndata: {key}\n\n")),
            Framing::Lines => Bytes::from(format!("{{\"session\":\"{key}\"}}\n")),
        }
    }

    fn keepalive(self) -> Bytes {
        Bytes::from_static(match self {
            Framing::Sse => b":\n\n",
            Framing::Lines => b"\n",
        })
    }

    /// One frame of newline-separated JSON messages, framed.
    fn frame(self, frame: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(frame.len() + 16);
        for line in frame.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if self == Framing::Sse {
                out.extend_from_slice(b"data: ");
            }
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        if self == Framing::Sse {
            out.push(b'\n');
        }
        Bytes::from(out)
    }
}

/// The response body: the chunks the session sends, and keepalives between them. Dropping
/// it (the client went away) ends the session.
struct BodyStream {
    chunks: mpsc::Receiver<Bytes>,
    keepalive: Interval,
    keepalive_chunk: Bytes,
    _gone: oneshot::Sender<()>,
}

impl Stream for BodyStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.chunks.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                self.keepalive.reset();
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.keepalive.poll_tick(cx) {
                Poll::Ready(_) => Poll::Ready(Some(Ok(self.keepalive_chunk.clone()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// The session's outbound half: frames into the response body.
struct StreamOutbound {
    chunks: mpsc::Sender<Bytes>,
    framing: Framing,
}

impl Outbound for StreamOutbound {
    async fn send(&mut self, batch: &[Queued]) -> std::io::Result<()> {
        for queued in batch {
            let chunk = self.framing.frame(&queued.frame);
            self.chunks.send(chunk).await.map_err(|_| std::io::ErrorKind::BrokenPipe)?;
        }
        Ok(())
    }

    async fn close(&mut self, d: &Disconnect, push: bool) {
        if push {
            let frame = encode_server_messages(&[ServerMessage::Push(d.push())], Encoding::Json);
            let _ = self.chunks.send(self.framing.frame(&frame)).await;
        }
        // The body ends once this sender is dropped, with the session.
    }
}

/// `GET /connection/sse[?token=...&commands=...]`.
pub async fn sse(
    State(node): State<Arc<Node>>,
    Extension(sessions): Extension<Arc<HttpSessions>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let first = uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "commands").map(|(_, v)| v.into_owned())
    });
    open(node, sessions, peer, headers, uri, first.map(Bytes::from), Framing::Sse)
}

/// `POST /connection/stream[?token=...]`, the first commands as the body.
pub async fn http_stream(
    State(node): State<Arc<Node>>,
    Extension(sessions): Extension<Arc<HttpSessions>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    open(node, sessions, peer, headers, uri, Some(body), Framing::Lines)
}

fn open(
    node: Arc<Node>,
    sessions: Arc<HttpSessions>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    uri: Uri,
    first: Option<Bytes>,
    framing: Framing,
) -> Response {
    if let Some(first) = first.as_ref().filter(|b| !b.is_empty())
        && let Some(refused) = super::http::refuse_commands(&node, first)
    {
        return refused;
    }
    let client = ClientRequest::of(peer.as_ref(), &headers, &uri);
    let (identity, ticket) = match admit(&node, &client) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    let (gone_tx, gone_rx) = oneshot::channel();
    let (key, inbound) = sessions.open(None, first, Some(gone_rx));
    let (chunks_tx, chunks) = mpsc::channel(CHUNKS);
    let _ = chunks_tx.try_send(framing.session(&key));
    let ping = node.config().client.ping_interval;
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + ping, ping);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let body = BodyStream { chunks, keepalive, keepalive_chunk: framing.keepalive(), _gone: gone_tx };
    let outbound = StreamOutbound { chunks: chunks_tx, framing };
    tokio::spawn(run(node, inbound, outbound, Encoding::Json, identity, ticket, framing.transport()));
    (
        [
            (header::CONTENT_TYPE, framing.content_type()),
            (header::CACHE_CONTROL, "no-cache, no-store"),
            // nginx would buffer the stream otherwise.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

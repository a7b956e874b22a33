//! The subscribers of `peregrine bench fanout` that speak HTTP instead of WebSocket: our
//! three fallback transports (docs/protocol.md, "HTTP transports") and Engine.IO's
//! long-polling, Socket.IO's `polling` transport, for the comparison issue 22 asks for.
//!
//! * `sse`: `GET /connection/sse?commands=<connect and subscribe>`, then `data:` lines;
//! * `http_stream`: `POST /connection/stream` with the commands as body, then NDJSON lines;
//! * `long_poll`: `POST /connection/poll/open` with the commands, then held
//!   `GET /connection/poll?session=<key>&ack=<seq>`, each answer acknowledged by the next;
//! * `polling` (Socket.IO): the Engine.IO 4 handshake `GET /socket.io/?EIO=4&transport=polling`,
//!   `40` (join the main namespace) and the `subscribe` event by POST, then held GETs whose
//!   packets are separated by `\x1e`; a ping (`2`) is answered by a POST of `3`, as
//!   socket.io-client does.
//!
//! Each subscriber holds one kept-alive HTTP/1.1 connection (hyper's client), like a
//! browser's tab; publications are counted with the same byte scan as over WebSocket
//! ([`Counter::publications`]). Long-polling answers are parsed as JSON, as a client must:
//! the frames inside are JSON strings, whose escaped quotes the scan would not see.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Method, Request, Response, header};
use hyper_util::rt::TokioIo;
use peregrine_wire::{Encoding, ServerMessage, decode_server_messages};
use tokio::net::TcpStream;

use super::fanout::{Counter, FanoutTransport};
use super::target::connect_from;

/// How long a subscriber waits for each answer while subscribing.
const SETUP_WAIT: Duration = Duration::from_secs(10);

/// Engine.IO 4 over long-polling, the path every request of a session starts with.
const ENGINE_IO_POLLING: &str = "/socket.io/?EIO=4&transport=polling";

/// Engine.IO's packet separator in a polling payload.
const RECORD_SEPARATOR: u8 = 0x1e;

type Conn = http1::SendRequest<Full<Bytes>>;

/// A subscribed HTTP subscriber, ready to receive.
pub(super) struct HttpSubscriber {
    conn: Conn,
    addr: SocketAddr,
    state: State,
}

enum State {
    /// SSE or HTTP streaming: the response body, and what has come of it past the last
    /// whole line.
    Stream { body: Incoming, pending: Vec<u8> },
    /// Our long-polling: the session, and the last frame received.
    LongPoll { session: SessionRef, ack: u64 },
    /// Engine.IO polling: the session's path, and the source address for pong requests.
    EnginePoll { path: String, source: Option<IpAddr> },
}

/// How a request speaks for one of our HTTP sessions. The key is opaque (its format may
/// change); a token the server may come to require on these requests goes here too.
struct SessionRef {
    key: String,
}

impl SessionRef {
    /// The query parameters naming the session.
    fn query(&self) -> String {
        let key: String = url::form_urlencoded::byte_serialize(self.key.as_bytes()).collect();
        format!("session={key}")
    }
}

/// Opens an HTTP/1.1 connection over `tcp`; its driver runs as a local task.
async fn handshake(tcp: TcpStream) -> anyhow::Result<Conn> {
    tcp.set_nodelay(true)?;
    let (conn, driver) = http1::handshake(TokioIo::new(tcp)).await.context("HTTP/1.1 handshake")?;
    tokio::task::spawn_local(async move {
        let _ = driver.await;
    });
    Ok(conn)
}

/// Sends one request and returns the response, its body unread.
async fn request(
    conn: &mut Conn,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<Response<Incoming>> {
    conn.ready().await.context("the connection closed")?;
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
        // No CORS preflight for a browser, and what Engine.IO expects.
        .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body(Full::new(body))?;
    Ok(conn.send_request(request).await?)
}

/// Sends one request and reads the whole answer; a status other than 2xx is an error with
/// the answer's start (and the path without its query, which may name a session).
async fn fetch(
    conn: &mut Conn,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<Bytes> {
    let response = request(conn, addr, method.clone(), path, body).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        let path = path.split('?').next().unwrap_or_default();
        bail!("{method} {path} answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]));
    }
    Ok(body)
}

/// The next data chunk of a streamed body; `None` once it ends or fails.
async fn next_chunk(body: &mut Incoming) -> Option<Bytes> {
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(data);
                }
            }
            Err(_) => return None,
        }
    }
}

/// Counts the replies in a frame of our protocol (JSON); a refusal is an error.
fn replies_in(frame: &[u8]) -> anyhow::Result<usize> {
    let messages = decode_server_messages(frame, Encoding::Json).map_err(|e| {
        anyhow::anyhow!("the server answered with something that is not the realtime protocol ({e})")
    })?;
    let mut replies = 0;
    for message in messages {
        if let ServerMessage::Reply(reply) = message {
            if let Err(error) = reply.result {
                bail!("the server refused: {} {}", error.code, error.message);
            }
            replies += 1;
        }
    }
    Ok(replies)
}

/// Opens a subscriber over `transport` on `tcp` and joins `channel`. `commands` is the
/// `connect` and `subscribe` frame (JSON) for our transports.
pub(super) async fn subscribe(
    transport: FanoutTransport,
    addr: SocketAddr,
    tcp: TcpStream,
    source: Option<IpAddr>,
    channel: &str,
    commands: &[u8],
) -> anyhow::Result<HttpSubscriber> {
    let mut conn = handshake(tcp).await?;
    let setup = async {
        match transport {
            FanoutTransport::Sse | FanoutTransport::HttpStream => {
                open_stream(&mut conn, addr, transport, commands).await
            }
            FanoutTransport::LongPoll => open_long_poll(&mut conn, addr, commands).await,
            FanoutTransport::Polling => open_engine_poll(&mut conn, addr, source, channel).await,
            FanoutTransport::Websocket => bail!("a WebSocket subscriber is not an HTTP one"),
        }
    };
    let state = tokio::time::timeout(SETUP_WAIT, setup)
        .await
        .map_err(|_| anyhow::anyhow!("no subscription within {} s", SETUP_WAIT.as_secs()))??;
    Ok(HttpSubscriber { conn, addr, state })
}

/// SSE or HTTP streaming: opens the stream with the commands and reads until both replies.
async fn open_stream(
    conn: &mut Conn,
    addr: SocketAddr,
    transport: FanoutTransport,
    commands: &[u8],
) -> anyhow::Result<State> {
    let response = if transport == FanoutTransport::Sse {
        let commands: String = url::form_urlencoded::byte_serialize(commands).collect();
        request(conn, addr, Method::GET, &format!("/connection/sse?commands={commands}"), Bytes::new())
            .await?
    } else {
        request(conn, addr, Method::POST, "/connection/stream", Bytes::copy_from_slice(commands)).await?
    };
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let answer = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        bail!("opening the stream: {status} {}", String::from_utf8_lossy(&answer));
    }
    let mut pending = Vec::new();
    // The streaming transport's first line is the session's key, not a frame.
    let mut session_line = transport == FanoutTransport::HttpStream;
    let mut replies = 0;
    while replies < 2 {
        let chunk = next_chunk(&mut body).await.context("the stream ended while subscribing")?;
        pending.extend_from_slice(&chunk);
        while replies < 2 {
            let Some(end) = pending.iter().position(|&b| b == b'\n') else { break };
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = &line[..end];
            let frame = match transport {
                FanoutTransport::Sse => line.strip_prefix(b"data: ").filter(|l| l.starts_with(b"{")),
                _ if std::mem::take(&mut session_line) => None,
                _ => Some(line).filter(|l| !l.is_empty()),
            };
            if let Some(frame) = frame {
                replies += replies_in(frame)?;
            }
        }
    }
    Ok(State::Stream { body, pending })
}

/// Our long-polling: opens the session with the commands and polls until both replies.
async fn open_long_poll(conn: &mut Conn, addr: SocketAddr, commands: &[u8]) -> anyhow::Result<State> {
    #[derive(serde::Deserialize)]
    struct Opened {
        session: String,
    }
    let opened =
        fetch(conn, addr, Method::POST, "/connection/poll/open", Bytes::copy_from_slice(commands)).await?;
    let opened: Opened = serde_json::from_slice(&opened).context("the answer to /connection/poll/open")?;
    let session = SessionRef { key: opened.session };
    let (mut ack, mut replies) = (0, 0);
    while replies < 2 {
        let (answer, _) = poll(conn, addr, &session, ack).await?;
        ensure!(!answer.closed, "the session ended while subscribing");
        ack = answer.seq;
        for frame in &answer.frames {
            replies += replies_in(frame.as_bytes())?;
        }
    }
    Ok(State::LongPoll { session, ack })
}

/// The answer to a poll of ours.
#[derive(serde::Deserialize)]
struct PollAnswer {
    seq: u64,
    frames: Vec<String>,
    #[serde(default)]
    closed: bool,
}

/// One held poll of ours, parsed; the bytes of the answer too.
async fn poll(
    conn: &mut Conn,
    addr: SocketAddr,
    session: &SessionRef,
    ack: u64,
) -> anyhow::Result<(PollAnswer, usize)> {
    let path = format!("/connection/poll?{}&ack={ack}", session.query());
    let body = fetch(conn, addr, Method::GET, &path, Bytes::new()).await?;
    Ok((serde_json::from_slice(&body).context("a poll's answer")?, body.len()))
}

/// Engine.IO polling: handshake, namespace, then the `subscribe` event.
async fn open_engine_poll(
    conn: &mut Conn,
    addr: SocketAddr,
    source: Option<IpAddr>,
    channel: &str,
) -> anyhow::Result<State> {
    #[derive(serde::Deserialize)]
    struct Open {
        sid: String,
    }
    let open = fetch(conn, addr, Method::GET, ENGINE_IO_POLLING, Bytes::new()).await?;
    let Some(open) = open.strip_prefix(b"0") else {
        bail!("expected the Engine.IO open packet, got {}", String::from_utf8_lossy(&open));
    };
    let open: Open = serde_json::from_slice(open).context("the Engine.IO open packet")?;
    let sid: String = url::form_urlencoded::byte_serialize(open.sid.as_bytes()).collect();
    let path = format!("{ENGINE_IO_POLLING}&sid={sid}");
    fetch(conn, addr, Method::POST, &path, Bytes::from_static(b"40")).await?;
    let joined = fetch(conn, addr, Method::GET, &path, Bytes::new()).await?;
    ensure!(
        joined.split(|&b| b == RECORD_SEPARATOR).any(|p| p.starts_with(b"40")),
        "expected the namespace connect, got {}",
        String::from_utf8_lossy(&joined)
    );
    let event = format!("42[\"subscribe\",{}]", serde_json::to_string(channel)?);
    fetch(conn, addr, Method::POST, &path, Bytes::from(event)).await?;
    Ok(State::EnginePoll { path, source })
}

/// Receives until the connection or the session ends, counting publications.
pub(super) async fn receive(subscriber: HttpSubscriber, counter: Counter) {
    let HttpSubscriber { mut conn, addr, state } = subscriber;
    match state {
        State::Stream { mut body, mut pending } => {
            while let Some(chunk) = next_chunk(&mut body).await {
                counter.bytes(chunk.len());
                if pending.is_empty() && chunk.ends_with(b"\n") {
                    counter.publications(&chunk);
                    continue;
                }
                // Only whole lines are scanned: a number cut by a chunk's end would miscount.
                pending.extend_from_slice(&chunk);
                if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                    counter.publications(&pending[..=end]);
                    pending.drain(..=end);
                }
            }
        }
        State::LongPoll { session, mut ack } => {
            while let Ok((answer, len)) = poll(&mut conn, addr, &session, ack).await {
                counter.bytes(len);
                for frame in &answer.frames {
                    counter.publications(frame.as_bytes());
                }
                ack = answer.seq;
                if answer.closed {
                    return;
                }
            }
        }
        State::EnginePoll { path, source } => {
            while let Ok(payload) = fetch(&mut conn, addr, Method::GET, &path, Bytes::new()).await {
                counter.bytes(payload.len());
                for packet in payload.split(|&b| b == RECORD_SEPARATOR) {
                    match packet {
                        b"2" => pong(addr, source, path.clone()),
                        b"1" => return,
                        _ => counter.publications(packet),
                    }
                }
            }
        }
    }
}

/// Answers an Engine.IO ping on a connection of its own: the subscriber's is holding a GET.
fn pong(addr: SocketAddr, source: Option<IpAddr>, path: String) {
    tokio::task::spawn_local(async move {
        let answered = async {
            let mut conn = handshake(connect_from(addr, source).await?).await?;
            fetch(&mut conn, addr, Method::POST, &path, Bytes::from_static(b"3")).await
        };
        let _ = answered.await;
    });
}

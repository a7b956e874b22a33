//! Long-polling: for clients that can hold neither a WebSocket nor a streaming response.
//!
//! * `POST /connection/poll/open[?token=...]`, the first commands as the body, answers at
//!   once `{"session":"<key>"}`.
//! * `GET /connection/poll?session=<key>&ack=<seq>` is held until the session has something
//!   to send, or for `client.ping_interval`, and answers `{"seq":N,"frames":[...]}`: the
//!   frames after `ack` (each a `peregrine.json` frame, as one WebSocket message would carry
//!   it), `seq` the number of the last one. The next poll acknowledges with `ack=N`.
//! * Commands go by `POST /connection/send?session=<key>`, as for the streams.
//!
//! Nothing is lost when an answer is: frames stay in the session's mailbox until a later
//! poll acknowledges them, and a poll with an older `ack` gets them again. The mailbox holds
//! at most `client.queue_max_bytes` unacknowledged; past that the session stops taking from
//! its outbox, which then overflows like a slow WebSocket's. A session nobody polls for twice
//! the poll time ends as a connection gone.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use peregrine_wire::{Encoding, ServerMessage, encode_server_messages};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::http::{HttpSessions, SessionRequest, request_token};
use super::{Outbound, Transport};
use crate::app::router::{ClientRequest, Peer, admit};
use crate::disconnect::Disconnect;
use crate::node::Node;
use crate::outbox::Queued;
use crate::session::run;

#[derive(Debug)]
struct State_ {
    /// Number of the last frame put in.
    last_seq: u64,
    /// Frames not yet acknowledged, oldest first, with their numbers.
    frames: VecDeque<(u64, Bytes)>,
    bytes: usize,
    closed: bool,
    /// When the last poll came or ended.
    last_poll: Instant,
    /// Polls being held now.
    polling: usize,
    /// Bumped by each poll, so an older held poll answers and leaves.
    generation: u64,
}

/// A long-polling session's frames waiting for a poll.
#[derive(Debug)]
pub struct Mailbox {
    state: Mutex<State_>,
    changed: Notify,
    limit: usize,
    hold: Duration,
}

/// One poll's answer.
#[derive(Debug, serde::Serialize)]
pub struct PollAnswer {
    /// Number of the last frame in `frames` (or of the last acknowledged one).
    pub seq: u64,
    /// The frames after the poll's `ack`, as text.
    pub frames: Vec<String>,
    /// The session has ended: connect again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
}

impl Mailbox {
    fn new(limit: usize, hold: Duration) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            state: Mutex::new(State_ {
                last_seq: 0,
                frames: VecDeque::new(),
                bytes: 0,
                closed: false,
                last_poll: Instant::now(),
                polling: 0,
                generation: 0,
            }),
            changed: Notify::new(),
            limit,
            hold,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, frame: Bytes) {
        let mut state = self.lock();
        state.last_seq += 1;
        let seq = state.last_seq;
        state.bytes += frame.len();
        state.frames.push_back((seq, frame));
        drop(state);
        self.changed.notify_waiters();
    }

    /// Ends the mailbox: a held poll answers `closed`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }

    /// Waits while the unacknowledged frames are over the limit.
    async fn room(&self) {
        loop {
            let changed = self.changed.notified();
            {
                let state = self.lock();
                if state.bytes <= self.limit || state.closed {
                    return;
                }
            }
            changed.await;
        }
    }

    /// Resolves once nobody has polled for twice the poll time.
    pub async fn abandoned(&self) {
        let grace = self.hold * 2;
        loop {
            let deadline = {
                let state = self.lock();
                if state.polling > 0 { Instant::now() + grace } else { state.last_poll + grace }
            };
            tokio::time::sleep_until(deadline).await;
            let state = self.lock();
            if state.polling == 0 && state.last_poll + grace <= Instant::now() {
                return;
            }
        }
    }

    /// Drops the frames up to `ack`, then answers with what follows, waiting up to the poll
    /// time for something to arrive.
    pub(crate) async fn poll(&self, ack: u64) -> PollAnswer {
        let generation = {
            let mut state = self.lock();
            while state.frames.front().is_some_and(|(seq, _)| *seq <= ack) {
                if let Some((_, frame)) = state.frames.pop_front() {
                    state.bytes -= frame.len();
                }
            }
            state.polling += 1;
            state.generation += 1;
            state.generation
        };
        self.changed.notify_waiters();
        let deadline = Instant::now() + self.hold;
        let answer = loop {
            let changed = self.changed.notified();
            {
                let state = self.lock();
                let superseded = state.generation != generation;
                if !state.frames.is_empty() || state.closed || superseded || Instant::now() >= deadline {
                    let frames = if superseded { Vec::new() } else { state.frames.iter().collect() };
                    break PollAnswer {
                        seq: frames.last().map_or(ack.min(state.last_seq), |(seq, _)| *seq),
                        frames: frames.iter().map(|(_, f)| String::from_utf8_lossy(f).into_owned()).collect(),
                        closed: state.closed && !superseded,
                    };
                }
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        };
        let mut state = self.lock();
        state.polling -= 1;
        state.last_poll = Instant::now();
        answer
    }
}

struct PollOutbound {
    mailbox: Arc<Mailbox>,
}

impl Outbound for PollOutbound {
    async fn send(&mut self, batch: &[Queued]) -> std::io::Result<()> {
        self.mailbox.room().await;
        for queued in batch {
            self.mailbox.push(Bytes::copy_from_slice(&queued.frame));
        }
        Ok(())
    }

    async fn close(&mut self, d: &Disconnect, push: bool) {
        if push {
            let frame = encode_server_messages(&[ServerMessage::Push(d.push())], Encoding::Json);
            self.mailbox.push(Bytes::from(frame));
        }
        self.mailbox.close();
    }
}

/// `POST /connection/poll/open`.
pub async fn open(
    State(node): State<Arc<Node>>,
    Extension(sessions): Extension<Arc<HttpSessions>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if !body.is_empty()
        && let Some(refused) = super::http::refuse_commands(&node, &body)
    {
        return refused;
    }
    let client = ClientRequest::of(peer.as_ref(), &headers, &uri);
    let (identity, ticket) = match admit(&node, &client) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    let client_config = &node.config().client;
    let mailbox = Mailbox::new(client_config.queue_max_bytes, client_config.ping_interval);
    let (key, inbound) = sessions.open(Some(Arc::clone(&mailbox)), Some(body), None);
    let outbound = PollOutbound { mailbox };
    tokio::spawn(run(node, inbound, outbound, Encoding::Json, identity, ticket, Transport::LongPoll));
    Json(serde_json::json!({ "session": key })).into_response()
}

/// `?session=<key>&ack=<seq>[&token=...]` of a poll.
#[derive(Debug, serde::Deserialize)]
pub struct PollQuery {
    session: String,
    #[serde(default)]
    ack: u64,
    token: Option<String>,
}

/// `GET /connection/poll?session=<key>&ack=<seq>`, served by the node holding the session
/// (relayed there when it is another).
pub async fn poll(
    State(node): State<Arc<Node>>,
    Extension(sessions): Extension<Arc<HttpSessions>>,
    Query(query): Query<PollQuery>,
    headers: HeaderMap,
) -> Response {
    let token = request_token(&headers, query.token);
    sessions.serve(&node, &query.session, token, SessionRequest::Poll(query.ack)).await.into_response()
}

//! What the HTTP transports (SSE, HTTP streaming, long-polling) share: the session key, the
//! registry that routes a client's commands to its session, and `POST /connection/send`.
//!
//! Over HTTP the client cannot write into the stream it reads, so its commands come as
//! separate requests naming the session by its **key**: 32 random bytes (64 hex digits),
//! given only to the client in the first message of its stream. Knowing the key is what
//! lets a request speak for the session: it is unguessable, never logged, and dies with
//! the session.
//!
//! One node for now: a key unknown here is `404` (the session ended, or lives on another
//! node: the client reconnects and recovers).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use peregrine_wire::{Encoding, decode_commands_bounded};
use tokio::sync::{mpsc, oneshot};

use super::{Inbound, Received};
use crate::node::Node;

/// Commands a session may have waiting (POSTs not yet taken by the session loop).
const INBOX: usize = 32;

/// Most commands in one POST.
const MAX_COMMANDS: usize = 100;

/// The HTTP transports' sessions on this node, by key. Share it as `Arc<HttpSessions>`.
#[derive(Debug, Default)]
pub struct HttpSessions {
    sessions: Mutex<HashMap<String, HttpSession>>,
}

/// What the node keeps to reach an HTTP session from a later request.
#[derive(Debug, Clone)]
pub struct HttpSession {
    /// Where the client's commands go.
    pub commands: mpsc::Sender<Bytes>,
    /// The long-polling mailbox (long-polling sessions only).
    pub mailbox: Option<Arc<super::long_poll::Mailbox>>,
}

impl HttpSessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HttpSession>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session of `key`, if it is on this node.
    pub fn get(&self, key: &str) -> Option<HttpSession> {
        self.lock().get(key).cloned()
    }

    /// Sessions open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers a new session: its key, and its inbound half (which unregisters the key
    /// when dropped, with the session). `first` is the batch of commands the opening
    /// request carried, if any. The inbound ends when `gone` fires (the client's stream was
    /// dropped) or never, for `None` (long-polling watches its polls instead).
    pub fn open(
        self: &Arc<Self>,
        mailbox: Option<Arc<super::long_poll::Mailbox>>,
        first: Option<Bytes>,
        gone: Option<oneshot::Receiver<()>>,
    ) -> (String, HttpInbound) {
        let (commands, inbox) = mpsc::channel(INBOX);
        if let Some(first) = first.filter(|b| !b.is_empty()) {
            let _ = commands.try_send(first);
        }
        let key = new_key();
        self.lock().insert(key.clone(), HttpSession { commands, mailbox: mailbox.clone() });
        let inbound = HttpInbound { sessions: Arc::clone(self), key: key.clone(), inbox, gone, mailbox };
        (key, inbound)
    }
}

/// 32 random bytes as hex: the session key.
fn new_key() -> String {
    let mut buf = [0u8; 32];
    // Without the OS's randomness there is no safe key: refuse to make a guessable one.
    getrandom::fill(&mut buf).expect("the OS random number generator");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// An HTTP session's inbound half: the commands POSTed for it.
#[derive(Debug)]
pub struct HttpInbound {
    sessions: Arc<HttpSessions>,
    key: String,
    inbox: mpsc::Receiver<Bytes>,
    gone: Option<oneshot::Receiver<()>>,
    mailbox: Option<Arc<super::long_poll::Mailbox>>,
}

impl Drop for HttpInbound {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.key);
        if let Some(mailbox) = &self.mailbox {
            mailbox.close();
        }
    }
}

impl Inbound for HttpInbound {
    async fn recv(&mut self) -> Received {
        let stream_gone = async {
            match &mut self.gone {
                Some(gone) => {
                    let _ = gone.await;
                }
                None => std::future::pending().await,
            }
        };
        let polls_stopped = async {
            match &self.mailbox {
                Some(mailbox) => mailbox.abandoned().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            batch = self.inbox.recv() => batch.map_or(Received::Gone, Received::Message),
            _ = stream_gone => Received::Gone,
            _ = polls_stopped => Received::Gone,
        }
    }
}

/// `?session=<key>` of the requests that speak for a session.
#[derive(Debug, serde::Deserialize)]
pub struct SessionQuery {
    /// The session's key.
    pub session: String,
}

/// A refusal of a request for a session: status and `{"error": reason}`.
pub fn refusal(status: StatusCode, reason: &str) -> Response {
    (status, Json(serde_json::json!({ "error": reason }))).into_response()
}

/// `413` for a frame over `client.max_message_size`.
pub fn too_big(node: &Node, frame: &[u8]) -> Option<Response> {
    let max = node.config().client.max_message_size;
    (frame.len() > max)
        .then(|| refusal(StatusCode::PAYLOAD_TOO_LARGE, &format!("a frame is at most {max} bytes")))
}

/// `POST /connection/send?session=<key>`: a batch of commands (as one WebSocket message of
/// `peregrine.json` would carry) for the session. `204` once queued for it; `400` when it
/// does not decode (the session does not see it); `404` when no session has that key;
/// `413` over `client.max_message_size`; `429` while the session has too much waiting.
pub async fn send(
    State(node): State<Arc<Node>>,
    Extension(sessions): Extension<Arc<HttpSessions>>,
    Query(query): Query<SessionQuery>,
    body: Bytes,
) -> Response {
    if let Some(too_big) = too_big(&node, &body) {
        return too_big;
    }
    if let Err(e) = decode_commands_bounded(&body, Encoding::Json, MAX_COMMANDS) {
        return refusal(StatusCode::BAD_REQUEST, &format!("malformed commands: {e}"));
    }
    let Some(session) = sessions.get(&query.session) else {
        return refusal(StatusCode::NOT_FOUND, "unknown or expired session: connect again");
    };
    match session.commands.try_send(body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(mpsc::error::TrySendError::Full(_)) => {
            refusal(StatusCode::TOO_MANY_REQUESTS, "too many commands waiting for this session: retry")
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            refusal(StatusCode::NOT_FOUND, "unknown or expired session: connect again")
        }
    }
}

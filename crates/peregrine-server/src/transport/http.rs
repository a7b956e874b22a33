//! What the HTTP transports (SSE, HTTP streaming, long-polling) share: the session key, the
//! registry that routes a client's commands and polls to its session, on this node or on
//! another one, and `POST /connection/send`.
//!
//! Over HTTP the client cannot write into the stream it reads, so its commands (and a
//! long-polling client's polls) come as separate requests naming the session by its
//! **key**: `<node id>.<64 hex digits>`, the id of the node holding the session and 32
//! random bytes, given only to the client in the first message of its stream. Knowing the
//! key is what lets a request speak for the session: it is unguessable, never logged, and
//! dies with the session. Once `connect` names a user, the session is also **bound to that
//! user's credentials**: each later request must carry a token of that user (as
//! `Authorization: Bearer` or `?token=`; its signature is checked, not its expiry, so that
//! the `refresh` bringing a new one can get through), or it is refused (401, 403).
//!
//! **No sticky sessions**: behind a round-robin balancer a request may reach a node other
//! than the one holding the session. That node reads the owner from the key and relays the
//! request to it through the broker ([`Broker::relay`](crate::broker::Broker::relay), a Redis
//! Pub/Sub channel per node); the owner serves it as if it had come directly and relays the
//! answer back, which goes to the client. A key whose node is gone is `404`, as an unknown
//! key is: the client connects again and recovers from its position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use peregrine_wire::{Encoding, decode_commands_bounded};
use tokio::sync::{mpsc, oneshot};

use super::long_poll::Mailbox;
use super::{Inbound, Received};
use crate::broker::RelayHandler;
use crate::node::Node;

/// Commands a session may have waiting (POSTs not yet taken by the session loop).
const INBOX: usize = 32;

/// Most commands in one POST.
const MAX_COMMANDS: usize = 100;

/// How long a relayed request waits for the owner's answer beyond the owner's own time
/// (a poll is held there for up to `client.ping_interval`).
const RELAY_GRACE: Duration = Duration::from_secs(5);

/// The answer to a request for a session: a status and a JSON body (none for 204). It
/// crosses nodes as it is when the request was relayed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body (empty: none).
    pub body: String,
}

impl Answer {
    /// A refusal: `{"error": reason}`.
    pub fn refused(status: StatusCode, reason: &str) -> Answer {
        Answer { status: status.as_u16(), body: serde_json::json!({ "error": reason }).to_string() }
    }

    /// `value` as JSON, with `200`.
    pub fn json(value: &impl serde::Serialize) -> Answer {
        Answer { status: 200, body: serde_json::to_string(value).unwrap_or_default() }
    }

    fn no_content() -> Answer {
        Answer { status: StatusCode::NO_CONTENT.as_u16(), body: String::new() }
    }

    fn unknown_session() -> Answer {
        Answer::refused(StatusCode::NOT_FOUND, "unknown or expired session: connect again")
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if self.body.is_empty() {
            return status.into_response();
        }
        (status, [(header::CONTENT_TYPE, "application/json")], self.body).into_response()
    }
}

/// A refusal of a request for a session: status and `{"error": reason}`.
pub fn refusal(status: StatusCode, reason: &str) -> Response {
    Answer::refused(status, reason).into_response()
}

/// What a request asks of a session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionRequest {
    /// A frame of commands (already checked to decode).
    Send(String),
    /// A long-polling client's poll, acknowledging the frames up to this number.
    Poll(u64),
}

/// What nodes relay to each other through the broker.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Relayed {
    /// A request for a session the receiving node holds; answer to `from`.
    Request { id: u64, from: String, key: String, token: Option<String>, request: SessionRequest },
    /// The answer to the sender's request `id`.
    Answer { id: u64, answer: Answer },
}

/// The HTTP transports' sessions on this node by key, and the requests relayed to other
/// nodes waiting for their answers. Share it as `Arc<HttpSessions>`.
#[derive(Debug)]
pub struct HttpSessions {
    node_id: String,
    sessions: Mutex<HashMap<String, HttpSession>>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_request: AtomicU64,
}

/// What the node keeps to reach an HTTP session from a later request.
#[derive(Debug, Clone)]
pub struct HttpSession {
    /// Where the client's commands go.
    pub commands: mpsc::Sender<Bytes>,
    /// The long-polling mailbox (long-polling sessions only).
    pub mailbox: Option<Arc<Mailbox>>,
    /// The user `connect` authenticated (empty: anonymous); unset before.
    user: Arc<OnceLock<String>>,
    /// The last token that proved `user`: the same one again is not verified again.
    proven: Arc<Mutex<Option<String>>>,
}

impl HttpSession {
    /// Whether `token` may speak for this session (see the module doc); the refusal if not.
    fn check(&self, node: &Node, token: Option<&str>) -> Result<(), Answer> {
        let user = match self.user.get() {
            // Before `connect` only `connect` means anything, and only the key's holder has it.
            None => return Ok(()),
            Some(user) if user.is_empty() => return Ok(()),
            Some(user) => user,
        };
        let Some(token) = token else {
            return Err(Answer::refused(
                StatusCode::UNAUTHORIZED,
                "this session belongs to a user: send its token (Authorization: Bearer or ?token=)",
            ));
        };
        let mut proven = lock(&self.proven);
        if proven.as_deref() == Some(token) {
            return Ok(());
        }
        match node.token_user(token) {
            Ok(named) if named == *user => {
                *proven = Some(token.to_owned());
                Ok(())
            }
            Ok(_) => Err(Answer::refused(StatusCode::FORBIDDEN, "this session belongs to another user")),
            Err(e) => Err(Answer::refused(StatusCode::UNAUTHORIZED, &format!("token refused: {e}"))),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HttpSessions {
    /// The registry of `node`; [`listen`](HttpSessions::listen) lets other nodes reach it.
    pub fn new(node: &Node) -> Arc<HttpSessions> {
        Arc::new(HttpSessions {
            node_id: node.id().to_owned(),
            sessions: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
        })
    }

    /// Starts taking the requests other nodes relay here, and their answers (in a task: a
    /// relay sent before it listens finds nobody, and its client connects again).
    pub fn listen(self: &Arc<Self>, node: &Arc<Node>) {
        let (weak_sessions, weak_node) = (Arc::downgrade(self), Arc::downgrade(node));
        // Weak: the broker keeps the handler, and the node keeps the broker.
        let handler: RelayHandler = Arc::new(move |message| {
            if let (Some(sessions), Some(node)) = (weak_sessions.upgrade(), weak_node.upgrade()) {
                tokio::spawn(async move { sessions.on_relayed(&node, &message).await });
            }
        });
        let node = Arc::clone(node);
        tokio::spawn(async move {
            if let Err(e) = node.broker().listen_relay(node.id(), handler).await {
                tracing::warn!(error = %e, "cannot take requests relayed from other nodes (their clients reconnect)");
            }
        });
    }

    /// The session of `key`, if it is on this node.
    pub fn get(&self, key: &str) -> Option<HttpSession> {
        lock(&self.sessions).get(key).cloned()
    }

    /// Sessions open.
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
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
        mailbox: Option<Arc<Mailbox>>,
        first: Option<Bytes>,
        gone: Option<oneshot::Receiver<()>>,
    ) -> (String, HttpInbound) {
        let (commands, inbox) = mpsc::channel(INBOX);
        if let Some(first) = first.filter(|b| !b.is_empty()) {
            let _ = commands.try_send(first);
        }
        let key = format!("{}.{}", self.node_id, new_secret());
        let user = Arc::new(OnceLock::new());
        let session = HttpSession {
            commands,
            mailbox: mailbox.clone(),
            user: Arc::clone(&user),
            proven: Arc::default(),
        };
        lock(&self.sessions).insert(key.clone(), session);
        let inbound =
            HttpInbound { sessions: Arc::clone(self), key: key.clone(), inbox, gone, mailbox, user };
        (key, inbound)
    }

    /// Serves `request` for the session of `key`: here when it is ours, else relayed to the
    /// node the key names.
    pub async fn serve(
        self: &Arc<Self>,
        node: &Node,
        key: &str,
        token: Option<String>,
        request: SessionRequest,
    ) -> Answer {
        match key.split_once('.') {
            Some((owner, _)) if owner != self.node_id => self.relay(node, owner, key, token, request).await,
            _ => self.serve_here(node, key, token.as_deref(), request).await,
        }
    }

    async fn serve_here(
        &self,
        node: &Node,
        key: &str,
        token: Option<&str>,
        request: SessionRequest,
    ) -> Answer {
        let Some(session) = self.get(key) else { return Answer::unknown_session() };
        if let Err(refused) = session.check(node, token) {
            return refused;
        }
        match request {
            SessionRequest::Send(frame) => match session.commands.try_send(Bytes::from(frame)) {
                Ok(()) => Answer::no_content(),
                Err(mpsc::error::TrySendError::Full(_)) => Answer::refused(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many commands waiting for this session: retry",
                ),
                Err(mpsc::error::TrySendError::Closed(_)) => Answer::unknown_session(),
            },
            SessionRequest::Poll(ack) => match &session.mailbox {
                Some(mailbox) => Answer::json(&mailbox.poll(ack).await),
                None => Answer::refused(StatusCode::BAD_REQUEST, "not a long-polling session"),
            },
        }
    }

    /// Sends `request` to the node `owner` and waits for its answer.
    async fn relay(
        &self,
        node: &Node,
        owner: &str,
        key: &str,
        token: Option<String>,
        request: SessionRequest,
    ) -> Answer {
        let wait = match request {
            SessionRequest::Poll(_) => node.config().client.ping_interval + RELAY_GRACE,
            SessionRequest::Send(_) => RELAY_GRACE,
        };
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answered, answer) = oneshot::channel();
        lock(&self.waiting).insert(id, answered);
        // Forgets the request however this ends (the client may leave while it waits).
        let _waiting = Waiting { sessions: self, id };
        let message =
            Relayed::Request { id, from: self.node_id.clone(), key: key.to_owned(), token, request };
        let message = Bytes::from(serde_json::to_vec(&message).unwrap_or_default());
        match node.broker().relay(owner, message).await {
            Ok(true) => {
                node.metrics().http_relayed.inc();
            }
            Ok(false) => return Answer::unknown_session(),
            Err(e) => {
                let reason = format!("cannot reach the node holding this session ({e}): retry");
                return Answer::refused(StatusCode::SERVICE_UNAVAILABLE, &reason);
            }
        }
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(answer)) => answer,
            _ => Answer::refused(
                StatusCode::GATEWAY_TIMEOUT,
                "the node holding this session did not answer in time: retry",
            ),
        }
    }

    /// A message another node relayed here: a request to serve and answer, or an answer.
    async fn on_relayed(self: Arc<Self>, node: &Arc<Node>, message: &[u8]) {
        match serde_json::from_slice::<Relayed>(message) {
            Ok(Relayed::Request { id, from, key, token, request }) => {
                let answer = self.serve_here(node, &key, token.as_deref(), request).await;
                let message =
                    Bytes::from(serde_json::to_vec(&Relayed::Answer { id, answer }).unwrap_or_default());
                if let Err(e) = node.broker().relay(&from, message).await {
                    tracing::debug!(error = %e, "cannot relay an answer back (its client retries)");
                }
            }
            Ok(Relayed::Answer { id, answer }) => {
                if let Some(waiting) = lock(&self.waiting).remove(&id) {
                    let _ = waiting.send(answer);
                }
            }
            Err(e) => tracing::warn!(error = %e, "undecodable message relayed from another node"),
        }
    }
}

/// A relayed request waiting for its answer; forgotten when dropped.
struct Waiting<'a> {
    sessions: &'a HttpSessions,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.sessions.waiting).remove(&self.id);
    }
}

/// 32 random bytes as hex: the secret part of a session key.
fn new_secret() -> String {
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
    mailbox: Option<Arc<Mailbox>>,
    user: Arc<OnceLock<String>>,
}

impl Drop for HttpInbound {
    fn drop(&mut self) {
        lock(&self.sessions.sessions).remove(&self.key);
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

    fn connected(&mut self, user: &str) {
        let _ = self.user.set(user.to_owned());
    }
}

/// `?session=<key>[&token=...]` of the requests that speak for a session.
#[derive(Debug, serde::Deserialize)]
pub struct SessionQuery {
    /// The session's key.
    pub session: String,
    /// A token of the session's user (or `Authorization: Bearer`).
    pub token: Option<String>,
}

/// The token a request for a session carries: `Authorization: Bearer`, else `?token=`.
pub fn request_token(headers: &HeaderMap, query: Option<String>) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    bearer.or(query)
}

/// `413` for a frame over `client.max_message_size`.
fn too_big(node: &Node, frame: &[u8]) -> Option<Response> {
    let max = node.config().client.max_message_size;
    (frame.len() > max)
        .then(|| refusal(StatusCode::PAYLOAD_TOO_LARGE, &format!("a frame is at most {max} bytes")))
}

/// The refusal of a batch of commands from an HTTP request (a send, or the commands an
/// opening request carries), checked before any session sees it: `413` over
/// `client.max_message_size`, `400` when it does not decode; `None` when it is fine. So a
/// bad opening request opens no session, and a bad send never reaches one.
pub fn refuse_commands(node: &Node, batch: &[u8]) -> Option<Response> {
    if let Some(too_big) = too_big(node, batch) {
        return Some(too_big);
    }
    // Before decoding, so that the reason is this and not a JSON error about it.
    if let Err(e) = std::str::from_utf8(batch) {
        let at = e.valid_up_to();
        return Some(refusal(StatusCode::BAD_REQUEST, &format!("malformed commands: not UTF-8 (byte {at})")));
    }
    if let Err(e) = decode_commands_bounded(batch, Encoding::Json, MAX_COMMANDS) {
        return Some(refusal(StatusCode::BAD_REQUEST, &format!("malformed commands: {e}")));
    }
    None
}

/// `POST /connection/send?session=<key>`: a batch of commands (as one WebSocket message of
/// `peregrine.json` would carry) for the session, wherever it is. `204` once queued for it;
/// `400` when it does not decode (the session does not see it); `401`/`403` without a token
/// of the session's user; `404` when no session has that key; `413` over
/// `client.max_message_size`; `429` while the session has too much waiting.
pub async fn send(
    State(node): State<Arc<Node>>,
    Extension(sessions): Extension<Arc<HttpSessions>>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refuse_commands(&node, &body) {
        return refused;
    }
    // Checked UTF-8 just above: nothing is replaced.
    let frame = String::from_utf8_lossy(&body).into_owned();
    let token = request_token(&headers, query.token);
    sessions.serve(&node, &query.session, token, SessionRequest::Send(frame)).await.into_response()
}

/// Cross-origin requests to the HTTP transports (a page on `app.example.com` with its
/// server on `rt.example.com`): an `Origin` that `allowed_origins` admits gets
/// `Access-Control-Allow-Origin` on every answer, and its preflight (`OPTIONS`, for a
/// request with `Authorization`) is answered here. Other origins get no CORS headers (the
/// browser then hides the answer) and a `403` preflight with the reason; the opening
/// requests also refuse them with `403` (`admit`).
pub async fn cors(
    State(node): State<Arc<Node>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (origin, allowed, preflight) = {
        let headers = request.headers();
        let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let origin = text(header::ORIGIN).map(str::to_owned);
        let allowed = origin.as_deref().map(|o| node.check_origin(Some(o), text(header::HOST)));
        let preflight = request.method() == axum::http::Method::OPTIONS
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        (origin, allowed, preflight)
    };
    let (Some(origin), Some(allowed)) = (origin, allowed) else { return next.run(request).await };
    if preflight {
        return match allowed {
            Ok(()) => (
                StatusCode::NO_CONTENT,
                [
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.as_str()),
                    (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST"),
                    (header::ACCESS_CONTROL_ALLOW_HEADERS, "authorization, content-type"),
                    (header::ACCESS_CONTROL_MAX_AGE, "600"),
                    (header::VARY, "origin"),
                ],
            )
                .into_response(),
            Err(reason) => refusal(StatusCode::FORBIDDEN, &reason),
        };
    }
    let mut response = next.run(request).await;
    if allowed.is_ok()
        && let Ok(value) = header::HeaderValue::from_str(&origin)
    {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.append(header::VARY, header::HeaderValue::from_static("origin"));
    }
    response
}

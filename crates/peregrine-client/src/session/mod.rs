//! The session task: owns the connection, reconnects, and keeps the client's promises.
//!
//! One task per [`Client`](crate::Client) runs [`Session::run`]: connect, serve the
//! connection until it ends, wait a jittered backoff, and again, until closed. API calls
//! reach it as [`Request`]s over a channel, so they are accepted in call order whether the
//! client is connected or not. Everything the session remembers across connections lives
//! here: subscriptions with their stream positions, the publish queue, calls waiting for a
//! connection.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peregrine::{CloseCode, MaybeTlsStream, Message, WebSocket};
use peregrine_wire::{
    Command, CommandKind, ConnectRequest, Payload, PingRequest, PublishResult, Push, RefreshRequest,
    ReplyError, ReplyKind, ServerMessage, UnsubscribeRequest, codes,
};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::backoff::random_u64;
use crate::client::Settings;
use crate::error::Error;
use crate::events::{State, SubscriptionEvent};
use crate::queue::PublishQueue;
use crate::subscription::SubscribeOptions;

mod connect;
mod publishes;
mod subscriptions;

use connect::{Connected, Ending, open};
use subscriptions::{FetchedToken, Phase, Sub};

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;
type CallReply = oneshot::Sender<Result<ReplyKind, Error>>;
type TokenFetch = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// At most this many commands are batched into one frame (the protocol allows 1024).
const MAX_COMMANDS_PER_FRAME: usize = 256;

/// Frames are kept under this size whatever the WebSocket limit (the server's default
/// `client.max_message_size` is 64 KiB).
const MAX_FRAME_BYTES: usize = 64 << 10;

/// What an API call asks of the session.
pub(crate) enum Request {
    Publish {
        channel: String,
        data: Payload,
        reply: oneshot::Sender<Result<PublishResult, Error>>,
    },
    Subscribe {
        channel: String,
        id: u64,
        options: SubscribeOptions,
        events: mpsc::UnboundedSender<SubscriptionEvent>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Unsubscribe {
        channel: String,
        id: u64,
    },
    Call {
        kind: CommandKind,
        reply: CallReply,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Request::Publish { .. } => "publish",
            Request::Subscribe { .. } => "subscribe",
            Request::Unsubscribe { .. } => "unsubscribe",
            Request::Call { kind, .. } => kind.name(),
            Request::Close { .. } => "close",
        };
        f.write_str(name)
    }
}

/// A command sent on the current connection and not yet answered.
enum Pending {
    Publish,
    Subscribe { channel: String, sub: u64 },
    Call { kind: CommandKind, reply: CallReply },
    Other,
    Refresh,
    SubRefresh { channel: String, sub: u64 },
}

pub(crate) struct Session {
    settings: Settings,
    requests: mpsc::UnboundedReceiver<Request>,
    state: watch::Sender<State>,
    events: broadcast::Sender<State>,
    subs: BTreeMap<String, Sub>,
    queue: PublishQueue,
    /// Presence and history calls waiting for a connection.
    calls: Vec<(CommandKind, CallReply)>,
    pending: HashMap<u64, Pending>,
    outbox: Vec<Command>,
    next_id: u64,
    /// Id of the latest `connect` command.
    connect_id: u64,
    key_prefix: String,
    next_key: u64,
    token: Option<String>,
    /// A fresh token was asked for after the last one was refused; refused again: give up.
    token_retried: bool,
    token_fetch: Option<TokenFetch>,
    /// Subscription tokens being fetched from their providers, and whose each task is.
    token_fetches: tokio::task::JoinSet<FetchedToken>,
    token_fetchers: HashMap<tokio::task::Id, (String, u64)>,
    closing: Option<oneshot::Sender<()>>,
    online: bool,
    /// Queued publishes may be sendable (a new one, an ack, a timer): send them before
    /// the next flush, once for everything handled since.
    pump: bool,
    /// Set while serving a connection when it must end (a gap, an undecodable frame).
    ending: Option<Ending>,
    /// The server's disconnect push, which precedes its close frame.
    disconnect: Option<Ending>,
    last_heard: Instant,
    ping_sent: Option<Instant>,
    ping_interval: Duration,
    refresh_at: Option<Instant>,
    resubscribe_at: Option<Instant>,
}

impl Session {
    pub(crate) fn new(
        settings: Settings,
        queue: PublishQueue,
        requests: mpsc::UnboundedReceiver<Request>,
        state: watch::Sender<State>,
        events: broadcast::Sender<State>,
    ) -> Session {
        Session {
            token: settings.token.clone(),
            settings,
            requests,
            state,
            events,
            subs: BTreeMap::new(),
            queue,
            calls: Vec::new(),
            pending: HashMap::new(),
            outbox: Vec::new(),
            next_id: 0,
            connect_id: 0,
            key_prefix: format!("{:016x}", random_u64()),
            next_key: 0,
            token_retried: false,
            token_fetch: None,
            token_fetches: tokio::task::JoinSet::new(),
            token_fetchers: HashMap::new(),
            closing: None,
            online: false,
            pump: false,
            ending: None,
            disconnect: None,
            last_heard: Instant::now(),
            ping_sent: None,
            ping_interval: Duration::from_secs(25),
            refresh_at: None,
            resubscribe_at: None,
        }
    }

    /// Connects, serves, reconnects, until closed.
    pub(crate) async fn run(mut self) {
        let mut attempt = 0u32;
        loop {
            self.set_state(State::Connecting { attempt });
            let ending = match self.connect().await {
                Ok(connected) => {
                    attempt = 0;
                    self.token_retried = false;
                    self.serve(connected).await
                }
                Err(ending) => ending,
            };
            self.connection_lost();
            if ending.new_token && self.settings.token_provider.is_none() {
                // The same token would be refused again, forever.
                let reason = format!("{}; set ClientBuilder::token_provider to renew tokens", ending.reason);
                return self.finish(ending.code, reason);
            }
            let retry_token = ending.new_token && !self.token_retried;
            if self.closing.is_some() || !(ending.reconnect || retry_token) {
                return self.finish(ending.code, ending.reason);
            }
            if ending.new_token {
                self.token = None;
                self.token_retried = !ending.reconnect;
            }
            // The server's Retry-After is a floor: the jitter still spreads a storm out.
            let retry_in = self.settings.backoff.delay(attempt).max(ending.retry_after.unwrap_or_default());
            attempt = attempt.saturating_add(1);
            tracing::debug!(code = ?ending.code, reason = %ending.reason, ?retry_in, "disconnected");
            self.set_state(State::Disconnected { code: ending.code, reason: ending.reason, retry_in });
            if self.while_offline(tokio::time::sleep(retry_in)).await.is_none() {
                return self.finish(None, "closed by the application".into());
            }
        }
    }

    fn set_state(&self, state: State) {
        // The watch first: whoever sees the event and then asks for the state sees this one.
        self.state.send_replace(state.clone());
        let _ = self.events.send(state);
    }

    /// Runs `fut` while accepting requests; `None` if the client is closed meanwhile.
    async fn while_offline<T>(&mut self, fut: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(fut);
        loop {
            if self.closing.is_some() {
                return None;
            }
            tokio::select! {
                out = &mut fut => return Some(out),
                request = self.requests.recv() => match request {
                    Some(request) => self.on_request(request),
                    None => return None,
                },
            }
        }
    }

    async fn connect(&mut self) -> Result<Connected, Ending> {
        if self.token.is_none()
            && let Some(provider) = self.settings.token_provider.clone()
        {
            match self.while_offline(provider()).await {
                Some(Ok(token)) => self.token = Some(token),
                Some(Err(e)) => return Err(Ending::retry(None, format!("the token provider failed: {e}"))),
                None => return Err(Ending::closed()),
            }
        }
        let id = self.next_id();
        self.connect_id = id;
        let request = self.connect_request(id);
        let open = open(self.settings.clone(), request, id);
        self.while_offline(open).await.unwrap_or_else(|| Err(Ending::closed()))
    }

    /// The `connect` command, restoring every subscription (with its position) at once.
    fn connect_request(&mut self, id: u64) -> ConnectRequest {
        let mut subs = BTreeMap::new();
        let now = Instant::now();
        for (channel, sub) in &mut self.subs {
            if sub.options.token_provider.is_some() && sub.token_at.is_some_and(|t| now >= t) {
                // Its token was due for renewal while offline: it may have expired.
                sub.token = None;
            }
            if sub.needs_token() {
                // Subscribed after the connect, once its provider gave a token.
                continue;
            }
            sub.phase = Phase::Subscribing(id);
            let since = sub.tracker.since();
            subs.insert(
                channel.clone(),
                peregrine_wire::SubscribeOptions {
                    token: sub.token.clone(),
                    recover: since.is_some(),
                    since,
                    join_leave: sub.options.join_leave,
                },
            );
        }
        ConnectRequest {
            token: self.token.clone(),
            name: Some(self.settings.name.clone()),
            version: Some(peregrine_wire::PROTOCOL_VERSION),
            subs,
        }
    }

    async fn serve(&mut self, connected: Connected) -> Ending {
        let Connected { mut ws, mut result, rest } = connected;
        self.online = true;
        self.last_heard = Instant::now();
        self.ping_sent = None;
        self.ping_interval = self
            .settings
            .ping_interval
            .unwrap_or(Duration::from_millis(result.ping_interval_ms))
            .max(Duration::from_millis(100));
        self.schedule_refresh(result.expires);
        tracing::debug!(client_id = %result.client_id, "connected");
        self.set_state(State::Connected { client_id: result.client_id.clone() });
        self.on_connect_subs(std::mem::take(&mut result.subs));
        for message in rest {
            self.on_message(message);
        }
        self.resume();
        loop {
            if self.closing.is_some() {
                let close = ws.close(CloseCode::NORMAL, "client closed");
                let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
                return Ending::closed();
            }
            if let Some(ending) = self.ending.take() {
                return ending;
            }
            if std::mem::take(&mut self.pump) {
                self.pump_publishes();
            }
            if let Err(e) = self.flush(&mut ws).await {
                return self
                    .disconnect
                    .take()
                    .unwrap_or_else(|| Ending::retry(None, format!("cannot send: {e}")));
            }
            let deadline = self.next_deadline();
            let token_fetch = &mut self.token_fetch;
            tokio::select! {
                message = ws.recv() => match message {
                    Some(Ok(Message::Text(text))) => self.on_frame(text.as_bytes()),
                    Some(Ok(Message::Binary(bytes))) => self.on_frame(&bytes),
                    Some(Ok(Message::Close(frame))) => {
                        return self.disconnect.take().unwrap_or_else(|| Ending::from_close(frame));
                    }
                    Some(Ok(_)) => self.heard(),
                    Some(Err(e)) => {
                        return self.disconnect.take().unwrap_or_else(|| Ending::retry(None, e.to_string()));
                    }
                    None => {
                        return self.disconnect.take().unwrap_or_else(|| {
                            Ending::retry(None, "the connection ended without a close frame (1006)")
                        });
                    }
                },
                request = self.requests.recv() => match request {
                    Some(request) => {
                        self.on_request(request);
                        // Batch whatever else is already waiting into the same frame.
                        while self.outbox.len() < MAX_COMMANDS_PER_FRAME && self.closing.is_none() {
                            let Ok(request) = self.requests.try_recv() else { break };
                            self.on_request(request);
                        }
                    }
                    None => self.closing = Some(oneshot::channel().0),
                },
                token = async { token_fetch.as_mut().expect("guarded").await }, if token_fetch.is_some() => {
                    self.token_fetch = None;
                    self.on_token(token);
                }
                Some(done) = self.token_fetches.join_next_with_id(), if !self.token_fetches.is_empty() => {
                    self.on_subscription_token_task(done);
                }
                _ = tokio::time::sleep_until(deadline) => self.on_timer(),
            }
        }
    }

    /// Sends the outbox, batched, in frames no larger than the server accepts.
    async fn flush(&mut self, ws: &mut Socket) -> peregrine::Result<()> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let commands = std::mem::take(&mut self.outbox);
        let encoding = self.settings.encoding;
        let limit = self.frame_limit();
        for chunk in commands.chunks(MAX_COMMANDS_PER_FRAME) {
            for frame in encode_frames(chunk, encoding, limit) {
                ws.feed(frame).await?;
            }
        }
        ws.flush().await
    }

    /// The largest frame sent: the WebSocket limit, at most [`MAX_FRAME_BYTES`].
    fn frame_limit(&self) -> usize {
        self.settings.websocket.get_limits().message_size().min(MAX_FRAME_BYTES)
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn command(&mut self, kind: CommandKind, pending: Pending) -> u64 {
        let id = self.next_id();
        self.pending.insert(id, pending);
        self.outbox.push(Command { id, kind });
        id
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.ping_sent = None;
    }

    fn next_deadline(&self) -> Instant {
        let heartbeat = match self.ping_sent {
            Some(sent) => sent + self.settings.pong_timeout,
            None => self.last_heard + self.ping_interval,
        };
        let mut deadline = heartbeat;
        for q in self.queue.iter() {
            if let Some(sent) = &q.sent {
                deadline = deadline.min(sent.deadline);
            } else {
                // A past one is not a deadline: the window is full, an ack will pump.
                if let Some(t) = q.not_before.filter(|t| *t > Instant::now()) {
                    deadline = deadline.min(t);
                }
                break;
            }
        }
        let token_times = self.subs.values().filter_map(|s| s.token_at);
        for t in [self.refresh_at, self.resubscribe_at].into_iter().flatten().chain(token_times) {
            deadline = deadline.min(t);
        }
        deadline
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        match self.ping_sent {
            Some(sent) if now >= sent + self.settings.pong_timeout => {
                let reason = format!(
                    "no answer from the server within {:?} of a ping: the connection is dead",
                    self.settings.pong_timeout
                );
                self.ending = Some(Ending::retry(None, reason));
                return;
            }
            None if now >= self.last_heard + self.ping_interval => {
                self.command(CommandKind::Ping(PingRequest {}), Pending::Other);
                self.ping_sent = Some(now);
            }
            _ => {}
        }
        self.publish_timeouts(now);
        self.pump = true;
        self.subscription_tokens_due(now);
        if self.resubscribe_at.is_some_and(|t| now >= t) {
            self.resubscribe_at = None;
            self.subscribe_waiting();
        }
        if self.refresh_at.is_some_and(|t| now >= t) {
            self.refresh_at = None;
            if let Some(provider) = &self.settings.token_provider {
                self.token_fetch = Some(provider());
            }
        }
    }

    fn schedule_refresh(&mut self, expires: Option<u64>) {
        self.refresh_at = self.settings.token_provider.as_ref().and(expires).map(renew_at);
    }

    fn on_token(&mut self, token: Result<String, String>) {
        match token {
            Ok(token) => {
                self.token = Some(token.clone());
                if self.online {
                    self.command(CommandKind::Refresh(RefreshRequest { token }), Pending::Refresh);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the token provider failed; retrying in 1 s");
                self.refresh_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    fn on_frame(&mut self, frame: &[u8]) {
        self.heard();
        match peregrine_wire::decode_server_messages(frame, self.settings.encoding) {
            Ok(messages) => {
                for message in messages {
                    self.on_message(message);
                }
            }
            Err(e) => {
                self.ending = Some(Ending::retry(None, format!("undecodable frame from the server: {e}")));
            }
        }
    }

    fn on_message(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Reply(reply) => match self.pending.remove(&reply.id) {
                Some(Pending::Publish) => self.on_publish_reply(reply.id, reply.result),
                Some(Pending::Subscribe { channel, sub }) => {
                    self.on_subscribe_reply(&channel, sub, reply.result)
                }
                Some(Pending::Call { reply: caller, .. }) => {
                    let _ = caller.send(reply.result.map_err(server_error));
                }
                Some(Pending::Refresh) => match reply.result {
                    Ok(ReplyKind::Refresh(r)) => self.schedule_refresh(r.expires),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(code = e.code, message = %e.message, "token refresh refused"),
                },
                Some(Pending::SubRefresh { channel, sub }) => {
                    self.on_sub_refresh_reply(&channel, sub, reply.result)
                }
                Some(Pending::Other) | None => {}
            },
            ServerMessage::Push(push) => self.on_push(push),
        }
    }

    fn on_push(&mut self, push: Push) {
        match push {
            Push::Publication { channel, publication } => self.on_publication(&channel, publication),
            Push::Join { channel, info } => {
                if let Some(sub) = self.subs.get(&channel) {
                    sub.emit(SubscriptionEvent::Join(info));
                }
            }
            Push::Leave { channel, info } => {
                if let Some(sub) = self.subs.get(&channel) {
                    sub.emit(SubscriptionEvent::Leave(info));
                }
            }
            Push::Unsubscribe { channel, code, reason } => {
                if codes::resubscribe(code) {
                    if let Some(sub) = self.subs.get_mut(&channel) {
                        sub.phase = Phase::Waiting;
                        if code == codes::unsubscribe::EXPIRED && sub.options.token_provider.is_some() {
                            // Ended because its token expired: a fresh one first.
                            sub.token = None;
                        }
                    }
                    self.subscribe_waiting();
                } else if let Some(sub) = self.subs.remove(&channel) {
                    sub.fail(Some(code), reason);
                }
            }
            Push::Disconnect { code, reason, reconnect } => {
                self.disconnect = Some(Ending::from_push(code, reason, reconnect));
            }
            Push::Message(message) => tracing::debug!(data = %message.data, "message from the server"),
        }
    }

    fn resume(&mut self) {
        self.subscribe_waiting();
        for (kind, reply) in std::mem::take(&mut self.calls) {
            if !reply.is_closed() {
                self.command(kind.clone(), Pending::Call { kind, reply });
            }
        }
        self.pump_publishes();
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Publish { channel, data, reply } => {
                // Binary payloads go as base64 in JSON: a third more.
                let data_size = if data.is_binary() { data.len().div_ceil(3) * 4 } else { data.len() };
                let size = channel.len() + data_size + 128;
                let limit = self.frame_limit();
                if size > limit {
                    let _ = reply.send(Err(Error::TooLarge { size, limit }));
                    return;
                }
                self.next_key += 1;
                let key = format!("{}-{}", self.key_prefix, self.next_key);
                if let Err((error, reply)) = self.queue.push(key, channel, data, reply) {
                    let _ = reply.send(Err(error));
                    return;
                }
                self.pump = true;
            }
            Request::Subscribe { channel, id, options, events, reply } => {
                if self.subs.contains_key(&channel) {
                    let _ = reply.send(Err(Error::AlreadySubscribed { channel }));
                    return;
                }
                self.subs.insert(channel, Sub::new(id, options, events, reply));
                self.subscribe_waiting();
            }
            Request::Unsubscribe { channel, id } => {
                if self.subs.get(&channel).is_some_and(|s| s.id == id) {
                    let sub = self.subs.remove(&channel).expect("checked");
                    if self.online && sub.phase != Phase::Waiting {
                        self.command(
                            CommandKind::Unsubscribe(UnsubscribeRequest { channel }),
                            Pending::Other,
                        );
                    }
                }
            }
            Request::Call { kind, reply } => {
                if self.online {
                    self.command(kind.clone(), Pending::Call { kind, reply });
                } else {
                    self.calls.push((kind, reply));
                }
            }
            Request::Close { reply } => self.closing = Some(reply),
        }
    }

    /// The connection is gone: what was in flight goes out again on the next one.
    fn connection_lost(&mut self) {
        self.online = false;
        self.outbox.clear();
        self.disconnect = None;
        self.ending = None;
        self.refresh_at = None;
        self.resubscribe_at = None;
        let mut calls: Vec<(u64, CommandKind, CallReply)> = Vec::new();
        for (id, pending) in self.pending.drain() {
            if let Pending::Call { kind, reply } = pending {
                calls.push((id, kind, reply));
            }
        }
        calls.sort_by_key(|(id, _, _)| *id);
        let waiting = std::mem::take(&mut self.calls);
        self.calls = calls.into_iter().map(|(_, k, r)| (k, r)).chain(waiting).collect();
        self.queue.connection_lost();
        for sub in self.subs.values_mut() {
            sub.phase = Phase::Waiting;
        }
    }

    /// Closed for good: everyone waiting learns it.
    fn finish(mut self, code: Option<u16>, reason: String) {
        tracing::debug!(?code, %reason, "closed");
        let error = || Error::Closed { reason: reason.clone() };
        let kept = self.queue.is_persistent();
        for q in self.queue.drain() {
            if let Some(reply) = q.reply {
                let reason = match kept {
                    true => format!("{reason}; the publish stays in the queue file for the next run"),
                    false => reason.clone(),
                };
                let _ = reply.send(Err(Error::Closed { reason }));
            }
        }
        for (_, sub) in std::mem::take(&mut self.subs) {
            sub.fail(None, reason.clone());
        }
        for (_, reply) in self.calls.drain(..) {
            let _ = reply.send(Err(error()));
        }
        self.set_state(State::Closed { code, reason: reason.clone() });
        if let Some(closing) = self.closing.take() {
            let _ = closing.send(());
        }
    }
}

/// When to renew a token that expires at `expires` (unix seconds): ahead of it by a fifth
/// of the lifetime left, at most 30 s. Connection and subscription tokens alike.
fn renew_at(expires: u64) -> Instant {
    let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let remaining = Duration::from_secs(expires).saturating_sub(now_unix);
    let lead = (remaining / 5).min(Duration::from_secs(30));
    Instant::now() + remaining.saturating_sub(lead)
}

fn server_error(e: ReplyError) -> Error {
    Error::Server { code: e.code, message: e.message }
}

/// The same command may succeed later (rate limited, server busy).
fn temporary(e: &ReplyError) -> bool {
    e.temporary || codes::is_temporary(e.code)
}

/// Encodes commands into as few frames as fit under `limit` bytes each.
fn encode_frames(commands: &[Command], encoding: peregrine_wire::Encoding, limit: usize) -> Vec<Message> {
    let bytes = peregrine_wire::encode_commands(commands, encoding);
    if bytes.len() > limit && commands.len() > 1 {
        let (a, b) = commands.split_at(commands.len() / 2);
        let mut frames = encode_frames(a, encoding, limit);
        frames.extend(encode_frames(b, encoding, limit));
        return frames;
    }
    let frame = if encoding.is_text() {
        Message::text(String::from_utf8(bytes).expect("JSON is UTF-8"))
    } else {
        Message::binary(bytes)
    };
    vec![frame]
}

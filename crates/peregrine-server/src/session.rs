//! One client session: `Connecting` until the `connect` command, then `Connected`; commands
//! in, replies and pushes out through the session's [`Outbox`](crate::outbox::Outbox).
//!
//! The session knows nothing of sockets: a transport ([`crate::transport`]) feeds it decoded
//! frames with [`Session::handle_frame`] and writes what the outbox holds. Subscribing (with
//! recovery) is in [`subscribe`](self::subscribe), a recovery too big for its reply is
//! streamed by [`stream`](self::stream), and what a session leaves behind when it ends is
//! cleared by [`Leftovers`].

mod run;

#[cfg(test)]
pub(crate) use run::writer_future_size;
pub use run::{CLOSE_GRACE, run};
mod stream;
mod subscribe;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peregrine_wire::codes::{disconnect as dc, error as err, unsubscribe as unsub};
use peregrine_wire::{
    ClientInfo, Command, CommandKind, ConnectRequest, ConnectResult, Encoding, HistoryResult, MAX_BATCH,
    PROTOCOL_VERSION, PingResult, PresenceResult, PublishRequest, PublishResult, Push, RefreshResult, Reply,
    ReplyError, ReplyKind, ServerMessage, SubRefreshResult, SubscribeOptions, UnsubscribeResult,
    decode_commands_bounded, encode_server_messages,
};

use crate::disconnect::Disconnect;
use crate::hub::SessionId;
use crate::metrics::Metrics;
use crate::node::{Node, SessionControl, reply_error};
use crate::outbox::{Frame, PushError};
use crate::rate_limit::TokenBucket;

/// Who a connected session is, from its connection token (or anonymous).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// User id (`sub`), empty for anonymous users.
    pub user: String,
    /// Unix time (seconds) when the connection's credentials expire.
    pub expires: Option<u64>,
    /// Connection info shared with other subscribers (presence, join/leave).
    pub info: Option<serde_json::Value>,
    /// Channels to subscribe the session to at connect (server-side subscriptions).
    pub channels: Vec<String>,
}

#[derive(Debug, Clone)]
struct Subscription {
    presence: bool,
    join_leave: bool,
    /// Channel info from the subscription token, shown in presence and join/leave (boxed:
    /// most subscriptions have none, and every session keeps its subscriptions).
    chan_info: Option<Box<serde_json::Value>>,
    /// Unix time (seconds) when the subscription token expires, unless `sub_refresh`
    /// brings a newer one: the subscription then ends with an `unsubscribe` push (2501).
    expires: Option<u64>,
}

/// A session's live subscriptions by channel: a list, not a hash map. A session has a few
/// (at most `client.max_subscriptions`), and every connection keeps its own: two take 112
/// bytes here against 250 in a map.
#[derive(Debug, Default)]
struct Subscriptions(Vec<(String, Subscription)>);

impl Subscriptions {
    fn contains_key(&self, channel: &str) -> bool {
        self.0.iter().any(|(c, _)| c == channel)
    }

    fn get_mut(&mut self, channel: &str) -> Option<&mut Subscription> {
        self.0.iter_mut().find(|(c, _)| c == channel).map(|(_, s)| s)
    }

    /// Adds or replaces the subscription to `channel`.
    fn insert(&mut self, channel: String, subscription: Subscription) {
        if let Some(old) = self.get_mut(&channel) {
            *old = subscription;
            return;
        }
        // Exact: most sessions subscribe once or twice and never again.
        self.0.reserve_exact(1);
        self.0.push((channel, subscription));
    }

    fn remove(&mut self, channel: &str) -> Option<Subscription> {
        let i = self.0.iter().position(|(c, _)| c == channel)?;
        Some(self.0.swap_remove(i).1)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Subscription)> {
        self.0.iter().map(|(c, s)| (c.as_str(), s))
    }

    fn take_all(&mut self) -> Vec<(String, Subscription)> {
        std::mem::take(&mut self.0)
    }
}

/// One client's protocol state. Not shared: the transport's reader task owns it.
#[derive(Debug)]
pub struct Session {
    node: Arc<Node>,
    id: SessionId,
    client_id: String,
    control: Arc<SessionControl>,
    encoding: Encoding,
    /// Set by a token given at the handshake (query or header), used by `connect`. Boxed,
    /// like the identity: most sessions have none, and the rest keep one for good.
    handshake_identity: Option<Box<Identity>>,
    identity: Option<Box<Identity>>,
    subscriptions: Subscriptions,
    /// Subscriptions whose recovery did not fit in their reply, oldest first: the rest of it
    /// is sent page by page as the outbox drains, then they go live.
    streams: VecDeque<stream::Streaming>,
    publish_bucket: TokenBucket,
    /// A publish that failed for now (rate limit, broker unreachable), by idempotency key:
    /// later publishes wait behind it until it is resent, so a client's publishes land in
    /// the order it sent them ([`PUBLISH_HOLD`] at most). Boxed: rare.
    held_publish: Option<Box<(String, tokio::time::Instant)>>,
    /// Replies waiting to go out as one frame.
    replies: Vec<ServerMessage>,
    /// What is left of the current frame's page, in bytes of publications: the history and
    /// recovery replies to one frame of commands share one page, so that a batch of them
    /// cannot overflow the outbound queue by itself.
    page_left: usize,
    /// [`close`](Session::close) ran (or [`Drop`] has nothing left to do).
    cleaned: bool,
}

impl Session {
    /// A session for a registered connection.
    pub fn new(
        node: Arc<Node>,
        id: SessionId,
        control: Arc<SessionControl>,
        encoding: Encoding,
        handshake_identity: Option<Box<Identity>>,
    ) -> Session {
        let client = &node.config().client;
        let publish_bucket = TokenBucket::new(client.publish_rate, client.publish_burst);
        Session {
            client_id: client_id(id),
            node,
            id,
            control,
            encoding,
            handshake_identity,
            identity: None,
            subscriptions: Subscriptions::default(),
            streams: VecDeque::new(),
            publish_bucket,
            held_publish: None,
            replies: Vec::new(),
            page_left: 0,
            cleaned: false,
        }
    }

    /// The id the server gave this client (sent in the connect reply).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Whether `connect` succeeded.
    pub fn is_connected(&self) -> bool {
        self.identity.is_some()
    }

    /// The user `connect` authenticated (empty: anonymous); `None` before.
    pub fn user(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.user.as_str())
    }

    /// Every subscription, live or with its recovery still streaming: channel and options.
    fn every_subscription(&self) -> impl Iterator<Item = (&str, &Subscription)> {
        let live = self.subscriptions.iter();
        live.chain(self.streams.iter().map(|s| (s.channel(), s.subscription())))
    }

    /// How long until the connection's credentials or a subscription token expire, if
    /// any does: then call [`expire`](Session::expire).
    pub fn expires_in(&self) -> Option<Duration> {
        let connection = self.identity.as_ref().and_then(|i| i.expires);
        let subscriptions = self.every_subscription().filter_map(|(_, s)| s.expires);
        let earliest = subscriptions.chain(connection).min()?;
        Some(Duration::from_secs(earliest.saturating_sub(unix_now())))
    }

    fn metrics(&self) -> &Metrics {
        self.node.metrics()
    }

    fn info(&self) -> ClientInfo {
        let identity = self.identity.as_ref();
        ClientInfo {
            user: identity.map(|i| i.user.clone()).unwrap_or_default(),
            client: self.client_id.clone(),
            conn_info: identity.and_then(|i| i.info.clone()),
            chan_info: None,
        }
    }

    /// Handles one WebSocket message: a frame of commands. Replies are queued in the outbox
    /// (several replies as one frame). An error means the session must end with it.
    pub async fn handle_frame(&mut self, frame: &[u8]) -> Result<(), Disconnect> {
        let commands = decode_commands_bounded(frame, self.encoding, MAX_BATCH)
            .map_err(|e| Disconnect::bad_request(format!("undecodable frame: {e}")))?;
        self.page_left = self.page_bytes();
        for command in commands {
            self.metrics().count_command(command.kind.name());
            self.handle_command(command).await?;
        }
        self.flush_replies()
    }

    /// Queues the replies gathered so far as one frame.
    fn flush_replies(&mut self) -> Result<(), Disconnect> {
        if self.replies.is_empty() {
            return Ok(());
        }
        let frame = Frame::from(encode_server_messages(&self.replies, self.encoding));
        // Dropped rather than cleared: an idle session keeps no reply buffer.
        self.replies = Vec::new();
        self.push_frame(frame)
    }

    fn push_frame(&self, frame: Frame) -> Result<(), Disconnect> {
        match self.control.outbox.push(frame) {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(Disconnect::new(dc::NORMAL, "session closed")),
            Err(_) => Err(Disconnect::slow()),
        }
    }

    fn reply(&mut self, id: u64, result: Result<ReplyKind, ReplyError>) {
        self.replies.push(ServerMessage::Reply(Reply { id, result }));
    }

    async fn handle_command(&mut self, command: Command) -> Result<(), Disconnect> {
        let id = command.id;
        if self.identity.is_none() {
            let CommandKind::Connect(req) = command.kind else {
                return Err(Disconnect::bad_request("the first command must be connect"));
            };
            return self.connect(id, req).await;
        }
        let result = match command.kind {
            CommandKind::Connect(_) => Err(reply_error(err::BAD_REQUEST, "already connected")),
            CommandKind::Subscribe(req) => return self.subscribe(id, req).await,
            CommandKind::Unsubscribe(req) => {
                self.unsubscribe(&req.channel).await;
                Ok(ReplyKind::Unsubscribe(UnsubscribeResult {}))
            }
            CommandKind::Publish(req) => self.publish(req).await.map(ReplyKind::Publish),
            CommandKind::Presence(req) => self.presence(&req.channel).await,
            CommandKind::History(req) => self.history(req).await.map(ReplyKind::History),
            CommandKind::Refresh(req) => self.refresh(&req.token).map(ReplyKind::Refresh),
            CommandKind::SubRefresh(req) => {
                self.sub_refresh(&req.channel, &req.token).map(ReplyKind::SubRefresh)
            }
            CommandKind::Ping(_) => Ok(ReplyKind::Ping(PingResult {})),
        };
        if let Err(e) = &result {
            self.metrics().count_command(format!("error_{}", e.code));
        }
        self.reply(id, result);
        Ok(())
    }

    async fn connect(&mut self, id: u64, req: ConnectRequest) -> Result<(), Disconnect> {
        if let Some(v) = req.version
            && v != PROTOCOL_VERSION
        {
            return Err(Disconnect::new(
                dc::INAPPROPRIATE_PROTOCOL,
                format!("protocol version {v} is not supported (this server speaks {PROTOCOL_VERSION})"),
            ));
        }
        let mut identity = match (req.token.as_deref(), self.handshake_identity.take()) {
            (Some(token), _) => Box::new(self.node.authenticate(Some(token))?),
            (None, Some(identity)) => identity,
            (None, None) => Box::new(self.node.authenticate(None)?),
        };
        self.node.set_user(self.id, &identity.user)?;
        // Taken, not copied: the session keeps its identity as long as it lives.
        let server_side = std::mem::take(&mut identity.channels);
        let expires = identity.expires;
        self.identity = Some(identity);
        let result = ConnectResult {
            client_id: self.client_id.clone(),
            version: PROTOCOL_VERSION,
            expires,
            ping_interval_ms: self.node.config().client.ping_interval.as_millis() as u64,
            subs: Default::default(),
        };
        let mut wanted: Vec<_> = req.subs.into_iter().collect();
        wanted.extend(server_side.into_iter().map(|channel| (channel, SubscribeOptions::default())));
        self.connect_subscriptions(id, result, wanted).await
    }

    async fn publish(&mut self, req: PublishRequest) -> Result<PublishResult, ReplyError> {
        let opts = self.node.channel_options(&req.channel)?;
        if !opts.allow_publish {
            return Err(reply_error(
                err::PERMISSION_DENIED,
                format!("clients may not publish to {}: publish through the server API", req.channel),
            ));
        }
        if opts.private && !self.subscriptions.contains_key(&req.channel) {
            return Err(reply_error(
                err::PERMISSION_DENIED,
                "subscribe to a private channel before publishing",
            ));
        }
        let now = tokio::time::Instant::now();
        if let Some((held, until)) = self.held_publish.as_deref() {
            if now >= *until || req.idempotency_key.as_deref() == Some(held) {
                self.held_publish = None;
            } else {
                return Err(ReplyError {
                    code: err::TOO_MANY_REQUESTS,
                    message: "an earlier publish failed for now: resend it first (publishes land in order)"
                        .into(),
                    temporary: true,
                });
            }
        }
        let outcome = if self.publish_bucket.try_take(now) {
            self.node.publish(&req.channel, req.data, Some(self.info()), req.idempotency_key.as_deref()).await
        } else {
            Err(ReplyError {
                code: err::TOO_MANY_REQUESTS,
                message: "publish rate limit reached, retry later".into(),
                temporary: true,
            })
        };
        let result = outcome.inspect_err(|e| {
            if let Some(key) = req.idempotency_key.as_ref().filter(|_| e.temporary) {
                // From when it failed, not from when it started: a publish that waited out a
                // broker outage must still hold the later ones back.
                let until = tokio::time::Instant::now() + PUBLISH_HOLD;
                self.held_publish = Some(Box::new((key.clone(), until)));
            }
        })?;
        let positioned = opts.has_history();
        Ok(PublishResult {
            offset: positioned.then_some(result.offset),
            epoch: positioned.then_some(result.epoch),
            duplicate: result.duplicate,
        })
    }

    fn may_read(&self, channel: &str) -> Result<(), ReplyError> {
        let opts = self.node.channel_options(channel)?;
        if opts.private && !self.subscriptions.contains_key(channel) {
            return Err(reply_error(err::PERMISSION_DENIED, "subscribe to a private channel to read it"));
        }
        Ok(())
    }

    async fn presence(&mut self, channel: &str) -> Result<ReplyKind, ReplyError> {
        self.may_read(channel)?;
        let clients = self.node.presence(channel).await?;
        Ok(ReplyKind::Presence(PresenceResult { clients }))
    }

    /// One page of history: at most `limit` publications and what is left of the frame's
    /// page (at least one), with `more` when further ones follow in the direction read.
    async fn history(&mut self, req: peregrine_wire::HistoryRequest) -> Result<HistoryResult, ReplyError> {
        self.may_read(&req.channel)?;
        let wanted = req.limit.map_or(stream::PAGE_READ, |l| (l as usize).min(stream::PAGE_READ));
        // One more than can be returned, to know whether more follow.
        let h = self.node.history(&req.channel, req.since, Some(wanted + 1), req.reverse).await?;
        let read = h.publications.len();
        let mut publications = h.publications;
        publications.truncate(wanted);
        let (publications, used) =
            crate::recovery::take_page(publications, self.page_left, wanted > 0, self.encoding);
        self.page_left = self.page_left.saturating_sub(used);
        let more = wanted > 0 && publications.len() < read;
        Ok(HistoryResult { publications, epoch: h.epoch, offset: h.offset, more })
    }

    /// The most publication bytes one reply or one streamed page carries: a quarter of the
    /// outbound queue, so that history and recovery never overflow it by themselves.
    fn page_bytes(&self) -> usize {
        self.node.config().client.queue_max_bytes / 4
    }

    fn refresh(&mut self, token: &str) -> Result<RefreshResult, ReplyError> {
        let fresh = self.node.authenticate(Some(token)).map_err(|d| {
            let code = if d.code == dc::EXPIRED { err::TOKEN_EXPIRED } else { err::UNAUTHORIZED };
            reply_error(code, d.reason)
        })?;
        let Some(identity) = &mut self.identity else {
            return Err(reply_error(err::BAD_REQUEST, "connect first"));
        };
        if fresh.user != identity.user {
            return Err(reply_error(err::PERMISSION_DENIED, "the new token is for another user"));
        }
        identity.expires = fresh.expires;
        Ok(RefreshResult { expires: fresh.expires })
    }

    /// `sub_refresh`: a fresh subscription token moves the subscription's expiry.
    fn sub_refresh(&mut self, channel: &str, token: &str) -> Result<SubRefreshResult, ReplyError> {
        let user = self.identity.as_ref().map(|i| i.user.clone()).unwrap_or_default();
        let claims = self.node.authorize_subscription(Some(token), &user, channel)?;
        let subscription = match self.subscriptions.get_mut(channel) {
            Some(subscription) => subscription,
            None => match self.streams.iter_mut().find(|s| s.channel() == channel) {
                Some(streaming) => streaming.subscription_mut(),
                None => return Err(reply_error(err::BAD_REQUEST, format!("not subscribed to {channel}"))),
            },
        };
        subscription.expires = claims.expires;
        Ok(SubRefreshResult { expires: claims.expires })
    }

    /// Leaves every channel and unregisters: called once when the connection is gone.
    pub async fn close(mut self) {
        self.leftovers().clear().await;
    }

    /// Takes what the session holds in the node, to be cleared by [`Leftovers::clear`].
    fn leftovers(&mut self) -> Leftovers {
        self.cleaned = true;
        self.control.outbox.close();
        self.streams.clear();
        Leftovers {
            node: Arc::clone(&self.node),
            session: self.id,
            info: self.info(),
            subscriptions: self.subscriptions.take_all(),
        }
    }

    /// Server-side unsubscribes the node asked for: leave and tell the client.
    pub async fn apply_unsubscribes(&mut self) -> Result<(), Disconnect> {
        for leave in self.control.take_unsubscribes() {
            if self.is_subscribed(&leave.channel) {
                self.unsubscribe(&leave.channel).await;
                let push =
                    Push::Unsubscribe { channel: leave.channel, code: leave.code, reason: leave.reason };
                self.replies.push(ServerMessage::Push(push));
            }
        }
        self.flush_replies()
    }

    /// Ends what has expired: the session itself when its connection token has (the error
    /// is the disconnect), else every subscription whose token has, with an `unsubscribe`
    /// push (2501: resubscribe with a fresh token).
    pub async fn expire(&mut self) -> Result<(), Disconnect> {
        let now = unix_now();
        if self.identity.as_ref().and_then(|i| i.expires).is_some_and(|exp| exp <= now) {
            return Err(Disconnect::new(dc::EXPIRED, "connection token expired: refresh it or reconnect"));
        }
        let expired: Vec<String> = self
            .every_subscription()
            .filter(|(_, s)| s.expires.is_some_and(|exp| exp <= now))
            .map(|(channel, _)| channel.to_owned())
            .collect();
        for channel in expired {
            self.unsubscribe(&channel).await;
            let reason = "subscription token expired: resubscribe with a fresh token".into();
            self.replies.push(ServerMessage::Push(Push::Unsubscribe {
                channel,
                code: unsub::EXPIRED,
                reason,
            }));
        }
        self.flush_replies()
    }
}

impl Drop for Session {
    /// A session dropped without [`close`](Session::close) (its task was cancelled) still
    /// leaves nothing behind: the clearing goes on in a task of its own.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let leftovers = self.leftovers();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(leftovers.clear())),
            Err(_) => leftovers.clear_local(),
        }
    }
}

/// What an ended session still holds in the node: its subscriptions (presence, leave
/// events), hub entries (including subscriptions still being set up) and registration.
struct Leftovers {
    node: Arc<Node>,
    session: SessionId,
    info: ClientInfo,
    subscriptions: Vec<(String, Subscription)>,
}

impl Leftovers {
    async fn clear(self) {
        let node = &self.node;
        for (channel, subscription) in &self.subscriptions {
            node.metrics().subscriptions.dec();
            let info =
                ClientInfo { chan_info: subscription.chan_info.as_deref().cloned(), ..self.info.clone() };
            if subscription.presence {
                let _ = node.presence_store().remove(channel, &self.info.client).await;
            }
            if subscription.join_leave {
                let _ = node.broker().publish_join_leave(channel, info, false).await;
            }
        }
        // Every hub entry of the session, not only the live subscriptions: one being set up
        // when the session failed would otherwise stay, counted as a subscriber for ever.
        for channel in node.hub().unsubscribe_all(self.session) {
            let _ = node.broker().unsubscribe_node(&channel).await;
        }
        node.unregister(self.session);
    }

    /// Without a runtime (a test dropping a session outside one): what needs no `.await`.
    fn clear_local(self) {
        for _ in &self.subscriptions {
            self.node.metrics().subscriptions.dec();
        }
        self.node.hub().unsubscribe_all(self.session);
        self.node.unregister(self.session);
    }
}

/// How long later publishes of a connection wait behind one that failed for now: past it,
/// its client has likely given up on that one.
pub const PUBLISH_HOLD: Duration = Duration::from_secs(10);

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A client id unique across restarts: the session number and 8 random hex digits.
fn client_id(id: SessionId) -> String {
    let mut buf = [0u8; 4];
    let _ = getrandom::fill(&mut buf);
    format!("{}-{id}", buf.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

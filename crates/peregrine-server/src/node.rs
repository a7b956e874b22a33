//! [`Node`]: one server process's realtime state, the entry point for transports and the
//! HTTP API. It owns the broker, presence, the hub of local subscribers, the registry of
//! sessions (for limits, "disconnect user" and shutdown) and the metrics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use peregrine_wire::codes::error as err;
use peregrine_wire::codes::unsubscribe as unsub;
use peregrine_wire::{ClientInfo, Payload, ReplyError, StreamPosition};
use tokio::sync::Notify;

use crate::admission::{Admission, Refusal, Ticket, client_address};
use crate::auth::{OriginPolicy, TokenVerifier};
use crate::broker::{
    Broker, HistoryQuery, HistoryResult, MemoryBroker, NodeInfo, PublishOptions, PublishResult,
};
use crate::channel::ChannelOptions;
use crate::config::{Config, ConfigError};
use crate::disconnect::Disconnect;
use crate::hub::{Hub, SessionId};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::presence::{MemoryPresence, PresenceStore};

/// What the node can ask of a running session from outside it.
#[derive(Debug)]
pub struct SessionControl {
    disconnect: Mutex<Option<Disconnect>>,
    unsubscribe: Mutex<Vec<ServerUnsubscribe>>,
    notify: Notify,
    writer_notify: Notify,
    /// The session's outbound queue.
    pub outbox: Arc<Outbox>,
}

impl SessionControl {
    fn new(outbox: Arc<Outbox>) -> SessionControl {
        SessionControl {
            disconnect: Mutex::new(None),
            unsubscribe: Mutex::new(Vec::new()),
            notify: Notify::new(),
            writer_notify: Notify::new(),
            outbox,
        }
    }

    /// Asks the session to end with `d` (the first request wins).
    pub fn disconnect(&self, d: Disconnect) {
        lock(&self.disconnect).get_or_insert(d);
        self.notify.notify_one();
        self.writer_notify.notify_one();
    }

    /// The disconnect requested, if any.
    pub fn requested_disconnect(&self) -> Option<Disconnect> {
        lock(&self.disconnect).clone()
    }

    /// Asks the session to leave `channel` (server-side unsubscribe, `2000`: the client does
    /// not come back).
    pub fn unsubscribe(&self, channel: &str) {
        self.ask_to_leave(channel, unsub::SERVER, "unsubscribed by the server");
    }

    /// Asks the session to leave `channel` with `2500`: the node missed publications of it,
    /// and the client subscribes again from its position, which recovers them from history
    /// (or names the gap).
    pub fn resubscribe(&self, channel: &str) {
        let reason = "publications may have been missed: subscribe again with `since` to recover them";
        self.ask_to_leave(channel, unsub::INSUFFICIENT_STATE, reason);
    }

    fn ask_to_leave(&self, channel: &str, code: u32, reason: &str) {
        let leave = ServerUnsubscribe { channel: channel.to_owned(), code, reason: reason.to_owned() };
        lock(&self.unsubscribe).push(leave);
        self.notify.notify_one();
    }

    /// Channels the node asked the session to leave since the last call.
    pub fn take_unsubscribes(&self) -> Vec<ServerUnsubscribe> {
        std::mem::take(&mut *lock(&self.unsubscribe))
    }

    /// Resolves when a disconnect or an unsubscribe was requested (consumes the signal):
    /// for the session's reader.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Resolves when a disconnect was requested: for the session's writer.
    pub async fn writer_notified(&self) {
        self.writer_notify.notified().await
    }
}

/// A channel the node asks a session to leave, and the `unsubscribe` push to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUnsubscribe {
    /// The channel.
    pub channel: String,
    /// `codes::unsubscribe::SERVER` or `INSUFFICIENT_STATE`.
    pub code: u32,
    /// Why, for the client.
    pub reason: String,
}

#[derive(Debug)]
struct SessionEntry {
    user: String,
    control: Arc<SessionControl>,
}

#[derive(Debug, Default)]
struct Registry {
    sessions: HashMap<SessionId, SessionEntry>,
    by_user: HashMap<String, HashSet<SessionId>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One node's realtime state. Share it as `Arc<Node>`.
#[derive(Debug)]
pub struct Node {
    config: Arc<Config>,
    tokens: TokenVerifier,
    origins: OriginPolicy,
    broker: Arc<dyn Broker>,
    presence: Arc<dyn PresenceStore>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    registry: Mutex<Registry>,
    /// Signalled each time a session leaves the registry (shutdown waits on it).
    left: Notify,
    next_session: AtomicU64,
    shutting_down: AtomicBool,
    started: std::time::Instant,
    /// Unique per process start: tells this node from the others in `/api/info`.
    id: String,
    /// Handshake limits: in progress, per client address.
    admission: Arc<Admission>,
    /// `trusted_proxies`, parsed.
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Connections the process can hold by its open-files limit (`usize::MAX`: unknown).
    fd_capacity: AtomicUsize,
}

impl Node {
    /// A node with the in-memory broker and presence. Fails when the configuration does not
    /// pass [`Config::validate`] (the error names the key).
    pub fn new(config: Config) -> Result<Arc<Node>, ConfigError> {
        Node::with_backends(config, Arc::new(MemoryBroker::new()), Arc::new(MemoryPresence::new()))
    }

    /// A node on the given broker and presence store.
    pub fn with_backends(
        config: Config,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn PresenceStore>,
    ) -> Result<Arc<Node>, ConfigError> {
        config.validate()?;
        let tokens = TokenVerifier::from_config(&config.token).map_err(ConfigError)?;
        let origins = OriginPolicy::new(&config.allowed_origins).map_err(ConfigError)?;
        let trusted_proxies = config.trusted_networks();
        let node = Arc::new(Node {
            config: Arc::new(config),
            tokens,
            origins,
            broker,
            presence,
            hub: Arc::new(Hub::new()),
            metrics: Arc::new(Metrics::new()),
            registry: Mutex::default(),
            left: Notify::new(),
            next_session: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            started: std::time::Instant::now(),
            id: random_id(),
            admission: Admission::new(),
            trusted_proxies,
            fd_capacity: AtomicUsize::new(usize::MAX),
        });
        // The handler holds the node weakly: the broker (owned by the node) must not keep
        // the node alive.
        let (weak, weak_lost) = (Arc::downgrade(&node), Arc::downgrade(&node));
        node.broker.set_handler(node.hub.handler(
            move |slow| {
                if let Some(node) = weak.upgrade() {
                    node.disconnect_slow(slow);
                }
            },
            move |channel, lost| {
                if let Some(node) = weak_lost.upgrade() {
                    node.resubscribe(channel, lost);
                }
            },
        ));
        let hub = Arc::downgrade(&node.hub);
        node.broker.set_interest(Arc::new(move |channel| {
            hub.upgrade().is_some_and(|hub| hub.subscriber_count(channel) > 0)
        }));
        Ok(node)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The hub of local subscribers.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The broker.
    pub fn broker(&self) -> &dyn Broker {
        &*self.broker
    }

    /// The presence store.
    pub fn presence_store(&self) -> &dyn PresenceStore {
        &*self.presence
    }

    /// Time since the node started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether shutdown has begun (new connections are refused).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// The options of `channel`, or the reply error naming why it does not exist.
    pub fn channel_options(&self, channel: &str) -> Result<ChannelOptions, ReplyError> {
        self.config.channel_options(channel).map_err(|e| reply_error(err::UNKNOWN_CHANNEL, e.to_string()))
    }

    /// Most connections this node takes: `client.max_connections`, or fewer when the
    /// process's open-files limit allows fewer (0: no limit).
    pub fn max_connections(&self) -> usize {
        let max = self.config.client.max_connections;
        let fds = self.fd_capacity.load(Ordering::Relaxed);
        if max == 0 { fds } else { max.min(fds) }
    }

    /// Sets how many connections the open-files limit allows (see `app::serve`).
    pub fn set_fd_capacity(&self, connections: usize) {
        self.fd_capacity.store(connections, Ordering::Relaxed);
    }

    /// Whether one more connection fits under [`max_connections`](Node::max_connections).
    pub fn has_room(&self) -> bool {
        let max = self.max_connections();
        max == 0 || max == usize::MAX || lock(&self.registry).sessions.len() < max
    }

    /// Admits a WebSocket handshake from `peer` (see [`crate::admission`]); the headers name
    /// the client when the peer is a trusted proxy.
    pub fn admit(
        &self,
        peer: Option<std::net::IpAddr>,
        forwarded_for: Option<&str>,
        real_ip: Option<&str>,
    ) -> Result<Ticket, Refusal> {
        let address = client_address(peer, forwarded_for, real_ip, &self.trusted_proxies);
        self.admission.admit(address, &self.config.client)
    }

    /// Handshakes admitted and not yet connected.
    pub fn pending_handshakes(&self) -> usize {
        self.admission.pending()
    }

    /// Registers a new session (before `connect`; the user is set by [`set_user`](Node::set_user)).
    pub fn register(&self) -> Result<(SessionId, Arc<SessionControl>), Disconnect> {
        if self.is_shutting_down() {
            return Err(Disconnect::shutdown());
        }
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let control = Arc::new(SessionControl::new(Outbox::new(self.config.client.queue_max_bytes)));
        let mut reg = lock(&self.registry);
        let max = self.max_connections();
        if max != 0 && reg.sessions.len() >= max {
            return Err(Disconnect::new(
                peregrine_wire::codes::disconnect::CONNECTION_LIMIT,
                format!("node connection limit reached ({max})"),
            ));
        }
        reg.sessions.insert(id, SessionEntry { user: String::new(), control: Arc::clone(&control) });
        drop(reg);
        self.metrics.connections.inc();
        self.metrics.connections_accepted.inc();
        Ok((id, control))
    }

    /// Records the session's user after `connect`, enforcing
    /// `client.max_connections_per_user` (anonymous users are not counted).
    pub fn set_user(&self, session: SessionId, user: &str) -> Result<(), Disconnect> {
        let mut reg = lock(&self.registry);
        if !user.is_empty() {
            let max = self.config.client.max_connections_per_user;
            let count = reg.by_user.get(user).map_or(0, HashSet::len);
            if max != 0 && count >= max {
                return Err(Disconnect::new(
                    peregrine_wire::codes::disconnect::CONNECTION_LIMIT,
                    format!("connection limit per user reached ({max})"),
                ));
            }
            reg.by_user.entry(user.to_owned()).or_default().insert(session);
        }
        if let Some(entry) = reg.sessions.get_mut(&session) {
            entry.user = user.to_owned();
        }
        Ok(())
    }

    /// Removes a session that ended.
    pub fn unregister(&self, session: SessionId) {
        let mut reg = lock(&self.registry);
        if let Some(entry) = reg.sessions.remove(&session) {
            if let Some(set) = reg.by_user.get_mut(&entry.user) {
                set.remove(&session);
                if set.is_empty() {
                    reg.by_user.remove(&entry.user);
                }
            }
            drop(reg);
            self.metrics.connections.dec();
        }
        self.left.notify_waiters();
    }

    /// Number of registered sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.registry).sessions.len()
    }

    /// Number of distinct non-anonymous users connected.
    pub fn user_count(&self) -> usize {
        lock(&self.registry).by_user.len()
    }

    fn user_sessions(&self, user: &str) -> Vec<Arc<SessionControl>> {
        let reg = lock(&self.registry);
        let ids = reg.by_user.get(user).into_iter().flatten();
        ids.filter_map(|id| reg.sessions.get(id)).map(|e| Arc::clone(&e.control)).collect()
    }

    /// Disconnects every session of `user`. Returns how many there were.
    pub fn disconnect_user(&self, user: &str, d: &Disconnect) -> usize {
        let sessions = self.user_sessions(user);
        sessions.iter().for_each(|s| s.disconnect(d.clone()));
        sessions.len()
    }

    /// Unsubscribes every session of `user` from `channel`. Returns how many sessions.
    pub fn unsubscribe_user(&self, user: &str, channel: &str) -> usize {
        let sessions = self.user_sessions(user);
        sessions.iter().for_each(|s| s.unsubscribe(channel));
        sessions.len()
    }

    fn resubscribe(&self, channel: &str, sessions: &[SessionId]) {
        self.metrics.broker_lost.inc_by(sessions.len() as u64);
        let reg = lock(&self.registry);
        for id in sessions {
            if let Some(entry) = reg.sessions.get(id) {
                entry.control.resubscribe(channel);
            }
        }
    }

    fn disconnect_slow(&self, slow: &[SessionId]) {
        let reg = lock(&self.registry);
        for id in slow {
            if let Some(entry) = reg.sessions.get(id) {
                entry.control.disconnect(Disconnect::slow());
            }
        }
    }

    /// Publishes to `channel` with its namespace's history options. `info` is the publishing
    /// client (none for the HTTP API); `idempotency_key` is scoped by `user`.
    pub async fn publish(
        &self,
        channel: &str,
        data: Payload,
        info: Option<ClientInfo>,
        idempotency_key: Option<&str>,
    ) -> Result<PublishResult, ReplyError> {
        let opts = self.channel_options(channel)?;
        let user = info.as_ref().map_or("", |i| i.user.as_str());
        let publish = PublishOptions {
            history_size: opts.history_size,
            history_ttl: opts.has_history().then_some(opts.history_ttl),
            // Keys are per user (a retry after a reconnect has a new client id): `user\0key`.
            idempotency_key: idempotency_key.map(|k| format!("{user}\0{k}")),
            idempotency_window: self.config.client.idempotency_window,
            info,
            tags: None,
        };
        let result =
            self.broker.publish(channel, data, publish).await.map_err(|e| temporary(e.to_string()))?;
        if !result.duplicate {
            self.metrics.publications.inc();
        }
        Ok(result)
    }

    /// Reads `channel`'s history (an error when the namespace keeps none).
    pub async fn history(
        &self,
        channel: &str,
        since: Option<StreamPosition>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<HistoryResult, ReplyError> {
        let opts = self.channel_options(channel)?;
        if !opts.has_history() {
            return Err(reply_error(err::NOT_AVAILABLE, format!("channel {channel} keeps no history")));
        }
        let query = HistoryQuery { since, limit, reverse };
        self.broker.history(channel, query).await.map_err(|e| temporary(e.to_string()))
    }

    /// Who is present in `channel` (an error when presence is off for it).
    pub async fn presence(&self, channel: &str) -> Result<BTreeMap<String, ClientInfo>, ReplyError> {
        let opts = self.channel_options(channel)?;
        if !opts.presence {
            return Err(reply_error(err::NOT_AVAILABLE, format!("presence is off for channel {channel}")));
        }
        self.presence.get(channel).await.map_err(|e| temporary(e.to_string()))
    }

    /// Channels with local subscribers.
    pub fn channels(&self) -> Vec<String> {
        let mut channels = self.hub.channels();
        channels.sort();
        channels
    }

    /// Starts a graceful shutdown: new sessions are refused, every session is told to
    /// disconnect with [`Disconnect::shutdown`] (1001 and a reconnect hint), and this waits
    /// until they have all gone or `deadline` passes. Returns how many were still open.
    pub async fn shutdown(&self, deadline: Duration) -> usize {
        self.shutting_down.store(true, Ordering::Release);
        let controls: Vec<_> =
            lock(&self.registry).sessions.values().map(|e| Arc::clone(&e.control)).collect();
        controls.iter().for_each(|c| c.disconnect(Disconnect::shutdown()));
        let wait = async {
            loop {
                let left = self.left.notified();
                if self.session_count() == 0 {
                    return;
                }
                left.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        self.session_count()
    }
}

/// How often a node tells the others it is alive, and refreshes its health metrics.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long a node that stopped announcing itself is still listed.
pub const NODE_TTL: Duration = Duration::from_secs(10);

/// The node among the others, and its health.
impl Node {
    /// Unique per process start (16 hex digits): how the other nodes reach this one.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What this node tells the others about itself.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id.clone(),
            name: self.config.name.clone().unwrap_or_else(|| self.config.listen.to_string()),
            connections: self.session_count() as u64,
            subscriptions: u64::try_from(self.metrics.subscriptions.get()).unwrap_or(0),
            channels: self.hub.channels().len() as u64,
            uptime: self.uptime().as_secs(),
        }
    }

    /// Every live node sharing the broker (this one alone with the memory broker, or when
    /// the broker cannot say).
    pub async fn nodes(&self) -> Vec<NodeInfo> {
        match self.broker.nodes().await {
            Ok(nodes) if nodes.iter().any(|n| n.id == self.id) => nodes,
            _ => vec![self.info()],
        }
    }

    /// `Err` with the reason while the broker cannot be used.
    pub fn broker_health(&self) -> Result<(), String> {
        self.broker.health()
    }

    /// Announces the node every [`HEARTBEAT`] and keeps the broker's health in the metrics
    /// and the log, until the node is dropped.
    pub async fn heartbeat(self: Arc<Node>) {
        let node = Arc::downgrade(&self);
        drop(self);
        let mut healthy = true;
        loop {
            let Some(node) = node.upgrade() else { return };
            let health = node.broker.health();
            match (&health, healthy) {
                (Err(problem), true) => {
                    tracing::warn!(%problem, "broker unavailable: publishes fail with temporary errors")
                }
                (Ok(()), false) => tracing::info!("broker available again"),
                _ => {}
            }
            healthy = health.is_ok();
            node.metrics.broker_up.set(i64::from(healthy));
            if let Err(e) = node.broker.announce(&node.info(), NODE_TTL).await {
                tracing::debug!(error = %e, "node announce failed");
            }
            if let Ok(nodes) = node.broker.nodes().await {
                node.metrics.nodes.set(nodes.len().max(1) as i64);
            }
            drop(node);
            tokio::time::sleep(HEARTBEAT).await;
        }
    }
}

fn random_id() -> String {
    let mut buf = [0u8; 8];
    let _ = getrandom::fill(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A non-temporary reply error.
pub fn reply_error(code: u32, message: impl Into<String>) -> ReplyError {
    ReplyError { code, message: message.into(), temporary: false }
}

fn temporary(message: String) -> ReplyError {
    ReplyError { code: err::INTERNAL, message, temporary: true }
}

/// The publication's position, for clients that track one.
pub fn position_of(result: &PublishResult) -> StreamPosition {
    StreamPosition { epoch: result.epoch.clone(), offset: result.offset }
}

/// Token and Origin checks.
impl Node {
    /// Who a connection is, from its token (or anonymous when allowed). The error is the
    /// disconnect: 3005 for an expired token (get a fresh one and reconnect), 3500 otherwise.
    pub fn authenticate(&self, token: Option<&str>) -> Result<crate::session::Identity, Disconnect> {
        use peregrine_wire::codes::disconnect as dc;
        let Some(token) = token else {
            if self.config.token.allow_anonymous {
                return Ok(crate::session::Identity::default());
            }
            return Err(Disconnect::new(dc::INVALID_TOKEN, "a connection token is required"));
        };
        let claims = self
            .tokens
            .verify_connection(token)
            .map_err(|e| Disconnect::new(e.disconnect_code(), format!("connection token refused: {e}")))?;
        Ok(crate::session::Identity {
            user: claims.user,
            expires: claims.expires,
            info: claims.info,
            channels: claims.channels,
        })
    }

    /// Checks a subscription token for a private channel; returns what it says (channel
    /// info, expiry).
    pub fn authorize_subscription(
        &self,
        token: Option<&str>,
        user: &str,
        channel: &str,
    ) -> Result<crate::auth::SubscriptionClaims, ReplyError> {
        let Some(token) = token else {
            return Err(reply_error(
                err::PERMISSION_DENIED,
                format!("channel {channel} is private: a subscription token is required"),
            ));
        };
        let claims = self
            .tokens
            .verify_subscription(token, user, channel)
            .map_err(|e| reply_error(e.error_code(), format!("subscription token refused: {e}")))?;
        Ok(claims)
    }

    /// The user a connection token names, its expiry not checked (see
    /// [`TokenVerifier::user_of`](crate::auth::TokenVerifier::user_of)); the error says why not.
    pub fn token_user(&self, token: &str) -> Result<String, String> {
        self.tokens.user_of(token).map_err(|e| e.to_string())
    }

    /// Checks a browser's Origin against `allowed_origins`; the error is the 403's reason.
    pub fn check_origin(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), String> {
        self.origins.check(origin, host)
    }
}

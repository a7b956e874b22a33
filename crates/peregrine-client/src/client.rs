//! The [`Client`] handle and its [`ClientBuilder`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use peregrine_wire::{
    ClientInfo, CommandKind, Encoding, HistoryRequest, HistoryResult, Payload, PresenceRequest,
    PublishResult, ReplyKind, StreamPosition,
};

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::backoff::Backoff;
use crate::error::Error;
use crate::events::State;
use crate::queue::PublishQueue;
use crate::session::{Request, Session};
use crate::subscription::{SubscribeOptions, Subscription};

/// Where a connection token comes from: called before connecting when there is no token
/// yet or the last one was refused as expired, and before the current one expires (the
/// connect reply says when). An `Err` is logged and the call retried with backoff.
pub type TokenProvider =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// Everything a client is configured with.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) url: String,
    pub(crate) encoding: Encoding,
    pub(crate) token: Option<String>,
    pub(crate) token_provider: Option<TokenProvider>,
    pub(crate) name: String,
    pub(crate) backoff: Backoff,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) pong_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) ack_timeout: Duration,
    pub(crate) publish_retries: u32,
    pub(crate) request_timeout: Duration,
    pub(crate) queue_limit: usize,
    pub(crate) queue_file: Option<PathBuf>,
    pub(crate) max_in_flight: usize,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) websocket: peregrine::Config,
    pub(crate) tls: Option<peregrine::tls::TlsConnector>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print tokens.
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("encoding", &self.encoding)
            .field("backoff", &self.backoff)
            .field("queue_limit", &self.queue_limit)
            .field("queue_file", &self.queue_file)
            .finish_non_exhaustive()
    }
}

/// Configures and starts a [`Client`].
///
/// ```no_run
/// # async fn demo() -> Result<(), peregrine_client::Error> {
/// use std::time::Duration;
/// use peregrine_client::{Backoff, Client};
/// let client = Client::builder("ws://127.0.0.1:8080/connection/websocket")
///     .token("eyJhbGciOi...")
///     .backoff(Backoff { min_delay: Duration::from_millis(500), max_delay: Duration::from_secs(30) })
///     .queue_limit(10_000)
///     .queue_file("/var/lib/myapp/peregrine-queue.jsonl")
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ClientBuilder {
    settings: Settings,
}

impl ClientBuilder {
    /// The connection token (JWT) sent in `connect`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.settings.token = Some(token.into());
        self
    }

    /// Gets connection tokens from `provider`: before the first connect (unless
    /// [`token`](Self::token) gave one), after the server refused one as expired, and before
    /// the current one expires, which is then replaced with `refresh`, without reconnecting.
    pub fn token_provider<F, Fut>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        self.settings.token_provider = Some(Arc::new(move || Box::pin(provider())));
        self
    }

    /// JSON (the default, `peregrine.json`), MessagePack (`peregrine.msgpack`) or Protobuf
    /// (`peregrine.protobuf`).
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.settings.encoding = encoding;
        self
    }

    /// The client name sent in `connect` (shown in the server's logs). Default `"rust"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// Reconnect backoff; default 250 ms doubling up to 20 s, with full jitter.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// Send a `ping` command after this much silence from the server (default: the
    /// interval the server gives in its connect reply).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.settings.ping_interval = Some(interval);
        self
    }

    /// A ping unanswered this long means the connection is dead: it is dropped and
    /// replaced. Default 10 s.
    pub fn pong_timeout(mut self, timeout: Duration) -> Self {
        self.settings.pong_timeout = timeout;
        self
    }

    /// Time for the WebSocket handshake plus the `connect` reply. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// How long to wait for a publish's acknowledgement before sending it again (with the
    /// same idempotency key). Default 5 s.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.settings.ack_timeout = timeout;
        self
    }

    /// How many times a publish whose acknowledgement timed out is sent again before it
    /// fails with [`Error::Timeout`]. Resending after a reconnect does not count. Default 3.
    pub fn publish_retries(mut self, retries: u32) -> Self {
        self.settings.publish_retries = retries;
        self
    }

    /// Time limit of `subscribe`, `presence` and `history` calls, including any wait for a
    /// connection. Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// Most publishes waiting for an acknowledgement (sent or not); one more fails with
    /// [`Error::QueueFull`]. Default 1,000.
    pub fn queue_limit(mut self, limit: usize) -> Self {
        self.settings.queue_limit = limit.max(1);
        self
    }

    /// Keep the publish queue in this file (JSON lines) so that publishes a previous run
    /// could not deliver are sent by the next one.
    pub fn queue_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.queue_file = Some(path.into());
        self
    }

    /// Most publishes sent and not yet acknowledged at a time. Default 256.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.settings.max_in_flight = n.max(1);
        self
    }

    /// An extra header in the WebSocket handshake (e.g. for a proxy).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.headers.push((name.into(), value.into()));
        self
    }

    /// Settings of the WebSocket layer (limits, compression, write buffer).
    pub fn websocket_config(mut self, config: peregrine::Config) -> Self {
        self.settings.websocket = config;
        self
    }

    /// TLS settings for `wss://` (default: the webpki root certificates).
    pub fn tls(mut self, connector: peregrine::tls::TlsConnector) -> Self {
        self.settings.tls = Some(connector);
        self
    }

    /// Starts the client on the current tokio runtime. It connects in the background and
    /// keeps reconnecting until closed; this returns at once. Fails only when the queue file
    /// cannot be opened.
    pub fn build(self) -> Result<Client, Error> {
        let settings = self.settings;
        let queue = PublishQueue::new(settings.queue_limit, settings.queue_file.as_deref())?;
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(State::Connecting { attempt: 0 });
        let (events, _) = broadcast::channel(256);
        let request_timeout = settings.request_timeout;
        let session = Session::new(settings, queue, requests_rx, state_tx, events.clone());
        tokio::spawn(session.run());
        Ok(Client {
            inner: Arc::new(Inner {
                requests,
                state,
                events,
                next_subscription: AtomicU64::new(1),
                request_timeout,
            }),
        })
    }
}

#[derive(Debug)]
struct Inner {
    requests: mpsc::UnboundedSender<Request>,
    state: watch::Receiver<State>,
    events: broadcast::Sender<State>,
    next_subscription: AtomicU64,
    request_timeout: Duration,
}

/// A connection to a Peregrine server that survives disconnects.
///
/// Cloning is cheap and shares the connection. The client connects in the background,
/// reconnects with jittered exponential backoff, resubscribes with recovery, and resends
/// unacknowledged publishes; when every handle (and every [`Subscription`]) is dropped it
/// closes.
///
/// ```no_run
/// # async fn demo() -> Result<(), peregrine_client::Error> {
/// use peregrine_client::{Client, SubscriptionEvent};
/// let client = Client::new("ws://127.0.0.1:8080/connection/websocket")?;
/// let mut room = client.subscribe("chat:lobby").await?;
/// client.publish("chat:lobby", serde_json::json!({"text": "hello"})).await?;
/// while let Some(event) = room.next().await {
///     if let SubscriptionEvent::Publication(p) = event {
///         println!("{}", p.data);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// A builder for a client of the server at `url`
    /// (`ws://HOST:PORT/connection/websocket`, or `wss://`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            settings: Settings {
                url: url.into(),
                encoding: Encoding::Json,
                token: None,
                token_provider: None,
                name: "rust".into(),
                backoff: Backoff::default(),
                ping_interval: None,
                pong_timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(10),
                ack_timeout: Duration::from_secs(5),
                publish_retries: 3,
                request_timeout: Duration::from_secs(10),
                queue_limit: 1000,
                queue_file: None,
                max_in_flight: 256,
                headers: Vec::new(),
                websocket: peregrine::Config::default(),
                tls: None,
            },
        }
    }

    /// A client with the default settings (anonymous, JSON).
    pub fn new(url: impl Into<String>) -> Result<Client, Error> {
        Client::builder(url).build()
    }

    /// The current connection state.
    pub fn state(&self) -> State {
        self.inner.state.borrow().clone()
    }

    /// Every state change from now on (connecting, connected, disconnected, closed).
    pub fn events(&self) -> broadcast::Receiver<State> {
        self.inner.events.subscribe()
    }

    /// Waits until the client is connected (at once if it is). Fails if it gets closed.
    pub async fn connected(&self) -> Result<String, Error> {
        let mut state = self.inner.state.clone();
        loop {
            match &*state.borrow_and_update() {
                State::Connected { client_id } => return Ok(client_id.clone()),
                State::Closed { reason, .. } => return Err(Error::Closed { reason: reason.clone() }),
                _ => {}
            }
            if state.changed().await.is_err() {
                return Err(closed());
            }
        }
    }

    /// Subscribes to `channel` and waits for the server's answer (connecting first if need
    /// be, within the request timeout). The subscription then lasts across reconnects.
    pub async fn subscribe(&self, channel: impl Into<String>) -> Result<Subscription, Error> {
        self.subscribe_with(channel, SubscribeOptions::default()).await
    }

    /// [`subscribe`](Self::subscribe) with a subscription token, join/leave events or a
    /// starting position.
    pub async fn subscribe_with(
        &self,
        channel: impl Into<String>,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let channel = channel.into();
        let id = self.inner.next_subscription.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        self.send(Request::Subscribe { channel: channel.clone(), id, options, events: events_tx, reply })?;
        let subscription = Subscription { channel, id, events, requests: self.inner.requests.clone() };
        let timeout = self.inner.request_timeout;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(Ok(()))) => Ok(subscription),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(closed()),
            // Dropping the subscription withdraws it.
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Publishes `data` to `channel`. The publish is queued at once, in call order, and the
    /// returned future resolves when the server acknowledges it. It is resent after
    /// reconnects and acknowledgement timeouts with the same idempotency key, so it is
    /// published once; made while disconnected, it waits in the offline queue.
    ///
    /// `data` is a [`Payload`]: a `serde_json::Value` (`json!(...)`), JSON text
    /// ([`Payload::json_text`]) or bytes ([`Payload::binary`], `Vec<u8>`, `Bytes`), delivered
    /// to subscribers exactly as given.
    pub fn publish(&self, channel: impl Into<String>, data: impl Into<Payload>) -> PublishFuture {
        let (reply, answer) = oneshot::channel();
        let sent = self.send(Request::Publish { channel: channel.into(), data: data.into(), reply });
        PublishFuture { answer, refused: sent.err() }
    }

    /// Who is subscribed to `channel` (namespaces with presence): client id → info.
    pub async fn presence(&self, channel: impl Into<String>) -> Result<BTreeMap<String, ClientInfo>, Error> {
        match self.call(CommandKind::Presence(PresenceRequest { channel: channel.into() })).await? {
            ReplyKind::Presence(p) => Ok(p.clients),
            other => Err(unexpected(&other)),
        }
    }

    /// The channel's retained publications, oldest first: at most `limit` (`None`: all of
    /// them) after `since` (`None`: from the oldest retained).
    ///
    /// The server answers in pages (each within its outbound queue); this reads page after
    /// page until `limit` or the end, so the result holds each publication once, in order.
    /// `more` is true when `limit` stopped the read before the end. If the stream's epoch
    /// changes between two pages (history was lost meanwhile), the read starts again in the
    /// new epoch.
    pub async fn history(
        &self,
        channel: impl Into<String>,
        limit: Option<u32>,
        since: Option<StreamPosition>,
    ) -> Result<HistoryResult, Error> {
        let channel = channel.into();
        let mut read: Option<HistoryResult> = None;
        let mut next = since.clone();
        loop {
            let got = read.as_ref().map_or(0, |r| r.publications.len() as u32);
            let limit = limit.map(|l| l.saturating_sub(got));
            let request =
                HistoryRequest { channel: channel.clone(), limit, since: next.clone(), reverse: false };
            let page = match self.call(CommandKind::History(request)).await? {
                ReplyKind::History(h) => h,
                other => return Err(unexpected(&other)),
            };
            let last = page.publications.last().map(|p| p.offset);
            let done =
                !page.more || last.is_none() || limit.is_some_and(|l| page.publications.len() as u32 >= l);
            if read.as_ref().is_some_and(|r| r.epoch != page.epoch) {
                // History was lost between two pages: what was read belongs to a stream
                // that no longer exists.
                (read, next) = (None, None);
                continue;
            }
            let r = match &mut read {
                Some(r) => {
                    r.publications.extend(page.publications);
                    (r.offset, r.more) = (page.offset, page.more);
                    r
                }
                None => read.insert(page),
            };
            if done {
                return Ok(std::mem::take(r));
            }
            next = last.map(|offset| StreamPosition { epoch: r.epoch.clone(), offset });
        }
    }

    /// Closes the connection (close code 1000) and stops reconnecting. Queued publishes fail
    /// with [`Error::Closed`] unless a queue file keeps them for the next run.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.send(Request::Close { reply }).is_ok() {
            let _ = done.await;
        }
    }

    async fn call(&self, kind: CommandKind) -> Result<ReplyKind, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Call { kind, reply })?;
        match tokio::time::timeout(self.inner.request_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(closed()),
            Err(_) => Err(Error::Timeout),
        }
    }

    fn send(&self, request: Request) -> Result<(), Error> {
        self.inner.requests.send(request).map_err(|_| closed())
    }
}

fn closed() -> Error {
    Error::Closed { reason: "the client was closed".into() }
}

fn unexpected(reply: &ReplyKind) -> Error {
    Error::Server {
        code: peregrine_wire::codes::error::INTERNAL,
        message: format!("unexpected reply {reply:?}"),
    }
}

/// The acknowledgement of a [`Client::publish`]: the offset and epoch the publication got
/// (channels with history), and whether the server had seen it already (a retry).
#[derive(Debug)]
#[must_use = "the publish is queued either way; await this to learn that it landed"]
pub struct PublishFuture {
    answer: oneshot::Receiver<Result<PublishResult, Error>>,
    refused: Option<Error>,
}

impl Future for PublishFuture {
    type Output = Result<PublishResult, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(e) = self.refused.take() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.answer).poll(cx).map(|r| r.unwrap_or_else(|_| Err(closed())))
    }
}

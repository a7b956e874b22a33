//! The node's Pub/Sub connection to one Redis server (or to a cluster): one task that owns
//! it, subscribes to a channel while the node has local subscribers for it, hands every
//! message to the node's handler in order, and never lets a loss pass silently.
//!
//! * Subscribe and unsubscribe requests are batched: every request waiting when the task
//!   wakes goes into one `SUBSCRIBE` / `UNSUBSCRIBE`. A subscribe request is answered once
//!   Redis confirmed it, so the session that asked reads history only when every later
//!   publication is sure to arrive here.
//! * An unsubscribe is a hint checked against the node's [`Interest`] when carried out.
//! * When the connection drops, messages were missed: the task reconnects (with backoff),
//!   subscribes again to every channel, and only then reports [`ChannelEvent::Lost`] for
//!   each, which sends their subscribers to recover from history. The same happens when a
//!   channel's stream jumps (an offset skipped, a new epoch).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};

use super::keys::Keys;
use super::{Health, decode_message};
use crate::broker::{BrokerError, ChannelEvent, NodeHooks};

/// Most channels in one `SUBSCRIBE` command.
const BATCH: usize = 512;

/// A Pub/Sub connection: to one server (`SUBSCRIBE`), or to a cluster (`SSUBSCRIBE`, routed
/// by slot).
pub(crate) enum PubSubConnection {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl PubSubConnection {
    async fn subscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            PubSubConnection::Server(c) => c.subscribe(channels).await,
            PubSubConnection::Cluster(c) => {
                // One slot per command in a cluster: channels go one by one (pipelined by
                // the connection).
                for channel in channels {
                    c.ssubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            PubSubConnection::Server(c) => c.unsubscribe(channels).await,
            PubSubConnection::Cluster(c) => {
                for channel in channels {
                    c.sunsubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }
}

/// Opens a Pub/Sub connection whose pushes go to the given sender.
pub(crate) type Connect = Arc<
    dyn Fn(
            mpsc::UnboundedSender<PushInfo>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = redis::RedisResult<PubSubConnection>> + Send>,
        > + Send
        + Sync,
>;

enum Request {
    Subscribe(String, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(String),
    /// Listen to this node's relay channel (its Redis name) from now on.
    Relay(String, oneshot::Sender<Result<(), BrokerError>>),
}

/// The handle of one Pub/Sub task; the task ends when this is dropped.
#[derive(Debug)]
pub(crate) struct Subscriber {
    requests: mpsc::UnboundedSender<Request>,
}

impl Subscriber {
    /// Opens the connection (so that a bad address fails at start) and starts the task.
    pub(crate) async fn start(
        name: &str,
        connect: Connect,
        keys: Keys,
        hooks: Arc<NodeHooks>,
        health: Arc<Health>,
    ) -> redis::RedisResult<Subscriber> {
        let (push_sender, pushes) = mpsc::unbounded_channel();
        let connection = connect(push_sender.clone()).await?;
        let (requests, inbox) = mpsc::unbounded_channel();
        let task = Task {
            name: name.to_owned(),
            connection: Some(connection),
            pushes,
            push_sender,
            connect,
            keys,
            hooks,
            health,
            subscribed: HashSet::new(),
            last: HashMap::new(),
            relay: None,
        };
        tokio::spawn(task.run(inbox));
        Ok(Subscriber { requests })
    }

    pub(crate) async fn subscribe(&self, channel: &str) -> Result<(), BrokerError> {
        let (done, confirmed) = oneshot::channel();
        let gone = || BrokerError::Unavailable("the Pub/Sub task has stopped".into());
        self.requests.send(Request::Subscribe(channel.to_owned(), done)).map_err(|_| gone())?;
        confirmed.await.map_err(|_| gone())?
    }

    pub(crate) fn unsubscribe(&self, channel: &str) {
        let _ = self.requests.send(Request::Unsubscribe(channel.to_owned()));
    }

    /// Listens to the relay channel `name` (a Redis channel name) for good: messages on it
    /// go to the node's relay handler. Resolves once Redis confirmed it.
    pub(crate) async fn listen_relay(&self, name: &str) -> Result<(), BrokerError> {
        let (done, confirmed) = oneshot::channel();
        let gone = || BrokerError::Unavailable("the Pub/Sub task has stopped".into());
        self.requests.send(Request::Relay(name.to_owned(), done)).map_err(|_| gone())?;
        confirmed.await.map_err(|_| gone())?
    }
}

struct Task {
    /// The server's address (or `cluster`), for logs and health.
    name: String,
    connection: Option<PubSubConnection>,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    push_sender: mpsc::UnboundedSender<PushInfo>,
    connect: Connect,
    keys: Keys,
    hooks: Arc<NodeHooks>,
    health: Arc<Health>,
    /// Channels subscribed on the current connection (our names, not Redis's).
    subscribed: HashSet<String>,
    /// Epoch and offset of the last publication delivered per channel.
    last: HashMap<String, (String, u64)>,
    /// The node's relay channel (Redis name), subscribed on every connection. What is
    /// relayed while the connection is down is lost: its sender times out and says so.
    relay: Option<String>,
}

impl Task {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Request>) {
        loop {
            if self.connection.is_none() {
                if !self.reconnect(&mut inbox).await {
                    return;
                }
                continue;
            }
            tokio::select! {
                request = inbox.recv() => {
                    let Some(request) = request else { return };
                    let mut batch = vec![request];
                    while let Ok(more) = inbox.try_recv() {
                        batch.push(more);
                    }
                    self.apply(batch).await;
                }
                push = self.pushes.recv() => match push {
                    Some(push) => self.on_push(push),
                    None => self.lost_connection("push channel closed"),
                },
            }
        }
    }

    /// Carries out a batch of requests: what the node wants is what its hub says now.
    async fn apply(&mut self, batch: Vec<Request>) {
        let mut waiters = Vec::new();
        let mut touched = HashSet::new();
        for request in batch {
            match request {
                Request::Relay(name, done) => {
                    let result = match self.connection.as_mut() {
                        Some(connection) => connection.subscribe(std::slice::from_ref(&name)).await,
                        None => Ok(()), // subscribed when the connection is back
                    };
                    self.relay = Some(name);
                    let _ =
                        done.send(result.map_err(|e| {
                            BrokerError::Unavailable(format!("Redis {} Pub/Sub: {e}", self.name))
                        }));
                }
                Request::Subscribe(channel, done) => {
                    touched.insert(channel.clone());
                    waiters.push((channel, done));
                }
                Request::Unsubscribe(channel) => {
                    touched.insert(channel);
                }
            }
        }
        let asked: HashSet<&str> = waiters.iter().map(|(c, _)| c.as_str()).collect();
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for channel in touched {
            // A channel someone waits for is wanted even if the hub has not seen them yet.
            let wanted = asked.contains(channel.as_str()) || self.hooks.wanted(&channel);
            match (wanted, self.subscribed.contains(&channel)) {
                (true, false) => add.push(channel),
                (false, true) => remove.push(channel),
                _ => {}
            }
        }
        let result = self.change(&add, &remove).await;
        for (_, done) in waiters {
            let _ = done.send(result.clone());
        }
    }

    async fn change(&mut self, add: &[String], remove: &[String]) -> Result<(), BrokerError> {
        let keys = self.keys.clone();
        let names = |channels: &[String]| channels.iter().map(|c| keys.pubsub(c)).collect::<Vec<_>>();
        let Some(connection) = self.connection.as_mut() else {
            return Err(BrokerError::Unavailable(format!("no Pub/Sub connection to Redis {}", self.name)));
        };
        let mut outcome = Ok(());
        for chunk in remove.chunks(BATCH) {
            if let Err(e) = connection.unsubscribe(&names(chunk)).await {
                outcome = Err(e);
                break;
            }
            for channel in chunk {
                self.subscribed.remove(channel);
                self.last.remove(channel);
            }
        }
        if outcome.is_ok() {
            for chunk in add.chunks(BATCH) {
                if let Err(e) = connection.subscribe(&names(chunk)).await {
                    outcome = Err(e);
                    break;
                }
                self.subscribed.extend(chunk.iter().cloned());
            }
        }
        outcome.map_err(|e| {
            let message = format!("Redis {} Pub/Sub: {e}", self.name);
            // The connection is in doubt: start again, and let every channel recover.
            self.lost_connection(&message);
            BrokerError::Unavailable(message)
        })
    }

    fn on_push(&mut self, push: PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => self.on_message(push.data),
            PushKind::Disconnection => self.lost_connection("connection closed"),
            _ => {}
        }
    }

    fn on_message(&mut self, data: Vec<Value>) {
        let (Some(Value::BulkString(name)), Some(Value::BulkString(body))) = (data.first(), data.get(1))
        else {
            return;
        };
        if self.relay.as_deref().is_some_and(|relay| relay.as_bytes() == name.as_slice()) {
            if let Some(relay) = self.hooks.relay() {
                relay(bytes::Bytes::copy_from_slice(body));
            }
            return;
        }
        let Some(channel) = std::str::from_utf8(name).ok().and_then(|n| self.keys.channel_of(n)) else {
            return;
        };
        let channel = channel.to_owned();
        if !self.subscribed.contains(&channel) {
            return; // a message that was on its way when we unsubscribed
        }
        let Some(handler) = self.hooks.handler() else { return };
        let message = match decode_message(body) {
            Ok(message) => message,
            Err(e) => {
                tracing::error!(%channel, error = %e, "undecodable message from Redis: recovering the channel");
                self.last.remove(&channel);
                handler(&channel, ChannelEvent::Lost);
                return;
            }
        };
        match message {
            super::Message::Publication(publication) => {
                let epoch = publication.epoch.clone().unwrap_or_default();
                match self.last.get(&channel) {
                    Some((e, o)) if *e == epoch && publication.offset <= *o => return, // seen
                    Some((e, o)) if *e != epoch || publication.offset != o + 1 => {
                        tracing::warn!(
                            %channel, from = %e, offset = o, to = %epoch, next = publication.offset,
                            "the stream jumped: subscribers recover from history"
                        );
                        self.last.insert(channel.clone(), (epoch, publication.offset));
                        handler(&channel, ChannelEvent::Lost);
                        return;
                    }
                    _ => {}
                }
                self.last.insert(channel.clone(), (epoch, publication.offset));
                handler(&channel, ChannelEvent::Publication(&publication));
            }
            super::Message::Join(info) => handler(&channel, ChannelEvent::Join(&info)),
            super::Message::Leave(info) => handler(&channel, ChannelEvent::Leave(&info)),
        }
    }

    fn lost_connection(&mut self, why: &str) {
        if self.connection.take().is_some() {
            tracing::warn!(redis = %self.name, why, "Redis Pub/Sub connection lost: reconnecting");
            self.health.set_problem(&self.name, format!("Pub/Sub connection lost ({why})"));
        }
    }

    /// Connects again (answering requests meanwhile), subscribes to every channel, then
    /// reports each as lost. Returns `false` when the broker is gone.
    async fn reconnect(&mut self, inbox: &mut mpsc::UnboundedReceiver<Request>) -> bool {
        let mut delay = Duration::from_millis(50);
        loop {
            // Pushes of the dead connection are stale now.
            while self.pushes.try_recv().is_ok() {}
            match (self.connect)(self.push_sender.clone()).await {
                Ok(mut connection) => {
                    let channels: Vec<String> =
                        self.subscribed.iter().filter(|c| self.hooks.wanted(c)).cloned().collect();
                    let mut names: Vec<String> = channels.iter().map(|c| self.keys.pubsub(c)).collect();
                    names.extend(self.relay.iter().cloned());
                    let mut result = Ok(());
                    for chunk in names.chunks(BATCH) {
                        result = connection.subscribe(chunk).await;
                        if result.is_err() {
                            break;
                        }
                    }
                    if let Err(e) = result {
                        tracing::warn!(redis = %self.name, error = %e, "Redis Pub/Sub resubscribe failed");
                    } else {
                        self.connection = Some(connection);
                        self.subscribed = channels.into_iter().collect();
                        self.last.clear();
                        self.health.clear_problem(&self.name);
                        tracing::info!(
                            redis = %self.name, channels = self.subscribed.len(),
                            "Redis Pub/Sub connection back: subscribers recover from history"
                        );
                        if let Some(handler) = self.hooks.handler() {
                            for channel in &self.subscribed {
                                handler(channel, ChannelEvent::Lost);
                            }
                        }
                        return true;
                    }
                }
                Err(e) => {
                    tracing::debug!(redis = %self.name, error = %e, "Redis Pub/Sub reconnect failed");
                }
            }
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    request = inbox.recv() => match request {
                        None => return false,
                        Some(Request::Subscribe(channel, done)) => {
                            // Remembered, so the resubscribe covers it, but refused now: the
                            // session answers the client with a temporary error.
                            self.subscribed.insert(channel);
                            let message = format!("Redis {} is unreachable", self.name);
                            let _ = done.send(Err(BrokerError::Unavailable(message)));
                        }
                        Some(Request::Unsubscribe(_)) => {}
                        Some(Request::Relay(name, done)) => {
                            self.relay = Some(name);
                            let message = format!("Redis {} is unreachable", self.name);
                            let _ = done.send(Err(BrokerError::Unavailable(message)));
                        }
                    },
                }
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

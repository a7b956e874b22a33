//! The Redis [`Broker`] and [`PresenceStore`](crate::presence::PresenceStore): several nodes
//! share channels, history, presence and idempotency keys through Redis.
//!
//! * **One script per publish** ([`scripts`]): the epoch, the next offset, the idempotency
//!   key, the history append (capped by size, entries expiring by TTL) and the Pub/Sub
//!   message happen atomically, so every node sees offsets in order with no hole. Publishes
//!   share one multiplexed connection per server: concurrent publishes are pipelined, not
//!   one round trip each.
//! * **Interest-based routing** ([`pubsub`]): a node subscribes to a channel's Pub/Sub only
//!   while it has local subscribers; requests are batched into one `SUBSCRIBE`.
//! * **Never silent loss**: a dropped Pub/Sub connection, or a stream that jumps, sends the
//!   channel's subscribers to recover from history ([`ChannelEvent::Lost`]); a Redis restarted
//!   without its data gives new epochs, which clients see as `reset`. While Redis cannot be
//!   reached, publishes and history reads fail with temporary errors and the node keeps its
//!   connections ([`Broker::health`] says why).
//! * **More than one Redis**: several standalone servers share the channels by rendezvous
//!   hashing ([`keys::server_for`]); a Redis Cluster is used with sharded Pub/Sub and a hash
//!   tag per channel.

pub(crate) mod keys;
mod pubsub;
pub(crate) mod scripts;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peregrine_wire::protobuf::{
    client_info_from_bytes, client_info_to_bytes, publication_from_bytes, publication_to_bytes,
};
use peregrine_wire::{ClientInfo, Payload, Publication};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, ProtocolVersion, Value};

use self::keys::{Keys, server_for};
use self::pubsub::{Connect, PubSubConnection, Subscriber};
use super::{
    Broker, BrokerError, BrokerFuture, HistoryQuery, HistoryResult, Interest, NodeHooks, NodeInfo,
    PublicationHandler, PublishOptions, PublishResult, RelayHandler, new_epoch,
};
use crate::config::RedisConfig;
use crate::presence::RedisPresence;

/// What is wrong with the connections to Redis, by server, for `/health`.
#[derive(Debug, Default)]
pub(crate) struct Health {
    problems: Mutex<BTreeMap<String, String>>,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.problems.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_problem(&self, server: &str, problem: String) {
        self.lock().insert(server.to_owned(), problem);
    }

    pub(crate) fn clear_problem(&self, server: &str) {
        self.lock().remove(server);
    }

    fn check(&self) -> Result<(), String> {
        let problems = self.lock();
        if problems.is_empty() {
            return Ok(());
        }
        Err(problems.iter().map(|(s, p)| format!("Redis {s}: {p}")).collect::<Vec<_>>().join("; "))
    }
}

/// What a Pub/Sub message carries.
pub(crate) enum Message {
    Publication(Publication),
    Join(ClientInfo),
    Leave(ClientInfo),
}

/// Reads a Pub/Sub message: `p<epoch>:<offset>:<publication>` (written by the publish
/// script), `j<client info>` or `l<client info>`.
pub(crate) fn decode_message(body: &[u8]) -> Result<Message, String> {
    let (&tag, rest) = body.split_first().ok_or("empty message")?;
    match tag {
        b'p' => {
            let mut parts = rest.splitn(3, |&b| b == b':');
            let (Some(epoch), Some(offset), Some(publication)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err("a publication message without epoch and offset".into());
            };
            let epoch = std::str::from_utf8(epoch).map_err(|e| e.to_string())?;
            let offset = std::str::from_utf8(offset).ok().and_then(|o| o.parse().ok()).ok_or("bad offset")?;
            let mut publication = publication_from_bytes(publication).map_err(|e| e.to_string())?;
            publication.epoch = Some(epoch.to_owned());
            publication.offset = offset;
            Ok(Message::Publication(publication))
        }
        b'j' | b'l' => {
            let info = client_info_from_bytes(rest).map_err(|e| e.to_string())?;
            Ok(if tag == b'j' { Message::Join(info) } else { Message::Leave(info) })
        }
        _ => Err(format!("unknown message tag {tag}")),
    }
}

/// Runs commands: on one server (reconnecting by itself) or on a cluster (routed by key).
#[derive(Clone)]
enum Commands {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

/// One Redis server of the deployment (or the whole cluster).
pub(crate) struct Server {
    name: String,
    commands: Commands,
    subscriber: Subscriber,
}

/// The connections shared by [`RedisBroker`] and [`RedisPresence`].
pub(crate) struct Backend {
    config: RedisConfig,
    keys: Keys,
    servers: Vec<Server>,
    /// The names `servers` are chosen by (the configured addresses; one for a cluster).
    names: Vec<String>,
    hooks: Arc<NodeHooks>,
    health: Arc<Health>,
}

impl Backend {
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn server(&self, channel: &str) -> &Server {
        &self.servers[server_for(channel, &self.names)]
    }

    /// `PUBLISH` (`SPUBLISH` in a cluster) of `message` to the Pub/Sub channel `name` on
    /// `server`: how many connections took it.
    async fn publish_message(&self, server: &Server, name: &str, message: &[u8]) -> Result<u64, BrokerError> {
        let publish = if self.config.cluster { "SPUBLISH" } else { "PUBLISH" };
        let mut command = redis::cmd(publish);
        command.arg(name).arg(message);
        let result = self
            .within_timeout(server, async {
                match server.commands.clone() {
                    Commands::Server(mut c) => command.query_async(&mut c).await,
                    Commands::Cluster(mut c) => command.query_async(&mut c).await,
                }
            })
            .await?;
        result.map_err(|e| BrokerError::Unavailable(format!("Redis {}: {e}", server.name)))
    }

    /// Awaits one command on `server` for at most `broker.redis.timeout`, reconnecting
    /// included. While Redis is down the connection manager retries in the background and a
    /// command would wait for it: bounded, the command fails with a temporary error in time
    /// for its client to resend it (the SDK's acknowledgement timeout is 5 s) instead of
    /// holding that client's session still.
    async fn within_timeout<T>(
        &self,
        server: &Server,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>, BrokerError> {
        tokio::time::timeout(self.config.timeout, command).await.map_err(|_| {
            BrokerError::Unavailable(format!(
                "Redis {}: no answer within {:?} (broker.redis.timeout)",
                server.name, self.config.timeout
            ))
        })
    }

    /// Runs a script on the server holding `channel` (the first key routes it in a cluster).
    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        server: &Server,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BrokerError> {
        let result = self
            .within_timeout(server, async {
                match server.commands.clone() {
                    Commands::Server(mut c) => invocation.invoke_async(&mut c).await,
                    Commands::Cluster(mut c) => invocation.invoke_async(&mut c).await,
                }
            })
            .await?;
        match result {
            Ok(value) => Ok(value),
            Err(e) => {
                let message = format!("Redis {}: {e}", server.name);
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
                {
                    tracing::debug!(error = %message, "Redis command failed");
                }
                Err(BrokerError::Unavailable(message))
            }
        }
    }
}

/// The Redis broker. Build it with [`connect`].
pub struct RedisBroker {
    backend: Arc<Backend>,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker").field("servers", &self.backend.names).finish_non_exhaustive()
    }
}

/// Connects to Redis as `config` says and returns the broker and the presence store on it.
/// Fails with one message naming the key and the fix when Redis cannot be reached, refuses
/// the credentials, or is not what `cluster` says.
pub async fn connect(config: &RedisConfig) -> Result<(Arc<RedisBroker>, Arc<RedisPresence>), BrokerError> {
    let hooks = Arc::new(NodeHooks::default());
    let health = Arc::new(Health::default());
    let keys = Keys::new(&config.prefix);
    let mut servers = Vec::new();
    for address in &config.addresses {
        check_server(config, address).await?;
    }
    if config.cluster {
        servers.push(cluster_server(config, &keys, &hooks, &health).await?);
    } else {
        for address in &config.addresses {
            servers.push(standalone_server(config, address, &keys, &hooks, &health).await?);
        }
    }
    let names = if config.cluster { vec!["cluster".to_owned()] } else { config.addresses.clone() };
    let backend = Arc::new(Backend { config: config.clone(), keys, servers, names, hooks, health });
    let presence = RedisPresence::new(Arc::clone(&backend));
    Ok((Arc::new(RedisBroker { backend }), presence))
}

fn connection_info(config: &RedisConfig, address: &str) -> Result<redis::ConnectionInfo, BrokerError> {
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_start_matches('[').trim_end_matches(']'), p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            BrokerError::Invalid(format!("`broker.redis.addresses`: {address:?} is not host:port"))
        })?;
    let addr = if config.tls {
        ConnectionAddr::TcpTls { host: host.to_owned(), port, insecure: false, tls_params: None }
    } else {
        ConnectionAddr::Tcp(host.to_owned(), port)
    };
    let mut redis =
        redis::RedisConnectionInfo::default().set_db(config.db).set_protocol(ProtocolVersion::RESP3);
    if let Some(user) = &config.user {
        redis = redis.set_username(user);
    }
    if let Some(password) = &config.password {
        redis = redis.set_password(password.expose());
    }
    let info = addr.into_connection_info().map_err(|e| BrokerError::Invalid(e.to_string()))?;
    Ok(info.set_redis_settings(redis))
}

fn connection_config(config: &RedisConfig) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout))
}

/// Connects once to `address` to give a clear error for the usual mistakes, and checks it
/// is what `broker.redis.cluster` says and new enough.
async fn check_server(config: &RedisConfig, address: &str) -> Result<(), BrokerError> {
    let client =
        Client::open(connection_info(config, address)?).map_err(|e| BrokerError::Invalid(e.to_string()))?;
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&connection_config(config))
        .await
        .map_err(|e| login_error(address, &e))?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .arg("cluster")
        .query_async(&mut connection)
        .await
        .map_err(|e| BrokerError::Unavailable(format!("Redis at {address} did not answer INFO: {e}")))?;
    let field =
        |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim);
    let is_cluster = field("cluster_enabled") == Some("1");
    if is_cluster && !config.cluster {
        return Err(BrokerError::Invalid(format!(
            "Redis at {address} is a Redis Cluster node: set `broker.redis.cluster = true` \
             (or point `broker.redis.addresses` at a standalone Redis)"
        )));
    }
    if !is_cluster && config.cluster {
        return Err(BrokerError::Invalid(format!(
            "Redis at {address} is not a cluster node: set `broker.redis.cluster = false`, \
             or list the cluster's nodes in `broker.redis.addresses`"
        )));
    }
    let version = field("redis_version").unwrap_or("0");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (7, 0) {
        return Err(BrokerError::Invalid(format!(
            "Redis at {address} is version {version}; Peregrine needs Redis 7.0 or newer \
             (`broker.redis.addresses`)"
        )));
    }
    Ok(())
}

fn login_error(address: &str, e: &redis::RedisError) -> BrokerError {
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        return BrokerError::Invalid(format!(
            "Redis at {address} refused the login ({text}): set `broker.redis.password` (and \
             `broker.redis.user` for an ACL user) to what Redis expects"
        ));
    }
    BrokerError::Unavailable(format!(
        "cannot reach Redis at {address} ({text}): start Redis there or fix `broker.redis.addresses`"
    ))
}

async fn standalone_server(
    config: &RedisConfig,
    address: &str,
    keys: &Keys,
    hooks: &Arc<NodeHooks>,
    health: &Arc<Health>,
) -> Result<Server, BrokerError> {
    let client =
        Client::open(connection_info(config, address)?).map_err(|e| BrokerError::Invalid(e.to_string()))?;
    let manager = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout))
        .set_max_delay(Duration::from_secs(2))
        // Few retries per reconnection (about 100 ms, then 200 ms, each up to twice that with
        // jitter): a command that finds Redis down waits for the reconnection, so while it
        // stays down commands fail within a second with temporary errors; the next command
        // starts the next reconnection. (A Redis Cluster client keeps its own retries: there
        // a command fails at `broker.redis.timeout`.)
        .set_number_of_retries(2);
    let commands =
        client.get_connection_manager_with_config(manager).await.map_err(|e| login_error(address, &e))?;
    let connection_config = connection_config(config);
    let connect: Connect = Arc::new(move |sender| {
        let client = client.clone();
        let config = connection_config.clone().set_push_sender(sender);
        Box::pin(async move {
            let connection: MultiplexedConnection =
                client.get_multiplexed_async_connection_with_config(&config).await?;
            Ok(PubSubConnection::Server(connection))
        })
    });
    let subscriber = start_subscriber(address, connect, keys, hooks, health).await?;
    Ok(Server { name: address.to_owned(), commands: Commands::Server(commands), subscriber })
}

async fn cluster_server(
    config: &RedisConfig,
    keys: &Keys,
    hooks: &Arc<NodeHooks>,
    health: &Arc<Health>,
) -> Result<Server, BrokerError> {
    let infos = config
        .addresses
        .iter()
        .map(|a| connection_info(config, a))
        .collect::<Result<Vec<_>, BrokerError>>()?;
    let (user, password, timeout) = (config.user.clone(), config.password.clone(), config.timeout);
    let builder = move || {
        let mut builder = ClusterClientBuilder::new(infos.clone())
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(timeout)
            .response_timeout(timeout);
        if let Some(user) = &user {
            builder = builder.username(user);
        }
        if let Some(password) = &password {
            builder = builder.password(password.expose());
        }
        builder
    };
    let first = config.addresses.first().map_or("", String::as_str).to_owned();
    let client = builder().build().map_err(|e| BrokerError::Invalid(e.to_string()))?;
    let commands = client.get_async_connection().await.map_err(|e| login_error(&first, &e))?;
    let connect: Connect = Arc::new(move |sender| {
        let builder = builder();
        Box::pin(async move {
            let client = builder.push_sender(sender).build()?;
            Ok(PubSubConnection::Cluster(client.get_async_connection().await?))
        })
    });
    let subscriber = start_subscriber("cluster", connect, keys, hooks, health).await?;
    Ok(Server { name: "cluster".into(), commands: Commands::Cluster(commands), subscriber })
}

async fn start_subscriber(
    name: &str,
    connect: Connect,
    keys: &Keys,
    hooks: &Arc<NodeHooks>,
    health: &Arc<Health>,
) -> Result<Subscriber, BrokerError> {
    Subscriber::start(name, connect, keys.clone(), Arc::clone(hooks), Arc::clone(health))
        .await
        .map_err(|e| login_error(name, &e))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(other)?.parse().ok(),
    }
}

fn malformed(what: &str) -> BrokerError {
    BrokerError::Unavailable(format!("unexpected answer from Redis to {what}"))
}

impl Broker for RedisBroker {
    fn set_handler(&self, handler: PublicationHandler) {
        self.backend.hooks.set_handler(handler);
    }

    fn set_interest(&self, interest: Interest) {
        self.backend.hooks.set_interest(interest);
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: Payload,
        opts: PublishOptions,
    ) -> BrokerFuture<'a, PublishResult> {
        Box::pin(async move {
            let backend = &*self.backend;
            let keys = &backend.keys;
            let publication = Publication { offset: 0, epoch: None, data, info: opts.info, tags: opts.tags };
            // As in memory: no key, or a zero window, remembers nothing.
            let window = match &opts.idempotency_key {
                Some(_) if !opts.idempotency_window.is_zero() => millis(opts.idempotency_window),
                _ => 0,
            };
            let key = keys.idempotency(channel, opts.idempotency_key.as_deref().unwrap_or(""));
            let publish = if backend.config.cluster { "spublish" } else { "publish" };
            let mut invocation = scripts::PUBLISH_SCRIPT.prepare_invoke();
            invocation
                .key(keys.meta(channel))
                .key(keys.history(channel))
                .key(key)
                .arg(publication_to_bytes(&publication))
                .arg(opts.history_size)
                .arg(opts.history_ttl.map_or(0, millis))
                .arg(window)
                .arg(new_epoch())
                .arg(millis(backend.config.stream_ttl))
                .arg(keys.pubsub(channel))
                .arg(publish);
            let reply: Vec<Value> = backend.run(backend.server(channel), &invocation).await?;
            let [epoch, offset, duplicate] = reply.as_slice() else { return Err(malformed("a publish")) };
            Ok(PublishResult {
                epoch: text(epoch).ok_or_else(|| malformed("a publish"))?,
                offset: number(offset).ok_or_else(|| malformed("a publish"))?,
                duplicate: number(duplicate) == Some(1),
            })
        })
    }

    fn history<'a>(&'a self, channel: &'a str, query: HistoryQuery) -> BrokerFuture<'a, HistoryResult> {
        Box::pin(async move {
            let backend = &*self.backend;
            let keys = &backend.keys;
            let (since_epoch, since_offset) =
                query.since.as_ref().map_or((String::new(), 0), |s| (s.epoch.clone(), s.offset));
            let limit = query.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
            let mut invocation = scripts::HISTORY_SCRIPT.prepare_invoke();
            invocation
                .key(keys.meta(channel))
                .key(keys.history(channel))
                .arg(new_epoch())
                .arg(millis(backend.config.stream_ttl))
                .arg(since_epoch)
                .arg(since_offset)
                .arg(limit)
                .arg(if query.reverse { "1" } else { "0" });
            let reply: Vec<Value> = backend.run(backend.server(channel), &invocation).await?;
            let (Some(epoch), Some(top)) = (reply.first().and_then(text), reply.get(1).and_then(number))
            else {
                return Err(malformed("a history read"));
            };
            let mut publications = Vec::with_capacity(reply.len().saturating_sub(2) / 2);
            for entry in reply[2..].chunks(2) {
                let [id, Value::BulkString(body)] = entry else { return Err(malformed("a history read")) };
                let offset = text(id)
                    .and_then(|id| id.split('-').next()?.parse().ok())
                    .ok_or_else(|| malformed("a history read"))?;
                let mut publication = publication_from_bytes(body)
                    .map_err(|e| BrokerError::Unavailable(format!("undecodable history entry: {e}")))?;
                publication.offset = offset;
                publication.epoch = Some(epoch.clone());
                publications.push(publication);
            }
            Ok(HistoryResult { publications, epoch, offset: top })
        })
    }

    fn publish_join_leave<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        joined: bool,
    ) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let backend = &*self.backend;
            let mut message = vec![if joined { b'j' } else { b'l' }];
            message.extend(client_info_to_bytes(&info));
            backend.publish_message(backend.server(channel), &backend.keys.pubsub(channel), &message).await?;
            Ok(())
        })
    }

    fn subscribe_node<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move { self.backend.server(channel).subscriber.subscribe(channel).await })
    }

    fn unsubscribe_node<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.backend.server(channel).subscriber.unsubscribe(channel);
            Ok(())
        })
    }

    fn announce<'a>(&'a self, node: &'a NodeInfo, ttl: Duration) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let backend = &*self.backend;
            let (info, expiry) = backend.keys.nodes();
            let json = serde_json::to_string(node).unwrap_or_default();
            let expires = unix_millis() + millis(ttl);
            let mut invocation = scripts::NODE_ANNOUNCE_SCRIPT.prepare_invoke();
            invocation.key(info).key(expiry).arg(&node.id).arg(json).arg(expires);
            let _: Value = backend.run(&backend.servers[0], &invocation).await?;
            Ok(())
        })
    }

    fn nodes(&self) -> BrokerFuture<'_, Vec<NodeInfo>> {
        Box::pin(async move {
            let backend = &*self.backend;
            let (info, expiry) = backend.keys.nodes();
            let mut invocation = scripts::NODES_SCRIPT.prepare_invoke();
            invocation.key(info).key(expiry);
            let values: Vec<Value> = backend.run(&backend.servers[0], &invocation).await?;
            let mut nodes: Vec<NodeInfo> =
                values.iter().filter_map(text).filter_map(|j| serde_json::from_str(&j).ok()).collect();
            nodes.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
            Ok(nodes)
        })
    }

    fn listen_relay<'a>(&'a self, node: &'a str, handler: RelayHandler) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let backend = &*self.backend;
            backend.hooks.set_relay(handler);
            let name = backend.keys.relay(node);
            backend.server(&name).subscriber.listen_relay(&name).await
        })
    }

    fn relay<'a>(&'a self, node: &'a str, message: bytes::Bytes) -> BrokerFuture<'a, bool> {
        Box::pin(async move {
            let backend = &*self.backend;
            let name = backend.keys.relay(node);
            let listeners = backend.publish_message(backend.server(&name), &name, &message).await?;
            Ok(listeners > 0)
        })
    }

    fn health(&self) -> Result<(), String> {
        self.backend.health.check()
    }
}

/// Milliseconds since the Unix epoch (node clocks are assumed roughly in sync, as for
/// token expiry).
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

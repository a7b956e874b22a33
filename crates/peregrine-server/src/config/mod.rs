//! The server's configuration: what `peregrine serve` reads from a TOML file, environment
//! variables and flags (in that order of precedence, later wins).
//!
//! Every section rejects unknown keys, so a typo is an error that names the key rather than
//! a setting silently ignored. Durations are written as `"25s"`, `"500ms"`, `"2m"`.
//!
//! [`Config::default`] is the production base (used when a config file is given): no
//! anonymous connections, browsers only from the same origin, the HTTP API off until an
//! API key is set. [`Config::development`] is the permissive base used when `peregrine
//! serve` starts with no configuration file; it is printed with a warning at start.

mod load;
mod validate;

pub use load::{ConfigError, Sources};

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::channel::{ChannelOptions, Namespaces};

/// Everything `peregrine serve` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the one port serving WebSocket, the HTTP API, /health and /metrics.
    pub listen: SocketAddr,
    /// Serve TLS (`wss://`, `https://`) from these PEM files.
    pub tls: Option<TlsFiles>,
    /// Key for the server HTTP API (`Authorization: apikey <key>`); `None`: API disabled
    /// (except in development mode, where it is open on loopback).
    pub api_key: Option<Secret>,
    /// Origins browsers may connect from: exact (`https://app.example.com`), wildcard
    /// subdomain (`https://*.example.com`) or `*`. Empty: same origin as the Host only.
    /// Clients that send no Origin (not browsers) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Connection and subscription tokens.
    pub token: TokenConfig,
    /// Per-connection behaviour and limits.
    pub client: ClientConfig,
    /// Channel namespaces and their options.
    pub channels: Namespaces,
    /// Logging.
    pub log: LogConfig,
    /// On SIGTERM/SIGINT, how long to wait for clients to be closed and flushed.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Worker threads of the runtime (0: one per core). With 1, the node is single-threaded
    /// and a broadcast writes into idle WebSocket connections itself instead of waking each
    /// connection's writer task (see [`crate::outbox`]).
    pub workers: usize,
    /// Development mode: permissive defaults, printed with a warning at start.
    pub development: bool,
    /// Proxies (load balancers) whose `X-Forwarded-For` / `X-Real-IP` names the client's
    /// address, for the per-address limits: addresses or networks (`10.0.0.0/8`). Loopback
    /// by default, so an nginx on the same host works as it is.
    pub trusted_proxies: Vec<String>,
    /// This node's name, shown by `/api/info` beside the other nodes (default: the listen
    /// address).
    pub name: Option<String>,
    /// Where streams (history, offsets), fan-out between nodes and presence live.
    pub broker: BrokerConfig,
}

/// Which broker a node uses; presence lives in the same backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// `memory` (one node, nothing to install) or `redis` (several nodes sharing Redis).
    #[serde(rename = "type")]
    pub kind: BrokerKind,
    /// The Redis connection, for `type = "redis"`.
    pub redis: RedisConfig,
}

/// The broker backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// In this process: one node.
    #[default]
    Memory,
    /// Redis (standalone, several standalone shards, or a Redis Cluster).
    Redis,
}

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `host:port` of each Redis server. Several standalone servers: channels are sharded
    /// over them by consistent hashing. With `cluster = true`: seed nodes of one cluster.
    pub addresses: Vec<String>,
    /// The addresses are nodes of a Redis Cluster (sharded Pub/Sub, keys hash-tagged by
    /// channel).
    pub cluster: bool,
    /// ACL user name (Redis 6+); `None`: the default user.
    pub user: Option<String>,
    /// Password (of `user`, or of the default user).
    pub password: Option<Secret>,
    /// Database number (standalone only; a cluster has only 0).
    pub db: i64,
    /// Connect with TLS (`rediss://`).
    pub tls: bool,
    /// Prefix of every key and Pub/Sub channel, so deployments can share one Redis.
    pub prefix: String,
    /// How long to wait for Redis when connecting or for one command (reconnecting included).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a channel's position (epoch and offset) outlives its last publication.
    /// After that, a new publication starts a new epoch: clients recovering see `reset`.
    #[serde(with = "humantime_serde")]
    pub stream_ttl: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            addresses: vec!["127.0.0.1:6379".into()],
            cluster: false,
            user: None,
            password: None,
            db: 0,
            tls: false,
            prefix: "peregrine".into(),
            timeout: Duration::from_secs(5),
            stream_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Certificate chain and private key, PEM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain (leaf first).
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How connection and subscription tokens (JWT) are checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Shared secret for HS256 tokens.
    pub hmac_secret: Option<Secret>,
    /// PEM file with the RSA public key for RS256 tokens.
    pub rsa_public_key: Option<PathBuf>,
    /// PEM file with the EC (P-256) public key for ES256 tokens.
    pub ecdsa_public_key: Option<PathBuf>,
    /// Accept connections without a token (as anonymous users, user id `""`).
    pub allow_anonymous: bool,
    /// Required `aud` claim, if set.
    pub audience: Option<String>,
    /// Required `iss` claim, if set.
    pub issuer: Option<String>,
}

/// Per-connection behaviour and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Interval of server pings: WebSocket pings and, for browsers, application pings.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed as dead.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// How long a new connection has to send `connect`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a new TCP connection (or a kept-alive one, between requests) has to send a
    /// complete HTTP request head; past it the connection is closed (slow or silent
    /// clients, "slowloris").
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Bytes queued for a connection before it is disconnected as a slow consumer.
    pub queue_max_bytes: usize,
    /// Largest WebSocket message accepted from a client, in bytes.
    pub max_message_size: usize,
    /// Most channels one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Client publishes allowed per second, per connection (token bucket rate).
    pub publish_rate: f64,
    /// Publishes a connection may make in a burst (token bucket size).
    pub publish_burst: u32,
    /// Most connections on this node (0: no limit).
    pub max_connections: usize,
    /// Most connections per user id on this node (0: no limit; anonymous users not counted).
    pub max_connections_per_user: usize,
    /// How long a publish's idempotency key makes a repeat a duplicate.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Most connections from one client address (0: no limit).
    pub max_connections_per_address: usize,
    /// WebSocket handshakes allowed per second from one client address (0: no limit).
    pub handshake_rate_per_address: f64,
    /// Handshakes one address may make in a burst.
    pub handshake_burst_per_address: u32,
    /// Handshakes in progress on the node (upgrade to `connect` answered) beyond which new
    /// ones get `503` with `Retry-After` (0: no limit).
    pub max_pending_handshakes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            queue_max_bytes: 1 << 20,
            max_message_size: 64 << 10,
            max_subscriptions: 128,
            publish_rate: 50.0,
            publish_burst: 100,
            max_connections: 100_000,
            max_connections_per_user: 100,
            idempotency_window: Duration::from_secs(120),
            max_connections_per_address: 1000,
            handshake_rate_per_address: 20.0,
            handshake_burst_per_address: 50,
            max_pending_handshakes: 1000,
        }
    }
}

/// Log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `peregrine_server=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Human, level: "info".into() }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            api_key: None,
            allowed_origins: Vec::new(),
            token: TokenConfig::default(),
            client: ClientConfig::default(),
            channels: Namespaces::default(),
            log: LogConfig::default(),
            shutdown_timeout: Duration::from_secs(10),
            workers: 0,
            development: false,
            trusted_proxies: vec!["127.0.0.0/8".into(), "::1".into()],
            name: None,
            broker: BrokerConfig::default(),
        }
    }
}

impl Config {
    /// The permissive development configuration: anonymous connections, any Origin, the
    /// HTTP API open without a key, and every channel (default namespace and any other)
    /// with history, presence, join/leave and client publishing.
    pub fn development() -> Config {
        Config {
            allowed_origins: vec!["*".into()],
            token: TokenConfig { allow_anonymous: true, ..TokenConfig::default() },
            channels: Namespaces { default: Some(ChannelOptions::development()), ..Namespaces::default() },
            client: ClientConfig {
                max_connections_per_address: 0,
                handshake_rate_per_address: 0.0,
                ..ClientConfig::default()
            },
            development: true,
            ..Config::default()
        }
    }

    /// The options of `channel`. In development mode a channel of an unconfigured namespace
    /// gets the default namespace's options (or the development options) instead of being
    /// unknown.
    pub fn channel_options(&self, channel: &str) -> Result<ChannelOptions, crate::channel::ChannelError> {
        match self.channels.options(channel) {
            Ok(o) => Ok(o.clone()),
            Err(crate::channel::ChannelError::UnknownNamespace(_)) if self.development => {
                Ok(self.channels.default.clone().unwrap_or_else(ChannelOptions::development))
            }
            Err(e) => Err(e),
        }
    }
}

/// Parses a `trusted_proxies` entry: a network (`10.0.0.0/8`, `fd00::/8`) or one address.
pub fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a network like 10.0.0.0/8"))
}

impl Config {
    /// The `trusted_proxies` as networks (entries that do not parse are left out; `validate`
    /// refuses them).
    pub fn trusted_networks(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies.iter().filter_map(|p| parse_network(p).ok()).collect()
    }
}

/// A secret (API key, HMAC secret): its `Debug` and `Display` never show it, so it cannot
/// end up in a log line by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

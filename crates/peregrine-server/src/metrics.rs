//! Prometheus metrics of one node, served at `/metrics` in the text exposition format.
//!
//! One [`Metrics`] per node (not a process-global recorder), so that several nodes in one
//! process (tests) keep separate counts.

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A `reason` label (handshake rejections).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// The label value.
    pub reason: String,
}

/// A `command` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    /// Command name, or `error_<code>` for failed commands.
    pub command: String,
}

/// A `transport` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// `websocket`, `sse`, `http_stream` or `long_poll`.
    pub transport: String,
}

/// A `code` label (disconnect or close code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The code.
    pub code: String,
}

/// An `outcome` label (recoveries).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `recovered`, `gap` or `reset`.
    pub outcome: String,
}

/// Every counter the node keeps. Cloning a metric shares it (they are `Arc`s inside).
pub struct Metrics {
    registry: Registry,
    /// Open client connections.
    pub connections: Gauge,
    /// Connections accepted since start.
    pub connections_accepted: Counter,
    /// Active subscriptions (session × channel).
    pub subscriptions: Gauge,
    /// WebSocket messages received from clients.
    pub messages_in: Counter,
    /// WebSocket messages sent to clients.
    pub messages_out: Counter,
    /// Payload bytes received from clients.
    pub bytes_in: Counter,
    /// Payload bytes sent to clients.
    pub bytes_out: Counter,
    /// Commands handled, by command.
    pub commands: Family<CommandLabel, Counter>,
    /// Publications accepted (client and API), duplicates excluded.
    pub publications: Counter,
    /// Seconds from a publication reaching the node's hub to its frame being written to a
    /// subscriber's socket.
    pub publish_to_deliver: Histogram,
    /// Sessions disconnected because their outbound queue overflowed.
    pub slow_disconnects: Counter,
    /// Disconnects, by disconnect or close code.
    pub disconnects: Family<CodeLabel, Counter>,
    /// Handshakes refused, by reason (origin, token, limit...).
    pub handshake_rejections: Family<Reason, Counter>,
    /// Subscriptions with `since`, by outcome (recovered, gap, reset; interrupted when
    /// history moved on while a recovery was streamed).
    pub recoveries: Family<OutcomeLabel, Counter>,
    /// Publications of recoveries too big for their reply, streamed after it.
    pub recovery_streamed: Counter,
    /// 1 while the broker's backend is usable, 0 while it is not (Redis unreachable).
    pub broker_up: Gauge,
    /// Subscriptions sent back to recover from history because the broker may have missed
    /// publications of their channel (a Pub/Sub connection dropped).
    pub broker_lost: Counter,
    /// HTTP transport requests relayed to the node holding their session.
    pub http_relayed: Counter,
    /// Live nodes sharing the broker, this one included.
    pub nodes: Gauge,
    /// Open connections by transport.
    pub transports: Family<TransportLabel, Gauge>,
    /// Tasks alive on the runtime serving `/metrics`, read at each render: a soak watches it
    /// for leaked tasks. Counts the whole runtime (every node, in a process with several).
    pub runtime_tasks: Gauge,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").field("connections", &self.connections.get()).finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric under the `peregrine_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("peregrine");
        let m = Metrics {
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            subscriptions: Gauge::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            commands: Family::default(),
            publications: Counter::default(),
            // 50 µs .. ~1.6 s
            publish_to_deliver: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            slow_disconnects: Counter::default(),
            disconnects: Family::default(),
            handshake_rejections: Family::default(),
            recoveries: Family::default(),
            recovery_streamed: Counter::default(),
            broker_up: Gauge::default(),
            broker_lost: Counter::default(),
            http_relayed: Counter::default(),
            nodes: Gauge::default(),
            transports: Family::default(),
            runtime_tasks: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Open client connections", m.connections.clone());
        registry.register("connections_accepted", "Connections accepted", m.connections_accepted.clone());
        registry.register("subscriptions", "Active subscriptions", m.subscriptions.clone());
        registry.register("messages_received", "WebSocket messages received", m.messages_in.clone());
        registry.register("messages_sent", "WebSocket messages sent", m.messages_out.clone());
        registry.register("bytes_received", "Payload bytes received", m.bytes_in.clone());
        registry.register("bytes_sent", "Payload bytes sent", m.bytes_out.clone());
        registry.register("commands", "Commands handled by command", m.commands.clone());
        registry.register("publications", "Publications accepted", m.publications.clone());
        registry.register(
            "publish_to_deliver_seconds",
            "From a publication reaching the hub to its frame written to a subscriber",
            m.publish_to_deliver.clone(),
        );
        registry.register("slow_disconnects", "Slow consumers disconnected", m.slow_disconnects.clone());
        registry.register("disconnects", "Disconnects by code", m.disconnects.clone());
        registry.register(
            "handshake_rejections",
            "Refused WebSocket handshakes by reason",
            m.handshake_rejections.clone(),
        );
        registry.register("recoveries", "Recovery attempts by outcome", m.recoveries.clone());
        registry.register(
            "recovery_streamed_publications",
            "Publications of recoveries too big for their reply, streamed after it",
            m.recovery_streamed.clone(),
        );
        registry.register("broker_up", "1 while the broker backend is usable", m.broker_up.clone());
        registry.register(
            "broker_lost_subscriptions",
            "Subscriptions sent to recover from history because the broker missed publications",
            m.broker_lost.clone(),
        );
        registry.register("nodes", "Live nodes sharing the broker", m.nodes.clone());
        registry.register(
            "http_relayed_requests",
            "HTTP transport requests (sends, polls) relayed to the node holding their session",
            m.http_relayed.clone(),
        );
        registry.register("transport_connections", "Open connections by transport", m.transports.clone());
        registry.register(
            "runtime_alive_tasks",
            "Tasks alive on the node's tokio runtime",
            m.runtime_tasks.clone(),
        );
        m.broker_up.set(1);
        Metrics { registry, ..m }
    }

    /// The open-connections gauge of `transport`.
    pub fn transport_connections(&self, transport: &str) -> Gauge {
        self.transports.get_or_create(&TransportLabel { transport: transport.into() }).clone()
    }

    /// Counts one command (or `error_<code>`).
    pub fn count_command(&self, command: impl Into<String>) {
        self.commands.get_or_create(&CommandLabel { command: command.into() }).inc();
    }

    /// Counts one disconnect by code.
    pub fn count_disconnect(&self, code: u16) {
        self.disconnects.get_or_create(&CodeLabel { code: code.to_string() }).inc();
    }

    /// Counts one recovery attempt by outcome.
    pub fn count_recovery(&self, outcome: &str) {
        self.recoveries.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
    }

    /// Counts one refused handshake by reason.
    pub fn count_rejection(&self, reason: &str) {
        self.handshake_rejections.get_or_create(&Reason { reason: reason.into() }).inc();
    }

    /// Records one publish-to-deliver latency.
    pub fn observe_delivery(&self, latency: Duration) {
        self.publish_to_deliver.observe(latency.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.runtime_tasks.set(i64::try_from(runtime.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

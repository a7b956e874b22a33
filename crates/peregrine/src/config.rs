//! Connection settings with documented defaults.

use std::time::Duration;

use peregrine_proto::Limits;
use peregrine_proto::extension::DeflateConfig;

/// Settings for one WebSocket connection, client or server.
///
/// ```
/// use std::time::Duration;
/// use peregrine::Config;
///
/// let config = Config::default()
///     .ping_interval(Some(Duration::from_secs(10)))
///     .ping_timeout(Duration::from_secs(5))
///     .write_high_water(256 * 1024);
/// assert_eq!(config.get_ping_interval(), Some(Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Config {
    pub(crate) limits: Limits,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) ping_timeout: Duration,
    pub(crate) close_on_keepalive_timeout: bool,
    pub(crate) handshake_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) write_high_water: usize,
    pub(crate) deflate: Option<DeflateConfig>,
}

impl Config {
    /// Default keepalive interval: 20 s.
    pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
    /// Default keepalive timeout: 20 s.
    pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(20);
    /// Default opening-handshake timeout: 10 s.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default close-handshake timeout: 10 s.
    pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default write buffer high-water mark: 64 KiB.
    pub const DEFAULT_WRITE_HIGH_WATER: usize = 64 << 10;

    /// Frame, message and handshake header size limits ([`Limits`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// When nothing has been received for this long, send a ping; `None`
    /// turns keepalive off. A peer that vanished (cable pulled, NAT entry
    /// expired, process frozen) is detected within `interval + timeout`
    /// instead of never, which is what "closed with 1006" hours later means.
    /// Keepalive runs while the read side is being polled.
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// How long to wait for anything (usually the pong) after a keepalive
    /// ping before giving the connection up.
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// Whether the connection closes itself when keepalive gives up on the peer: on by
    /// default, with a close frame 1001 "keepalive ping timeout", written at once, and the
    /// connection ends even if the application reads no further than the error.
    ///
    /// Turn it off to tell the peer why in your own words: the read side still reports
    /// [`Error::Timeout`](crate::Error::Timeout)`(`[`Keepalive`](crate::TimeoutKind::Keepalive)`)`
    /// and reads no more, but the connection still takes messages until you close it with
    /// your own code ([`WebSocket::close`](crate::WebSocket::close),
    /// [`WebSocketWriter::close`](crate::WebSocketWriter::close)), within the close timeout.
    /// Reading on instead of closing sends the default close frame.
    pub fn close_on_keepalive_timeout(mut self, close: bool) -> Self {
        self.close_on_keepalive_timeout = close;
        self
    }

    /// The longest the opening handshake (TLS included) may take.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// After our close frame is sent, how long to wait for the peer's close
    /// frame and for the TCP connection to end before dropping it.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Once this many bytes wait to be written, sending waits until the peer
    /// has taken them (backpressure): a slow reader never makes the write
    /// buffer grow without bound. One message may exceed it by its own size.
    pub fn write_high_water(mut self, bytes: usize) -> Self {
        self.write_high_water = bytes;
        self
    }

    /// Turns on permessage-deflate (RFC 7692): a client offers it, a server
    /// accepts a valid offer. Off by default: compression costs CPU and, with
    /// context takeover, memory per connection; see [`DeflateConfig`].
    pub fn deflate(mut self, deflate: Option<DeflateConfig>) -> Self {
        self.deflate = deflate;
        self
    }

    /// The size limits.
    pub fn get_limits(&self) -> &Limits {
        &self.limits
    }

    /// The keepalive interval.
    #[must_use]
    pub fn get_ping_interval(&self) -> Option<Duration> {
        self.ping_interval
    }

    /// The opening-handshake timeout.
    #[must_use]
    pub fn get_handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            ping_interval: Some(Self::DEFAULT_PING_INTERVAL),
            ping_timeout: Self::DEFAULT_PING_TIMEOUT,
            close_on_keepalive_timeout: true,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            close_timeout: Self::DEFAULT_CLOSE_TIMEOUT,
            write_high_water: Self::DEFAULT_WRITE_HIGH_WATER,
            deflate: None,
        }
    }
}

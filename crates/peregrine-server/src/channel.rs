//! Channel names, namespaces and per-namespace options.
//!
//! A channel name is `namespace:rest` (`chat:room1`) or, without a colon, belongs to the
//! default namespace (`news`). Each namespace has its own [`ChannelOptions`]; a channel whose
//! namespace is not configured does not exist (`codes::error::UNKNOWN_CHANNEL`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest channel name accepted, in bytes.
pub const MAX_CHANNEL_NAME: usize = 255;

/// What a namespace's channels do.
///
/// ```
/// let o = peregrine_server::channel::ChannelOptions::default();
/// assert_eq!(o.history_size, 0);
/// assert!(!o.allow_publish);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelOptions {
    /// Publications kept per channel for `history` and recovery (0: no history, no
    /// recovery, publications carry no offset).
    pub history_size: usize,
    /// How long a publication stays in history.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Track who is subscribed; clients may ask with `presence`.
    pub presence: bool,
    /// Send `join` and `leave` pushes to subscribers (needs `presence`).
    pub join_leave: bool,
    /// Clients may publish (otherwise only the server HTTP API can).
    pub allow_publish: bool,
    /// Subscribing needs a subscription token for this channel.
    pub private: bool,
    /// Most subscribers per channel on one node (0: no limit).
    pub max_subscribers: usize,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            history_size: 0,
            history_ttl: Duration::from_secs(300),
            presence: false,
            join_leave: false,
            allow_publish: false,
            private: false,
            max_subscribers: 0,
        }
    }
}

impl ChannelOptions {
    /// The permissive options of the development configuration: history of 100 for 5
    /// minutes, presence with join/leave, client publishing allowed.
    pub fn development() -> ChannelOptions {
        ChannelOptions {
            history_size: 100,
            presence: true,
            join_leave: true,
            allow_publish: true,
            ..ChannelOptions::default()
        }
    }

    /// Whether the channel keeps history (and so positions and recovery).
    pub fn has_history(&self) -> bool {
        self.history_size > 0
    }
}

/// The default namespace's options and the named namespaces'.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Namespaces {
    /// Options of channels without a `namespace:` prefix; `None`: such channels do not exist.
    pub default: Option<ChannelOptions>,
    /// Namespace name → options.
    pub named: BTreeMap<String, ChannelOptions>,
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// Empty, too long, or holding characters we do not accept.
    BadName(String),
    /// The name's namespace is not configured.
    UnknownNamespace(String),
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelError::BadName(why) => f.write_str(why),
            ChannelError::UnknownNamespace(ns) if ns.is_empty() => {
                f.write_str("channels without a namespace are not enabled on this server")
            }
            ChannelError::UnknownNamespace(ns) => write!(f, "unknown namespace `{ns}`"),
        }
    }
}

impl std::error::Error for ChannelError {}

/// The namespace of a channel name: the part before the first `:`, or `""`.
///
/// ```
/// use peregrine_server::channel::namespace_of;
/// assert_eq!(namespace_of("chat:room:1"), "chat");
/// assert_eq!(namespace_of("news"), "");
/// ```
pub fn namespace_of(channel: &str) -> &str {
    channel.split_once(':').map_or("", |(ns, _)| ns)
}

impl Namespaces {
    /// The options of `channel`, after checking its name.
    ///
    /// ```
    /// use peregrine_server::channel::{ChannelOptions, Namespaces};
    /// let mut ns = Namespaces::default();
    /// ns.named.insert("chat".into(), ChannelOptions { presence: true, ..Default::default() });
    /// assert!(ns.options("chat:room1").unwrap().presence);
    /// assert!(ns.options("news").is_err());
    /// assert!(ns.options("").is_err());
    /// ```
    pub fn options(&self, channel: &str) -> Result<&ChannelOptions, ChannelError> {
        check_name(channel)?;
        let ns = namespace_of(channel);
        let found = if ns.is_empty() { self.default.as_ref() } else { self.named.get(ns) };
        found.ok_or_else(|| ChannelError::UnknownNamespace(ns.to_owned()))
    }
}

/// Checks a channel name: 1 to [`MAX_CHANNEL_NAME`] bytes, no whitespace or control
/// characters (names end up in logs and metrics labels).
pub fn check_name(channel: &str) -> Result<(), ChannelError> {
    if channel.is_empty() {
        return Err(ChannelError::BadName("channel name is empty".into()));
    }
    if channel.len() > MAX_CHANNEL_NAME {
        return Err(ChannelError::BadName(format!(
            "channel name is {} bytes long (at most {MAX_CHANNEL_NAME})",
            channel.len()
        )));
    }
    if channel.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ChannelError::BadName("channel name holds whitespace or control characters".into()));
    }
    Ok(())
}

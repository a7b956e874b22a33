//! Reply error codes, disconnect codes and unsubscribe codes.
//!
//! Disconnect codes follow centrifuge's ranges so SDKs can decide on their own whether to
//! reconnect: 3000–3499 and 4000–4499 mean "reconnect", 3500–3999 and 4500–4999 mean
//! "terminal, do not reconnect". Codes below 3000 are WebSocket transport codes (1001 going
//! away, 1006 abnormal closure, ...) and also mean "reconnect".

/// Error codes carried in [`ReplyError::code`](crate::ReplyError::code).
pub mod error {
    /// Internal server error. Temporary: retry later.
    pub const INTERNAL: u32 = 100;
    /// Missing, invalid or expired credentials for this command.
    pub const UNAUTHORIZED: u32 = 101;
    /// The channel's namespace does not exist.
    pub const UNKNOWN_CHANNEL: u32 = 102;
    /// The client may not do this on this channel (publish not allowed, private channel ...).
    pub const PERMISSION_DENIED: u32 = 103;
    /// The command type is not supported by this server.
    pub const METHOD_NOT_FOUND: u32 = 104;
    /// The client is already subscribed to the channel.
    pub const ALREADY_SUBSCRIBED: u32 = 105;
    /// A limit was reached (subscriptions per connection, subscribers per channel ...).
    pub const LIMIT_EXCEEDED: u32 = 106;
    /// The command is malformed or its arguments are invalid.
    pub const BAD_REQUEST: u32 = 107;
    /// The feature is not enabled for this channel (history, presence ...).
    pub const NOT_AVAILABLE: u32 = 108;
    /// The connection or subscription token has expired: refresh it and retry.
    pub const TOKEN_EXPIRED: u32 = 109;
    /// The connection itself has expired; the client must send `refresh`.
    pub const EXPIRED: u32 = 110;
    /// Rate limit hit. Temporary: retry after a delay.
    pub const TOO_MANY_REQUESTS: u32 = 111;
    /// `since` cannot be honoured at all (unknown epoch); resubscribe without it.
    pub const UNRECOVERABLE_POSITION: u32 = 112;
}

/// Disconnect codes carried in [`Push::Disconnect`](crate::Push::Disconnect) and used as
/// WebSocket close codes.
pub mod disconnect {
    /// Normal close requested by the server, reconnect allowed.
    pub const NORMAL: u16 = 3000;
    /// Server shutting down (also sent as WebSocket 1001). Reconnect.
    pub const SHUTDOWN: u16 = 3001;
    /// Internal server error. Reconnect.
    pub const SERVER_ERROR: u16 = 3004;
    /// Connection credentials expired. Reconnect after obtaining a fresh token.
    pub const EXPIRED: u16 = 3005;
    /// A subscription expired. Reconnect with fresh subscription tokens.
    pub const SUBSCRIPTION_EXPIRED: u16 = 3006;
    /// The client read too slowly and its outbound queue overflowed. Reconnect (with recovery).
    pub const SLOW: u16 = 3008;
    /// Writing to the connection failed. Reconnect.
    pub const WRITE_ERROR: u16 = 3009;
    /// The server lost state it needs for this connection. Reconnect.
    pub const INSUFFICIENT_STATE: u16 = 3010;
    /// Server asked the client to reconnect (e.g. load rebalancing).
    pub const FORCE_RECONNECT: u16 = 3011;
    /// No ping or pong from the client within the timeout. Reconnect.
    pub const NO_PONG: u16 = 3012;
    /// Too many requests on this connection. Reconnect after backoff.
    pub const TOO_MANY_REQUESTS: u16 = 3013;
    /// The connection token is invalid (bad signature, malformed). Terminal.
    pub const INVALID_TOKEN: u16 = 3500;
    /// The client sent something the server cannot parse. Terminal.
    pub const BAD_REQUEST: u16 = 3501;
    /// The client did not send `connect` in time. Terminal.
    pub const STALE: u16 = 3502;
    /// Server disconnected the client and forbids reconnecting. Terminal.
    pub const FORCE_NO_RECONNECT: u16 = 3503;
    /// Too many connections for this user or node. Terminal.
    pub const CONNECTION_LIMIT: u16 = 3504;
    /// Too many subscriptions on this connection. Terminal.
    pub const CHANNEL_LIMIT: u16 = 3505;
    /// Unsupported subprotocol or protocol version. Terminal.
    pub const INAPPROPRIATE_PROTOCOL: u16 = 3506;
    /// Permission denied for the connection. Terminal.
    pub const PERMISSION_DENIED: u16 = 3507;
    /// Not available (e.g. the endpoint is disabled). Terminal.
    pub const NOT_AVAILABLE: u16 = 3508;
    /// Too many protocol errors on this connection. Terminal.
    pub const TOO_MANY_ERRORS: u16 = 3509;
}

/// Unsubscribe codes carried in [`Push::Unsubscribe`](crate::Push::Unsubscribe).
///
/// Codes below 2500 are final; codes 2500–2999 ask the client to resubscribe.
pub mod unsubscribe {
    /// The server (or an API call) unsubscribed the client. Do not resubscribe.
    pub const SERVER: u32 = 2000;
    /// The server lost the subscription's state. Resubscribe (with recovery).
    pub const INSUFFICIENT_STATE: u32 = 2500;
    /// The subscription token expired. Resubscribe with a fresh token.
    pub const EXPIRED: u32 = 2501;
}

/// Whether a client should reconnect after being disconnected with `code`.
///
/// ```
/// use peregrine_wire::codes::{disconnect, reconnect};
/// assert!(reconnect(disconnect::SHUTDOWN));
/// assert!(reconnect(disconnect::SLOW));
/// assert!(!reconnect(disconnect::INVALID_TOKEN));
/// assert!(reconnect(1006)); // abnormal closure: transport problem
/// assert!(reconnect(4000) && !reconnect(4500)); // application ranges
/// ```
pub fn reconnect(code: u16) -> bool {
    !matches!(code, 3500..=3999 | 4500..=4999)
}

/// Whether a client should subscribe again after an unsubscribe push with `code`.
///
/// ```
/// use peregrine_wire::codes::{resubscribe, unsubscribe};
/// assert!(!resubscribe(unsubscribe::SERVER));
/// assert!(resubscribe(unsubscribe::EXPIRED));
/// ```
pub fn resubscribe(code: u32) -> bool {
    (2500..3000).contains(&code)
}

/// Whether a reply error with `code` is worth retrying unchanged after a delay.
///
/// ```
/// use peregrine_wire::codes::{error, is_temporary};
/// assert!(is_temporary(error::INTERNAL));
/// assert!(!is_temporary(error::PERMISSION_DENIED));
/// ```
pub fn is_temporary(code: u32) -> bool {
    matches!(code, error::INTERNAL | error::TOO_MANY_REQUESTS)
}

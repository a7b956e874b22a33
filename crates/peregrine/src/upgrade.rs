//! WebSocket upgrades inside hyper 1 and axum 0.8 (feature `hyper`, and
//! `axum` for the extractor).
//!
//! An HTTP server that also speaks WebSocket on some routes does not hand us
//! the TCP stream: hyper parses the request and owns the connection. The
//! handshake therefore happens in two steps:
//!
//! 1. In the service, [`upgrade`] (or [`upgrade_with_protocols`],
//!    [`upgrade_with`]) validates the request exactly like
//!    [`accept`](crate::accept) does (same checks, same order, same statuses
//!    and reasons, see [`Request::parse`]) and returns the `101 Switching
//!    Protocols` response together with an [`UpgradeFut`].
//! 2. Once hyper has written that response, the future resolves to a
//!    [`WebSocket`] over the connection hyper gives up.
//!
//! # The trap: return the 101 before awaiting the future
//!
//! hyper only writes the response after the service has *returned* it, and
//! the future only resolves after the response is written. A service that
//! awaits the [`UpgradeFut`] itself therefore waits for its own return: the
//! client sees nothing, and the future fails with
//! [`Error::Timeout`]`(`[`TimeoutKind::Handshake`]`)` after the configured
//! [handshake timeout](Config::handshake_timeout) instead of hanging
//! forever. Spawn a task that awaits the future, then return the response:
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use http_body_util::Full;
//! use hyper::body::{Bytes, Incoming};
//! use hyper::server::conn::http1;
//! use hyper::service::service_fn;
//! use hyper_util::rt::TokioIo;
//! use peregrine::Config;
//! use peregrine::upgrade::{self, Body};
//!
//! async fn serve(mut request: hyper::Request<Incoming>) -> Result<hyper::Response<Body>, Infallible> {
//!     if !upgrade::is_upgrade_request(&request) {
//!         return Ok(hyper::Response::new(Full::new(Bytes::from("hello over plain HTTP\n"))));
//!     }
//!     match upgrade::upgrade(&mut request, &Config::default()) {
//!         Ok((response, websocket)) => {
//!             // Await the socket in another task: it only exists once
//!             // `response` has been returned to hyper and written.
//!             tokio::spawn(async move {
//!                 let mut ws = websocket.await?;
//!                 while let Some(message) = ws.recv().await {
//!                     let message = message?;
//!                     if message.is_data() {
//!                         ws.send(message).await?;
//!                     }
//!                 }
//!                 Ok::<_, peregrine::Error>(())
//!             });
//!             Ok(response)
//!         }
//!         // 400, 405, 426 (with `Sec-WebSocket-Version: 13` when the version
//!         // is wrong), 505: status and reason as `accept` would answer.
//!         Err(error) => Ok(error.to_response()),
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     tokio::spawn(async move {
//!         // `with_upgrades` lets hyper hand the connection over after the 101.
//!         let connection = http1::Builder::new()
//!             .serve_connection(TokioIo::new(tcp), service_fn(serve))
//!             .with_upgrades();
//!         let _ = connection.await;
//!     });
//! }
//! # }
//! ```
//!
//! With axum, the `WebSocketUpgrade` extractor (feature `axum`) does all of
//! this: see its documentation.
//!
//! # Limits
//!
//! hyper has already read and bounded the request head (its
//! `max_buf_size` and `max_headers`), so the header size limit of
//! [`Limits`](crate::Limits) is not applied a second time here; the rest of
//! the [`Config`] (frame and message limits, keepalive, close timeout,
//! backpressure) governs the WebSocket, and its handshake timeout bounds the
//! wait for the upgrade. Only HTTP/1.1 upgrades are supported: an HTTP/2
//! request is refused as malformed (400), as `accept` does.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Uri, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use peregrine_proto::Role;
use peregrine_proto::extension::DeflateParams;
use peregrine_proto::handshake::{AcceptResponse, DEFAULT_MAX_HEADERS, HeaderLimits, Rejection, Request};
use tokio::time::Sleep;

use crate::config::Config;
use crate::error::{Error, Result, TimeoutKind};
use crate::socket::WebSocket;

#[cfg(feature = "axum")]
mod extract;
mod response;

#[cfg(feature = "axum")]
pub use extract::WebSocketUpgrade;
pub use response::{Body, UpgradeError, error_response, rejection_response};

/// The WebSocket an [`UpgradeFut`] resolves to: hyper's upgraded connection,
/// adapted to tokio's I/O traits.
pub type UpgradedWebSocket = WebSocket<TokioIo<hyper::upgrade::Upgraded>>;

/// Whether `request` asks for a WebSocket: `Connection` contains the token
/// `upgrade` and `Upgrade` contains `websocket` (ASCII case-insensitively,
/// in comma-separated lists over any number of fields).
///
/// Use it to route; it checks nothing else. [`upgrade`] validates the whole
/// handshake and tells a malformed one apart from a plain request.
///
/// ```
/// use peregrine::upgrade::is_upgrade_request;
///
/// let request = http::Request::get("/ws")
///     .header("Host", "example.com")
///     .header("Connection", "keep-alive, Upgrade")
///     .header("Upgrade", "WebSocket")
///     .body(())
///     .unwrap();
/// assert!(is_upgrade_request(&request));
///
/// let plain = http::Request::get("/ws").body(()).unwrap();
/// assert!(!is_upgrade_request(&plain));
/// ```
pub fn is_upgrade_request<B>(request: &http::Request<B>) -> bool {
    let headers = request.headers();
    has_token(headers, &header::CONNECTION, "upgrade") && has_token(headers, &header::UPGRADE, "websocket")
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .any(|element| element.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Validates a WebSocket handshake and answers it with a 101 that names no
/// subprotocol. See [`upgrade_with`] for the details and the
/// [module documentation](self) for how to use the result.
///
/// # Errors
///
/// The request is not a valid handshake ([`UpgradeError::Handshake`]), or the
/// connection it came on cannot be taken over
/// ([`UpgradeError::NotUpgradable`]). Answer with
/// [`UpgradeError::to_response`].
pub fn upgrade<B>(
    request: &mut http::Request<B>,
    config: &Config,
) -> Result<(http::Response<Body>, UpgradeFut), UpgradeError> {
    upgrade_with(request, config, |request| Ok(request.accept()))
}

/// Like [`upgrade`], and picks the subprotocol: the first of `supported` (the
/// server's list, best first) that the client offered
/// ([`select_subprotocol`](peregrine_proto::handshake::select_subprotocol)).
/// No common protocol is not an error: the 101 then names none, and
/// [`UpgradeFut::protocol`] is `None`.
///
/// ```
/// use peregrine::Config;
/// use peregrine::upgrade::upgrade_with_protocols;
///
/// let mut request = http::Request::get("/chat")
///     .header("Host", "example.com")
///     .header("Connection", "Upgrade")
///     .header("Upgrade", "websocket")
///     .header("Sec-WebSocket-Version", "13")
///     .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
///     .header("Sec-WebSocket-Protocol", "chat.v1, chat.v2")
///     .body(())
///     .unwrap();
/// // hyper puts the connection's upgrade handle in every request that may
/// // upgrade; this one does not come from hyper, so add a stand-in.
/// request.extensions_mut().insert(hyper::upgrade::on(http::Request::new(())));
///
/// let (response, websocket) =
///     upgrade_with_protocols(&mut request, &Config::default(), &["chat.v2", "chat.v1"]).unwrap();
/// assert_eq!(response.status(), 101);
/// assert_eq!(response.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v2");
/// assert_eq!(websocket.protocol(), Some("chat.v2"));
/// ```
///
/// # Errors
///
/// As [`upgrade`].
pub fn upgrade_with_protocols<B, S: AsRef<str>>(
    request: &mut http::Request<B>,
    config: &Config,
    supported: &[S],
) -> Result<(http::Response<Body>, UpgradeFut), UpgradeError> {
    upgrade_with(request, config, |request| {
        Ok(request.accept().with_protocol(request.choose_protocol(supported).unwrap_or_default()))
    })
}

/// Validates a WebSocket handshake, lets `decide` look at it (path, headers,
/// `Origin`, offered subprotocols) and answer with a 101
/// ([`Request::accept`], optionally `.with_protocol(..)` or extra headers) or
/// a [`Rejection`], exactly like [`accept_with`](crate::accept_with).
///
/// On success, returns the 101 to send and the [`UpgradeFut`] to await *in
/// another task* once it has been returned (see the
/// [trap](self#the-trap-return-the-101-before-awaiting-the-future)).
///
/// The request is checked as [`Request::parse`] checks the bytes `accept`
/// reads: method `GET` (405), HTTP/1.1 (505 for HTTP/1.0; 400 for other
/// versions), `Host` (400), `Upgrade: websocket` and `Connection: Upgrade`
/// (426), `Sec-WebSocket-Version: 13` (426 with `Sec-WebSocket-Version: 13`),
/// `Sec-WebSocket-Key` (400), then the syntax of `Origin`,
/// `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions` (400).
///
/// ```
/// use peregrine::Config;
/// use peregrine::proto::handshake::Rejection;
/// use peregrine::upgrade::{UpgradeError, upgrade_with};
///
/// let mut request = http::Request::get("/chat")
///     .header("Host", "example.com")
///     .header("Origin", "https://evil.example")
///     .header("Connection", "Upgrade")
///     .header("Upgrade", "websocket")
///     .header("Sec-WebSocket-Version", "13")
///     .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
///     .body(())
///     .unwrap();
/// let result = upgrade_with(&mut request, &Config::default(), |request| match request.origin() {
///     Some("https://app.example") => Ok(request.accept()),
///     other => Err(Rejection::new(403, format!("origin {} is not allowed", other.unwrap_or("(none)")))),
/// });
/// let Err(error) = result else { panic!("the origin is not allowed") };
/// assert!(matches!(error, UpgradeError::Rejected(_)));
/// let response = error.to_response();
/// assert_eq!(response.status(), 403);
/// ```
///
/// # Errors
///
/// As [`upgrade`], plus [`UpgradeError::Rejected`] when `decide` refuses,
/// and [`UpgradeError::Handshake`] with no status of its own (answered with
/// 500) when the response `decide` built cannot be encoded (a header name
/// that is not a token, a value with CR or LF...).
pub fn upgrade_with<B, F>(
    request: &mut http::Request<B>,
    config: &Config,
    decide: F,
) -> Result<(http::Response<Body>, UpgradeFut), UpgradeError>
where
    F: FnOnce(&Request) -> Result<AcceptResponse, Rejection>,
{
    let handshake = validate(request.method(), request.uri(), request.version(), request.headers())?;
    let accept = decide(&handshake).map_err(UpgradeError::Rejected)?;
    // Taken last, so that a refused request keeps it.
    let on_upgrade = request.extensions_mut().remove::<OnUpgrade>().ok_or(UpgradeError::NotUpgradable)?;
    finish(&handshake, accept, on_upgrade, config)
}

/// Checks an HTTP request head as a WebSocket handshake.
///
/// hyper has parsed the request already; writing the head back as HTTP/1.1
/// bytes and handing them to [`Request::parse_with`] keeps a single
/// implementation of RFC 6455 §4.2.1 (checks, their order, statuses and
/// reasons) for `accept` and for hyper. The copy is a few hundred bytes, once
/// per connection.
pub(crate) fn validate(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
) -> Result<Request, UpgradeError> {
    let target = uri.path_and_query().map_or("/", |target| target.as_str());
    let version = match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    };
    let mut head = Vec::with_capacity(256);
    for part in [method.as_str(), " ", target, " ", version, "\r\n"] {
        head.extend_from_slice(part.as_bytes());
    }
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    // hyper bounded the head already; these limits only make room for it.
    let limits = HeaderLimits::default()
        .with_max_header_size(head.len())
        .with_max_headers(headers.len().max(DEFAULT_MAX_HEADERS));
    match Request::parse_with(&head, &limits)? {
        Some(request) => Ok(request),
        // Unreachable: the head ends with an empty line. Say so rather than panic.
        None => Err(UpgradeError::Handshake(peregrine_proto::handshake::HandshakeError::MalformedRequest(
            "incomplete request head",
        ))),
    }
}

/// Builds the 101 and the future that waits for hyper to hand the
/// connection over.
pub(crate) fn finish(
    request: &Request,
    accept: AcceptResponse,
    on_upgrade: OnUpgrade,
    config: &Config,
) -> Result<(http::Response<Body>, UpgradeFut), UpgradeError> {
    let (accept, deflate) = crate::server::negotiate_extensions(request, accept, config);
    let response = response::from_head(&accept.to_vec()?)?;
    let protocol = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let future = UpgradeFut { on_upgrade, config: config.clone(), protocol, deflate, deadline: None };
    Ok((response, future))
}

/// Resolves to the [`UpgradedWebSocket`] once hyper has written the 101 and
/// handed the connection over.
///
/// Await it in a task of its own, after the 101 has been returned from the
/// service (see the
/// [trap](self#the-trap-return-the-101-before-awaiting-the-future)).
///
/// # Errors
///
/// [`Error::Io`] if hyper could not hand the connection over (the client
/// went away, the response sent was not the 101, or the connection is
/// served without `with_upgrades()`); [`Error::Timeout`]`(`[`Handshake`](TimeoutKind::Handshake)`)`
/// if that has not happened within the configured handshake timeout,
/// counted from the first poll.
#[must_use = "the WebSocket only exists once this future has been awaited, after the 101 was returned"]
pub struct UpgradeFut {
    on_upgrade: OnUpgrade,
    config: Config,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
    /// Started on the first poll, so building the future needs no timer.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl UpgradeFut {
    /// The subprotocol the 101 names, if any.
    #[must_use]
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
}

impl fmt::Debug for UpgradeFut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradeFut")
            .field("protocol", &self.protocol)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Future for UpgradeFut {
    type Output = Result<UpgradedWebSocket>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(upgraded) = Pin::new(&mut this.on_upgrade).poll(cx) {
            return Poll::Ready(match upgraded {
                Ok(upgraded) => Ok(WebSocket::from_negotiated(
                    TokioIo::new(upgraded),
                    Role::Server,
                    &this.config,
                    &[],
                    this.deflate.take(),
                )),
                Err(error) => Err(Error::Io(std::io::Error::other(error))),
            });
        }
        let timeout = this.config.handshake_timeout;
        let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::Timeout(TimeoutKind::Handshake))),
            Poll::Pending => Poll::Pending,
        }
    }
}

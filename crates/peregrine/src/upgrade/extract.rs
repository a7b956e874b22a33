//! The axum 0.8 extractor: [`WebSocketUpgrade`].

use std::fmt;
use std::future::Future;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::header;
use http::request::Parts;
use hyper::upgrade::OnUpgrade;
use peregrine_proto::handshake::{Request, select_subprotocol};

use super::{UpgradeError, UpgradedWebSocket, finish, has_token, validate};
use crate::config::Config;

/// Extracts a validated WebSocket handshake in an axum handler; answer it
/// with [`on_upgrade`](Self::on_upgrade), which returns the 101 and runs
/// your callback on the WebSocket in a task of its own.
///
/// Extraction fails with an [`UpgradeError`], which axum sends as the
/// response: the status and reason [`accept`](crate::accept) would answer
/// (426 for a plain GET, 426 with `Sec-WebSocket-Version: 13` for another
/// version, 405 for another method, 400 for a bad key...). To serve
/// something else to plain requests on the same route, take
/// `Result<WebSocketUpgrade, UpgradeError>` or `Option<WebSocketUpgrade>`.
///
/// ```no_run
/// use axum::Router;
/// use axum::response::Response;
/// use axum::routing::get;
/// use peregrine::upgrade::WebSocketUpgrade;
///
/// async fn chat(ws: WebSocketUpgrade) -> Response {
///     let ws = ws.protocols(["chat.v2", "chat.v1"]);
///     let protocol = ws.selected_protocol().map(str::to_owned);
///     ws.on_upgrade(move |mut socket| async move {
///         // `protocol` is what the 101 named: Some("chat.v2"), Some("chat.v1") or None.
///         let _ = protocol;
///         while let Some(Ok(message)) = socket.recv().await {
///             if message.is_data() && socket.send(message).await.is_err() {
///                 break;
///             }
///         }
///     })
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// let app = Router::new().route("/chat", get(chat));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
pub struct WebSocketUpgrade {
    request: Request,
    on_upgrade: OnUpgrade,
    config: Config,
    protocol: Option<String>,
}

impl WebSocketUpgrade {
    /// The subprotocols this endpoint speaks, best first. The first one the
    /// client offered is chosen ([`select_subprotocol`]) and named in the
    /// 101; if none was offered, the 101 names none.
    #[must_use]
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let supported: Vec<I::Item> = protocols.into_iter().collect();
        self.protocol = select_subprotocol(self.request.protocols(), &supported).map(str::to_owned);
        self
    }

    /// The subprotocol the 101 will name, once [`protocols`](Self::protocols)
    /// has picked one.
    #[must_use]
    pub fn selected_protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Settings for the WebSocket (limits, keepalive, timeouts);
    /// [`Config::default`] otherwise.
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The validated handshake: path, `Origin`, offered subprotocols and
    /// extensions, every header.
    #[must_use]
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Answers with the 101 and spawns a task that runs `callback` on the
    /// WebSocket once axum has sent it. If the connection cannot be taken
    /// over after all (the client left), the callback is not called and the
    /// failure is logged at debug level.
    pub fn on_upgrade<C, Fut>(self, callback: C) -> Response
    where
        C: FnOnce(UpgradedWebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = self.request.accept().with_protocol(self.protocol.unwrap_or_default());
        let (response, websocket) = match finish(&self.request, accept, self.on_upgrade, &self.config) {
            Ok(answer) => answer,
            Err(error) => return error.into_response(),
        };
        // The task may live for days, and its future is as large as its largest state plus
        // what the async block captures. So the upgrade's state is boxed (captured, it
        // would stay beside the callback's future for good) and moved out of its box in
        // a block that frees the box; and the upgraded socket is bound before the callback
        // runs (a `match` on the upgrade would keep the whole unsplit WebSocket's room
        // through the callback's await).
        let upgrade = Box::new((websocket, callback));
        tokio::spawn(async move {
            let (websocket, callback) = {
                let upgrade = upgrade;
                *upgrade
            };
            let socket = match websocket.await {
                Ok(socket) => socket,
                Err(error) => return tracing::debug!(%error, "WebSocket upgrade failed after the 101"),
            };
            callback(socket).await
        });
        response.map(axum::body::Body::new)
    }
}

impl fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("request", &self.request)
            .field("config", &self.config)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = UpgradeError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let request = validate(&parts.method, &parts.uri, parts.version, &parts.headers)?;
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(UpgradeError::NotUpgradable)?;
        Ok(Self { request, on_upgrade, config: Config::default(), protocol: None })
    }
}

/// `Option<WebSocketUpgrade>`: `None` for a request that does not ask for a
/// WebSocket at all (no `Upgrade: websocket`, no `Connection: Upgrade`), so
/// one route can serve a page and the socket; a request that asks but is
/// malformed is still refused with its status and reason.
impl<S: Send + Sync> OptionalFromRequestParts<S> for WebSocketUpgrade {
    type Rejection = UpgradeError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let headers = &parts.headers;
        if !has_token(headers, &header::CONNECTION, "upgrade")
            && !has_token(headers, &header::UPGRADE, "websocket")
        {
            return Ok(None);
        }
        <Self as FromRequestParts<S>>::from_request_parts(parts, state).await.map(Some)
    }
}

impl IntoResponse for UpgradeError {
    fn into_response(self) -> Response {
        self.to_response().map(axum::body::Body::new)
    }
}

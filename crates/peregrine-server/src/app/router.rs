//! The one port's routes: the WebSocket endpoint, the HTTP API, `/health` and `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use peregrine::upgrade::WebSocketUpgrade;
use peregrine_wire::Encoding;

use crate::admission::Ticket;
use crate::node::Node;
use crate::session::Identity;
use crate::transport::websocket::{self, count_rejection};

/// Path of the WebSocket endpoint.
pub const WEBSOCKET_PATH: &str = "/connection/websocket";

/// The application's routes over `node`.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route(WEBSOCKET_PATH, get(websocket_endpoint))
        .merge(http_transports(&node))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(super::api::routes(Arc::clone(&node)))
        .with_state(node)
}

/// The HTTP transports for clients a WebSocket cannot reach (see `transport::stream`,
/// `transport::long_poll`), sharing one registry of sessions.
fn http_transports(node: &Arc<Node>) -> Router<Arc<Node>> {
    use crate::transport::{http, long_poll, stream};
    let sessions = http::HttpSessions::new(node);
    sessions.listen(node);
    Router::new()
        .route("/connection/sse", get(stream::sse))
        .route("/connection/stream", axum::routing::post(stream::http_stream))
        .route("/connection/send", axum::routing::post(http::send))
        .route("/connection/poll/open", axum::routing::post(long_poll::open))
        .route("/connection/poll", get(long_poll::poll))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(node), http::cors))
        .layer(axum::Extension(sessions))
}

/// A refused handshake: the status and a reason in the body (and counted by reason).
pub fn refuse(node: &Node, status: StatusCode, metric: &str, reason: String) -> Response {
    count_rejection(node, metric);
    tracing::debug!(%status, reason = %reason, "handshake refused");
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], reason + "\n").into_response()
}

/// The TCP peer of the request's connection (set per connection by `app::serve`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

async fn websocket_endpoint(
    State(node): State<Arc<Node>>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, peregrine::upgrade::UpgradeError>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(e) => {
            count_rejection(&node, "bad_handshake");
            return axum::response::IntoResponse::into_response(e);
        }
    };
    let request = upgrade.request();
    let client = ClientRequest {
        peer: peer.map(|axum::Extension(Peer(addr))| addr.ip()),
        headers: &headers,
        origin: request.origin(),
        host: Some(request.host()),
        path: request.path(),
    };
    let (identity, ticket) = match admit(&node, &client) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    let upgrade = upgrade.protocols(Encoding::subprotocols());
    let encoding = upgrade.selected_protocol().and_then(Encoding::from_subprotocol).unwrap_or(Encoding::Json);
    let config = websocket::socket_config(&node);
    upgrade.config(config).on_upgrade(move |ws| websocket::serve(node, ws, encoding, identity, ticket))
}

/// What the checks before a session need to know of the request that opens it.
#[derive(Debug)]
pub struct ClientRequest<'a> {
    /// The TCP peer's address.
    pub peer: Option<std::net::IpAddr>,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The `Host` header.
    pub host: Option<&'a str>,
    /// The request target (path and query).
    pub path: &'a str,
}

impl<'a> ClientRequest<'a> {
    /// The request of an HTTP transport (its headers and target, as axum gives them).
    pub fn of(
        peer: Option<&axum::Extension<Peer>>,
        headers: &'a HeaderMap,
        uri: &'a axum::http::Uri,
    ) -> Self {
        let value = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        ClientRequest {
            peer: peer.map(|axum::Extension(Peer(addr))| addr.ip()),
            headers,
            origin: value(header::ORIGIN),
            host: value(header::HOST),
            path: uri.path_and_query().map_or("/", |p| p.as_str()),
        }
    }
}

/// The checks every transport makes before a session starts, in order: shutting down,
/// node capacity, admission (handshakes in progress, per address), Origin, a token given
/// with the request. The error is the refusal to send, with its status and reason.
pub fn admit(node: &Node, client: &ClientRequest<'_>) -> Result<(Option<Identity>, Ticket), Box<Response>> {
    if node.is_shutting_down() {
        return Err(Box::new(refuse(
            node,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutdown",
            "server shutting down".into(),
        )));
    }
    if !node.has_room() {
        let max = node.max_connections();
        let reason = format!("connection limit of this node reached ({max}): try another node or later");
        return Err(Box::new(refuse(node, StatusCode::SERVICE_UNAVAILABLE, "connection_limit", reason)));
    }
    let header = |name: &str| client.headers.get(name).and_then(|v| v.to_str().ok());
    let ticket =
        node.admit(client.peer, header("x-forwarded-for"), header("x-real-ip")).map_err(|refusal| {
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut response = refuse(node, status, refusal.metric, refusal.reason);
            if let Some(after) = refusal.retry_after
                && let Ok(value) =
                    header::HeaderValue::from_str(&(after.as_secs_f64().ceil().max(1.0) as u64).to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        })?;
    if let Err(reason) = node.check_origin(client.origin, client.host) {
        return Err(Box::new(refuse(node, StatusCode::FORBIDDEN, "origin", reason)));
    }
    let identity = match handshake_token(client.path, client.headers) {
        None => None,
        Some(token) => match node.authenticate(Some(&token)) {
            Ok(identity) => Some(identity),
            Err(d) => return Err(Box::new(refuse(node, StatusCode::UNAUTHORIZED, "token", d.reason))),
        },
    };
    Ok((identity, ticket))
}

/// A connection token given at the handshake: `?token=` or `Authorization: Bearer`.
fn handshake_token(path: &str, headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))
    {
        return Some(token.trim().to_owned());
    }
    let query = path.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
}

async fn health(State(node): State<Arc<Node>>) -> Response {
    if node.is_shutting_down() {
        // Sessions are draining: a load balancer takes the node out, and the count shows the drain.
        let body = serde_json::json!({"status": "shutting down", "connections": node.session_count()});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    if let Err(problem) = node.broker_health() {
        // Still 200: every node shares the broker, so taking them all out of the balancer
        // would turn an outage of publishes into an outage of everything. Connections stay
        // up; publishes and history reads fail for now (clients retry).
        let body = serde_json::json!({
            "status": "degraded", "problem": problem, "connections": node.session_count()
        });
        return axum::Json(body).into_response();
    }
    axum::Json(serde_json::json!({"status": "ok", "connections": node.session_count()})).into_response()
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let body = node.metrics().render();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
        .into_response()
}

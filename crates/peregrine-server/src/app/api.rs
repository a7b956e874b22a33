//! The server HTTP API: publish, broadcast, history, presence, disconnect and unsubscribe a
//! user, list channels, info. JSON in and out; `Authorization: apikey <key>` (or
//! `X-API-Key: <key>`). Examples with curl are in the README and `docs/api.md`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use peregrine_wire::codes::{disconnect as dc, error as err};
use peregrine_wire::{Payload, Publication, PublishRequest, ReplyError, StreamPosition};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::disconnect::Disconnect;
use crate::node::Node;

/// The `/api/*` routes, behind the API key check.
pub fn routes(node: Arc<Node>) -> Router<Arc<Node>> {
    Router::new()
        .route("/api/publish", post(publish))
        .route("/api/broadcast", post(broadcast))
        .route("/api/history", post(history))
        .route("/api/presence", post(presence))
        .route("/api/disconnect", post(disconnect))
        .route("/api/unsubscribe", post(unsubscribe))
        .route("/api/channels", get(channels).post(channels))
        .route("/api/info", get(info).post(info))
        .route_layer(middleware::from_fn_with_state(node, require_api_key))
}

/// An API failure: HTTP status and `{"error":{"code","message"}}`.
#[derive(Debug)]
struct ApiError(StatusCode, ReplyError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ReplyError> for ApiError {
    fn from(e: ReplyError) -> Self {
        let status = match e.code {
            err::UNKNOWN_CHANNEL => StatusCode::NOT_FOUND,
            err::NOT_AVAILABLE => StatusCode::CONFLICT,
            err::BAD_REQUEST => StatusCode::BAD_REQUEST,
            _ if e.temporary => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e)
    }
}

fn api_error(status: StatusCode, code: u32, message: impl Into<String>) -> ApiError {
    ApiError(status, ReplyError { code, message: message.into(), temporary: false })
}

async fn require_api_key(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    match check_key(&node, &request) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

fn check_key(node: &Node, request: &Request) -> Result<(), ApiError> {
    let headers = request.headers();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("apikey "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    match (node.config().api_key.as_ref().map(crate::config::Secret::expose), given) {
        (Some(key), Some(given)) if constant_time_eq(key.as_bytes(), given.trim().as_bytes()) => Ok(()),
        (Some(_), Some(_)) => Err(api_error(StatusCode::UNAUTHORIZED, err::UNAUTHORIZED, "wrong API key")),
        (Some(_), None) => Err(api_error(
            StatusCode::UNAUTHORIZED,
            err::UNAUTHORIZED,
            "missing API key: send `Authorization: apikey <key>`",
        )),
        (None, _) if node.config().development => Ok(()),
        (None, _) => Err(api_error(
            StatusCode::FORBIDDEN,
            err::PERMISSION_DENIED,
            "the HTTP API is disabled: set api_key in the configuration",
        )),
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess
/// matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The largest request body the API reads (axum's default): a bigger one gets `413`.
const API_BODY_LIMIT: usize = 2 << 20;

/// A JSON request body, whatever its Content-Type (so `curl -d '{...}'` works), with a 400
/// that says what is wrong when it does not parse.
#[derive(Debug)]
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                err::LIMIT_EXCEEDED,
                format!("the request body is over {API_BODY_LIMIT} bytes"),
            ),
            _ => api_error(StatusCode::BAD_REQUEST, err::BAD_REQUEST, e.body_text()),
        })?;
        serde_json::from_slice(&bytes).map(Body).map_err(|e| {
            api_error(StatusCode::BAD_REQUEST, err::BAD_REQUEST, format!("invalid JSON body: {e}"))
        })
    }
}

/// The body is a protocol `publish` ([`PublishRequest`]): `data` kept byte for byte.
async fn publish(State(node): State<Arc<Node>>, Body(body): Body<PublishRequest>) -> ApiResult {
    let r = node.publish(&body.channel, body.data, None, body.idempotency_key.as_deref()).await?;
    Ok(Json(publish_json(&node, &body.channel, &r)))
}

fn publish_json(node: &Node, channel: &str, r: &crate::broker::PublishResult) -> Value {
    let positioned = node.channel_options(channel).is_ok_and(|o| o.has_history());
    if positioned {
        json!({ "epoch": r.epoch, "offset": r.offset, "duplicate": r.duplicate })
    } else {
        json!({ "duplicate": r.duplicate })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    channels: Vec<String>,
    data: Box<RawValue>,
    #[serde(default)]
    binary: bool,
}

async fn broadcast(State(node): State<Arc<Node>>, Body(body): Body<BroadcastBody>) -> ApiResult {
    let data = Payload::from_json_data(body.data, body.binary)
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, err::BAD_REQUEST, e))?;
    let mut results = Vec::with_capacity(body.channels.len());
    for channel in &body.channels {
        let result = match node.publish(channel, data.clone(), None, None).await {
            Ok(r) => {
                let mut v = publish_json(&node, channel, &r);
                v["channel"] = json!(channel);
                v
            }
            Err(e) => json!({ "channel": channel, "error": e }),
        };
        results.push(result);
    }
    Ok(Json(json!({ "results": results })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryBody {
    channel: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    since: Option<StreamPosition>,
    #[serde(default)]
    reverse: bool,
}

/// The history, written straight from the publications (never through a `Value`, which
/// would reorder keys and round numbers of their payloads).
#[derive(Serialize)]
struct HistoryAnswer {
    publications: Vec<Publication>,
    epoch: String,
    offset: u64,
}

async fn history(
    State(node): State<Arc<Node>>,
    Body(body): Body<HistoryBody>,
) -> Result<Json<HistoryAnswer>, ApiError> {
    let h = node.history(&body.channel, body.since, body.limit, body.reverse).await?;
    Ok(Json(HistoryAnswer { publications: h.publications, epoch: h.epoch, offset: h.offset }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelBody {
    channel: String,
}

async fn presence(State(node): State<Arc<Node>>, Body(body): Body<ChannelBody>) -> ApiResult {
    let clients = node.presence(&body.channel).await?;
    Ok(Json(json!({ "clients": clients })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: String,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
}

async fn disconnect(State(node): State<Arc<Node>>, Body(body): Body<DisconnectBody>) -> ApiResult {
    let code = body.code.unwrap_or(dc::FORCE_NO_RECONNECT);
    if !(3000..=4999).contains(&code) {
        return Err(api_error(StatusCode::BAD_REQUEST, err::BAD_REQUEST, "code must be within 3000..=4999"));
    }
    let d = Disconnect::new(code, body.reason.unwrap_or_else(|| "disconnected by the server".into()));
    Ok(Json(json!({ "sessions": node.disconnect_user(&body.user, &d) })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeBody {
    user: String,
    channel: String,
}

async fn unsubscribe(State(node): State<Arc<Node>>, Body(body): Body<UnsubscribeBody>) -> ApiResult {
    Ok(Json(json!({ "sessions": node.unsubscribe_user(&body.user, &body.channel) })))
}

async fn channels(State(node): State<Arc<Node>>) -> ApiResult {
    let list: Vec<Value> = node
        .channels()
        .into_iter()
        .map(|c| json!({ "channel": c, "subscribers": node.hub().subscriber_count(&c) }))
        .collect();
    Ok(Json(json!({ "channels": list })))
}

async fn info(State(node): State<Arc<Node>>) -> ApiResult {
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": peregrine_wire::PROTOCOL_VERSION,
        "connections": node.session_count(),
        "users": node.user_count(),
        "channels": node.channels().len(),
        "uptime_seconds": node.uptime().as_secs(),
        "node": node.info(),
        "nodes": node.nodes().await,
        "broker": node.config().broker.kind,
        "broker_problem": node.broker_health().err(),
    })))
}

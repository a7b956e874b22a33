//! The server HTTP API over real sockets: the API key is required and checked; publish,
//! broadcast, history, presence, disconnect and unsubscribe a user, list channels and info
//! each do what docs/api.md says; a bad body is a 400 that says why.

mod common;

use common::{Client, TestServer, http};
use jsonwebtoken::{EncodingKey, Header, encode};
use peregrine_server::channel::ChannelOptions;
use peregrine_server::config::{Config, Secret};
use peregrine_wire::codes::disconnect as dc;
use peregrine_wire::*;
use serde_json::{Value, json};

const KEY: &str = "api-key-for-tests";
const SECRET: &str = "api-test-hmac-secret";

/// Production base: an API key, HS256 tokens, a `chat` namespace with history and presence.
fn config() -> Config {
    let mut c = Config { api_key: Some(Secret::new(KEY)), ..Default::default() };
    c.token.hmac_secret = Some(Secret::new(SECRET));
    c.channels.named.insert(
        "chat".into(),
        ChannelOptions { presence: true, allow_publish: true, history_size: 10, ..Default::default() },
    );
    c
}

fn token(user: &str) -> String {
    let exp = peregrine_server::session::unix_now() + 600;
    encode(
        &Header::default(),
        &json!({"sub": user, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn user(server: &TestServer, name: &str) -> Client {
    Client::connect_with(server, Some(&token(name))).await.expect("connects")
}

fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn the_api_key_is_required_and_checked() {
    let server = TestServer::start(config()).await;
    let body = json!({"channel": "chat:1", "data": "x"});

    let (status, answer) = server.api("/api/publish", body.clone(), None).await;
    assert_eq!(status, 401, "{answer}");
    assert!(error_message(&answer).contains("missing API key"), "{answer}");

    let (status, answer) = server.api("/api/publish", body.clone(), Some("wrong")).await;
    assert_eq!(status, 401, "{answer}");
    assert!(error_message(&answer).contains("wrong API key"), "{answer}");

    // The other header form is accepted too.
    let text = body.to_string();
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{text}",
        text.len()
    );
    let (status, answer) = http(server.addr, &request).await;
    assert_eq!(status, 200, "{answer}");

    let (status, answer) = server.api("/api/publish", body, Some(KEY)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["offset"], 2, "two publications got through, both with the key: {answer}");
    server.finish().await;

    // Without any key configured, a production server keeps the API shut and says how to open it.
    let mut closed = config();
    closed.api_key = None;
    let server = TestServer::start(closed).await;
    let (status, answer) = server.api("/api/info", json!({}), Some(KEY)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(error_message(&answer).contains("set api_key"), "{answer}");
    server.finish().await;
}

#[tokio::test]
async fn publish_history_and_presence_through_the_api() {
    let server = TestServer::start(config()).await;
    let mut ann = user(&server, "ann").await;
    ann.sub("chat:api").await;

    for n in 1..=3 {
        let (status, answer) = server
            .api(
                "/api/publish",
                json!({"channel": "chat:api", "data": {"n": n}, "idempotency_key": format!("k{n}")}),
                Some(KEY),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["offset"], n);
        assert_eq!(answer["duplicate"], false);
    }
    // The same idempotency key again is acknowledged as a duplicate, not published twice.
    let (_, again) = server
        .api(
            "/api/publish",
            json!({"channel": "chat:api", "data": {"n": 3}, "idempotency_key": "k3"}),
            Some(KEY),
        )
        .await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["offset"], 3, "{again}");

    for n in 1..=3u64 {
        let (channel, p) = ann.publication().await;
        assert_eq!(channel, "chat:api");
        assert_eq!((p.offset, p.data.clone()), (n, json!({"n": n}).into()));
    }

    let (status, h) = server.api("/api/history", json!({"channel": "chat:api", "limit": 2}), Some(KEY)).await;
    assert_eq!(status, 200, "{h}");
    let offsets: Vec<u64> =
        h["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [1, 2], "{h}");
    assert_eq!(h["offset"], 3);

    let (_, h) = server
        .api("/api/history", json!({"channel": "chat:api", "limit": 1, "reverse": true}), Some(KEY))
        .await;
    assert_eq!(h["publications"][0]["offset"], 3, "reverse gives the newest first: {h}");

    let (status, p) = server.api("/api/presence", json!({"channel": "chat:api"}), Some(KEY)).await;
    assert_eq!(status, 200, "{p}");
    let clients = p["clients"].as_object().unwrap();
    assert_eq!(clients.len(), 1, "{p}");
    assert_eq!(clients[&ann.client_id]["user"], "ann", "{p}");
    server.finish().await;
}

#[tokio::test]
async fn disconnect_and_unsubscribe_a_user() {
    let server = TestServer::start(config()).await;
    let mut ann1 = user(&server, "ann").await;
    let mut ann2 = user(&server, "ann").await;
    let mut bob = user(&server, "bob").await;
    for c in [&mut ann1, &mut ann2, &mut bob] {
        c.sub("chat:u").await;
    }

    let (status, answer) =
        server.api("/api/unsubscribe", json!({"user": "ann", "channel": "chat:u"}), Some(KEY)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["sessions"], 2, "both of ann's sessions: {answer}");
    for c in [&mut ann1, &mut ann2] {
        match c.push().await {
            Push::Unsubscribe { channel, .. } => assert_eq!(channel, "chat:u"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(server.node.hub().subscriber_count("chat:u"), 1, "only bob is left");

    let (status, answer) = server
        .api("/api/disconnect", json!({"user": "ann", "code": 4100, "reason": "banned"}), Some(KEY))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["sessions"], 2);
    for c in [&mut ann1, &mut ann2] {
        match c.disconnect_push().await {
            Push::Disconnect { code, reason, .. } => assert_eq!((code, reason.as_str()), (4100, "banned")),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.closed().await.map(|(code, _)| code), Some(4100));
    }

    // The default code tells the client not to come back; bob was untouched until now.
    bob.publish("chat:u", json!("still here")).await.unwrap();
    let (_, answer) = server.api("/api/disconnect", json!({"user": "bob"}), Some(KEY)).await;
    assert_eq!(answer["sessions"], 1);
    match bob.disconnect_push().await {
        Push::Disconnect { code, reconnect, .. } => {
            assert_eq!(code, dc::FORCE_NO_RECONNECT);
            assert!(!reconnect);
        }
        other => panic!("{other:?}"),
    }

    let (status, answer) =
        server.api("/api/disconnect", json!({"user": "bob", "code": 1000}), Some(KEY)).await;
    assert_eq!(status, 400, "a WebSocket-reserved code is refused: {answer}");
    assert!(error_message(&answer).contains("3000..=4999"), "{answer}");
    server.finish().await;
}

#[tokio::test]
async fn channels_and_info_describe_the_node() {
    let server = TestServer::start(config()).await;
    let mut a = user(&server, "ann").await;
    let mut b = user(&server, "bob").await;
    a.sub("chat:x").await;
    b.sub("chat:x").await;
    b.sub("chat:y").await;

    let (status, answer) = server.api("/api/channels", json!({}), Some(KEY)).await;
    assert_eq!(status, 200, "{answer}");
    let mut channels: Vec<(String, u64)> = answer["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["channel"].as_str().unwrap().to_owned(), c["subscribers"].as_u64().unwrap()))
        .collect();
    channels.sort();
    assert_eq!(channels, [("chat:x".to_owned(), 2), ("chat:y".to_owned(), 1)]);

    let (status, info) = server.api("/api/info", json!({}), Some(KEY)).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["connections"], 2, "{info}");
    assert_eq!(info["users"], 2, "{info}");
    assert_eq!(info["channels"], 2, "{info}");
    assert_eq!(info["protocol"], PROTOCOL_VERSION);
    server.finish().await;
}

#[tokio::test]
async fn bad_bodies_are_a_400_that_says_why() {
    let server = TestServer::start(config()).await;
    let (status, answer) = server.api("/api/publish", json!({"channel": "chat:1"}), Some(KEY)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(error_message(&answer).contains("data"), "names the missing field: {answer}");

    let (status, answer) =
        server.api("/api/publish", json!({"channel": "chat:1", "data": 1, "colour": "red"}), Some(KEY)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(error_message(&answer).contains("colour"), "names the unknown field: {answer}");

    let (status, answer) =
        server.api("/api/publish", json!({"channel": "nope:1", "data": 1}), Some(KEY)).await;
    assert_eq!(status, 404, "an unknown namespace: {answer}");

    let request = "POST /api/history HTTP/1.1\r\nHost: x\r\nAuthorization: apikey api-key-for-tests\r\n\
                   Content-Length: 9\r\nConnection: close\r\n\r\n{not json";
    let (status, body) = http(server.addr, request).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid JSON body"), "{body}");
    server.finish().await;
}

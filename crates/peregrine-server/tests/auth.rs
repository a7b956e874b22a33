//! Authentication over real sockets: connection tokens (HS256, RS256, ES256) in `connect`,
//! a query parameter or a header; expiry, bad signatures and algorithm confusion refused
//! with a reason; subscription tokens for private channels; refresh; server-side
//! subscriptions from the token; the Origin allowlist (403 with a reason).

mod common;

use std::path::PathBuf;

use common::{Client, TestServer, http};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use peregrine_server::channel::ChannelOptions;
use peregrine_server::config::{Config, Secret};
use peregrine_wire::codes::{disconnect as dc, error as err};
use peregrine_wire::*;
use serde_json::{Value, json};

const SECRET: &str = "test-hmac-secret";

fn now() -> u64 {
    peregrine_server::session::unix_now()
}

fn hs256(claims: Value) -> String {
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

/// Production base with an HMAC secret, a `chat` namespace and a private `team` one.
fn config() -> Config {
    let mut c = Config::default();
    c.token.hmac_secret = Some(Secret::new(SECRET));
    c.channels
        .named
        .insert("chat".into(), ChannelOptions { presence: true, allow_publish: true, ..Default::default() });
    c.channels
        .named
        .insert("team".into(), ChannelOptions { presence: true, private: true, ..Default::default() });
    c
}

async fn refused(server: &TestServer, token: Option<&str>) -> (u16, String) {
    match Client::connect_with(server, token).await {
        Ok(_) => panic!("connection should be refused"),
        Err(Push::Disconnect { code, reason, .. }) => (code, reason),
        Err(other) => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn valid_hs256_token_connects_as_its_user() {
    let server = TestServer::start(config()).await;
    let token = hs256(json!({"sub": "42", "exp": now() + 600, "info": {"name": "Ann"}}));
    let mut c = Client::connect_with(&server, Some(&token)).await.expect("connects");
    c.sub("chat:1").await;
    let (_, body) = server.api("/api/presence", json!({"channel": "chat:1"}), None).await;
    // The API is disabled without a key in production config: ask through the protocol.
    assert_eq!(body["error"]["code"], json!(err::PERMISSION_DENIED), "{body}");
    let Ok(ReplyKind::Presence(p)) =
        c.command(CommandKind::Presence(PresenceRequest { channel: "chat:1".into() })).await
    else {
        panic!("presence")
    };
    let me = p.clients.values().next().unwrap();
    assert_eq!(me.user, "42");
    assert_eq!(me.conn_info, Some(json!({"name": "Ann"})));
    server.finish().await;
}

#[tokio::test]
async fn missing_expired_and_badly_signed_tokens_are_refused_with_reasons() {
    let server = TestServer::start(config()).await;
    let (code, reason) = refused(&server, None).await;
    assert_eq!(code, dc::INVALID_TOKEN);
    assert!(reason.contains("token is required"), "{reason}");

    let expired = hs256(json!({"sub": "42", "exp": now() - 10}));
    let (code, reason) = refused(&server, Some(&expired)).await;
    assert_eq!(code, dc::EXPIRED, "expired tokens may reconnect with a fresh one");
    assert!(reason.contains("expired"), "{reason}");

    let forged =
        encode(&Header::default(), &json!({"sub": "42"}), &EncodingKey::from_secret(b"wrong secret"))
            .unwrap();
    let (code, reason) = refused(&server, Some(&forged)).await;
    assert_eq!(code, dc::INVALID_TOKEN);
    assert!(reason.contains("signature"), "{reason}");
    assert!(!reason.contains(&forged), "the token is never echoed");

    let (code, reason) = refused(&server, Some("not-a-jwt")).await;
    assert_eq!(code, dc::INVALID_TOKEN);
    assert!(reason.contains("malformed"), "{reason}");
    server.finish().await;
}

#[tokio::test]
async fn token_at_the_handshake_is_checked_before_the_upgrade() {
    let server = TestServer::start(config()).await;
    let expired = hs256(json!({"sub": "7", "exp": now() - 10}));
    let request = format!(
        "GET /connection/websocket?token={expired} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    let (status, body) = http(server.addr, &request).await;
    assert_eq!(status, 401);
    assert!(body.contains("expired"), "{body}");

    // A good token in the Authorization header: `connect` needs no token then.
    let token = hs256(json!({"sub": "7"}));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (ws, _) = peregrine::ClientBuilder::new(server.url())
        .header("Authorization", format!("Bearer {token}"))
        .connect_on(tcp)
        .await
        .expect("upgrade with a bearer token");
    drop(ws);
    server.finish().await;
}

#[tokio::test]
async fn rs256_and_es256_tokens_work_and_alg_confusion_is_refused() {
    let rsa_private = std::fs::read(keys_dir().join("rsa_private.pem")).unwrap();
    let rsa_public = std::fs::read(keys_dir().join("rsa_public.pem")).unwrap();
    let ec = rcgen::KeyPair::generate().unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("peregrine-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ec_public = dir.join("ec_public.pem");
    std::fs::write(&ec_public, ec.public_key_pem()).unwrap();

    let mut c = config();
    c.token.hmac_secret = None;
    c.token.rsa_public_key = Some(keys_dir().join("rsa_public.pem"));
    c.token.ecdsa_public_key = Some(ec_public);
    let server = TestServer::start(c).await;

    let claims = json!({"sub": "rsa-user"});
    let rs =
        encode(&Header::new(Algorithm::RS256), &claims, &EncodingKey::from_rsa_pem(&rsa_private).unwrap())
            .unwrap();
    Client::connect_with(&server, Some(&rs)).await.expect("RS256");

    let es_key = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap();
    let es = encode(&Header::new(Algorithm::ES256), &json!({"sub": "ec-user"}), &es_key).unwrap();
    Client::connect_with(&server, Some(&es)).await.expect("ES256");

    // The classic attack: an HS256 token "signed" with the server's public RSA key.
    let confused =
        encode(&Header::default(), &json!({"sub": "admin"}), &EncodingKey::from_secret(&rsa_public)).unwrap();
    let (code, reason) = refused(&server, Some(&confused)).await;
    assert_eq!(code, dc::INVALID_TOKEN);
    assert!(reason.contains("HS256"), "{reason}");
    server.finish().await;
}

#[tokio::test]
async fn private_channels_need_a_subscription_token_for_that_channel_and_user() {
    let server = TestServer::start(config()).await;
    let token = hs256(json!({"sub": "42"}));
    let mut c = Client::connect_with(&server, Some(&token)).await.unwrap();
    let sub =
        |token: Option<String>| SubscribeRequest { channel: "team:red".into(), token, ..Default::default() };

    let e = c.subscribe(sub(None)).await.unwrap_err();
    assert_eq!(e.code, err::PERMISSION_DENIED);
    assert!(e.message.contains("private"), "{}", e.message);

    let other_channel = hs256(json!({"sub": "42", "channel": "team:blue"}));
    let e = c.subscribe(sub(Some(other_channel))).await.unwrap_err();
    assert_eq!(e.code, err::UNAUTHORIZED);
    assert!(e.message.contains("another channel"), "{}", e.message);

    let other_user = hs256(json!({"sub": "13", "channel": "team:red"}));
    let e = c.subscribe(sub(Some(other_user))).await.unwrap_err();
    assert!(e.message.contains("another user"), "{}", e.message);

    let expired = hs256(json!({"sub": "42", "channel": "team:red", "exp": now() - 1}));
    let e = c.subscribe(sub(Some(expired))).await.unwrap_err();
    assert_eq!(e.code, err::TOKEN_EXPIRED);

    let good = hs256(json!({"sub": "42", "channel": "team:red", "info": {"role": "lead"}}));
    c.subscribe(sub(Some(good))).await.expect("subscribed with the right token");
    let Ok(ReplyKind::Presence(p)) =
        c.command(CommandKind::Presence(PresenceRequest { channel: "team:red".into() })).await
    else {
        panic!("presence")
    };
    assert_eq!(p.clients.values().next().unwrap().chan_info, Some(json!({"role": "lead"})));
    server.finish().await;
}

#[tokio::test]
async fn refresh_extends_the_connection_and_rejects_another_user() {
    let server = TestServer::start(config()).await;
    let token = hs256(json!({"sub": "42", "exp": now() + 60}));
    let mut c = Client::connect_with(&server, Some(&token)).await.unwrap();
    let later = now() + 3600;
    let fresh = hs256(json!({"sub": "42", "exp": later}));
    let r = c.command(CommandKind::Refresh(RefreshRequest { token: fresh })).await.unwrap();
    assert_eq!(r, ReplyKind::Refresh(RefreshResult { expires: Some(later) }));
    let stranger = hs256(json!({"sub": "99"}));
    let e = c.command(CommandKind::Refresh(RefreshRequest { token: stranger })).await.unwrap_err();
    assert_eq!(e.code, err::PERMISSION_DENIED);
    server.finish().await;
}

#[tokio::test]
async fn token_channels_are_subscribed_server_side() {
    let server = TestServer::start(config()).await;
    let token = hs256(json!({"sub": "42", "channels": ["chat:news"]}));
    let mut listener = Client::connect_with(&server, Some(&token)).await.unwrap();
    let mut publisher = Client::connect_with(&server, Some(&hs256(json!({"sub": "1"})))).await.unwrap();
    publisher.publish("chat:news", json!("flash")).await.unwrap();
    let (channel, p) = listener.publication().await;
    assert_eq!((channel.as_str(), p.data), ("chat:news", json!("flash").into()));
    server.finish().await;
}

#[tokio::test]
async fn wrong_origin_gets_403_with_a_reason_and_a_listed_one_connects() {
    let mut c = config();
    c.token.allow_anonymous = true;
    c.allowed_origins = vec!["https://app.example.com".into()];
    let server = TestServer::start(c).await;
    let handshake = |origin: &str| {
        format!(
            "GET /connection/websocket HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        )
    };
    let (status, body) = http(server.addr, &handshake("https://evil.example")).await;
    assert_eq!(status, 403);
    assert!(body.contains("https://evil.example") && body.contains("allowed_origins"), "{body}");

    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    peregrine::ClientBuilder::new(server.url())
        .origin("https://app.example.com")
        .connect_on(tcp)
        .await
        .expect("the listed origin is upgraded");
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_ends_at_its_token_expiry_unless_refreshed() {
    let server = TestServer::start(config()).await;
    let token = hs256(json!({"sub": "42"}));
    let mut c = Client::connect_with(&server, Some(&token)).await.unwrap();
    let expires = now() + 2;
    let sub = |channel: &str, exp: u64| SubscribeRequest {
        channel: channel.into(),
        token: Some(hs256(json!({"sub": "42", "channel": channel, "exp": exp}))),
        ..Default::default()
    };
    let r = c.subscribe(sub("team:short", expires)).await.unwrap();
    assert_eq!(r.expires, Some(expires), "the reply says when to refresh");
    c.subscribe(sub("team:kept", expires)).await.unwrap();
    let later = now() + 600;
    let fresh = hs256(json!({"sub": "42", "channel": "team:kept", "exp": later}));
    let refresh = SubRefreshRequest { channel: "team:kept".into(), token: fresh };
    let r = c.command(CommandKind::SubRefresh(refresh)).await.unwrap();
    assert_eq!(r, ReplyKind::SubRefresh(SubRefreshResult { expires: Some(later) }));
    // A token for another channel does not refresh this one.
    let wrong = hs256(json!({"sub": "42", "channel": "team:other", "exp": later}));
    let refresh = SubRefreshRequest { channel: "team:kept".into(), token: wrong };
    assert_eq!(c.command(CommandKind::SubRefresh(refresh)).await.unwrap_err().code, err::UNAUTHORIZED);

    match c.push().await {
        Push::Unsubscribe { channel, code, reason } => {
            assert_eq!((channel.as_str(), code), ("team:short", codes::unsubscribe::EXPIRED));
            assert!(reason.contains("expired"), "{reason}");
        }
        other => panic!("expected the expired subscription to end, got {other:?}"),
    }
    assert!(now() >= expires, "not before its expiry");
    // The ended one gets nothing more; the refreshed one still does.
    server.node.publish("team:short", json!("late").into(), None, None).await.unwrap();
    server.node.publish("team:kept", json!("kept").into(), None, None).await.unwrap();
    let (channel, p) = c.publication().await;
    assert_eq!((channel.as_str(), p.data), ("team:kept", json!("kept").into()));
    server.finish().await;
}

#[tokio::test]
async fn a_connect_subscription_refused_for_a_fixable_reason_asks_to_subscribe_again() {
    let server = TestServer::start(config()).await;
    let mut c = Client::open(&server, Encoding::Json).await;
    let expired = hs256(json!({"sub": "42", "channel": "team:late", "exp": now() - 1}));
    let mut req = ConnectRequest { token: Some(hs256(json!({"sub": "42"}))), ..Default::default() };
    req.subs.insert("team:late".into(), SubscribeOptions { token: Some(expired), ..Default::default() });
    req.subs.insert("team:none".into(), SubscribeOptions::default());
    let Ok(ReplyKind::Connect(r)) = c.command(CommandKind::Connect(req)).await else { panic!("connect") };
    assert!(r.subs.is_empty(), "{r:?}");
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let Push::Unsubscribe { channel, code, .. } = c.push().await else { panic!("an unsubscribe push") };
        codes.insert(channel, code);
    }
    // An expired token: subscribe again with a fresh one (2501). No token at all: final (2000).
    assert_eq!(codes["team:late"], codes::unsubscribe::EXPIRED);
    assert_eq!(codes["team:none"], codes::unsubscribe::SERVER);
    server.finish().await;
}

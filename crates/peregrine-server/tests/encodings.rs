//! The same session in every encoding (JSON, MessagePack, Protobuf), over real sockets:
//! connect with a token, subscribe, publish with an idempotency key, presence, history,
//! refresh, recovery after a cut, and the errors, with the same answers whatever the encoding.

mod common;

use common::{Client, TestServer};
use jsonwebtoken::{EncodingKey, Header, encode};
use peregrine_server::channel::ChannelOptions;
use peregrine_server::config::{Config, Secret};
use peregrine_wire::codes::error as err;
use peregrine_wire::*;
use serde_json::{Value, json};

const SECRET: &str = "encodings-secret";

fn token(claims: Value) -> String {
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn now() -> u64 {
    peregrine_server::session::unix_now()
}

fn config() -> Config {
    let mut c = Config::default();
    c.token.hmac_secret = Some(Secret::new(SECRET));
    let chat =
        ChannelOptions { presence: true, allow_publish: true, history_size: 100, ..Default::default() };
    c.channels.named.insert("chat".into(), chat);
    c.channels.named.insert("feed".into(), ChannelOptions { history_size: 100, ..Default::default() });
    c
}

async fn command(c: &mut Client, kind: CommandKind) -> ReplyKind {
    let name = kind.name();
    c.command(kind).await.unwrap_or_else(|e| panic!("{:?} {name}: {e:?}", c.encoding))
}

#[tokio::test]
async fn every_encoding_serves_the_same_session() {
    let server = TestServer::start(config()).await;
    for encoding in Encoding::ALL {
        let channel = format!("chat:{}", encoding.subprotocol());
        let connect = token(json!({"sub": "42", "exp": now() + 600, "info": {"name": "Ann"}}));
        let mut c = Client::connect_encoded(&server, Some(&connect), encoding).await.expect("connect");

        let ReplyKind::Subscribe(s) = command(
            &mut c,
            CommandKind::Subscribe(SubscribeRequest { channel: channel.clone(), ..Default::default() }),
        )
        .await
        else {
            panic!("subscribe")
        };
        assert!(s.positioned, "{encoding:?}");

        // Publish twice with one idempotency key: published once.
        let publish = PublishRequest {
            channel: channel.clone(),
            data: Payload::json_text(r#"{"b":1,"a":12345678901234567890123}"#).unwrap(),
            idempotency_key: Some("k-1".into()),
        };
        let ReplyKind::Publish(first) = command(&mut c, CommandKind::Publish(publish.clone())).await else {
            panic!("publish")
        };
        let ReplyKind::Publish(again) = command(&mut c, CommandKind::Publish(publish.clone())).await else {
            panic!("publish")
        };
        assert!(!first.duplicate && again.duplicate && again.offset == first.offset, "{encoding:?}");
        let (_, p) = c.publication().await;
        assert_eq!(p.data, publish.data, "{encoding:?}: the payload as published");
        assert_eq!(p.info.as_ref().and_then(|i| i.conn_info.clone()), Some(json!({"name": "Ann"})));

        let ReplyKind::Presence(presence) =
            command(&mut c, CommandKind::Presence(PresenceRequest { channel: channel.clone() })).await
        else {
            panic!("presence")
        };
        assert_eq!(presence.clients.len(), 1, "{encoding:?}");

        let history = HistoryRequest { channel: channel.clone(), ..Default::default() };
        let ReplyKind::History(h) = command(&mut c, CommandKind::History(history)).await else {
            panic!("history")
        };
        assert_eq!((h.publications.len(), h.publications[0].data.clone()), (1, publish.data.clone()));

        let fresh = token(json!({"sub": "42", "exp": now() + 3600}));
        let ReplyKind::Refresh(r) =
            command(&mut c, CommandKind::Refresh(RefreshRequest { token: fresh })).await
        else {
            panic!("refresh")
        };
        assert!(r.expires.is_some(), "{encoding:?}");

        // Errors come back with their codes.
        let unknown = SubscribeRequest { channel: "nope:1".into(), ..Default::default() };
        assert_eq!(c.command(CommandKind::Subscribe(unknown)).await.unwrap_err().code, err::UNKNOWN_CHANNEL);
        let forbidden = PublishRequest { channel: "feed:1".into(), ..Default::default() };
        assert_eq!(
            c.command(CommandKind::Publish(forbidden)).await.unwrap_err().code,
            err::PERMISSION_DENIED
        );

        // Cut, three publications meanwhile, back with `since`: exactly those.
        let position = StreamPosition { epoch: h.epoch.clone(), offset: h.offset };
        c.cut();
        for n in 0..3 {
            server.node.publish(&channel, Payload::binary(vec![n, 255]), None, None).await.unwrap();
        }
        let mut back = Client::connect_encoded(&server, Some(&connect), encoding).await.expect("reconnect");
        let recover = SubscribeRequest {
            channel: channel.clone(),
            since: Some(position),
            recover: true,
            ..Default::default()
        };
        let ReplyKind::Subscribe(r) = command(&mut back, CommandKind::Subscribe(recover)).await else {
            panic!("subscribe")
        };
        assert!(r.recovered, "{encoding:?}");
        let data: Vec<Payload> = r.publications.iter().map(|p| p.data.clone()).collect();
        assert_eq!(data, (0..3).map(|n| Payload::binary(vec![n, 255])).collect::<Vec<_>>(), "{encoding:?}");
    }
    server.finish().await;
}

#[tokio::test]
async fn malformed_protobuf_closes_the_connection_with_bad_request() {
    let server = TestServer::start(config()).await;
    let connect = token(json!({"sub": "42"}));
    let mut c = Client::connect_encoded(&server, Some(&connect), Encoding::Protobuf).await.expect("connect");
    // A length prefix promising more bytes than the frame holds.
    c.send_raw(vec![0xff, 0xff, 0xff, 0x0f, 0x08, 0x01]).await;
    let (code, reason) = c.closed_lossy().await.expect("a close frame");
    assert_eq!(code, codes::disconnect::BAD_REQUEST, "{reason}");
    // The server carries on.
    let mut ok = Client::connect_encoded(&server, Some(&connect), Encoding::Protobuf).await.expect("connect");
    assert!(ok.command(CommandKind::Ping(PingRequest {})).await.is_ok());
    server.finish().await;
}

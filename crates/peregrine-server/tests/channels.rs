//! Channels over real sockets: many clients on many channels, broadcast, presence with join
//! and leave, namespace rules.

mod common;

use common::{Client, TestServer};
use peregrine_wire::codes::error as err;
use peregrine_wire::*;
use serde_json::json;

#[tokio::test]
async fn many_clients_on_many_channels_each_get_exactly_their_channels() {
    let server = TestServer::dev().await;
    let channels: Vec<String> = (0..8).map(|i| format!("room:{i}")).collect();
    let mut clients = Vec::new();
    for i in 0..40 {
        let mut c = Client::connect(&server).await;
        // Client i is in rooms i % 8 and (i + 3) % 8.
        for ch in [&channels[i % 8], &channels[(i + 3) % 8]] {
            c.sub(ch).await;
        }
        clients.push(c);
    }
    let mut publisher = Client::connect(&server).await;
    for round in 0..5 {
        for ch in &channels {
            publisher.publish(ch, json!({ "round": round, "channel": ch })).await.unwrap();
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mine = [channels[i % 8].clone(), channels[(i + 3) % 8].clone()];
        let mut got: Vec<(String, u64)> = Vec::new();
        for _ in 0..10 {
            let (ch, p) = c.publication().await;
            assert!(mine.contains(&ch), "client {i} got a publication of {ch}");
            assert_eq!(p.data_json::<serde_json::Value>().unwrap()["channel"], json!(ch));
            got.push((ch, p.offset));
        }
        for ch in &mine {
            let offsets: Vec<u64> = got.iter().filter(|(c, _)| c == ch).map(|(_, o)| *o).collect();
            assert_eq!(offsets, vec![1, 2, 3, 4, 5], "client {i}, channel {ch}: in order, once each");
        }
    }
    server.finish().await;
}

#[tokio::test]
async fn api_broadcast_reaches_every_channel_once() {
    let server = TestServer::dev().await;
    let mut a = Client::connect(&server).await;
    let mut b = Client::connect(&server).await;
    a.sub("news:a").await;
    b.sub("news:b").await;
    let (status, body) =
        server.api("/api/broadcast", json!({"channels": ["news:a", "news:b"], "data": {"n": 1}}), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 2);
    assert_eq!(a.publication().await.0, "news:a");
    assert_eq!(b.publication().await.0, "news:b");
    server.finish().await;
}

#[tokio::test]
async fn presence_lists_subscribers_and_join_leave_events_flow() {
    let server = TestServer::dev().await;
    let mut alice = Client::connect(&server).await;
    alice.sub("chat:lobby").await;
    assert!(matches!(alice.push().await, Push::Join { .. }), "own join");

    let mut bob = Client::connect(&server).await;
    bob.sub("chat:lobby").await;
    match alice.push().await {
        Push::Join { channel, info } => {
            assert_eq!(channel, "chat:lobby");
            assert_eq!(info.client, bob.client_id);
        }
        other => panic!("expected bob's join, got {other:?}"),
    }
    let Ok(ReplyKind::Presence(p)) =
        alice.command(CommandKind::Presence(PresenceRequest { channel: "chat:lobby".into() })).await
    else {
        panic!("presence failed")
    };
    let mut present: Vec<_> = p.clients.keys().cloned().collect();
    present.sort();
    let mut expected = vec![alice.client_id.clone(), bob.client_id.clone()];
    expected.sort();
    assert_eq!(present, expected);

    // Bob's connection ends: presence is cleaned up and alice sees him leave.
    let bob_id = bob.client_id.clone();
    bob.cut();
    match alice.push().await {
        Push::Leave { info, .. } => assert_eq!(info.client, bob_id),
        other => panic!("expected bob's leave, got {other:?}"),
    }
    let (status, body) = server.api("/api/presence", json!({"channel": "chat:lobby"}), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["clients"].as_object().unwrap().len(), 1, "{body}");
    server.finish().await;
}

#[tokio::test]
async fn unknown_namespace_and_forbidden_publish_are_refused_with_codes() {
    let mut config = peregrine_server::config::Config::default();
    config.token.allow_anonymous = true;
    config.channels.named.insert("feed".into(), Default::default());
    let server = TestServer::start(config).await;
    let mut c = Client::connect(&server).await;
    let e =
        c.subscribe(SubscribeRequest { channel: "nope:1".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code, err::UNKNOWN_CHANNEL, "{}", e.message);
    c.sub("feed:1").await;
    let e = c.publish("feed:1", json!(1)).await.unwrap_err();
    assert_eq!(e.code, err::PERMISSION_DENIED);
    assert!(e.message.contains("server API"), "{}", e.message);
    server.finish().await;
}

#[tokio::test]
async fn msgpack_clients_get_the_same_publications() {
    let server = TestServer::dev().await;
    let mut m = Client::open(&server, Encoding::MsgPack).await;
    m.command(CommandKind::Connect(Default::default())).await.unwrap();
    m.sub("chat:x").await;
    let mut j = Client::connect(&server).await;
    j.publish("chat:x", json!({"hello": "msgpack"})).await.unwrap();
    let (_, p) = m.publication().await;
    assert_eq!(p.data, json!({"hello": "msgpack"}).into());
    server.finish().await;
}

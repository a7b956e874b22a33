//! Payloads over real sockets: what a publisher sends is what every subscriber gets. JSON
//! byte for byte (key order, big integers, number spelling) live, in history, in recovery
//! and through the HTTP API; bytes as the same bytes to MessagePack subscribers and as
//! base64 with `binary: true` to JSON ones; bad payloads refused with their error.

mod common;

use common::{Client, TestServer};
use peregrine_server::config::Config;
use peregrine_wire::*;
use serde_json::json;

/// The issue's example: keys out of order, an integer beyond a double, a float spelled `1.10`.
const EXACT: &str = r#"{"b":1,"a":2,"n":12345678901234567890123,"f":1.10}"#;

async fn client_in(server: &TestServer, encoding: Encoding) -> Client {
    let mut c = Client::open(server, encoding).await;
    c.command(CommandKind::Connect(Default::default())).await.expect("connect");
    c
}

async fn msgpack_client(server: &TestServer) -> Client {
    client_in(server, Encoding::MsgPack).await
}

async fn history(c: &mut Client, channel: &str) -> HistoryResult {
    let req = HistoryRequest { channel: channel.into(), ..Default::default() };
    match c.command(CommandKind::History(req)).await {
        Ok(ReplyKind::History(h)) => h,
        other => panic!("history: {other:?}"),
    }
}

#[tokio::test]
async fn json_payloads_arrive_byte_for_byte_live_in_history_in_recovery_and_over_the_api() {
    let server = TestServer::dev().await;
    let mut live = Client::connect(&server).await;
    live.sub("t:1").await;
    let mut binary_live = msgpack_client(&server).await;
    binary_live.sub("t:1").await;

    // Published once through the HTTP API and once over WebSocket, as raw text.
    let (status, answer) =
        server.api_text("/api/publish", &format!(r#"{{"channel":"t:1","data":{EXACT}}}"#)).await;
    assert_eq!(status, 200, "{answer}");
    let mut publisher = Client::connect(&server).await;
    publisher.send_raw(format!(r#"{{"id":1,"publish":{{"channel":"t:1","data":{EXACT}}}}}"#)).await;
    assert!(publisher.reply(1).await.is_ok());

    for _ in 0..2 {
        let (_, p) = live.publication().await;
        assert_eq!(p.data.as_json_text(), Some(EXACT), "live, JSON subscriber");
        assert!(live.last_text.as_deref().unwrap().contains(&format!(r#""data":{EXACT}"#)));
        let (_, p) = binary_live.publication().await;
        assert_eq!((p.data_bytes(), p.data.is_binary()), (EXACT.as_bytes(), false), "live, MessagePack");
    }
    let h = history(&mut publisher, "t:1").await;
    assert!(h.publications.iter().all(|p| p.data.as_json_text() == Some(EXACT)), "history: {h:?}");
    let (status, body) = server.api_text("/api/history", r#"{"channel":"t:1"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(body.matches(&format!(r#""data":{EXACT}"#)).count(), 2, "API history: {body}");

    let mut back = Client::connect(&server).await;
    let since = Some(StreamPosition { epoch: h.epoch.clone(), offset: 0 });
    let r = back.subscribe(SubscribeRequest {
        channel: "t:1".into(),
        since,
        recover: true,
        ..Default::default()
    });
    let r = r.await.unwrap();
    assert_eq!(r.publications.len(), 2);
    assert!(r.publications.iter().all(|p| p.data.as_json_text() == Some(EXACT)), "recovery");
    server.finish().await;
}

#[tokio::test]
async fn binary_payloads_arrive_as_the_same_bytes_and_as_base64_to_json_subscribers() {
    let mut config = Config::development();
    config.client.max_message_size = 2 << 20;
    config.client.queue_max_bytes = 16 << 20;
    let server = TestServer::start(config).await;
    let mut binary_subs = Vec::new();
    for encoding in [Encoding::MsgPack, Encoding::Protobuf] {
        let mut c = client_in(&server, encoding).await;
        c.sub("bin:1").await;
        binary_subs.push(c);
    }
    let mut json_sub = Client::connect(&server).await;
    json_sub.sub("bin:1").await;

    let every_byte: Vec<u8> = (0..=255).collect();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let one_mib: Vec<u8> = (0..1 << 20)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    for encoding in [Encoding::MsgPack, Encoding::Protobuf] {
        let mut publisher = client_in(&server, encoding).await;
        for bytes in [every_byte.clone(), Vec::new(), one_mib.clone()] {
            publisher.publish("bin:1", Payload::binary(bytes.clone())).await.expect("publish bytes");
            for sub in &mut binary_subs {
                let (_, p) = sub.publication().await;
                let to = sub.encoding;
                assert!(
                    p.data.is_binary() && p.data_bytes() == bytes,
                    "{encoding:?} -> {to:?}: {} bytes",
                    bytes.len()
                );
            }
            let (_, p) = json_sub.publication().await;
            assert!(
                p.data.is_binary() && p.data_bytes() == bytes,
                "{encoding:?} -> JSON: {} bytes",
                bytes.len()
            );
            let text = json_sub.last_text.clone().unwrap();
            assert!(text.contains(r#""binary":true"#), "the JSON form says it is bytes");
            if bytes.len() == 256 {
                assert!(text.contains(
                    r#""data":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEy"#
                ));
            }
        }
    }
    let mut binary_sub = binary_subs.remove(0);
    // A JSON client publishes bytes as base64 with `binary: true`.
    let mut json_publisher = Client::connect(&server).await;
    json_publisher
        .send_raw(r#"{"id":1,"publish":{"channel":"bin:1","data":"AAH+/w==","binary":true}}"#)
        .await;
    assert!(json_publisher.reply(1).await.is_ok());
    let (_, p) = binary_sub.publication().await;
    assert_eq!((p.data_bytes(), p.data.is_binary()), (&[0u8, 1, 254, 255][..], true));
    server.finish().await;
}

#[tokio::test]
async fn bad_payloads_get_their_error_and_the_server_carries_on() {
    let server = TestServer::dev().await;
    // HTTP API: 400 with code 107 and what is wrong.
    for (body, why) in [
        (r#"{"channel":"t:1","data":{"a":}}"#, "invalid JSON body"),
        (r#"{"channel":"t:1","data":12,"binary":true}"#, "base64 string"),
        (r#"{"channel":"t:1","data":"!!","binary":true}"#, "base64"),
    ] {
        let (status, answer) = server.api_text("/api/publish", body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.contains(r#""code":107"#) && answer.contains(why), "{body}: {answer}");
    }
    let too_deep = format!(r#"{{"channel":"t:1","data":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
    let (status, answer) = server.api_text("/api/publish", &too_deep).await;
    assert_eq!(status, 400, "{answer}");
    // Just over the limit: the server reads nearly all of it, so the write does not fail.
    let too_big = format!(r#"{{"channel":"t:1","data":"{}"}}"#, "x".repeat(2 << 20));
    let (status, answer) = server.api_text("/api/publish", &too_big).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains(r#""code":106"#), "{answer}");
    // MessagePack: bytes that are not JSON, without `binary: true`: 3501 bad request.
    let mut c = msgpack_client(&server).await;
    // [{"id": 2, "publish": {"channel": "t:1", "data": bin("{x")}}]
    let mut frame = vec![0x91, 0x82, 0xa2, b'i', b'd', 0x02, 0xa7];
    frame.extend_from_slice(b"publish");
    frame.extend_from_slice(&[0x82, 0xa7]);
    frame.extend_from_slice(b"channel");
    frame.extend_from_slice(&[0xa3, b't', b':', b'1', 0xa4, b'd', b'a', b't', b'a', 0xc4, 0x02, b'{', b'x']);
    c.send_raw(frame).await;
    let (code, reason) = c.closed_lossy().await.expect("a close frame");
    assert_eq!(code, codes::disconnect::BAD_REQUEST, "{reason}");
    // The server carries on.
    let mut ok = Client::connect(&server).await;
    ok.publish("t:1", json!({"fine": true})).await.unwrap();
    server.finish().await;
}

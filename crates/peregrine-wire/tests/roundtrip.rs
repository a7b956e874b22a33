//! Every command, reply and push round-trips through both encodings, alone and batched.

use std::collections::BTreeMap;

use peregrine_wire::*;
use serde_json::json;

const ENCODINGS: [Encoding; 3] = Encoding::ALL;

fn pos(epoch: &str, offset: u64) -> StreamPosition {
    StreamPosition { epoch: epoch.into(), offset }
}

fn info(user: &str, client: &str) -> ClientInfo {
    ClientInfo {
        user: user.into(),
        client: client.into(),
        conn_info: Some(json!({"name": "ann"})),
        chan_info: None,
    }
}

fn publication(offset: u64) -> Publication {
    Publication {
        offset,
        epoch: Some("e1".into()),
        data: json!({"text": "hello", "n": offset, "list": [1, -2, 3.5, null, true]}).into(),
        info: Some(info("u1", "c1")),
        tags: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
    }
}

fn all_commands() -> Vec<Command> {
    let subs = BTreeMap::from([
        (
            "chat:1".to_string(),
            SubscribeOptions { since: Some(pos("e1", 10)), recover: true, ..Default::default() },
        ),
        (
            "private:2".to_string(),
            SubscribeOptions { token: Some("st".into()), join_leave: Some(false), ..Default::default() },
        ),
    ]);
    let kinds = vec![
        CommandKind::Connect(ConnectRequest::default()),
        CommandKind::Connect(ConnectRequest {
            token: Some("jwt".into()),
            name: Some("rust".into()),
            version: Some(PROTOCOL_VERSION),
            subs,
        }),
        CommandKind::Subscribe(SubscribeRequest { channel: "chat:1".into(), ..Default::default() }),
        CommandKind::Subscribe(SubscribeRequest {
            channel: "chat:1".into(),
            token: Some("sub-token".into()),
            since: Some(pos("e1", u64::MAX)),
            recover: true,
            join_leave: Some(true),
        }),
        CommandKind::Unsubscribe(UnsubscribeRequest { channel: "chat:1".into() }),
        CommandKind::Publish(PublishRequest {
            channel: "c".into(),
            data: json!("plain").into(),
            idempotency_key: None,
        }),
        CommandKind::Publish(PublishRequest {
            channel: "c".into(),
            data: json!({"nested": {"a": [1, 2, {"b": null}]}, "unicode": "é✓\n"}).into(),
            idempotency_key: Some("k-1".into()),
        }),
        CommandKind::Presence(PresenceRequest { channel: "c".into() }),
        CommandKind::History(HistoryRequest { channel: "c".into(), ..Default::default() }),
        CommandKind::History(HistoryRequest {
            channel: "c".into(),
            limit: Some(100),
            since: Some(pos("e2", 5)),
            reverse: true,
        }),
        CommandKind::Refresh(RefreshRequest { token: "new".into() }),
        CommandKind::SubRefresh(SubRefreshRequest { channel: "private:1".into(), token: "new".into() }),
        CommandKind::Ping(PingRequest {}),
    ];
    kinds.into_iter().enumerate().map(|(i, kind)| Command { id: i as u64 + 1, kind }).collect()
}

fn all_replies() -> Vec<Reply> {
    let sub = SubscribeResult {
        epoch: "e1".into(),
        offset: 12,
        recovered: false,
        publications: vec![publication(11), publication(12)],
        gap: Some(Gap { from: 3, to: 10 }),
        positioned: true,
        more: true,
        expires: Some(1_900_000_000),
    };
    let kinds = vec![
        ReplyKind::Connect(ConnectResult {
            client_id: "c1".into(),
            version: PROTOCOL_VERSION,
            expires: Some(1_900_000_000),
            ping_interval_ms: 25_000,
            subs: BTreeMap::from([("chat:1".to_string(), sub.clone())]),
        }),
        ReplyKind::Connect(ConnectResult { client_id: "c2".into(), version: 1, ..Default::default() }),
        ReplyKind::Subscribe(SubscribeResult::default()),
        ReplyKind::Subscribe(sub),
        ReplyKind::Subscribe(SubscribeResult {
            epoch: "e".into(),
            offset: 2,
            recovered: true,
            publications: vec![publication(2)],
            gap: None,
            positioned: true,
            ..Default::default()
        }),
        ReplyKind::Unsubscribe(UnsubscribeResult {}),
        ReplyKind::Publish(PublishResult::default()),
        ReplyKind::Publish(PublishResult { offset: Some(7), epoch: Some("e".into()), duplicate: true }),
        ReplyKind::Presence(PresenceResult::default()),
        ReplyKind::Presence(PresenceResult {
            clients: BTreeMap::from([
                ("c1".to_string(), info("u1", "c1")),
                ("c2".to_string(), info("", "c2")),
            ]),
        }),
        ReplyKind::History(HistoryResult { publications: vec![], epoch: "e".into(), offset: 0, more: false }),
        ReplyKind::History(HistoryResult {
            publications: vec![publication(1), publication(2)],
            epoch: "e".into(),
            offset: 2,
            more: true,
        }),
        ReplyKind::SubRefresh(SubRefreshResult { expires: Some(9) }),
        ReplyKind::SubRefresh(SubRefreshResult::default()),
        ReplyKind::Refresh(RefreshResult { expires: Some(5) }),
        ReplyKind::Refresh(RefreshResult::default()),
        ReplyKind::Ping(PingResult {}),
    ];
    let mut replies: Vec<Reply> =
        kinds.into_iter().enumerate().map(|(i, k)| Reply::ok(i as u64 + 1, k)).collect();
    replies.push(Reply::error(
        100,
        ReplyError { code: codes::error::INTERNAL, message: "boom".into(), temporary: true },
    ));
    replies.push(Reply::error(
        101,
        ReplyError { code: codes::error::PERMISSION_DENIED, message: "no".into(), temporary: false },
    ));
    replies
}

fn all_pushes() -> Vec<Push> {
    vec![
        Push::Publication { channel: "chat:1".into(), publication: publication(5) },
        Push::Publication {
            channel: "chat:1".into(),
            publication: Publication { data: json!(null).into(), ..Default::default() },
        },
        Push::Join { channel: "chat:1".into(), info: info("u", "c") },
        Push::Leave { channel: "chat:1".into(), info: ClientInfo::default() },
        Push::Unsubscribe { channel: "c".into(), code: codes::unsubscribe::SERVER, reason: "kicked".into() },
        Push::disconnect(codes::disconnect::SLOW, "slow"),
        Push::disconnect(codes::disconnect::INVALID_TOKEN, "invalid token"),
        Push::Message(DirectMessage { data: json!({"hello": [1, 2]}).into() }),
    ]
}

fn server_messages() -> Vec<ServerMessage> {
    let mut out: Vec<ServerMessage> = all_replies().into_iter().map(Into::into).collect();
    out.extend(all_pushes().into_iter().map(ServerMessage::from));
    out
}

#[test]
fn every_command_round_trips_alone() {
    for enc in ENCODINGS {
        for cmd in all_commands() {
            let frame = encode_commands(std::slice::from_ref(&cmd), enc);
            assert_eq!(decode_commands(&frame, enc).unwrap(), vec![cmd], "{enc:?}");
        }
    }
}

#[test]
fn every_server_message_round_trips_alone() {
    for enc in ENCODINGS {
        for msg in server_messages() {
            let frame = encode_server_messages(std::slice::from_ref(&msg), enc);
            assert_eq!(decode_server_messages(&frame, enc).unwrap(), vec![msg], "{enc:?}");
        }
    }
}

#[test]
fn batched_frames_round_trip_in_order() {
    for enc in ENCODINGS {
        let cmds = all_commands();
        assert_eq!(decode_commands(&encode_commands(&cmds, enc), enc).unwrap(), cmds);
        let msgs = server_messages();
        assert_eq!(decode_server_messages(&encode_server_messages(&msgs, enc), enc).unwrap(), msgs);
    }
}

#[test]
fn json_batch_is_one_object_per_line() {
    let cmds = all_commands();
    let frame = encode_commands(&cmds, Encoding::Json);
    let text = std::str::from_utf8(&frame).unwrap();
    assert_eq!(text.lines().count(), cmds.len());
    assert!(!text.ends_with('\n'));
    // Blank lines, CRLF and a trailing newline are tolerated.
    let loose = format!("\n{}\r\n\n", text.replace('\n', "\r\n"));
    assert_eq!(decode_commands(loose.as_bytes(), Encoding::Json).unwrap(), cmds);
}

#[test]
fn json_shapes_are_as_documented() {
    let reply = Reply::ok(
        2,
        ReplyKind::Subscribe(SubscribeResult {
            epoch: "e".into(),
            offset: 4,
            gap: Some(Gap { from: 1, to: 2 }),
            positioned: true,
            ..Default::default()
        }),
    );
    assert_eq!(
        serde_json::to_string(&reply).unwrap(),
        r#"{"id":2,"subscribe":{"epoch":"e","offset":4,"gap":{"from":1,"to":2},"positioned":true}}"#
    );
    let push = ServerMessage::Push(Push::Join { channel: "c".into(), info: ClientInfo::default() });
    assert_eq!(
        serde_json::to_string(&push).unwrap(),
        r#"{"push":{"join":{"channel":"c","info":{"user":"","client":""}}}}"#
    );
    let cmd: Command = serde_json::from_str(
        r#"{"id":9,"subscribe":{"channel":"c","since":{"epoch":"e","offset":3},"recover":true}}"#,
    )
    .unwrap();
    let CommandKind::Subscribe(s) = cmd.kind else { panic!("not a subscribe") };
    assert_eq!(s.since, Some(pos("e", 3)));
    assert!(s.recover);
}

#[test]
fn msgpack_messages_are_maps_with_json_keys() {
    let frame =
        encode_commands(&[Command { id: 1, kind: CommandKind::Ping(PingRequest {}) }], Encoding::MsgPack);
    // fixarray(1), fixmap(2), "id", 1, "ping", fixmap(0)
    assert_eq!(frame, [0x91, 0x82, 0xa2, b'i', b'd', 0x01, 0xa4, b'p', b'i', b'n', b'g', 0x80]);
    // Payloads are bin: a JSON payload's text, as published.
    let message = Push::Message(DirectMessage { data: json!(1).into() });
    let push = encode_server_messages(&[message.into()], Encoding::MsgPack);
    assert!(push.ends_with(&[0xa4, b'd', b'a', b't', b'a', 0xc4, 0x01, b'1']), "{push:x?}");
    let binary = Push::Message(DirectMessage { data: Payload::binary(vec![0xff]) });
    let push = encode_server_messages(&[binary.clone().into()], Encoding::MsgPack);
    assert!(push.ends_with(&[0xc4, 0x01, 0xff, 0xa6, b'b', b'i', b'n', b'a', b'r', b'y', 0xc3]), "{push:x?}");
    assert_eq!(decode_server_messages(&push, Encoding::MsgPack).unwrap(), vec![binary.into()]);
}

#[test]
fn reply_and_push_are_told_apart() {
    let msgs = decode_server_messages(
        b"{\"id\":1,\"publish\":{\"offset\":3}}\n{\"push\":{\"leave\":{\"channel\":\"c\",\"info\":{\"user\":\"u\",\"client\":\"c\"}}}}",
        Encoding::Json,
    )
    .unwrap();
    assert!(matches!(&msgs[0], ServerMessage::Reply(Reply { id: 1, result: Ok(ReplyKind::Publish(_)) })));
    assert!(matches!(&msgs[1], ServerMessage::Push(Push::Leave { .. })));
}

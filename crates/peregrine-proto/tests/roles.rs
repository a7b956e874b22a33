//! Client and server roles (RFC 6455 §5.1, §5.3): who masks, who must not,
//! and what each side does about a peer that gets it wrong.

mod support;

use bytes::Bytes;
use peregrine_proto::{CloseCode, Connection, DataKind, Message, ProtocolError, Role};
use support::*;

#[test]
fn role_is_reported() {
    assert_eq!(Connection::new(Role::Client).role(), Role::Client);
    assert_eq!(Connection::new(Role::Server).role(), Role::Server);
}

#[test]
fn a_server_fails_an_unmasked_client_frame_with_1002() {
    for opcode in [TEXT, BINARY, PING, PONG, CLOSE] {
        let mut server = Connection::new(Role::Server);
        let frame = server_frame(opcode, true, 0, b"");
        assert_fails_with(&mut server, &frame, ProtocolError::UnmaskedFrame, 1002);
    }
}

#[test]
fn a_server_fails_an_unmasked_continuation_with_1002() {
    let mut server = Connection::new(Role::Server);
    assert!(feed(&mut server, &client_frame(TEXT, false, 0, b"masked")).is_empty());
    assert_fails_with(&mut server, &server_frame(CONT, true, 0, b"bare"), ProtocolError::UnmaskedFrame, 1002);
}

#[test]
fn a_client_fails_a_masked_server_frame_with_1002() {
    for opcode in [TEXT, BINARY, PING, PONG, CLOSE] {
        let mut client = Connection::new(Role::Client);
        let frame = client_frame(opcode, true, 0, b"");
        assert_fails_with(&mut client, &frame, ProtocolError::MaskedFrame, 1002);
    }
}

#[test]
fn a_masked_frame_with_an_all_zero_key_is_still_masked() {
    // The mask bit is what counts, not whether the key changes the bytes.
    let mut client = Connection::new(Role::Client);
    let frame = raw_frame(true, 0, TEXT, Some([0; 4]), b"zero");
    assert_fails_with(&mut client, &frame, ProtocolError::MaskedFrame, 1002);

    let mut server = Connection::new(Role::Server);
    assert_eq!(feed(&mut server, &raw_frame(true, 0, TEXT, Some([0; 4]), b"zero")), [text_event("zero")]);
}

#[test]
fn a_server_unmasks_with_any_key_at_every_offset() {
    let payload: Vec<u8> = (0..=255).collect();
    for key in [[1, 2, 3, 4], [0xff, 0, 0xff, 0], [0x80, 0x40, 0x20, 0x10], KEY] {
        for len in [0, 1, 2, 3, 4, 5, 15, 16, 17, 31, 33, 64, 255, 256] {
            let mut server = Connection::new(Role::Server);
            let frame = raw_frame(true, 0, BINARY, Some(key), &payload[..len]);
            assert_eq!(feed(&mut server, &frame), [binary_event(&payload[..len])], "key {key:?} len {len}");
            // And piecewise, so the unmasking offset carries across reads.
            let mut server = Connection::new(Role::Server);
            assert_eq!(
                feed_bytewise(&mut server, &frame),
                [binary_event(&payload[..len])],
                "bytewise {key:?} {len}"
            );
        }
    }
}

// ---- what we send -----------------------------------------------------------------

/// Sends one of everything.
fn send_everything(conn: &mut Connection) -> Vec<(u8, bool, Vec<u8>)> {
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 249) as u8).collect();
    conn.send(Message::text("text")).unwrap();
    conn.send(Message::binary(vec![0u8; 17])).unwrap();
    conn.send(Message::Binary(Bytes::from(big.clone()))).unwrap();
    conn.send(Message::Ping(Bytes::from_static(b"ping"))).unwrap();
    conn.send(Message::Pong(Bytes::from_static(b""))).unwrap();
    conn.send_fragment(DataKind::Text, Bytes::from_static(b"fr"), false).unwrap();
    conn.send_fragment(DataKind::Text, Bytes::from_static(b"ag"), true).unwrap();
    conn.close(CloseCode::NORMAL, "bye").unwrap();
    vec![
        (TEXT, true, b"text".to_vec()),
        (BINARY, true, vec![0; 17]),
        (BINARY, true, big),
        (PING, true, b"ping".to_vec()),
        (PONG, true, vec![]),
        (TEXT, false, b"fr".to_vec()),
        (CONT, true, b"ag".to_vec()),
        (CLOSE, true, b"\x03\xe8bye".to_vec()),
    ]
}

#[test]
fn a_client_masks_every_frame_it_sends() {
    let mut client = Connection::new(Role::Client);
    let expected = send_everything(&mut client);
    let raw = take_output(&mut client);
    let frames = parse_frames(&raw);
    let mut keys = Vec::new();
    for (frame, (opcode, fin, payload)) in frames.iter().zip(&expected) {
        let key = frame.mask.expect("client frames carry a mask");
        keys.push(key);
        assert_eq!((frame.opcode, frame.fin), (*opcode, *fin));
        // parse_frames unmasked it: the plaintext is what we sent.
        assert_eq!(&frame.payload, payload, "opcode {opcode}");
    }
    assert_eq!(frames.len(), expected.len());
    // The key in the header unmasks the wire bytes; a non-zero key changed them.
    let text_on_wire = &raw[6..10];
    assert_eq!(xor_mask(text_on_wire, keys[0]), b"text");
    if keys[0] != [0; 4] {
        assert_ne!(text_on_wire, b"text", "the payload went out in plaintext");
    }
    keys.sort_unstable();
    keys.dedup();
    assert!(keys.len() > 1, "every frame used the same masking key: {keys:?}");
}

#[test]
fn a_client_masks_pongs_and_close_replies_too() {
    let mut client = Connection::new(Role::Client);
    feed(&mut client, &ping_to(Role::Client, b"auto"));
    let pong = parse_frames(&take_output(&mut client)).remove(0);
    assert!(pong.mask.is_some());
    assert_eq!(pong.payload, b"auto");
    feed(&mut client, &close_to(Role::Client, 1000, b""));
    let close = parse_frames(&take_output(&mut client)).remove(0);
    assert!(close.mask.is_some());
    assert_eq!(close.close_code(), Some(1000));
}

#[test]
fn a_client_masks_the_close_frame_of_a_failure() {
    let mut client = Connection::new(Role::Client);
    client.receive(&client_frame(TEXT, true, 0, b"masked by the server"));
    assert!(matches!(client.next_event(), Some(Err(ProtocolError::MaskedFrame))));
    let close = parse_frames(&take_output(&mut client)).remove(0);
    assert!(close.mask.is_some());
    assert_eq!(close.close_code(), Some(1002));
}

#[test]
fn a_server_never_masks() {
    let mut server = Connection::new(Role::Server);
    let expected = send_everything(&mut server);
    let raw = take_output(&mut server);
    assert_eq!(&raw[..6], b"\x81\x04text", "no mask bit, no key");
    let frames = parse_frames(&raw);
    assert_eq!(frames.len(), expected.len());
    for (frame, (opcode, fin, payload)) in frames.iter().zip(&expected) {
        assert_eq!(frame.mask, None);
        assert_eq!((frame.opcode, frame.fin, &frame.payload), (*opcode, *fin, payload));
    }
    // Automatic replies too.
    let mut server = Connection::new(Role::Server);
    feed(&mut server, &ping_to(Role::Server, b"auto"));
    assert_eq!(take_output(&mut server), b"\x8a\x04auto");
    feed(&mut server, &close_to(Role::Server, 1000, b""));
    assert_eq!(take_output(&mut server), b"\x88\x02\x03\xe8");
}

#[test]
fn what_one_role_sends_the_other_decodes() {
    for role in ROLES {
        let mut sender = Connection::new(role);
        let mut receiver = Connection::new(peer_of(role));
        sender.send(Message::text("κόσμε")).unwrap();
        sender.send(Message::binary(vec![7; 5000])).unwrap();
        sender.send(Message::Ping(Bytes::from_static(b"p"))).unwrap();
        assert_eq!(
            feed(&mut receiver, &take_output(&mut sender)),
            [text_event("κόσμε"), binary_event(&[7; 5000]), ping_event(b"p")]
        );
    }
}

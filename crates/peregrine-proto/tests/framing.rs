//! Frame decoding and encoding (RFC 6455 §5.2): the examples of §5.7,
//! length encodings, reserved opcodes and bits, batching and arbitrary splits.

mod support;

use bytes::Bytes;
use peregrine_proto::{Connection, Event, Message, ProtocolError, Role};
use support::*;

// ---- RFC 6455 §5.7 examples -------------------------------------------------------

#[test]
fn rfc_single_frame_unmasked_text_reaches_a_client() {
    let mut client = Connection::new(Role::Client);
    let events = feed(&mut client, &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    assert_eq!(events, [text_event("Hello")]);
    assert_nothing_sent(&mut client);
}

#[test]
fn rfc_single_frame_masked_text_reaches_a_server() {
    let mut server = Connection::new(Role::Server);
    let events = feed(&mut server, &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    assert_eq!(events, [text_event("Hello")]);
    assert_nothing_sent(&mut server);
}

#[test]
fn rfc_fragmented_unmasked_text_reaches_a_client() {
    let mut client = Connection::new(Role::Client);
    let events = feed(&mut client, &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
    assert_eq!(events, [text_event("Hello")]);
}

#[test]
fn rfc_unmasked_ping_and_masked_pong() {
    let mut client = Connection::new(Role::Client);
    assert_eq!(feed(&mut client, &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]), [ping_event(b"Hello")]);
    let mut server = Connection::new(Role::Server);
    let pong = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    assert_eq!(feed(&mut server, &pong), [pong_event(b"Hello")]);
}

#[test]
fn rfc_256_byte_binary_uses_the_16_bit_length() {
    let payload: Vec<u8> = (0..=255).collect();
    let mut bytes = vec![0x82, 0x7e, 0x01, 0x00];
    bytes.extend_from_slice(&payload);
    let mut client = Connection::new(Role::Client);
    assert_eq!(feed(&mut client, &bytes), [binary_event(&payload)]);
}

#[test]
fn rfc_64_kib_binary_uses_the_64_bit_length() {
    let payload: Vec<u8> = (0..65536u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut bytes = vec![0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
    bytes.extend_from_slice(&payload);
    let mut client = Connection::new(Role::Client);
    assert_eq!(feed(&mut client, &bytes), [binary_event(&payload)]);
}

// ---- lengths -------------------------------------------------------------------

#[test]
fn every_length_encoding_boundary_decodes_for_both_roles() {
    for role in ROLES {
        for len in [0, 1, 125, 126, 127, 0xffff, 0x10000, 0x10001] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut conn = Connection::new(role);
            assert_eq!(
                feed(&mut conn, &binary_to(role, &payload)),
                [binary_event(&payload)],
                "{role:?} len {len}"
            );
        }
    }
}

#[test]
fn non_minimal_length_encodings_are_accepted() {
    // RFC 6455 asks senders for the minimal encoding; receivers in practice
    // (and Autobahn) accept the longer forms.
    let mut client = Connection::new(Role::Client);
    let mut bytes = vec![0x82, 126, 0, 3, 1, 2, 3];
    bytes.extend_from_slice(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0, 2, 4, 5]);
    assert_eq!(feed(&mut client, &bytes), [binary_event(&[1, 2, 3]), binary_event(&[4, 5])]);
}

#[test]
fn a_64_bit_length_with_the_top_bit_set_fails_with_1002() {
    for role in ROLES {
        for len in [1u64 << 63, u64::MAX, (1 << 63) | 5] {
            let mut conn = Connection::new(role);
            // The header alone, without mask key or payload: the length is
            // impossible before anything else arrives.
            let mut bytes = vec![0x82, if role == Role::Server { 0xff } else { 0x7f }];
            bytes.extend_from_slice(&len.to_be_bytes());
            assert_fails_with(&mut conn, &bytes, ProtocolError::InvalidLength, 1002);
        }
    }
}

#[test]
fn a_partial_header_needs_more_bytes() {
    for role in ROLES {
        let frame = binary_to(role, &[7; 70_000]);
        let header_len = if role == Role::Server { 14 } else { 10 };
        let mut conn = Connection::new(role);
        for byte in &frame[..header_len] {
            assert_needs_more(&mut conn, std::slice::from_ref(byte));
        }
        assert_eq!(feed(&mut conn, &frame[header_len..]), [binary_event(&[7; 70_000])]);
    }
}

// ---- reserved opcodes and bits ---------------------------------------------------

#[test]
fn reserved_opcodes_fail_with_1002() {
    for role in ROLES {
        for opcode in (0x3..=0x7).chain(0xb..=0xf) {
            for fin in [true, false] {
                let mut conn = Connection::new(role);
                let frame = frame_to(role, opcode, fin, b"x");
                // The first byte alone is not enough to fail: the second is
                // needed for the header. After two bytes it must fail.
                assert_fails_with(&mut conn, &frame[..2], ProtocolError::ReservedOpcode(opcode), 1002);
            }
        }
    }
}

#[test]
fn reserved_opcode_after_valid_frames_fails_after_delivering_them() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.receive(&text_to(role, "first"));
        conn.receive(&frame_to(role, 0x5, true, b""));
        conn.receive(&text_to(role, "never"));
        assert_eq!(conn.next_event(), Some(Ok(text_event("first"))));
        assert_failed(&mut conn, ProtocolError::ReservedOpcode(5), 1002);
    }
}

#[test]
fn rsv_bits_without_an_extension_fail_with_1002() {
    for role in ROLES {
        for rsv in [RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3] {
            for opcode in [TEXT, BINARY, PING, CLOSE] {
                let mask = (role == Role::Server).then_some(KEY);
                let frame = raw_frame(true, rsv, opcode, mask, b"");
                let mut conn = Connection::new(role);
                assert_fails_with(&mut conn, &frame, ProtocolError::ReservedBits, 1002);
            }
        }
    }
}

#[test]
fn rsv_bits_on_a_continuation_fail_with_1002() {
    for role in ROLES {
        let mask = (role == Role::Server).then_some(KEY);
        let mut conn = Connection::new(role);
        assert!(feed(&mut conn, &frame_to(role, TEXT, false, b"ab")).is_empty());
        assert_fails_with(
            &mut conn,
            &raw_frame(true, RSV1, CONT, mask, b"c"),
            ProtocolError::ReservedBits,
            1002,
        );
    }
}

// ---- batching and splits -----------------------------------------------------------

/// A stream exercising every kind of frame, lengths of each encoding, masking
/// offsets, multi-byte text and fragmentation.
fn mixed_stream(role: Role) -> (Vec<u8>, Vec<Event>) {
    let big: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    let bytes = concat(&[
        text_to(role, "héllo wörld €𝄞"),
        binary_to(role, &big),
        ping_to(role, b"p1"),
        frame_to(role, TEXT, false, "κό".as_bytes()),
        pong_to(role, b""),
        frame_to(role, CONT, false, &"σμε".as_bytes()[..3]),
        frame_to(role, CONT, true, &"σμε".as_bytes()[3..]),
        binary_to(role, b""),
        text_to(role, ""),
        frame_to(role, BINARY, false, &[1, 2]),
        frame_to(role, CONT, true, &[3]),
        close_to(role, 1000, b"done"),
    ]);
    let expected = vec![
        text_event("héllo wörld €𝄞"),
        binary_event(&big),
        ping_event(b"p1"),
        pong_event(b""),
        text_event("κόσμε"),
        binary_event(b""),
        text_event(""),
        binary_event(&[1, 2, 3]),
        close_event(1000, "done"),
    ];
    (bytes, expected)
}

#[test]
fn many_frames_in_one_receive_come_out_one_per_next_event() {
    for role in ROLES {
        let (bytes, expected) = mixed_stream(role);
        let mut conn = Connection::new(role);
        conn.receive(&bytes);
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(conn.next_event().as_ref(), Some(&Ok(want.clone())), "{role:?} event {i}");
        }
        assert_eq!(conn.next_event(), None);
        // One pong for the ping, then the echo of the close.
        let sent = sent_frames(&mut conn);
        assert_eq!(sent.iter().map(|f| f.opcode).collect::<Vec<_>>(), [PONG, CLOSE]);
        assert_eq!(sent[0].payload, b"p1");
        assert_eq!(sent[1].close_code(), Some(1000));
    }
}

#[test]
fn a_stream_split_at_every_byte_boundary_decodes_the_same() {
    for role in ROLES {
        let (bytes, expected) = mixed_stream(role);
        for split in 0..=bytes.len() {
            let mut conn = Connection::new(role);
            let mut got = feed(&mut conn, &bytes[..split]);
            got.extend(feed(&mut conn, &bytes[split..]));
            assert_eq!(got, expected, "{role:?} split at {split}");
        }
    }
}

#[test]
fn a_stream_fed_byte_by_byte_decodes_the_same() {
    for role in ROLES {
        let (bytes, expected) = mixed_stream(role);
        let mut conn = Connection::new(role);
        assert_eq!(feed_bytewise(&mut conn, &bytes), expected, "{role:?}");
        let sent = sent_frames(&mut conn);
        assert_eq!(sent.iter().map(|f| f.opcode).collect::<Vec<_>>(), [PONG, CLOSE]);
    }
}

#[test]
fn bytes_appended_to_the_read_buffer_are_decoded() {
    let mut server = Connection::new(Role::Server);
    server.read_buffer().extend_from_slice(&text_to(Role::Server, "direct"));
    assert_eq!(events(&mut server), [text_event("direct")]);
}

#[test]
fn bytes_wanted_counts_what_completes_the_frame() {
    let mut client = Connection::new(Role::Client);
    assert_eq!(client.bytes_wanted(), 14);
    let frame = binary_to(Role::Client, &[9; 100]);
    assert_needs_more(&mut client, &frame[..2 + 40]);
    assert_eq!(client.bytes_wanted(), 60);
    assert_eq!(feed(&mut client, &frame[42..]), [binary_event(&[9; 100])]);
}

// ---- encoding --------------------------------------------------------------------

#[test]
fn server_sends_exact_bytes_for_each_length_encoding() {
    let mut server = Connection::new(Role::Server);
    server.send(Message::text("Hi")).unwrap();
    assert_eq!(take_output(&mut server), [0x81, 0x02, b'H', b'i']);

    for (len, head) in [
        (0usize, vec![0x82, 0]),
        (125, vec![0x82, 125]),
        (126, vec![0x82, 126, 0, 126]),
        (0xffff, vec![0x82, 126, 0xff, 0xff]),
        (0x10000, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
    ] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        server.send(Message::Binary(Bytes::from(payload.clone()))).unwrap();
        let out = take_output(&mut server);
        assert_eq!(&out[..head.len()], &head[..], "len {len}");
        assert_eq!(&out[head.len()..], &payload[..], "len {len}");
    }
}

#[test]
fn queued_messages_come_out_in_order_for_both_roles() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        let big = vec![0xab; 10_000];
        conn.send(Message::text("one")).unwrap();
        conn.send(Message::Binary(Bytes::from(big.clone()))).unwrap();
        conn.send(Message::Ping(Bytes::from_static(b"p"))).unwrap();
        conn.send(Message::text("two")).unwrap();
        let frames = sent_frames(&mut conn);
        let summary: Vec<(u8, Vec<u8>)> = frames.into_iter().map(|f| (f.opcode, f.payload)).collect();
        assert_eq!(
            summary,
            [(TEXT, b"one".to_vec()), (BINARY, big), (PING, b"p".to_vec()), (TEXT, b"two".to_vec())],
            "{role:?}"
        );
    }
}

#[test]
fn output_can_be_written_in_small_pieces() {
    use bytes::Buf;
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.send(Message::text("abc")).unwrap();
        conn.send(Message::Binary(Bytes::from(vec![5; 5000]))).unwrap();
        let total = conn.output().remaining();
        let mut written = Vec::new();
        let out = conn.output();
        while out.has_remaining() {
            let chunk = out.chunk();
            let n = chunk.len().min(7);
            written.extend_from_slice(&chunk[..n]);
            out.advance(n);
        }
        assert_eq!(written.len(), total);
        let frames = parse_frames(&written);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].payload, vec![5; 5000]);
    }
}

//! Fragmented messages (RFC 6455 §5.4): reassembly, interleaved control
//! frames, ordering violations, streaming with assembly off, and sending in
//! fragments.

mod support;

use bytes::Bytes;
use peregrine_proto::{Connection, DataKind, Message, ProtocolError, Role, SendError};
use support::*;

/// Splits `payload` into `n` fragments (some possibly empty) of a data
/// message with the given opcode.
fn fragments(role: Role, opcode: u8, payload: &[u8], n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let (start, end) = (payload.len() * i / n, payload.len() * (i + 1) / n);
        let op = if i == 0 { opcode } else { CONT };
        out.extend(frame_to(role, op, i == n - 1, &payload[start..end]));
    }
    out
}

#[test]
fn text_reassembles_from_one_to_many_fragments() {
    let text = "Fragmented κόσμε € 𝄞 text, split inside code points too";
    for role in ROLES {
        for n in 1..=text.len() {
            let mut conn = Connection::new(role);
            let bytes = fragments(role, TEXT, text.as_bytes(), n);
            assert_eq!(feed(&mut conn, &bytes), [text_event(text)], "{role:?} in {n} fragments");
            assert_nothing_sent(&mut conn);
        }
    }
}

#[test]
fn binary_reassembles_from_one_to_many_fragments() {
    let data: Vec<u8> = (0..200u32).map(|i| (i * 13 + 1) as u8).collect();
    for role in ROLES {
        for n in [1, 2, 3, 7, 50, 200, 400] {
            let mut conn = Connection::new(role);
            let bytes = fragments(role, BINARY, &data, n);
            assert_eq!(feed(&mut conn, &bytes), [binary_event(&data)], "{role:?} in {n} fragments");
        }
    }
}

#[test]
fn fragments_arriving_one_call_at_a_time_deliver_only_at_fin() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert!(feed(&mut conn, &frame_to(role, BINARY, false, b"ab")).is_empty());
        assert!(feed(&mut conn, &frame_to(role, CONT, false, b"cd")).is_empty());
        assert_eq!(feed(&mut conn, &frame_to(role, CONT, true, b"ef")), [binary_event(b"abcdef")]);
        // The next message starts afresh.
        assert_eq!(feed(&mut conn, &text_to(role, "next")), [text_event("next")]);
    }
}

#[test]
fn empty_fragments_are_allowed_anywhere() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        let bytes = concat(&[
            frame_to(role, TEXT, false, b""),
            frame_to(role, CONT, false, b"abc"),
            frame_to(role, CONT, false, b""),
            frame_to(role, CONT, true, b""),
            frame_to(role, BINARY, false, b""),
            frame_to(role, CONT, true, b""),
            frame_to(role, TEXT, false, b""),
            frame_to(role, CONT, true, b""),
        ]);
        assert_eq!(feed(&mut conn, &bytes), [text_event("abc"), binary_event(b""), text_event("")]);
    }
}

#[test]
fn control_frames_between_fragments_are_delivered_first() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        let bytes = concat(&[
            frame_to(role, TEXT, false, b"Hel"),
            ping_to(role, b"1"),
            frame_to(role, CONT, false, b"l"),
            pong_to(role, b"2"),
            ping_to(role, b"3"),
            frame_to(role, CONT, true, b"o"),
        ]);
        assert_eq!(
            feed(&mut conn, &bytes),
            [ping_event(b"1"), pong_event(b"2"), ping_event(b"3"), text_event("Hello")]
        );
        let pongs = sent_frames(&mut conn);
        assert_eq!(
            pongs.iter().map(|f| (f.opcode, f.payload.clone())).collect::<Vec<_>>(),
            [(PONG, b"1".to_vec()), (PONG, b"3".to_vec())]
        );
    }
}

#[test]
fn a_close_inside_a_fragmented_message_ends_it_unfinished() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        let bytes = concat(&[
            frame_to(role, BINARY, false, b"part"),
            close_to(role, 1001, b""),
            frame_to(role, CONT, true, b"never"),
        ]);
        assert_eq!(feed(&mut conn, &bytes), [close_event(1001, "")]);
        assert_close_sent(&mut conn, 1001);
    }
}

// ---- ordering violations ------------------------------------------------------------

#[test]
fn a_continuation_with_nothing_to_continue_fails_with_1002() {
    for role in ROLES {
        for fin in [true, false] {
            let mut conn = Connection::new(role);
            assert_fails_with(
                &mut conn,
                &frame_to(role, CONT, fin, b"orphan"),
                ProtocolError::UnexpectedContinuation,
                1002,
            );
        }
    }
}

#[test]
fn a_continuation_after_a_finished_message_fails_with_1002() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        let bytes = concat(&[frame_to(role, TEXT, false, b"a"), frame_to(role, CONT, true, b"b")]);
        assert_eq!(feed(&mut conn, &bytes), [text_event("ab")]);
        assert_fails_with(
            &mut conn,
            &frame_to(role, CONT, true, b"c"),
            ProtocolError::UnexpectedContinuation,
            1002,
        );
    }
}

#[test]
fn a_new_data_frame_inside_a_fragmented_message_fails_with_1002() {
    for role in ROLES {
        for (first, intruder) in [(TEXT, TEXT), (TEXT, BINARY), (BINARY, TEXT), (BINARY, BINARY)] {
            for fin in [true, false] {
                let mut conn = Connection::new(role);
                assert!(feed(&mut conn, &frame_to(role, first, false, b"start")).is_empty());
                assert_fails_with(
                    &mut conn,
                    &frame_to(role, intruder, fin, b"intruder"),
                    ProtocolError::ExpectedContinuation,
                    1002,
                );
            }
        }
    }
}

#[test]
fn a_fragmented_message_is_dropped_when_the_connection_fails() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert!(feed(&mut conn, &frame_to(role, BINARY, false, &[1; 1000])).is_empty());
        assert_fails_with(&mut conn, &frame_to(role, 0x3, true, b""), ProtocolError::ReservedOpcode(3), 1002);
        conn.release_idle_buffers();
        assert!(conn.buffered_capacity() < 1000, "capacity {} after failure", conn.buffered_capacity());
    }
}

// ---- assembly off -----------------------------------------------------------------

#[test]
fn without_assembly_each_frame_is_a_fragment_with_first_and_fin_flags() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.set_assemble_messages(false);
        let bytes = concat(&[
            frame_to(role, TEXT, false, "κό".as_bytes()),
            ping_to(role, b"p"),
            frame_to(role, CONT, false, b""),
            frame_to(role, CONT, true, "σμε".as_bytes()),
            binary_to(role, &[1, 2]),
            frame_to(role, BINARY, false, &[3]),
            frame_to(role, CONT, true, &[4]),
        ]);
        assert_eq!(
            feed(&mut conn, &bytes),
            [
                fragment_event(DataKind::Text, "κό".as_bytes(), true, false),
                ping_event(b"p"),
                fragment_event(DataKind::Text, b"", false, false),
                fragment_event(DataKind::Text, "σμε".as_bytes(), false, true),
                fragment_event(DataKind::Binary, &[1, 2], true, true),
                fragment_event(DataKind::Binary, &[3], true, false),
                fragment_event(DataKind::Binary, &[4], false, true),
            ],
            "{role:?}"
        );
        assert_eq!(assert_one_sent(&mut conn, PONG).payload, b"p");
    }
}

#[test]
fn without_assembly_a_code_point_may_span_fragments() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.set_assemble_messages(false);
        let euro = "€".as_bytes();
        let bytes =
            concat(&[frame_to(role, TEXT, false, &euro[..1]), frame_to(role, CONT, true, &euro[1..])]);
        assert_eq!(
            feed(&mut conn, &bytes),
            [
                fragment_event(DataKind::Text, &euro[..1], true, false),
                fragment_event(DataKind::Text, &euro[1..], false, true)
            ]
        );
    }
}

#[test]
fn without_assembly_ordering_is_still_enforced() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.set_assemble_messages(false);
        assert_fails_with(
            &mut conn,
            &frame_to(role, CONT, true, b"x"),
            ProtocolError::UnexpectedContinuation,
            1002,
        );

        let mut conn = Connection::new(role);
        conn.set_assemble_messages(false);
        assert_eq!(feed(&mut conn, &frame_to(role, TEXT, false, b"a")).len(), 1);
        assert_fails_with(&mut conn, &text_to(role, "b"), ProtocolError::ExpectedContinuation, 1002);
    }
}

// ---- sending in fragments ---------------------------------------------------------

#[test]
fn send_fragment_writes_first_opcode_then_continuations() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.send_fragment(DataKind::Text, Bytes::from_static(b"He"), false).unwrap();
        conn.send(Message::Ping(Bytes::from_static(b"mid"))).unwrap();
        conn.send_fragment(DataKind::Text, Bytes::from_static(b"ll"), false).unwrap();
        conn.send_fragment(DataKind::Text, Bytes::from_static(b"o"), true).unwrap();
        conn.send_fragment(DataKind::Binary, Bytes::from_static(&[1]), true).unwrap();
        let frames = sent_frames(&mut conn);
        let summary: Vec<(u8, bool, &[u8])> =
            frames.iter().map(|f| (f.opcode, f.fin, &f.payload[..])).collect();
        assert_eq!(
            summary,
            [
                (TEXT, false, &b"He"[..]),
                (PING, true, &b"mid"[..]),
                (CONT, false, &b"ll"[..]),
                (CONT, true, &b"o"[..]),
                (BINARY, true, &[1][..]),
            ],
            "{role:?}"
        );
    }
}

#[test]
fn fragments_sent_by_one_role_reassemble_at_the_other() {
    for role in ROLES {
        let mut sender = Connection::new(role);
        let mut receiver = Connection::new(peer_of(role));
        sender.send_fragment(DataKind::Binary, Bytes::from(vec![1; 5000]), false).unwrap();
        sender.send_fragment(DataKind::Binary, Bytes::from(vec![2; 3]), true).unwrap();
        let mut expected = vec![1; 5000];
        expected.extend([2; 3]);
        assert_eq!(feed(&mut receiver, &take_output(&mut sender)), [binary_event(&expected)]);
    }
}

#[test]
fn a_data_message_cannot_start_inside_an_unfinished_one() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.send_fragment(DataKind::Text, Bytes::from_static(b"a"), false).unwrap();
        assert_eq!(conn.send(Message::text("b")), Err(SendError::FragmentationState));
        assert_eq!(conn.send(Message::binary(vec![1])), Err(SendError::FragmentationState));
        assert_eq!(
            conn.send_fragment(DataKind::Binary, Bytes::from_static(b"c"), true),
            Err(SendError::FragmentationState)
        );
        // Only the first fragment went out; the message can still be finished.
        assert_eq!(sent_frames(&mut conn).len(), 1);
        conn.send_fragment(DataKind::Text, Bytes::from_static(b"d"), true).unwrap();
        assert_eq!(sent_frames(&mut conn)[0].opcode, CONT);
        conn.send(Message::text("e")).unwrap();
        assert_eq!(sent_frames(&mut conn)[0].opcode, TEXT);
    }
}

// ---- changing the assembly mode -------------------------------------------------

#[test]
fn enabling_assembly_mid_message_takes_effect_at_the_next_message() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.set_assemble_messages(false);
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(
            feed(&mut conn, &frame_to(role, TEXT, false, &euro[..1])),
            [fragment_event(DataKind::Text, &euro[..1], true, false)]
        );
        conn.set_assemble_messages(true);
        // The message already started as fragments must end as fragments: a
        // Text message holding only "\x82\xac" would be invalid UTF-8 inside
        // a Utf8Bytes (whose as_str trusts it without checking).
        let events = feed(&mut conn, &frame_to(role, CONT, true, &euro[1..]));
        assert_eq!(events, [fragment_event(DataKind::Text, &euro[1..], false, true)], "{role:?}");
        // The next message is assembled.
        let bytes = concat(&[frame_to(role, TEXT, false, b"a"), frame_to(role, CONT, true, b"b")]);
        assert_eq!(feed(&mut conn, &bytes), [text_event("ab")]);
    }
}

#[test]
fn disabling_assembly_mid_message_loses_no_data() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert!(feed(&mut conn, &frame_to(role, BINARY, false, b"first half ")).is_empty());
        conn.set_assemble_messages(false);
        let events = feed(&mut conn, &frame_to(role, CONT, true, b"second half"));
        // Either the message is finished as it was started (assembled)...
        let whole = [binary_event(b"first half second half")];
        // ...but never delivered as a lone tail whose head vanished.
        assert_eq!(events, whole, "{role:?}");
    }
}

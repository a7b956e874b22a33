//! UTF-8 in text messages (RFC 6455 §8.1): invalid text fails with 1007, and
//! fails fast: at the first impossible byte, across fragments and reads,
//! without waiting for the end of the frame or message (Autobahn 6.4.*).

mod support;

use peregrine_proto::{Connection, DataKind, ProtocolError, Role};
use support::*;

/// Invalid texts and the index of the first byte at which no valid UTF-8
/// can continue the prefix (for truncated sequences: the end of the text).
const INVALID: &[(&[u8], usize)] = &[
    (b"\xff", 0),
    (b"\xfe", 0),
    (b"abc\x80", 3),          // lone continuation byte
    (b"\xc0\xaf", 0),         // overlong '/', C0 can never start UTF-8
    (b"\xc1\xbf", 0),         // overlong, C1 likewise
    (b"\xe0\x80\xaf", 1),     // overlong 3-byte form
    (b"\xf0\x80\x80\xaf", 1), // overlong 4-byte form
    (b"\xed\xa0\x80", 1),     // UTF-16 surrogate half
    (b"\xed\xbf\xbf", 1),     // UTF-16 surrogate half
    (b"\xf4\x90\x80\x80", 1), // U+110000
    (b"\xf5\x80\x80\x80", 0), // lead byte beyond U+10FFFF
    (b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64", 12), // Autobahn 6.4.1
    (b"a\xc3(", 2),    // 2-byte lead followed by ASCII
    (b"\xe2\x82(", 2), // 3-byte lead, then ASCII
];

/// Invalid only because the text ends in the middle of a code point.
const TRUNCATED: &[&[u8]] = &[b"\xc3", b"ok\xe2\x82", b"\xf0\x9d\x84", b"\xce\xba\xe1"];

#[test]
fn invalid_utf8_in_a_text_frame_fails_with_1007() {
    for role in ROLES {
        for &(text, _) in INVALID.iter() {
            let mut conn = Connection::new(role);
            assert_fails_with(&mut conn, &frame_to(role, TEXT, true, text), ProtocolError::InvalidUtf8, 1007);
        }
    }
}

#[test]
fn a_text_frame_ending_inside_a_code_point_fails_with_1007() {
    for role in ROLES {
        for &text in TRUNCATED {
            let mut conn = Connection::new(role);
            assert_fails_with(&mut conn, &frame_to(role, TEXT, true, text), ProtocolError::InvalidUtf8, 1007);
        }
    }
}

#[test]
fn a_text_message_ending_inside_a_code_point_fails_at_its_last_fragment() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        // "€" is e2 82 ac; the message ends after e2 82.
        assert!(feed(&mut conn, &frame_to(role, TEXT, false, b"price: \xe2")).is_empty());
        assert!(feed(&mut conn, &frame_to(role, CONT, false, b"\x82")).is_empty());
        assert_fails_with(&mut conn, &frame_to(role, CONT, true, b""), ProtocolError::InvalidUtf8, 1007);
    }
}

#[test]
fn invalid_bytes_in_binary_messages_are_fine() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        let bytes =
            concat(&[binary_to(role, b"\xff\xc0\xed\xa0\x80"), frame_to(role, BINARY, false, b"\xe2")]);
        assert_eq!(feed(&mut conn, &bytes), [binary_event(b"\xff\xc0\xed\xa0\x80")]);
        assert_eq!(feed(&mut conn, &frame_to(role, CONT, true, b"\xff")), [binary_event(b"\xe2\xff")]);
    }
}

#[test]
fn valid_text_split_inside_every_code_point_is_accepted() {
    let text = "aé€𝄞κόσμε";
    let bytes = text.as_bytes();
    for role in ROLES {
        for split in 0..=bytes.len() {
            let mut conn = Connection::new(role);
            assert!(feed(&mut conn, &frame_to(role, TEXT, false, &bytes[..split])).is_empty());
            assert_eq!(feed(&mut conn, &frame_to(role, CONT, true, &bytes[split..])), [text_event(text)]);
        }
    }
}

#[test]
fn valid_text_one_byte_per_fragment_is_accepted() {
    let text = "€𝄞é!";
    for role in ROLES {
        let mut conn = Connection::new(role);
        let bytes = text.as_bytes();
        let mut stream = Vec::new();
        for (i, byte) in bytes.iter().enumerate() {
            let opcode = if i == 0 { TEXT } else { CONT };
            stream.extend(frame_to(role, opcode, i == bytes.len() - 1, std::slice::from_ref(byte)));
        }
        assert_eq!(feed(&mut conn, &stream), [text_event(text)]);
    }
}

// ---- fail fast ---------------------------------------------------------------------

#[test]
fn invalid_bytes_in_a_middle_fragment_fail_before_the_final_fragment() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert!(feed(&mut conn, &frame_to(role, TEXT, false, b"all good so far ")).is_empty());
        // The bad fragment is not final; the error must not wait for FIN.
        assert_fails_with(
            &mut conn,
            &frame_to(role, CONT, false, b"then \xff"),
            ProtocolError::InvalidUtf8,
            1007,
        );
    }
}

#[test]
fn a_code_point_broken_across_fragments_fails_at_the_breaking_fragment() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        // ED starts a valid prefix; A0 after it would make a surrogate.
        assert!(feed(&mut conn, &frame_to(role, TEXT, false, b"x\xed")).is_empty());
        assert_fails_with(
            &mut conn,
            &frame_to(role, CONT, false, b"\xa0\x80"),
            ProtocolError::InvalidUtf8,
            1007,
        );
    }
}

#[test]
fn a_code_point_broken_across_fragments_and_a_ping_fails_at_the_breaking_fragment() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert!(feed(&mut conn, &frame_to(role, TEXT, false, b"\xf4")).is_empty());
        // A ping in between must neither reset nor disturb the validator.
        assert_eq!(feed(&mut conn, &ping_to(role, b"\x90")), [ping_event(b"\x90")]);
        take_output(&mut conn);
        assert_fails_with(&mut conn, &frame_to(role, CONT, false, b"\x90"), ProtocolError::InvalidUtf8, 1007);
    }
}

#[test]
fn invalid_text_fed_byte_by_byte_fails_at_the_first_impossible_byte() {
    for role in ROLES {
        for &(text, bad_at) in INVALID.iter() {
            // Padding after the bad byte: the frame is still arriving when it fails.
            let mut payload = text.to_vec();
            payload.extend_from_slice(b" and more bytes that never arrive");
            let frame = frame_to(role, TEXT, true, &payload);
            let header_len = frame.len() - payload.len();
            let mut conn = Connection::new(role);
            for byte in &frame[..header_len + bad_at] {
                assert_needs_more(&mut conn, std::slice::from_ref(byte));
            }
            let bad = header_len + bad_at;
            assert_fails_with(&mut conn, &frame[bad..=bad], ProtocolError::InvalidUtf8, 1007);
        }
    }
}

#[test]
fn invalid_text_in_a_continuation_fed_byte_by_byte_fails_at_the_first_impossible_byte() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert!(feed(&mut conn, &frame_to(role, TEXT, false, "κό".as_bytes())).is_empty());
        let payload = b"s\xce\xbc\xe1\xbd\xc0 never seen";
        let frame = frame_to(role, CONT, false, payload);
        let bad = frame.len() - payload.len() + 5; // C0 cannot continue E1 BD
        for byte in &frame[..bad] {
            assert_needs_more(&mut conn, std::slice::from_ref(byte));
        }
        assert_fails_with(&mut conn, &frame[bad..=bad], ProtocolError::InvalidUtf8, 1007);
    }
}

#[test]
fn invalid_text_in_a_large_frame_fails_before_the_payload_completes() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        let mut payload = vec![b'a'; 1000];
        payload.extend_from_slice(b"\xc3\x28");
        payload.extend(vec![b'z'; 100_000]);
        let frame = frame_to(role, TEXT, true, &payload);
        let cut = frame.len() - 100_000;
        assert_fails_with(&mut conn, &frame[..cut], ProtocolError::InvalidUtf8, 1007);
    }
}

#[test]
fn without_assembly_invalid_text_fails_before_the_fragment_is_delivered() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.set_assemble_messages(false);
        assert_eq!(
            feed(&mut conn, &frame_to(role, TEXT, false, b"fine")),
            [fragment_event(DataKind::Text, b"fine", true, false)]
        );
        assert_fails_with(
            &mut conn,
            &frame_to(role, CONT, false, b"\xed\xa0"),
            ProtocolError::InvalidUtf8,
            1007,
        );
    }
}

#[test]
fn without_assembly_a_truncated_code_point_fails_at_the_final_fragment() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.set_assemble_messages(false);
        assert_eq!(feed(&mut conn, &frame_to(role, TEXT, false, b"\xe2\x82")).len(), 1);
        assert_fails_with(&mut conn, &frame_to(role, CONT, true, b""), ProtocolError::InvalidUtf8, 1007);
    }
}

#[test]
fn text_after_a_completed_message_starts_with_a_fresh_validator() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert_eq!(feed(&mut conn, &text_to(role, "€")), [text_event("€")]);
        // A message starting with a continuation byte is invalid on its own,
        // even right after a message that ended on a complete code point.
        assert_fails_with(&mut conn, &frame_to(role, TEXT, true, b"\xac"), ProtocolError::InvalidUtf8, 1007);
    }
}

#[test]
fn a_message_larger_than_one_read_validates_across_reads() {
    let text = "ünïcödé €𝄞 ".repeat(2000);
    for role in ROLES {
        let frame = text_to(role, &text);
        for chunk in [1usize, 3, 7, 4096] {
            let mut conn = Connection::new(role);
            let mut got = Vec::new();
            for piece in frame.chunks(chunk) {
                got.extend(feed(&mut conn, piece));
            }
            assert_eq!(got, [text_event(&text)], "{role:?} chunk {chunk}");
        }
    }
}

#[test]
fn the_server_checks_utf8_after_unmasking() {
    // Invalid plaintext whose masked bytes happen to be ASCII: a validator
    // looking at the wire bytes would accept it.
    let plain = b"a\x80";
    let frame = raw_frame(true, 0, TEXT, Some(KEY), plain);
    assert!(std::str::from_utf8(&frame[6..]).is_ok(), "masked bytes {:x?}", &frame[6..]);
    let mut server = Connection::new(Role::Server);
    assert_fails_with(&mut server, &frame, ProtocolError::InvalidUtf8, 1007);

    // Valid plaintext whose masked bytes are not UTF-8.
    let frame = raw_frame(true, 0, TEXT, Some(KEY), "é".as_bytes());
    assert!(std::str::from_utf8(&frame[6..]).is_err(), "masked bytes {:x?}", &frame[6..]);
    let mut server = Connection::new(Role::Server);
    assert_eq!(feed(&mut server, &frame), [text_event("é")]);
}

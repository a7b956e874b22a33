//! Control frames (RFC 6455 §5.5): automatic pongs, size and fragmentation
//! rules, and what happens to pings once we have sent a close.

mod support;

use bytes::Bytes;
use peregrine_proto::{CloseCode, Connection, Message, ProtocolError, Role, SendError};
use support::*;

#[test]
fn a_ping_is_surfaced_and_answered_with_a_pong_of_the_same_payload() {
    for role in ROLES {
        for payload in [&b""[..], b"x", b"ping payload \x00\xff", &[0xa5; 125]] {
            let mut conn = Connection::new(role);
            assert_eq!(feed(&mut conn, &ping_to(role, payload)), [ping_event(payload)], "{role:?}");
            let pong = assert_one_sent(&mut conn, PONG);
            assert_eq!(pong.payload, payload, "{role:?}");
        }
    }
}

#[test]
fn a_ping_with_invalid_utf8_is_answered_as_is() {
    // Ping payloads are binary: no UTF-8 check.
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert_eq!(feed(&mut conn, &ping_to(role, b"\xff\xfe\xc0")), [ping_event(b"\xff\xfe\xc0")]);
        assert_eq!(assert_one_sent(&mut conn, PONG).payload, b"\xff\xfe\xc0");
    }
}

#[test]
fn each_of_several_pings_gets_its_own_pong_in_order() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        let bytes = concat(&[ping_to(role, b"1"), ping_to(role, b"2"), ping_to(role, b"3")]);
        assert_eq!(feed(&mut conn, &bytes), [ping_event(b"1"), ping_event(b"2"), ping_event(b"3")]);
        let pongs: Vec<Vec<u8>> = sent_frames(&mut conn).into_iter().map(|f| f.payload).collect();
        assert_eq!(pongs, [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
    }
}

#[test]
fn a_ping_between_fragments_is_answered_before_the_message_completes() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert!(feed(&mut conn, &frame_to(role, TEXT, false, b"frag")).is_empty());
        assert_eq!(feed(&mut conn, &ping_to(role, b"mid")), [ping_event(b"mid")]);
        assert_eq!(assert_one_sent(&mut conn, PONG).payload, b"mid");
        assert_eq!(feed(&mut conn, &frame_to(role, CONT, true, b"ment")), [text_event("fragment")]);
        assert_nothing_sent(&mut conn);
    }
}

#[test]
fn a_ping_split_across_receives_is_answered_once_complete() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        let ping = ping_to(role, b"slow ping");
        for byte in &ping[..ping.len() - 1] {
            assert_needs_more(&mut conn, std::slice::from_ref(byte));
            assert_nothing_sent(&mut conn);
        }
        assert_eq!(feed(&mut conn, &ping[ping.len() - 1..]), [ping_event(b"slow ping")]);
        assert_eq!(assert_one_sent(&mut conn, PONG).payload, b"slow ping");
    }
}

#[test]
fn a_pong_is_surfaced_and_not_answered() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert_eq!(feed(&mut conn, &pong_to(role, b"unsolicited")), [pong_event(b"unsolicited")]);
        assert_nothing_sent(&mut conn);
    }
}

#[test]
fn pings_after_we_sent_close_get_no_pong() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.close(CloseCode::GOING_AWAY, "bye").unwrap();
        assert_close_sent(&mut conn, 1001);
        // The peer has not answered yet, so frames are still read...
        assert_eq!(feed(&mut conn, &ping_to(role, b"late")), [ping_event(b"late")]);
        // ...but nothing may follow our close frame.
        assert_nothing_sent(&mut conn);
        assert_eq!(feed(&mut conn, &close_to(role, 1001, b"")), [close_event(1001, "")]);
        assert_nothing_sent(&mut conn);
    }
}

#[test]
fn pings_after_a_failure_get_no_pong() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.receive(&frame_to(role, 0xb, true, b""));
        conn.receive(&ping_to(role, b"after"));
        assert_failed(&mut conn, ProtocolError::ReservedOpcode(0xb), 1002);
    }
}

// ---- violations ----------------------------------------------------------------

#[test]
fn control_frames_over_125_bytes_fail_with_1002_from_the_header() {
    for role in ROLES {
        for opcode in [PING, PONG, CLOSE] {
            for len in [126u64, 127, 0xffff, 0x10000] {
                let mut conn = Connection::new(role);
                // The header alone: 126 needs the 16-bit length form.
                let head = header_to(role, true, opcode, len);
                assert_fails_with(&mut conn, &head, ProtocolError::ControlFrameTooLong, 1002);
            }
        }
    }
}

#[test]
fn a_control_frame_of_exactly_125_bytes_is_accepted_even_in_the_16_bit_form() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        let mask = (role == Role::Server).then_some(KEY);
        // 0x89 with length 126-form holding 125: not minimal, but in range.
        let mut bytes = vec![0x89, if mask.is_some() { 0x80 | 126 } else { 126 }, 0, 125];
        if let Some(key) = mask {
            bytes.extend_from_slice(&key);
            bytes.extend(xor_mask(&[7; 125], key));
        } else {
            bytes.extend_from_slice(&[7; 125]);
        }
        assert_eq!(feed(&mut conn, &bytes), [ping_event(&[7; 125])]);
    }
}

#[test]
fn fragmented_control_frames_fail_with_1002() {
    for role in ROLES {
        for opcode in [PING, PONG, CLOSE] {
            let mut conn = Connection::new(role);
            let frame = frame_to(role, opcode, false, b"x");
            assert_fails_with(&mut conn, &frame[..2], ProtocolError::FragmentedControlFrame, 1002);
        }
    }
}

#[test]
fn a_fragmented_ping_inside_a_fragmented_message_fails_with_1002() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert!(feed(&mut conn, &frame_to(role, BINARY, false, b"a")).is_empty());
        assert_fails_with(
            &mut conn,
            &frame_to(role, PING, false, b""),
            ProtocolError::FragmentedControlFrame,
            1002,
        );
    }
}

// ---- sending -------------------------------------------------------------------

#[test]
fn sending_a_control_frame_over_125_bytes_is_refused() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        let long = Bytes::from(vec![0; 126]);
        assert_eq!(conn.send(Message::Ping(long.clone())), Err(SendError::ControlFrameTooLong));
        assert_eq!(conn.send(Message::Pong(long)), Err(SendError::ControlFrameTooLong));
        assert_nothing_sent(&mut conn);
        conn.send(Message::Ping(Bytes::from(vec![1; 125]))).unwrap();
        assert_eq!(assert_one_sent(&mut conn, PING).payload, vec![1; 125]);
    }
}

#[test]
fn our_ping_is_answered_by_the_peer_connection() {
    for role in ROLES {
        let mut us = Connection::new(role);
        let mut peer = Connection::new(peer_of(role));
        us.send(Message::Ping(Bytes::from_static(b"rtt"))).unwrap();
        assert_eq!(feed(&mut peer, &take_output(&mut us)), [ping_event(b"rtt")]);
        assert_eq!(feed(&mut us, &take_output(&mut peer)), [pong_event(b"rtt")]);
        assert_nothing_sent(&mut us);
    }
}

#[test]
fn control_frames_cannot_be_sent_after_close() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.close(CloseCode::NORMAL, "").unwrap();
        assert_close_sent(&mut conn, 1000);
        assert_eq!(conn.send(Message::Ping(Bytes::new())), Err(SendError::Closed));
        assert_eq!(conn.send(Message::Pong(Bytes::new())), Err(SendError::Closed));
        assert_nothing_sent(&mut conn);
    }
}

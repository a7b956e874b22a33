//! The closing handshake (RFC 6455 §5.5.1, §7): close codes, replies, who
//! closes TCP, what happens to data and sends afterwards, and EOF.

mod support;

use bytes::Bytes;
use peregrine_proto::{CloseCode, CloseFrame, Connection, DataKind, Message, ProtocolError, Role, SendError};
use support::*;

const INVALID_CODES: [u16; 14] =
    [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 60000, 65535];
const VALID_CODES: [u16; 16] =
    [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999];

// ---- peer-initiated ---------------------------------------------------------------

#[test]
fn a_peer_close_is_echoed_and_completes_the_handshake() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert!(conn.is_open());
        assert_eq!(feed(&mut conn, &close_to(role, 1000, b"goodbye")), [close_event(1000, "goodbye")]);
        let reply = assert_close_sent(&mut conn, 1000);
        assert_eq!(reply.payload, [0x03, 0xe8], "the reply echoes the code only");
        assert!(conn.is_closed());
        assert!(!conn.is_open());
        assert!(conn.close_sent());
        assert_eq!(conn.close_code(), Some(CloseCode::NORMAL));
        let expected = CloseFrame { code: CloseCode::NORMAL, reason: "goodbye".into() };
        assert_eq!(conn.close_received(), Some(&Some(expected)));
        assert_eq!(conn.failure(), None);
        // The server closes TCP first; the client waits for it (RFC 6455 §7.1.1).
        assert_eq!(conn.should_close_transport(), role == Role::Server, "{role:?}");
    }
}

#[test]
fn every_valid_close_code_is_echoed_back() {
    for role in ROLES {
        for code in VALID_CODES {
            let mut conn = Connection::new(role);
            assert_eq!(feed(&mut conn, &close_to(role, code, b"r")), [close_event(code, "r")]);
            assert_close_sent(&mut conn, code);
            assert_eq!(conn.close_code(), Some(CloseCode::from(code)));
        }
    }
}

#[test]
fn an_empty_close_gets_an_empty_reply_and_reports_1005() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert_eq!(feed(&mut conn, &frame_to(role, CLOSE, true, b"")), [empty_close_event()]);
        let reply = assert_one_sent(&mut conn, CLOSE);
        assert!(reply.payload.is_empty(), "{reply:?}");
        assert_eq!(conn.close_code(), Some(CloseCode::NO_STATUS));
        assert_eq!(conn.close_received(), Some(&None));
        assert!(conn.is_closed());
    }
}

#[test]
fn a_close_with_the_longest_reason_is_accepted() {
    for role in ROLES {
        let reason = "r".repeat(123);
        let mut conn = Connection::new(role);
        assert_eq!(feed(&mut conn, &close_to(role, 4000, reason.as_bytes())), [close_event(4000, &reason)]);
        assert_close_sent(&mut conn, 4000);
    }
}

#[test]
fn invalid_close_codes_fail_with_1002() {
    for role in ROLES {
        for code in INVALID_CODES {
            let mut conn = Connection::new(role);
            assert_fails_with(
                &mut conn,
                &close_to(role, code, b""),
                ProtocolError::InvalidCloseCode(code),
                1002,
            );
            assert_eq!(conn.close_received(), None, "an invalid close is not a close");
        }
    }
}

#[test]
fn a_one_byte_close_payload_fails_with_1002() {
    for role in ROLES {
        for byte in [0x03, 0xe8, 0] {
            let mut conn = Connection::new(role);
            let frame = frame_to(role, CLOSE, true, &[byte]);
            assert_fails_with(&mut conn, &frame, ProtocolError::InvalidClosePayload, 1002);
        }
    }
}

#[test]
fn a_close_reason_with_invalid_utf8_fails_with_1007() {
    for role in ROLES {
        for reason in [&b"\xff"[..], b"ok\xc0\xaf", b"\xed\xa0\x80", b"cut \xe2\x82"] {
            let mut conn = Connection::new(role);
            assert_fails_with(&mut conn, &close_to(role, 1000, reason), ProtocolError::InvalidUtf8, 1007);
        }
    }
}

#[test]
fn data_after_the_peer_close_is_ignored() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        // In the same read as the close, and in later reads.
        let bytes = concat(&[close_to(role, 1000, b""), text_to(role, "ignored"), ping_to(role, b"ignored")]);
        assert_eq!(feed(&mut conn, &bytes), [close_event(1000, "")]);
        assert_close_sent(&mut conn, 1000);
        assert_eq!(feed(&mut conn, &frame_to(role, 0x3, true, b"even garbage")), []);
        assert_eq!(feed(&mut conn, &[0xff; 64]), []);
        assert_nothing_sent(&mut conn);
        assert_eq!(conn.failure(), None);
        assert_eq!(conn.close_code(), Some(CloseCode::NORMAL));
    }
}

#[test]
fn sending_after_the_peer_close_fails_with_closed() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        feed(&mut conn, &close_to(role, 1001, b""));
        assert_close_sent(&mut conn, 1001);
        assert_eq!(conn.send(Message::text("late")), Err(SendError::Closed));
        assert_eq!(conn.send(Message::binary(vec![1])), Err(SendError::Closed));
        assert_eq!(
            conn.send_fragment(DataKind::Text, Bytes::from_static(b"x"), true),
            Err(SendError::Closed)
        );
        assert_eq!(conn.send(Message::Ping(Bytes::new())), Err(SendError::Closed));
        // Closing again is harmless and sends nothing.
        assert_eq!(conn.close(CloseCode::NORMAL, ""), Ok(()));
        assert_nothing_sent(&mut conn);
    }
}

// ---- locally initiated ------------------------------------------------------------

#[test]
fn a_local_close_waits_for_the_peer_reply() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.close(CloseCode::GOING_AWAY, "shutting down").unwrap();
        let sent = assert_close_sent(&mut conn, 1001);
        assert_eq!(sent.close_reason(), "shutting down");
        assert!(!conn.is_open());
        assert!(!conn.is_closed());
        assert!(conn.close_sent());
        assert_eq!(conn.close_code(), None, "not ended yet");
        assert!(!conn.should_close_transport(), "{role:?} must wait for the reply");

        assert_eq!(feed(&mut conn, &close_to(role, 1001, b"")), [close_event(1001, "")]);
        assert_nothing_sent(&mut conn);
        assert!(conn.is_closed());
        assert_eq!(conn.close_code(), Some(CloseCode::GOING_AWAY));
        assert_eq!(conn.should_close_transport(), role == Role::Server, "{role:?}");
    }
}

#[test]
fn data_arriving_before_the_peer_reply_is_still_delivered() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.close(CloseCode::NORMAL, "").unwrap();
        assert_close_sent(&mut conn, 1000);
        let bytes = concat(&[text_to(role, "in flight"), binary_to(role, &[1]), close_to(role, 1000, b"")]);
        assert_eq!(
            feed(&mut conn, &bytes),
            [text_event("in flight"), binary_event(&[1]), close_event(1000, "")]
        );
        assert_nothing_sent(&mut conn);
    }
}

#[test]
fn a_peer_reply_with_a_different_code_is_reported() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.close(CloseCode::NORMAL, "").unwrap();
        take_output(&mut conn);
        assert_eq!(feed(&mut conn, &close_to(role, 3001, b"app")), [close_event(3001, "app")]);
        assert_nothing_sent(&mut conn);
        assert_eq!(conn.close_code(), Some(CloseCode::from(3001)));
    }
}

#[test]
fn an_invalid_reply_to_our_close_fails_without_a_second_close_frame() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.close(CloseCode::NORMAL, "").unwrap();
        assert_close_sent(&mut conn, 1000);
        conn.receive(&close_to(role, 1005, b""));
        assert_eq!(conn.next_event(), Some(Err(ProtocolError::InvalidCloseCode(1005))));
        assert_nothing_sent(&mut conn);
        assert_eq!(conn.close_code(), Some(CloseCode::PROTOCOL_ERROR));
        assert_eq!(conn.should_close_transport(), role == Role::Server);
        assert_dead(&mut conn);
    }
}

#[test]
fn sending_data_after_close_fails_with_closed() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.close(CloseCode::NORMAL, "").unwrap();
        assert_eq!(conn.send(Message::text("late")), Err(SendError::Closed));
        assert_eq!(conn.send(Message::binary(vec![0])), Err(SendError::Closed));
        assert_eq!(conn.send_fragment(DataKind::Binary, Bytes::new(), false), Err(SendError::Closed));
        assert_close_sent(&mut conn, 1000);
    }
}

#[test]
fn closing_twice_sends_one_close_frame() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.close(CloseCode::NORMAL, "first").unwrap();
        assert_eq!(conn.close(CloseCode::GOING_AWAY, "second"), Ok(()));
        assert_eq!(conn.send(Message::Close(None)), Ok(()));
        let sent = assert_close_sent(&mut conn, 1000);
        assert_eq!(sent.close_reason(), "first");
    }
}

#[test]
fn an_invalid_local_close_code_is_refused_and_sends_nothing() {
    for role in ROLES {
        for code in INVALID_CODES {
            let mut conn = Connection::new(role);
            assert_eq!(conn.close(CloseCode::from(code), "x"), Err(SendError::InvalidCloseCode(code)));
            let frame = CloseFrame { code: CloseCode::from(code), reason: "".into() };
            assert_eq!(conn.send(Message::Close(Some(frame))), Err(SendError::InvalidCloseCode(code)));
            assert_nothing_sent(&mut conn);
            assert!(conn.is_open(), "a refused close leaves the connection open");
            conn.send(Message::text("still open")).unwrap();
            assert_eq!(assert_one_sent(&mut conn, TEXT).payload, b"still open");
        }
    }
}

#[test]
fn every_valid_local_close_code_is_sent() {
    for role in ROLES {
        for code in VALID_CODES {
            let mut conn = Connection::new(role);
            conn.close(CloseCode::from(code), "").unwrap();
            assert_close_sent(&mut conn, code);
        }
    }
}

#[test]
fn a_local_close_without_a_code_sends_an_empty_close() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.send(Message::Close(None)).unwrap();
        assert!(assert_one_sent(&mut conn, CLOSE).payload.is_empty());
        assert!(conn.close_sent());
    }
}

#[test]
fn a_long_local_close_reason_is_cut_to_fit_a_control_frame() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.close(CloseCode::NORMAL, &"é".repeat(100)).unwrap();
        let sent = assert_close_sent(&mut conn, 1000);
        assert_eq!(sent.close_reason(), "é".repeat(61), "cut at a character boundary, 122 bytes");

        let mut conn = Connection::new(role);
        let frame = CloseFrame { code: CloseCode::NORMAL, reason: "x".repeat(124).into() };
        assert_eq!(conn.send(Message::Close(Some(frame))), Err(SendError::ControlFrameTooLong));
        assert_nothing_sent(&mut conn);
    }
}

#[test]
fn closes_exchanged_between_two_connections_end_both_cleanly() {
    for role in ROLES {
        let mut us = Connection::new(role);
        let mut peer = Connection::new(peer_of(role));
        us.close(CloseCode::from(4001), "done").unwrap();
        assert_eq!(feed(&mut peer, &take_output(&mut us)), [close_event(4001, "done")]);
        assert_eq!(feed(&mut us, &take_output(&mut peer)), [close_event(4001, "")]);
        for conn in [&us, &peer] {
            assert!(conn.is_closed());
            assert_eq!(conn.close_code(), Some(CloseCode::from(4001)));
            assert_eq!(conn.should_close_transport(), conn.role() == Role::Server);
        }
    }
}

// ---- EOF ------------------------------------------------------------------------

#[test]
fn eof_without_a_close_frame_reports_1006() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert_eq!(feed(&mut conn, &text_to(role, "hi")), [text_event("hi")]);
        assert_eq!(conn.close_code(), None);
        conn.receive_eof();
        assert!(conn.eof_received());
        assert_eq!(conn.close_code(), Some(CloseCode::ABNORMAL));
        assert!(conn.should_close_transport(), "{role:?}: nothing left to wait for");
        assert!(!conn.is_open());
        assert_eq!(conn.next_event(), None);
        assert_nothing_sent(&mut conn);
    }
}

#[test]
fn eof_in_the_middle_of_a_frame_reports_1006() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        assert_needs_more(&mut conn, &binary_to(role, &[1; 50])[..20]);
        conn.receive_eof();
        assert_eq!(conn.close_code(), Some(CloseCode::ABNORMAL));
        assert_eq!(conn.next_event(), None);
    }
}

#[test]
fn eof_after_our_close_without_a_reply_reports_1006() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.close(CloseCode::NORMAL, "").unwrap();
        conn.receive_eof();
        assert_eq!(conn.close_code(), Some(CloseCode::ABNORMAL));
        assert!(conn.should_close_transport());
    }
}

#[test]
fn eof_after_the_close_handshake_keeps_the_peer_code() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        feed(&mut conn, &close_to(role, 1001, b""));
        conn.receive_eof();
        assert_eq!(conn.close_code(), Some(CloseCode::GOING_AWAY));
        assert!(conn.should_close_transport(), "{role:?}: the client closes once the server has");
    }
}

#[test]
fn frames_received_before_eof_are_still_delivered() {
    // A driver may read a last chunk and then EOF before it drains events
    // (e.g. a server's close frame followed by its FIN in one poll). The
    // frames that arrived before EOF must not be lost.
    for role in ROLES {
        let mut conn = Connection::new(role);
        conn.receive(&concat(&[text_to(role, "last words"), close_to(role, 1000, b"")]));
        conn.receive_eof();
        assert_eq!(events(&mut conn), [text_event("last words"), close_event(1000, "")], "{role:?}");
        assert_eq!(conn.close_code(), Some(CloseCode::NORMAL), "{role:?}: a clean close, not 1006");
    }
}

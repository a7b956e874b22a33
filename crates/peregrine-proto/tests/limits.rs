//! Size limits: a declared length over a limit fails with 1009 from the
//! header alone, and nothing is ever allocated for a length that was only
//! declared.

mod support;

use peregrine_proto::{Connection, DataKind, Limits, ProtocolError, Role};
use support::*;

/// A connection's buffers may hold this much for bookkeeping; a frame's
/// declared length must never show up in them.
const SMALL: usize = 64 * 1024;

fn limited(role: Role, frame: usize, message: usize) -> Connection {
    Connection::with_limits(role, Limits::default().max_frame_size(frame).max_message_size(message))
}

#[test]
fn default_limits_are_16_mib() {
    let conn = Connection::new(Role::Server);
    assert_eq!(conn.limits().frame_size(), 16 << 20);
    assert_eq!(conn.limits().message_size(), 16 << 20);
    assert_eq!(*conn.limits(), Limits::default());
}

#[test]
fn a_frame_over_max_frame_size_fails_with_1009_from_the_header_alone() {
    for role in ROLES {
        for opcode in [TEXT, BINARY] {
            let mut conn = limited(role, 1000, 1 << 20);
            let head = header_to(role, true, opcode, 1001);
            assert_fails_with(
                &mut conn,
                &head,
                ProtocolError::FrameTooLarge { size: 1001, limit: 1000 },
                1009,
            );
        }
    }
}

#[test]
fn a_frame_of_exactly_max_frame_size_is_accepted() {
    for role in ROLES {
        let mut conn = limited(role, 1000, 1000);
        assert_eq!(feed(&mut conn, &binary_to(role, &[3; 1000])), [binary_event(&[3; 1000])]);
        assert_eq!(feed(&mut conn, &text_to(role, &"t".repeat(1000))), [text_event(&"t".repeat(1000))]);
    }
}

#[test]
fn a_header_declaring_2_pow_62_bytes_fails_with_1009_and_allocates_nothing() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        let head = header_to(role, true, BINARY, 1 << 62);
        conn.receive(&head);
        assert!(conn.buffered_capacity() < SMALL, "capacity {} after the header", conn.buffered_capacity());
        let error = ProtocolError::FrameTooLarge { size: 1 << 62, limit: Limits::DEFAULT_MAX_FRAME_SIZE };
        assert_failed(&mut conn, error, 1009);
        assert!(conn.buffered_capacity() < SMALL, "capacity {} after failing", conn.buffered_capacity());
    }
}

#[test]
fn a_huge_declared_length_within_the_limits_is_not_allocated_up_front() {
    // Limits high enough to let a 2^40-byte frame through: the connection must
    // still only buffer what actually arrives.
    for role in ROLES {
        let mut conn = limited(role, usize::MAX, usize::MAX);
        assert_needs_more(&mut conn, &header_to(role, true, BINARY, 1 << 40));
        assert!(conn.buffered_capacity() < SMALL, "capacity {} after the header", conn.buffered_capacity());
        assert_needs_more(&mut conn, &[0; 1000]);
        assert!(conn.buffered_capacity() < SMALL, "capacity {} after 1000 bytes", conn.buffered_capacity());
        assert!(conn.bytes_wanted() > 1 << 39, "the hint may be large, the buffer not");
    }
}

#[test]
fn a_fragmented_message_over_max_message_size_fails_with_1009_at_the_offending_header() {
    for role in ROLES {
        for opcode in [TEXT, BINARY] {
            let mut conn = limited(role, 100, 250);
            assert!(feed(&mut conn, &frame_to(role, opcode, false, &[b'a'; 100])).is_empty());
            assert!(feed(&mut conn, &frame_to(role, CONT, false, &[b'b'; 100])).is_empty());
            // 200 so far; a header declaring 51 more is enough to fail.
            let head = header_to(role, true, CONT, 51);
            assert_fails_with(
                &mut conn,
                &head,
                ProtocolError::MessageTooLarge { size: 251, limit: 250 },
                1009,
            );
        }
    }
}

#[test]
fn a_fragmented_message_of_exactly_max_message_size_is_accepted() {
    for role in ROLES {
        let mut conn = limited(role, 100, 250);
        let bytes = concat(&[
            frame_to(role, BINARY, false, &[1; 100]),
            frame_to(role, CONT, false, &[2; 100]),
            frame_to(role, CONT, true, &[3; 50]),
        ]);
        let mut expected = vec![1; 100];
        expected.extend([2; 100]);
        expected.extend([3; 50]);
        assert_eq!(feed(&mut conn, &bytes), [binary_event(&expected)]);
        // The count starts again with the next message.
        let again = concat(&[
            frame_to(role, TEXT, false, &[b'x'; 100]),
            frame_to(role, CONT, false, &[b'y'; 100]),
            frame_to(role, CONT, true, &[b'z'; 50]),
        ]);
        let text = format!("{}{}{}", "x".repeat(100), "y".repeat(100), "z".repeat(50));
        assert_eq!(feed(&mut conn, &again), [text_event(&text)]);
    }
}

#[test]
fn a_single_frame_over_max_message_size_fails_with_1009() {
    for role in ROLES {
        let mut conn = limited(role, 1000, 100);
        let head = header_to(role, true, BINARY, 101);
        assert_fails_with(&mut conn, &head, ProtocolError::MessageTooLarge { size: 101, limit: 100 }, 1009);
    }
}

#[test]
fn control_frames_do_not_count_towards_the_message_size() {
    for role in ROLES {
        let mut conn = limited(role, 125, 150);
        let bytes = concat(&[
            frame_to(role, BINARY, false, &[1; 100]),
            ping_to(role, &[0; 125]),
            pong_to(role, &[0; 125]),
            frame_to(role, CONT, true, &[2; 50]),
        ]);
        let mut expected = vec![1; 100];
        expected.extend([2; 50]);
        assert_eq!(
            feed(&mut conn, &bytes),
            [ping_event(&[0; 125]), pong_event(&[0; 125]), binary_event(&expected)]
        );
    }
}

#[test]
fn a_control_frame_over_max_frame_size_fails_with_1009() {
    for role in ROLES {
        let mut conn = limited(role, 10, 10);
        let head = header_to(role, true, PING, 11);
        assert_fails_with(&mut conn, &head, ProtocolError::FrameTooLarge { size: 11, limit: 10 }, 1009);
    }
}

#[test]
fn without_assembly_the_message_limit_still_applies_to_the_total() {
    for role in ROLES {
        let mut conn = limited(role, 100, 150);
        conn.set_assemble_messages(false);
        assert_eq!(
            feed(&mut conn, &frame_to(role, BINARY, false, &[1; 100])),
            [fragment_event(DataKind::Binary, &[1; 100], true, false)]
        );
        let head = header_to(role, true, CONT, 51);
        assert_fails_with(&mut conn, &head, ProtocolError::MessageTooLarge { size: 151, limit: 150 }, 1009);
    }
}

#[test]
fn an_oversized_continuation_fails_with_1009_from_its_header() {
    // The 1009 must come from the header even mid-message, as a continuation.
    for role in ROLES {
        let mut conn = limited(role, 100, 1 << 20);
        assert!(feed(&mut conn, &frame_to(role, TEXT, false, b"start")).is_empty());
        let head = header_to(role, false, CONT, 1 << 62);
        assert_fails_with(&mut conn, &head, ProtocolError::FrameTooLarge { size: 1 << 62, limit: 100 }, 1009);
        assert!(conn.buffered_capacity() < SMALL);
    }
}

#[test]
fn idle_buffers_are_released_after_a_large_message() {
    for role in ROLES {
        let mut conn = Connection::new(role);
        let big = vec![9; 200_000];
        assert_eq!(feed(&mut conn, &binary_to(role, &big)), [binary_event(&big)]);
        conn.release_idle_buffers();
        assert_eq!(conn.buffered_capacity(), 0, "{role:?}");
    }
}

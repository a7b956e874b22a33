//! Protocol violations over real sockets: the raw peer breaks RFC 6455 (or
//! our limits); we report the error, send a close frame with the code that
//! names it, and end TCP.

mod raw;

use peregrine::proto::ProtocolError;
use peregrine::{ClientBuilder, Config, Error, Limits, Message};
use raw::{
    FrameReader, MASK, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT, PATIENCE, frame_with, masked,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::time::timeout;

/// Sends `bytes` from a raw client to our server (with `limits`). Checks the
/// server reports a protocol error and then ends its stream while the test
/// still holds the socket, and that the wire carries one close frame with
/// `code` and the error as its reason, then EOF. Returns the error.
async fn violation(limits: Limits, bytes: &[u8], code: u16) -> ProtocolError {
    let (listener, addr) = raw::listener().await;
    let (release, released) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let config = Config::default().limits(limits);
        let mut ws = peregrine::accept_with(tcp, &config, |r| Ok(r.accept())).await.unwrap();
        let first = ws.recv().await;
        let end = ws.recv().await;
        // Keep the socket: TCP must end because of the violation, not a drop.
        let _ = released.await;
        (first, end.is_none())
    });
    let (mut tcp, leftover) = raw::client(addr).await;
    tcp.write_all(bytes).await.unwrap();

    let mut frames = FrameReader::new(leftover);
    let close =
        timeout(PATIENCE, frames.next(&mut tcp)).await.expect("a close frame").expect("a close frame");
    assert_eq!((close.opcode, close.masked), (OP_CLOSE, false));
    assert_eq!(close.close_code(), Some(code), "reason: {}", close.close_reason());
    let eof = timeout(PATIENCE, frames.next(&mut tcp)).await.expect("the server ends TCP");
    assert_eq!(eof, None, "nothing follows the close frame");
    drop(release);

    let (first, ended) = server.await.unwrap();
    assert!(ended, "the stream yields None after the error");
    let error = match first {
        Some(Err(Error::Protocol(error))) => error,
        other => panic!("expected a protocol error, got {other:?}"),
    };
    assert_eq!(close.close_reason(), error.to_string(), "the close reason says what went wrong");
    assert_eq!(error.close_code().as_u16(), code);
    error
}

#[tokio::test]
async fn an_unmasked_client_frame_is_closed_with_1002() {
    let error = violation(Limits::default(), &raw::frame(OP_TEXT, b"hello", None), 1002).await;
    assert_eq!(error, ProtocolError::UnmaskedFrame);
}

#[tokio::test]
async fn invalid_utf8_text_is_closed_with_1007() {
    let error = violation(Limits::default(), &masked(OP_TEXT, &[0xce, 0xba, 0xff, 0xfe]), 1007).await;
    assert_eq!(error, ProtocolError::InvalidUtf8);
}

#[tokio::test]
async fn invalid_utf8_fails_before_the_rest_of_the_frame_arrives() {
    // The header promises 64 KiB; only 4 bytes follow, the third invalid.
    let bytes = frame_with(0x80 | OP_TEXT, 65536, &[b'o', b'k', 0xff, b'!'], Some(MASK));
    let error = violation(Limits::default(), &bytes, 1007).await;
    assert_eq!(error, ProtocolError::InvalidUtf8);
}

#[tokio::test]
async fn invalid_utf8_split_across_fragments_is_closed_with_1007() {
    // "κ" is 0xce 0xba; the second fragment continues it with a bad byte.
    let mut bytes = frame_with(OP_TEXT, 1, &[0xce], Some(MASK));
    bytes.extend(masked(OP_CONTINUATION, &[0x41]));
    let error = violation(Limits::default(), &bytes, 1007).await;
    assert_eq!(error, ProtocolError::InvalidUtf8);
}

#[tokio::test]
async fn a_reserved_opcode_is_closed_with_1002() {
    let error = violation(Limits::default(), &masked(0x3, b""), 1002).await;
    assert_eq!(error, ProtocolError::ReservedOpcode(0x3));
}

#[tokio::test]
async fn reserved_bits_without_an_extension_are_closed_with_1002() {
    let bytes = frame_with(0x80 | 0x40 | OP_TEXT, 2, b"hi", Some(MASK));
    let error = violation(Limits::default(), &bytes, 1002).await;
    assert_eq!(error, ProtocolError::ReservedBits);
}

#[tokio::test]
async fn a_frame_over_max_frame_size_is_closed_with_1009_before_its_payload_arrives() {
    // Only the header: the declared length alone is refused.
    let limits = Limits::default().max_frame_size(1024);
    let bytes = frame_with(0x80 | OP_BINARY, 2048, b"", Some(MASK));
    let error = violation(limits, &bytes, 1009).await;
    assert_eq!(error, ProtocolError::FrameTooLarge { size: 2048, limit: 1024 });
}

#[tokio::test]
async fn a_message_over_max_message_size_is_closed_with_1009() {
    let limits = Limits::default().max_message_size(1024);
    let mut bytes = frame_with(OP_BINARY, 600, &[0; 600], Some(MASK));
    bytes.extend(frame_with(OP_CONTINUATION, 600, &[0; 600], Some(MASK)));
    let error = violation(limits, &bytes, 1009).await;
    assert!(matches!(error, ProtocolError::MessageTooLarge { limit: 1024, .. }), "{error:?}");
}

#[tokio::test]
async fn a_fragmented_ping_is_closed_with_1002() {
    let error = violation(Limits::default(), &frame_with(OP_PING, 1, b"x", Some(MASK)), 1002).await;
    assert_eq!(error, ProtocolError::FragmentedControlFrame);
}

#[tokio::test]
async fn a_ping_over_125_bytes_is_closed_with_1002() {
    let error = violation(Limits::default(), &masked(OP_PING, &[0; 126]), 1002).await;
    assert_eq!(error, ProtocolError::ControlFrameTooLong);
}

#[tokio::test]
async fn a_continuation_without_a_message_is_closed_with_1002() {
    let error = violation(Limits::default(), &masked(OP_CONTINUATION, b"x"), 1002).await;
    assert_eq!(error, ProtocolError::UnexpectedContinuation);
}

#[tokio::test]
async fn a_new_message_inside_a_fragmented_one_is_closed_with_1002() {
    let mut bytes = frame_with(OP_TEXT, 1, b"a", Some(MASK));
    bytes.extend(masked(OP_TEXT, b"b"));
    let error = violation(Limits::default(), &bytes, 1002).await;
    assert_eq!(error, ProtocolError::ExpectedContinuation);
}

#[tokio::test]
async fn a_one_byte_close_payload_is_closed_with_1002() {
    let error = violation(Limits::default(), &masked(OP_CLOSE, &[0x03]), 1002).await;
    assert_eq!(error, ProtocolError::InvalidClosePayload);
}

#[tokio::test]
async fn a_close_code_that_may_not_be_sent_is_closed_with_1002() {
    let error = violation(Limits::default(), &masked(OP_CLOSE, &raw::close_payload(1005, "")), 1002).await;
    assert_eq!(error, ProtocolError::InvalidCloseCode(1005));
}

#[tokio::test]
async fn a_close_reason_that_is_not_utf8_is_closed_with_1007() {
    let mut payload = raw::close_payload(1000, "");
    payload.extend_from_slice(&[0xff, 0xfe]);
    let error = violation(Limits::default(), &masked(OP_CLOSE, &payload), 1007).await;
    assert_eq!(error, ProtocolError::InvalidUtf8);
}

#[tokio::test]
async fn messages_before_the_violation_are_delivered() {
    let (listener, addr) = raw::listener().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = peregrine::accept(tcp).await.unwrap();
        let mut seen = Vec::new();
        while let Some(message) = ws.recv().await {
            seen.push(message.map_err(|e| e.to_string()));
        }
        seen
    });
    let (mut tcp, leftover) = raw::client(addr).await;
    let mut bytes = masked(OP_TEXT, b"one");
    bytes.extend(masked(OP_BINARY, b"two"));
    bytes.extend(raw::frame(OP_TEXT, b"unmasked", None));
    tcp.write_all(&bytes).await.unwrap();
    let mut frames = FrameReader::new(leftover);
    assert_eq!(frames.next(&mut tcp).await.unwrap().close_code(), Some(1002));
    let seen = timeout(PATIENCE, server).await.unwrap().unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0], Ok(Message::text("one")));
    assert_eq!(seen[1], Ok(Message::binary(&b"two"[..])));
    assert!(seen[2].as_ref().is_err_and(|e| e.contains("not masked")), "{:?}", seen[2]);
}

#[tokio::test]
async fn our_client_fails_a_masked_server_frame_with_1002_and_waits_for_the_server_to_end_tcp() {
    let (listener, addr) = raw::listener().await;
    let (release, released) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        raw::server_handshake(&mut tcp, "").await;
        tcp.write_all(&masked(OP_TEXT, b"masked by the server")).await.unwrap();
        let mut frames = FrameReader::default();
        let close = frames.next(&mut tcp).await.expect("the client's close frame");
        // The client must not end TCP first: the server does, when it wants.
        let _ = released.await;
        close
    });
    let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/")).connect().await.unwrap();
    let first = timeout(PATIENCE, ws.recv()).await.unwrap();
    assert!(matches!(first, Some(Err(Error::Protocol(ProtocolError::MaskedFrame)))), "{first:?}");
    let ending = tokio::spawn(async move { ws.recv().await.is_none() });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!ending.is_finished(), "the client waits for the server's EOF");
    drop(release);
    let close = server.await.unwrap();
    assert!(close.masked, "client frames are masked");
    assert_eq!(close.close_code(), Some(1002));
    assert!(timeout(PATIENCE, ending).await.unwrap().unwrap(), "then the stream ends");
}

#[tokio::test]
async fn a_sender_cut_off_mid_message_still_hears_why() {
    // The server refuses a 64 MiB message at its header (1009) and ends TCP
    // while the client is still writing it: the client's write fails, but the
    // close frame that came first is what it reports, not a bare 1006.
    let (listener, addr) = raw::listener().await;
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let config = Config::default().limits(Limits::default().max_message_size(1000).max_frame_size(1000));
        let mut ws = peregrine::accept_with(tcp, &config, |r| Ok(r.accept())).await.unwrap();
        while ws.recv().await.is_some() {}
    });
    let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/")).connect().await.unwrap();
    // Far more than the socket buffers of both ends hold, so the write fails.
    let sent = ws.send(Message::binary(vec![0u8; 64 << 20])).await;
    assert!(sent.is_err(), "the server stopped reading: {sent:?}");
    let heard = timeout(PATIENCE, ws.recv()).await.expect("an answer in time");
    match heard {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code.as_u16(), 1009, "{frame:?}");
            assert!(frame.reason.contains("exceeds the limit of 1000 bytes"), "{frame:?}");
        }
        other => panic!("expected the server's 1009, got {other:?}"),
    }
    let end = timeout(PATIENCE, ws.recv()).await.expect("the end in time");
    assert!(end.is_none(), "{end:?}");
}

//! Server side: request validation, one defect per test.

use super::super::{ExtensionOffer, HandshakeError, Request, select_subprotocol};
use super::{ACCEPT, Head, KEY};

fn parse(head: Head) -> Request {
    Request::parse(&head.bytes()).unwrap().unwrap()
}

fn reject(head: Head) -> HandshakeError {
    Request::parse(&head.bytes()).unwrap_err()
}

/// The status and the body a server would answer `head` with.
fn answer(head: Head) -> (u16, String) {
    let err = reject(head);
    let status = err.status().expect("a request error has a status");
    let reason = err.reason();
    assert!(!reason.is_empty() && !reason.contains('\n'));
    (status, reason)
}

#[test]
fn valid_request_exposes_its_fields() {
    let bytes = Head::request().add("Cookie", "a=1").bytes();
    let request = Request::parse(&bytes).unwrap().unwrap();
    assert_eq!(request.method(), "GET");
    assert_eq!(request.path(), "/chat?room=1");
    assert_eq!(request.host(), "server.example.com");
    assert_eq!(request.origin(), Some("http://example.com"));
    assert_eq!(request.key(), KEY);
    assert_eq!(request.accept_key(), ACCEPT);
    assert_eq!(request.header("cookie"), Some("a=1"));
    assert_eq!(request.header("COOKIE"), Some("a=1"));
    assert_eq!(request.header("X-Absent"), None);
    assert_eq!(request.headers().len(), 7);
    let names: Vec<&str> = request.headers().iter().map(|(n, _)| n).collect();
    assert_eq!(names[0], "Host");
    assert_eq!(names[6], "Cookie");
    assert!(request.protocols().is_empty());
    assert!(request.extensions().is_empty());
    assert_eq!(request.consumed(), bytes.len());
}

#[test]
fn repeated_and_non_utf8_fields_keep_their_order_and_bytes() {
    let mut bytes = Head::request().add("X-Tag", "one").add("x-tag", "two").bytes();
    // A value with obs-text (not UTF-8), inserted before the empty line.
    let end = bytes.len() - 2;
    bytes.splice(end..end, b"X-Raw: caf\xe9\r\n".iter().copied());
    let request = Request::parse(&bytes).unwrap().unwrap();
    let headers = request.headers();
    assert_eq!(headers.get_all("X-TAG").collect::<Vec<_>>(), [b"one".as_slice(), b"two"]);
    assert_eq!(headers.count("x-tag"), 2);
    assert_eq!(headers.get("X-Raw"), None, "not UTF-8");
    assert_eq!(headers.get_bytes("x-raw"), Some(b"caf\xe9".as_slice()));
    let fields: Vec<(&str, &[u8])> = headers.iter().skip(headers.len() - 3).collect();
    assert_eq!(fields, [("X-Tag", b"one".as_slice()), ("x-tag", b"two"), ("X-Raw", b"caf\xe9")]);
    assert!(headers.has_token("Connection", "UPGRADE"));
}

#[test]
fn origin_is_optional() {
    assert_eq!(parse(Head::request().remove("Origin")).origin(), None);
}

#[test]
fn non_get_method_is_405() {
    let err = reject(Head::request().start("POST /chat HTTP/1.1"));
    assert_eq!(err, HandshakeError::MethodNotAllowed("POST".into()));
    assert_eq!(err.status(), Some(405));
    assert!(err.reason().contains("POST"));
    let text = String::from_utf8(err.rejection().unwrap().to_vec().unwrap()).unwrap();
    assert!(text.contains("\r\nAllow: GET\r\n"));
}

#[test]
fn method_is_case_sensitive() {
    assert_eq!(answer(Head::request().start("get /chat HTTP/1.1")).0, 405);
}

#[test]
fn http_1_0_is_505() {
    let (status, reason) = answer(Head::request().start("GET /chat HTTP/1.0"));
    assert_eq!(status, 505);
    assert!(reason.contains("HTTP/1.1"));
}

#[test]
fn unparseable_version_is_400() {
    let err = reject(Head::request().start("GET /chat HTTP/2.0"));
    assert_eq!(err, HandshakeError::MalformedRequest("invalid HTTP version"));
    assert_eq!(err.status(), Some(400));
}

#[test]
fn malformed_http_is_400() {
    for head in [
        Head::request().add("Bad Header", "x"),
        Head::request().start("GET  /chat HTTP/1.1"),
        Head::request().start("GET /chat"),
    ] {
        assert_eq!(answer(head).0, 400);
    }
    let err = Request::parse(b"GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n");
    assert!(matches!(err, Err(HandshakeError::MalformedRequest(_))));
}

#[test]
fn missing_or_empty_host_is_400() {
    assert_eq!(answer(Head::request().remove("Host")), (400, "missing Host header".into()));
    assert_eq!(answer(Head::request().set("Host", "")).0, 400);
}

#[test]
fn duplicate_host_is_400() {
    let err = reject(Head::request().add("Host", "other.example"));
    assert_eq!(err, HandshakeError::DuplicateHeader("Host"));
    assert_eq!(err.reason(), "duplicate Host header");
}

#[test]
fn plain_get_is_426_saying_so() {
    let head = Head::request().remove("Upgrade").remove("Connection");
    let err = reject(head);
    assert_eq!(err, HandshakeError::NotAnUpgrade);
    assert_eq!(err.status(), Some(426));
    assert!(err.reason().contains("plain HTTP request"));
    let text = String::from_utf8(err.rejection().unwrap().to_vec().unwrap()).unwrap();
    assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(text.contains("\r\nUpgrade: websocket\r\n"));
    assert!(text.contains("\r\nConnection: Upgrade, close\r\n"));
}

#[test]
fn missing_upgrade_websocket_is_426() {
    assert_eq!(answer(Head::request().remove("Upgrade")), (426, "missing Upgrade: websocket header".into()));
    assert_eq!(reject(Head::request().set("Upgrade", "h2c")), HandshakeError::MissingUpgrade);
    assert_eq!(reject(Head::request().set("Upgrade", "websockets")), HandshakeError::MissingUpgrade);
}

#[test]
fn missing_connection_upgrade_is_426() {
    assert_eq!(
        answer(Head::request().set("Connection", "keep-alive")),
        (426, "missing Connection: Upgrade header".into())
    );
    assert_eq!(
        reject(Head::request().set("Connection", "upgraded")),
        HandshakeError::MissingConnectionUpgrade
    );
}

#[test]
fn token_lists_are_case_insensitive_and_may_span_headers() {
    parse(Head::request().set("Connection", "keep-alive, Upgrade"));
    parse(Head::request().set("Connection", "keep-alive,UPGRADE ,"));
    parse(Head::request().set("Upgrade", "WebSocket"));
    parse(Head::request().set("Upgrade", "h2c, websocket"));
    parse(Head::request().set("Connection", "keep-alive").add("Connection", "upgrade"));
}

#[test]
fn missing_version_is_426_advertising_13() {
    let err = reject(Head::request().remove("Sec-WebSocket-Version"));
    assert_eq!(err, HandshakeError::MissingVersion);
    assert_eq!(err.status(), Some(426));
    let text = String::from_utf8(err.rejection().unwrap().to_vec().unwrap()).unwrap();
    assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    assert!(text.contains("\r\nUpgrade: websocket\r\n"));
}

#[test]
fn other_version_is_426_advertising_13() {
    let err = reject(Head::request().set("Sec-WebSocket-Version", "8"));
    assert_eq!(err, HandshakeError::UnsupportedVersion("8".into()));
    assert_eq!(err.status(), Some(426));
    assert!(err.reason().contains("Sec-WebSocket-Version 8"));
    let text = String::from_utf8(err.rejection().unwrap().to_vec().unwrap()).unwrap();
    assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    assert_eq!(answer(Head::request().set("Sec-WebSocket-Version", "13, 8")).0, 426);
}

#[test]
fn duplicate_version_is_400() {
    let err = reject(Head::request().add("Sec-WebSocket-Version", "13"));
    assert_eq!(err, HandshakeError::DuplicateHeader("Sec-WebSocket-Version"));
    assert_eq!(err.status(), Some(400));
}

#[test]
fn missing_key_is_400() {
    assert_eq!(
        answer(Head::request().remove("Sec-WebSocket-Key")),
        (400, "missing Sec-WebSocket-Key header".into())
    );
}

#[test]
fn key_that_is_not_16_bytes_of_base64_is_400() {
    for key in ["not base64!", "dGhlIHNhbXBsZSBub25j", "c2hvcnQ=", ""] {
        let err = reject(Head::request().set("Sec-WebSocket-Key", key));
        assert_eq!(err, HandshakeError::InvalidKey, "{key:?}");
        assert_eq!(err.status(), Some(400));
    }
}

#[test]
fn duplicate_key_is_400() {
    let err = reject(Head::request().add("Sec-WebSocket-Key", KEY));
    assert_eq!(err, HandshakeError::DuplicateHeader("Sec-WebSocket-Key"));
    assert_eq!(err.reason(), "duplicate Sec-WebSocket-Key header");
}

#[test]
fn duplicate_or_non_utf8_origin_is_400() {
    let err = reject(Head::request().add("Origin", "https://evil.example"));
    assert_eq!(err, HandshakeError::DuplicateHeader("Origin"));
    let mut bytes = Head::request().set("Origin", "http://xn--").bytes();
    let at = bytes.windows(4).position(|w| w == b"xn--").unwrap();
    bytes[at] = 0xff;
    let err = Request::parse(&bytes).unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.reason().contains("Origin"));
}

#[test]
fn offered_protocols_are_collected_across_headers() {
    let request = parse(
        Head::request()
            .add("Sec-WebSocket-Protocol", "chat, superchat")
            .add("Sec-WebSocket-Protocol", " v2.chat ,,"),
    );
    assert_eq!(request.protocols(), ["chat", "superchat", "v2.chat"]);
}

#[test]
fn protocol_that_is_not_a_token_is_400() {
    let err = reject(Head::request().add("Sec-WebSocket-Protocol", "chat, super chat"));
    assert_eq!(err.status(), Some(400));
    assert!(err.reason().contains("Sec-WebSocket-Protocol"));
}

#[test]
fn server_preference_picks_the_subprotocol() {
    let request = parse(Head::request().add("Sec-WebSocket-Protocol", "v1.chat, v2.chat"));
    assert_eq!(request.choose_protocol(&["v2.chat", "v1.chat"]), Some("v2.chat"));
    assert_eq!(request.choose_protocol(&["v3.chat", "v1.chat"]), Some("v1.chat"));
    assert_eq!(request.choose_protocol(&["mqtt"]), None);
    assert_eq!(request.choose_protocol::<&str>(&[]), None);
    // Names are opaque: no case folding.
    assert_eq!(request.choose_protocol(&["V1.CHAT"]), None);
    assert_eq!(select_subprotocol(&[], &["v1.chat"]), None);
    let owned = vec![String::from("v1.chat")];
    assert_eq!(request.choose_protocol(&owned), Some("v1.chat"));
}

#[test]
fn offered_extensions_are_parsed() {
    let request = parse(
        Head::request()
            .add("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
            .add("Sec-WebSocket-Extensions", "x-foo; level=\"3\""),
    );
    assert_eq!(
        request.extensions(),
        [
            ExtensionOffer::new("permessage-deflate").with_flag("client_max_window_bits"),
            ExtensionOffer::new("x-foo").with_param("level", "3"),
        ]
    );
}

#[test]
fn malformed_extensions_are_400() {
    let err = reject(Head::request().add("Sec-WebSocket-Extensions", "permessage-deflate;"));
    assert!(matches!(err, HandshakeError::MalformedExtensions(_)));
    assert_eq!(err.status(), Some(400));
    assert!(err.reason().contains("expected a parameter name"));
}

#[test]
fn echoed_peer_text_is_truncated() {
    let long = "9".repeat(1000);
    let reason = reject(Head::request().set("Sec-WebSocket-Version", &long)).reason();
    assert!(reason.len() < 200, "{reason}");
}

#[test]
fn first_defect_decides_the_status() {
    // Wrong method and no upgrade headers: the method is checked first.
    let head = Head::request().start("PUT / HTTP/1.1").remove("Upgrade").remove("Connection");
    assert_eq!(answer(head).0, 405);
    // Wrong version and no key: the version is reported.
    let head = Head::request().set("Sec-WebSocket-Version", "8").remove("Sec-WebSocket-Key");
    assert_eq!(answer(head).0, 426);
}

//! Server side: the 101 and the rejection writers.

use bytes::BytesMut;

use super::super::{AcceptResponse, ExtensionOffer, HandshakeError, Rejection, Request};
use super::{ACCEPT, Head, KEY};

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

/// Splits a response into head and body, checking `Content-Length`.
fn body_of(response: &str) -> &str {
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
    assert_eq!(length, body.len());
    body
}

#[test]
fn accept_writes_the_rfc_headers() {
    let request = Request::parse(&Head::request().bytes()).unwrap().unwrap();
    let response = text(request.accept().to_vec().unwrap());
    assert_eq!(
        response,
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
        )
    );
}

#[test]
fn accept_writes_protocol_extensions_and_caller_headers() {
    let response = AcceptResponse::from_key(KEY)
        .with_protocol("chat")
        .with_extension(ExtensionOffer::new("permessage-deflate").with_param("server_max_window_bits", "10"))
        .with_header("Set-Cookie", "id=1; HttpOnly")
        .to_vec()
        .unwrap();
    let response = text(response);
    assert!(response.contains("\r\nSec-WebSocket-Protocol: chat\r\n"));
    assert!(
        response.contains("\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n")
    );
    assert!(response.ends_with("\r\nSet-Cookie: id=1; HttpOnly\r\n\r\n"));
}

#[test]
fn empty_protocol_writes_no_header() {
    let response = text(AcceptResponse::from_key(KEY).with_protocol("").to_vec().unwrap());
    assert!(!response.contains("Sec-WebSocket-Protocol"));
}

#[test]
fn accept_refuses_unsafe_caller_input_and_writes_nothing() {
    let cases = [
        (
            AcceptResponse::from_key(KEY).with_header("X-Evil", "a\r\nInjected: 1"),
            HandshakeError::InvalidHeaderValue { name: "X-Evil".into() },
        ),
        (
            AcceptResponse::from_key(KEY).with_header("X Evil", "a"),
            HandshakeError::InvalidHeaderName("X Evil".into()),
        ),
        (
            AcceptResponse::from_key(KEY).with_header("sec-websocket-accept", "x"),
            HandshakeError::ReservedHeader("sec-websocket-accept".into()),
        ),
        (
            AcceptResponse::from_key(KEY).with_protocol("chat\r\nX: 1"),
            HandshakeError::InvalidHeaderValue { name: "Sec-WebSocket-Protocol".into() },
        ),
        (
            AcceptResponse::from_key(KEY).with_extension(ExtensionOffer::new("bad name")),
            HandshakeError::InvalidHeaderValue { name: "Sec-WebSocket-Extensions".into() },
        ),
    ];
    for (response, expected) in cases {
        let mut dst = BytesMut::new();
        assert_eq!(response.encode(&mut dst), Err(expected.clone()));
        assert!(dst.is_empty(), "{expected} wrote bytes");
        assert_eq!(expected.status(), None);
    }
}

#[test]
fn rejection_by_the_application() {
    let response = Rejection::new(403, "origin https://evil.example is not allowed")
        .with_header("X-Request-Id", "42")
        .to_vec()
        .unwrap();
    let response = text(response);
    assert!(response.starts_with("HTTP/1.1 403 Forbidden\r\n"));
    assert!(response.contains("\r\nConnection: close\r\n"));
    assert!(response.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"));
    assert!(response.contains("\r\nX-Request-Id: 42\r\n"));
    assert_eq!(body_of(&response), "origin https://evil.example is not allowed\n");
}

#[test]
fn rejection_reason_stays_one_line() {
    let rejection = Rejection::new(400, " bad\r\nSet-Cookie: x=1\r\n");
    assert_eq!(rejection.reason(), "bad  Set-Cookie: x=1");
    let response = text(rejection.to_vec().unwrap());
    assert_eq!(body_of(&response), "bad  Set-Cookie: x=1\n");
    assert!(!response.contains("\r\nSet-Cookie"));
}

#[test]
fn empty_reason_falls_back_to_the_phrase() {
    let response = text(Rejection::new(404, "").to_vec().unwrap());
    assert_eq!(body_of(&response), "Not Found\n");
    let response = text(Rejection::new(499, "custom").to_vec().unwrap());
    assert!(response.starts_with("HTTP/1.1 499 Client Error\r\n"));
}

#[test]
fn rejection_adds_required_headers_unless_given() {
    let response = text(Rejection::new(405, "no").to_vec().unwrap());
    assert!(response.contains("\r\nAllow: GET\r\n"));
    let response = text(Rejection::new(405, "no").with_header("Allow", "GET, HEAD").to_vec().unwrap());
    assert_eq!(response.matches("Allow:").count(), 1);
    let response = text(Rejection::new(426, "no").to_vec().unwrap());
    assert!(response.contains("\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n"));
    let response = text(Rejection::new(400, "no").to_vec().unwrap());
    assert!(!response.contains("Upgrade"));
    assert!(!response.contains("Allow"));
}

#[test]
fn rejection_refuses_bad_status_and_headers() {
    let mut dst = BytesMut::new();
    for status in [0, 101, 199, 600, 999] {
        assert_eq!(Rejection::new(status, "x").encode(&mut dst), Err(HandshakeError::InvalidStatus(status)));
    }
    assert_eq!(
        Rejection::new(400, "x").with_header("Content-Length", "0").encode(&mut dst),
        Err(HandshakeError::ReservedHeader("Content-Length".into()))
    );
    assert_eq!(
        Rejection::new(400, "x").with_header("X-A", "\n").encode(&mut dst),
        Err(HandshakeError::InvalidHeaderValue { name: "X-A".into() })
    );
    assert!(dst.is_empty());
}

#[test]
fn every_request_error_becomes_a_complete_rejection() {
    let heads = [
        Head::request().start("POST / HTTP/1.1"),
        Head::request().start("GET / HTTP/1.0"),
        Head::request().remove("Host"),
        Head::request().remove("Upgrade").remove("Connection"),
        Head::request().remove("Upgrade"),
        Head::request().remove("Connection"),
        Head::request().remove("Sec-WebSocket-Version"),
        Head::request().set("Sec-WebSocket-Version", "7"),
        Head::request().remove("Sec-WebSocket-Key"),
        Head::request().set("Sec-WebSocket-Key", "x"),
        Head::request().add("Sec-WebSocket-Key", KEY),
        Head::request().add("Sec-WebSocket-Extensions", "a;;"),
    ];
    for head in heads {
        let err = Request::parse(&head.bytes()).unwrap_err();
        let rejection = err.rejection().unwrap();
        assert_eq!(Some(rejection.status()), err.status());
        let response = text(rejection.to_vec().unwrap());
        let status_line = format!("HTTP/1.1 {} ", rejection.status());
        assert!(response.starts_with(&status_line), "{response}");
        assert_eq!(body_of(&response), format!("{err}\n"));
    }
}

#[test]
fn client_side_errors_have_no_rejection() {
    assert_eq!(HandshakeError::MissingAccept.rejection(), None);
    assert_eq!(HandshakeError::MultipleProtocols.status(), None);
}

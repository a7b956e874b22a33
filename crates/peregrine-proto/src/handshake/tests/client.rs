//! Client side: writing the request and validating the response.

use bytes::BytesMut;

use super::super::{ClientRequest, ExtensionOffer, HandshakeError, Request};
use super::{ACCEPT, Head, KEY};

fn client() -> ClientRequest {
    ClientRequest::new("server.example.com", "/chat").with_key(KEY)
}

fn text(request: &ClientRequest) -> String {
    String::from_utf8(request.to_vec().unwrap()).unwrap()
}

fn check(client: &ClientRequest, head: Head) -> Result<super::super::Response, HandshakeError> {
    client.parse_response(&head.bytes()).map(Option::unwrap)
}

#[test]
fn request_has_the_rfc_headers_in_order() {
    let request = client()
        .with_origin("http://example.com")
        .with_protocol("chat")
        .with_protocol("superchat")
        .with_extension(ExtensionOffer::new("permessage-deflate").with_flag("client_max_window_bits"))
        .with_header("Authorization", "Bearer t");
    assert_eq!(
        text(&request),
        format!(
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
             Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             Authorization: Bearer t\r\n\r\n"
        )
    );
}

#[test]
fn new_requests_get_fresh_keys() {
    let a = ClientRequest::new("h", "/");
    let b = ClientRequest::new("h", "/");
    assert_ne!(a.key(), b.key());
    assert!(text(&a).contains(&format!("Sec-WebSocket-Key: {}\r\n", a.key())));
}

#[test]
fn host_header_has_the_port_only_when_not_default() {
    let host = |port: Option<u16>, tls: bool| {
        let request = ClientRequest::new("example.com", "/").with_tls(tls);
        match port {
            Some(port) => request.with_port(port),
            None => request,
        }
        .host_header()
    };
    assert_eq!(host(None, false), "example.com");
    assert_eq!(host(Some(80), false), "example.com");
    assert_eq!(host(Some(443), true), "example.com");
    assert_eq!(host(Some(443), false), "example.com:443");
    assert_eq!(host(Some(80), true), "example.com:80");
    assert_eq!(host(Some(9001), false), "example.com:9001");
    assert_eq!(ClientRequest::new("::1", "/").with_port(8080).host_header(), "[::1]:8080");
    assert_eq!(ClientRequest::new("[::1]", "/").host_header(), "[::1]");
}

#[test]
fn empty_resource_means_root() {
    assert!(text(&ClientRequest::new("h", "")).starts_with("GET / HTTP/1.1\r\n"));
}

#[test]
fn unsafe_request_input_is_refused_and_nothing_is_written() {
    let cases = [
        (ClientRequest::new("h", "chat"), HandshakeError::InvalidResource("chat".into())),
        (ClientRequest::new("h", "/a b"), HandshakeError::InvalidResource("/a b".into())),
        (ClientRequest::new("h", "/\r\nX: 1"), HandshakeError::InvalidResource("/\r\nX: 1".into())),
        (ClientRequest::new("", "/"), invalid("Host")),
        (ClientRequest::new("h\r\nX: 1", "/"), invalid("Host")),
        (ClientRequest::new("user@h", "/"), invalid("Host")),
        (client().with_key("short"), invalid("Sec-WebSocket-Key")),
        (client().with_origin("http://a\r\nX: 1"), invalid("Origin")),
        (client().with_protocol("a b"), invalid("Sec-WebSocket-Protocol")),
        (client().with_protocol("a").with_protocol("a"), invalid("Sec-WebSocket-Protocol")),
        (
            client().with_extension(ExtensionOffer::new("x").with_param("a\n", "1")),
            invalid("Sec-WebSocket-Extensions"),
        ),
        (client().with_header("X-A", "1\r\nX-B: 2"), invalid("X-A")),
        (client().with_header("X-A", "nul\0"), invalid("X-A")),
        (client().with_header("X:A", "1"), HandshakeError::InvalidHeaderName("X:A".into())),
        (client().with_header("", "1"), HandshakeError::InvalidHeaderName(String::new())),
        (
            client().with_header("sec-websocket-key", KEY),
            HandshakeError::ReservedHeader("sec-websocket-key".into()),
        ),
        (client().with_header("Host", "h"), HandshakeError::ReservedHeader("Host".into())),
    ];
    for (request, expected) in cases {
        let mut dst = BytesMut::new();
        assert_eq!(request.encode(&mut dst), Err(expected.clone()));
        assert!(dst.is_empty(), "{expected}");
        assert_eq!(expected.status(), None);
    }
}

fn invalid(name: &str) -> HandshakeError {
    HandshakeError::InvalidHeaderValue { name: name.into() }
}

#[test]
fn full_round_trip() {
    let client = ClientRequest::new("example.com", "/chat")
        .with_protocol("v1")
        .with_protocol("v2")
        .with_extension(ExtensionOffer::new("permessage-deflate"));
    let request = Request::parse(&client.to_vec().unwrap()).unwrap().unwrap();
    assert_eq!(request.host(), "example.com");
    assert_eq!(request.protocols(), ["v1", "v2"]);
    let protocol = request.choose_protocol(&["v2"]).unwrap();
    let accepted = request.extensions()[0].clone().with_flag("server_no_context_takeover");
    let bytes = request.accept().with_protocol(protocol).with_extension(accepted.clone()).to_vec().unwrap();
    let response = client.parse_response(&bytes).unwrap().unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.reason(), "Switching Protocols");
    assert_eq!(response.protocol(), Some("v2"));
    assert_eq!(response.extensions(), [accepted]);
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some(response.headers().get("Sec-WebSocket-Accept").unwrap())
    );
    assert_eq!(response.consumed(), bytes.len());
}

#[test]
fn non_101_keeps_everything_for_diagnosis() {
    let mut buf = Head::response().start("HTTP/1.1 403 Forbidden").set("Content-Length", "17").bytes();
    let header_len = buf.len();
    buf.extend_from_slice(b"origin not liked\n");
    let err = client().parse_response(&buf).unwrap_err();
    let HandshakeError::UnexpectedStatus { status, reason, headers, header_len: len } = &err else {
        panic!("{err:?}");
    };
    assert_eq!((*status, reason.as_str(), *len), (403, "Forbidden", header_len));
    assert_eq!(headers.get("content-length"), Some("17"));
    assert_eq!(&buf[*len..], b"origin not liked\n");
    assert_eq!(err.status(), None);
    assert_eq!(err.rejection(), None);
    assert!(err.to_string().contains("403 Forbidden"));
}

#[test]
fn redirect_is_not_followed_but_reported() {
    let head = Head::response().start("HTTP/1.1 301 Moved Permanently").add("Location", "wss://x/");
    let err = check(&client(), head).unwrap_err();
    assert!(matches!(err, HandshakeError::UnexpectedStatus { status: 301, .. }));
}

#[test]
fn wrong_missing_or_duplicate_accept_fails() {
    let err = check(&client(), Head::response().set("Sec-WebSocket-Accept", "AAAA")).unwrap_err();
    assert_eq!(err, HandshakeError::AcceptMismatch { expected: ACCEPT.into(), received: "AAAA".into() });
    assert_eq!(
        check(&client(), Head::response().remove("Sec-WebSocket-Accept")),
        Err(HandshakeError::MissingAccept)
    );
    assert_eq!(
        check(&client(), Head::response().add("Sec-WebSocket-Accept", ACCEPT)),
        Err(HandshakeError::ResponseDuplicateHeader("Sec-WebSocket-Accept"))
    );
    // The accept of someone else's key.
    let other = ClientRequest::new("h", "/");
    assert!(matches!(check(&other, Head::response()), Err(HandshakeError::AcceptMismatch { .. })));
}

#[test]
fn missing_upgrade_or_connection_fails() {
    assert_eq!(
        check(&client(), Head::response().remove("Upgrade")),
        Err(HandshakeError::ResponseMissingUpgrade)
    );
    assert_eq!(
        check(&client(), Head::response().set("Upgrade", "h2c")),
        Err(HandshakeError::ResponseMissingUpgrade)
    );
    assert_eq!(
        check(&client(), Head::response().set("Connection", "keep-alive")),
        Err(HandshakeError::ResponseMissingConnectionUpgrade)
    );
}

#[test]
fn response_token_lists_are_case_insensitive() {
    let head = Head::response().set("Connection", "keep-alive, UPGRADE").set("Upgrade", "WebSocket");
    check(&client(), head).unwrap();
}

#[test]
fn chosen_protocol_must_be_one_offered() {
    let offering = client().with_protocol("chat").with_protocol("superchat");
    let response = check(&offering, Head::response().add("Sec-WebSocket-Protocol", " superchat ")).unwrap();
    assert_eq!(response.protocol(), Some("superchat"));
    assert_eq!(check(&offering, Head::response()).unwrap().protocol(), None);
    assert_eq!(
        check(&offering, Head::response().add("Sec-WebSocket-Protocol", "mqtt")),
        Err(HandshakeError::UnofferedProtocol("mqtt".into()))
    );
    // Exact match: protocol names are opaque.
    assert_eq!(
        check(&offering, Head::response().add("Sec-WebSocket-Protocol", "Chat")),
        Err(HandshakeError::UnofferedProtocol("Chat".into()))
    );
    assert_eq!(
        check(&client(), Head::response().add("Sec-WebSocket-Protocol", "chat")),
        Err(HandshakeError::UnofferedProtocol("chat".into()))
    );
}

#[test]
fn more_than_one_chosen_protocol_fails() {
    let offering = client().with_protocol("chat").with_protocol("superchat");
    assert_eq!(
        check(&offering, Head::response().add("Sec-WebSocket-Protocol", "chat, superchat")),
        Err(HandshakeError::MultipleProtocols)
    );
    let two_headers =
        Head::response().add("Sec-WebSocket-Protocol", "chat").add("Sec-WebSocket-Protocol", "chat");
    assert_eq!(check(&offering, two_headers), Err(HandshakeError::MultipleProtocols));
}

#[test]
fn accepted_extensions_are_checked_against_the_offer() {
    let offering = client().with_extension(ExtensionOffer::new("permessage-deflate"));
    let head =
        Head::response().add("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=12");
    let response = check(&offering, head.clone()).unwrap();
    assert_eq!(response.extensions()[0].param("server_max_window_bits"), Some(Some("12")));
    assert_eq!(response.check_extensions(&["permessage-deflate"]), Ok(()));
    assert_eq!(
        response.check_extensions::<&str>(&[]),
        Err(HandshakeError::UnofferedExtension("permessage-deflate".into()))
    );
    assert_eq!(check(&client(), head), Err(HandshakeError::UnofferedExtension("permessage-deflate".into())));
}

#[test]
fn malformed_response_extensions_fail() {
    let offering = client().with_extension(ExtensionOffer::new("permessage-deflate"));
    let err = check(&offering, Head::response().add("Sec-WebSocket-Extensions", "permessage-deflate; ="))
        .unwrap_err();
    assert!(matches!(err, HandshakeError::ResponseMalformedExtensions(_)));
    assert_eq!(err.status(), None);
    // The syntax error is in the text, so it is not repeated as the source.
    assert!(err.to_string().contains("at byte"), "{err}");
    assert!(std::error::Error::source(&err).is_none());
}

#[test]
fn malformed_response_fails() {
    let err = client().parse_response(b"HTTP/1.1 1O1 OK\r\n\r\n").unwrap_err();
    assert!(matches!(err, HandshakeError::MalformedResponse(_)));
    assert_eq!(err.status(), None);
}

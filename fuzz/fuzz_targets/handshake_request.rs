//! The server side of the opening handshake: `Request::parse` on arbitrary
//! bytes.
//!
//! Byte 0 picks the limits (0x00..=0x7f: the defaults; otherwise small ones
//! derived from bytes 0 and 1); the rest is the request.
//!
//! Invariants:
//! - no panic;
//! - `Ok(Some(request))`: `consumed()` is at most the input and the header
//!   limit; parsing just those bytes gives the same request and every
//!   shorter prefix needs more; the request is a `GET` with a non-empty host
//!   and a valid key; the 101 built from it (with the first offered
//!   subprotocol and every offered extension) encodes, and a client with
//!   the same key and offers accepts it;
//! - `Err(e)`: `e.status()` is a 4xx/5xx status the docs promise, and the
//!   rejection encodes into a response that a client reads back as that
//!   status;
//! - `Ok(None)`: the input is within the header limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine_proto::handshake::{ClientRequest, HandshakeError, HeaderLimits, Request};

fuzz_target!(|data: &[u8]| {
    let [selector, rest @ ..] = data else { return };
    let (limits, input) = if selector & 0x80 == 0 {
        (HeaderLimits::default(), rest)
    } else {
        let [count, input @ ..] = rest else { return };
        let limits = HeaderLimits::default()
            .with_max_header_size(usize::from(selector & 0x7f) * 32)
            .with_max_headers(usize::from(*count % 80));
        (limits, input)
    };

    match Request::parse_with(input, &limits) {
        Ok(None) => assert!(input.len() <= limits.max_header_size, "need more past the limit"),
        Ok(Some(request)) => check_request(input, &limits, &request),
        Err(error) => check_rejection(&error),
    }
});

fn check_request(input: &[u8], limits: &HeaderLimits, request: &Request) {
    let consumed = request.consumed();
    assert!(consumed <= input.len(), "consumed {consumed} of {} bytes", input.len());
    assert!(consumed <= limits.max_header_size, "consumed {consumed} past the limit");
    assert_eq!(Request::parse_with(&input[..consumed], limits), Ok(Some(request.clone())));
    // Every strict prefix needs more. (Checking them all is quadratic, so
    // only the last few bytes and a few others.)
    let prefixes = (consumed.saturating_sub(4)..consumed).chain([0, 1, consumed / 2]);
    for len in prefixes.filter(|&len| len < consumed) {
        assert_eq!(Request::parse_with(&input[..len], limits), Ok(None), "prefix of {len} bytes");
    }

    assert_eq!(request.method(), "GET");
    assert!(!request.host().is_empty());
    assert_eq!(request.accept_key().len(), 28);
    assert_eq!(request.key().len(), 24);

    // Accept with the client's first protocol and all its extensions.
    let offered: Vec<&str> = request.protocols().iter().map(String::as_str).collect();
    let protocol = request.choose_protocol(&offered);
    assert_eq!(protocol, offered.first().copied());
    let mut accept = request.accept().with_protocol(protocol.unwrap_or_default());
    for extension in request.extensions() {
        accept = accept.with_extension(extension.clone());
    }
    let response = match accept.to_vec() {
        Ok(response) => response,
        Err(e) => panic!("cannot encode the 101 for an accepted request: {e}; {request:?}"),
    };

    // A client that sent this request accepts the answer.
    let mut client = ClientRequest::new("example.com", "/").with_key(request.key());
    for protocol in request.protocols() {
        client = client.with_protocol(protocol.clone());
    }
    for extension in request.extensions() {
        client = client.with_extension(extension.clone());
    }
    let answer = client.parse_response(&response);
    let Ok(Some(answer)) = answer else {
        panic!("the client rejects our 101: {answer:?}\n{}", String::from_utf8_lossy(&response));
    };
    assert_eq!(answer.consumed(), response.len());
    assert_eq!(answer.protocol(), protocol);
    assert_eq!(answer.extensions(), request.extensions());
}

fn check_rejection(error: &HandshakeError) {
    let Some(status) = error.status() else {
        panic!("server-side error without a status: {error:?}");
    };
    assert!(matches!(status, 400 | 405 | 426 | 431 | 505), "status {status} for {error:?}");
    let Some(rejection) = error.rejection() else {
        panic!("no rejection for {error:?}");
    };
    assert_eq!(rejection.status(), status);
    let bytes = match rejection.to_vec() {
        Ok(bytes) => bytes,
        Err(e) => panic!("cannot encode the rejection of {error:?}: {e}"),
    };
    // A client reads it back as that status, body after the header block.
    let client = ClientRequest::new("example.com", "/");
    match client.parse_response(&bytes) {
        Err(HandshakeError::UnexpectedStatus { status: got, header_len, .. }) => {
            assert_eq!(got, status);
            assert!(header_len < bytes.len());
            assert_eq!(&bytes[header_len..], format!("{}\n", rejection.reason()).as_bytes());
        }
        other => panic!("the client reads our {status} as {other:?}\n{}", String::from_utf8_lossy(&bytes)),
    }
}

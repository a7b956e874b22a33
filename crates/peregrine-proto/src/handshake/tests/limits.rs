//! Bounded parsing: need-more, size and count limits, leftover bytes, and
//! no panics on arbitrary input.

use super::super::{
    ClientRequest, DEFAULT_MAX_HEADER_SIZE, HandshakeError, HeaderLimits, Request, parse_extensions,
};
use super::{Head, KEY, Rng};

#[test]
fn every_strict_prefix_of_a_request_needs_more() {
    let bytes = Head::request().bytes();
    for end in 0..bytes.len() {
        assert_eq!(Request::parse(&bytes[..end]), Ok(None), "prefix of {end} bytes");
    }
    assert!(Request::parse(&bytes).unwrap().is_some());
}

#[test]
fn every_strict_prefix_of_a_response_needs_more() {
    let client = ClientRequest::new("server.example.com", "/chat").with_key(KEY);
    let bytes = Head::response().bytes();
    for end in 0..bytes.len() {
        assert_eq!(client.parse_response(&bytes[..end]), Ok(None), "prefix of {end} bytes");
    }
    assert!(client.parse_response(&bytes).unwrap().is_some());
}

#[test]
fn bytes_after_the_request_head_are_left_to_the_caller() {
    let head = Head::request().bytes();
    let mut buf = head.clone();
    buf.extend_from_slice(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
    let request = Request::parse(&buf).unwrap().unwrap();
    assert_eq!(request.consumed(), head.len());
    assert_eq!(&buf[request.consumed()..], b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
}

#[test]
fn bytes_after_the_response_head_are_left_to_the_caller() {
    let client = ClientRequest::new("server.example.com", "/chat").with_key(KEY);
    let head = Head::response().bytes();
    let mut buf = head.clone();
    buf.extend_from_slice(b"\x81\x02hi");
    let response = client.parse_response(&buf).unwrap().unwrap();
    assert_eq!(response.consumed(), head.len());
    assert_eq!(&buf[response.consumed()..], b"\x81\x02hi");
}

/// A request whose head is exactly `size` bytes long.
fn request_of_size(size: usize) -> Vec<u8> {
    let base = Head::request().add("X-Pad", "").bytes();
    let pad = "a".repeat(size - base.len());
    let bytes = Head::request().add("X-Pad", &pad).bytes();
    assert_eq!(bytes.len(), size);
    bytes
}

#[test]
fn a_head_of_exactly_the_limit_is_accepted() {
    let bytes = request_of_size(DEFAULT_MAX_HEADER_SIZE);
    let request = Request::parse(&bytes).unwrap().unwrap();
    assert_eq!(request.consumed(), DEFAULT_MAX_HEADER_SIZE);
}

#[test]
fn a_head_one_byte_over_the_limit_is_431() {
    let bytes = request_of_size(DEFAULT_MAX_HEADER_SIZE + 1);
    // Up to the limit it could still fit, so it is "need more"...
    assert_eq!(Request::parse(&bytes[..DEFAULT_MAX_HEADER_SIZE]), Ok(None));
    // ...one byte more and it cannot.
    let err = Request::parse(&bytes).unwrap_err();
    assert_eq!(err, HandshakeError::RequestTooLarge { limit: DEFAULT_MAX_HEADER_SIZE });
    assert_eq!(err.status(), Some(431));
    assert!(err.reason().contains("8192 bytes"));
}

#[test]
fn nothing_past_the_limit_is_read() {
    // Valid but incomplete up to the limit, then a NUL that httparse would
    // call malformed (400): seeing 431 proves the parser stopped at the limit.
    let limits = HeaderLimits::default().with_max_header_size(256);
    let mut buf = Head::request().bytes();
    buf.truncate(buf.len() - 2); // drop the final empty line
    buf.resize(256, b'a');
    assert_eq!(Request::parse_with(&buf, &limits), Ok(None));
    buf.extend_from_slice(b"\0\r\n\r\n");
    assert_eq!(Request::parse_with(&buf, &limits), Err(HandshakeError::RequestTooLarge { limit: 256 }));
    // A huge buffer costs nothing more.
    buf.resize(1 << 20, b'x');
    assert_eq!(Request::parse_with(&buf, &limits).unwrap_err().status(), Some(431));
}

#[test]
fn too_many_headers_is_431() {
    let mut head = Head::request();
    for i in 0..60 {
        head = head.add(&format!("X-H{i}"), "1");
    }
    let err = Request::parse(&head.bytes()).unwrap_err();
    assert_eq!(err, HandshakeError::TooManyHeaders { limit: 64 });
    assert_eq!(err.status(), Some(431));

    let few = HeaderLimits::default().with_max_headers(3);
    assert_eq!(
        Request::parse_with(&Head::request().bytes(), &few),
        Err(HandshakeError::TooManyHeaders { limit: 3 })
    );
}

#[test]
fn more_than_64_headers_can_be_allowed() {
    let mut head = Head::request();
    for i in 0..90 {
        head = head.add(&format!("X-H{i}"), "1");
    }
    let limits = HeaderLimits::default().with_max_headers(100);
    let request = Request::parse_with(&head.bytes(), &limits).unwrap().unwrap();
    assert_eq!(request.headers().len(), 96);
}

#[test]
fn response_limits_are_client_side_errors() {
    let client = ClientRequest::new("h", "/").with_key(KEY);
    let limits = HeaderLimits::default().with_max_header_size(64);
    let err = client.parse_response_with(&Head::response().bytes(), &limits).unwrap_err();
    assert_eq!(err, HandshakeError::ResponseTooLarge { limit: 64 });
    assert_eq!(err.status(), None);

    let few = HeaderLimits::default().with_max_headers(1);
    let err = client.parse_response_with(&Head::response().bytes(), &few).unwrap_err();
    assert_eq!(err, HandshakeError::ResponseTooManyHeaders { limit: 1 });
}

#[test]
fn zero_limits_reject_rather_than_panic() {
    let limits = HeaderLimits::default().with_max_header_size(0).with_max_headers(0);
    assert_eq!(Request::parse_with(b"", &limits), Ok(None));
    assert!(Request::parse_with(b"G", &limits).is_err());
    let no_headers = HeaderLimits::default().with_max_headers(0);
    assert_eq!(
        Request::parse_with(&Head::request().bytes(), &no_headers),
        Err(HandshakeError::TooManyHeaders { limit: 0 })
    );
}

#[test]
fn random_and_mutated_input_never_panics() {
    let client = ClientRequest::new("server.example.com", "/chat").with_key(KEY);
    let seeds = [Head::request().bytes(), Head::response().bytes()];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let mut buf = seeds[round % 2].clone();
        if round % 5 == 0 {
            // Pure noise, biased towards HTTP-ish bytes.
            let alphabet = b"GET HTTP/1.1\r\n:;,=\"\\ \tabcXYZ019\x00\xff";
            let len = rng.below(300);
            buf = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
        } else {
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(buf.len());
                match rng.below(3) {
                    0 => buf[at] = rng.next() as u8,
                    1 => {
                        buf.remove(at);
                    }
                    _ => buf.insert(at, b"\r\n,;=\"\\: "[rng.below(9)]),
                }
            }
            let cut = rng.below(buf.len() + 1);
            buf.truncate(cut.max(buf.len() / 2));
        }
        if let Ok(Some(request)) = Request::parse(&buf) {
            assert!(request.consumed() <= buf.len());
            let _ = request.accept().to_vec();
        }
        if let Ok(Some(response)) = client.parse_response(&buf) {
            assert!(response.consumed() <= buf.len());
        }
        if let Err(e) = Request::parse(&buf) {
            let _ = e.rejection().map(|r| r.to_vec());
        }
        let _ = parse_extensions([&buf]);
    }
}

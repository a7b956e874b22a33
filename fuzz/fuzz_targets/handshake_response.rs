//! The client side of the opening handshake: `ClientRequest::parse_response`
//! on arbitrary bytes, for a request with a fixed key (the RFC's sample),
//! two subprotocols and two extensions offered.
//!
//! Byte 0 picks the limits (0x00..=0x7f: the defaults; otherwise small ones
//! derived from bytes 0 and 1); the rest is the response.
//!
//! Invariants:
//! - no panic;
//! - every error is the peer's or the limits' fault: `status()` is `None`;
//!   `UnexpectedStatus` carries a status other than 101 and a header length
//!   within the input and the limit;
//! - `Ok(Some(response))`: a 101 whose `consumed()` is at most the input and
//!   the limit; parsing just those bytes gives the same response and shorter
//!   prefixes need more; its protocol and extensions were offered, and it
//!   carries the right `Sec-WebSocket-Accept`;
//! - `Ok(None)`: the input is within the header limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine_proto::handshake::{ClientRequest, ExtensionOffer, HandshakeError, HeaderLimits, accept_key};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

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
    let client = ClientRequest::new("example.com", "/chat")
        .with_key(KEY)
        .with_protocol("chat")
        .with_protocol("superchat")
        .with_extension(ExtensionOffer::new("permessage-deflate").with_flag("client_max_window_bits"))
        .with_extension(ExtensionOffer::new("x-test"));

    match client.parse_response_with(input, &limits) {
        Ok(None) => assert!(input.len() <= limits.max_header_size, "need more past the limit"),
        Ok(Some(response)) => {
            let consumed = response.consumed();
            assert!(consumed <= input.len() && consumed <= limits.max_header_size, "consumed {consumed}");
            let again = client.parse_response_with(&input[..consumed], &limits);
            assert_eq!(again, Ok(Some(response.clone())));
            let prefixes = (consumed.saturating_sub(4)..consumed).chain([0, 1, consumed / 2]);
            for len in prefixes.filter(|&len| len < consumed) {
                let prefix = client.parse_response_with(&input[..len], &limits);
                assert!(matches!(prefix, Ok(None)), "prefix of {len} bytes: {prefix:?}");
            }
            assert_eq!(response.status(), 101);
            if let Some(protocol) = response.protocol() {
                assert!(client.protocols().iter().any(|p| p == protocol), "unoffered {protocol}");
            }
            for extension in response.extensions() {
                let offered =
                    client.extensions().iter().any(|e| e.name.eq_ignore_ascii_case(&extension.name));
                assert!(offered, "unoffered extension {extension:?}");
            }
            let accept = response.headers().get_all("Sec-WebSocket-Accept").collect::<Vec<_>>();
            assert_eq!(accept.len(), 1);
            assert_eq!(accept[0].trim_ascii(), accept_key(KEY.as_bytes()).as_bytes());
        }
        Err(error) => {
            assert_eq!(error.status(), None, "client-side error with a status: {error:?}");
            assert!(error.rejection().is_none());
            assert!(!error.to_string().is_empty());
            if let HandshakeError::UnexpectedStatus { status, header_len, .. } = error {
                assert_ne!(status, 101);
                assert!(header_len <= input.len() && header_len <= limits.max_header_size, "{header_len}");
            }
        }
    }
});

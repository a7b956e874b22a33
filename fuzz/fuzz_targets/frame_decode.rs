//! `FrameHeader::decode` on arbitrary bytes, checked against a byte-level
//! reference reading of RFC 6455 §5.2 and against `encode`.
//!
//! Invariants:
//! - `decode` never panics, and a decoded header is at most 14 bytes and no
//!   longer than the input;
//! - it agrees with the reference on every field, on "need more" and on
//!   which inputs are errors;
//! - the header does not depend on bytes after it, and every shorter prefix
//!   is "need more";
//! - any header the protocol allows, built from the input's bytes, encodes
//!   and decodes back unchanged;
//! - `encode` writes `encoded_len()` bytes, which decode to the same header;
//!   when the input used the shortest length encoding, `encode` reproduces
//!   it byte for byte, and otherwise it is strictly shorter.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine_proto::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};

/// What the reference reading expects.
#[derive(Debug, PartialEq)]
enum Expected {
    NeedMore,
    Error,
    Header { fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload_len: u64, len: usize },
}

fn reference(buf: &[u8]) -> Expected {
    if buf.len() < 2 {
        return Expected::NeedMore;
    }
    let opcode = buf[0] & 0x0f;
    if !matches!(opcode, 0x0 | 0x1 | 0x2 | 0x8 | 0x9 | 0xa) {
        return Expected::Error;
    }
    let fin = buf[0] & 0x80 != 0;
    let rsv = (buf[0] >> 4) & 0b111;
    let masked = buf[1] & 0x80 != 0;
    let (payload_len, ext) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Expected::NeedMore;
            }
            (u64::from(buf[2]) << 8 | u64::from(buf[3]), 2)
        }
        127 => {
            if buf.len() < 10 {
                return Expected::NeedMore;
            }
            let n = buf[2..10].iter().fold(0u64, |n, &b| n << 8 | u64::from(b));
            if n >= 1 << 63 {
                return Expected::Error;
            }
            (n, 8)
        }
        n => (u64::from(n), 0),
    };
    let control = opcode & 0x8 != 0;
    if control && (!fin || payload_len > MAX_CONTROL_PAYLOAD as u64) {
        return Expected::Error;
    }
    let mut len = 2 + ext;
    let mask = if masked {
        if buf.len() < len + 4 {
            return Expected::NeedMore;
        }
        let key = [buf[len], buf[len + 1], buf[len + 2], buf[len + 3]];
        len += 4;
        Some(key)
    } else {
        None
    };
    Expected::Header { fin, rsv, opcode, mask, payload_len, len }
}

/// Whether the input spells its length in the fewest bytes.
fn shortest_form(payload_len: u64, header_len: usize, masked: bool) -> bool {
    let ext = header_len - 2 - if masked { 4 } else { 0 };
    match ext {
        0 => true,
        2 => payload_len > 125,
        _ => payload_len > 0xffff,
    }
}

/// Builds a header from the input's bytes (independently of `decode`) and
/// checks that every header the protocol allows encodes and decodes back.
fn encode_roundtrip(data: &[u8]) {
    let Some(bytes) = data.get(..15) else { return };
    let opcode =
        [OpCode::Continuation, OpCode::Text, OpCode::Binary, OpCode::Close, OpCode::Ping, OpCode::Pong]
            [usize::from(bytes[0] % 6)];
    let fin = bytes[1] & 1 != 0;
    let rsv = (bytes[1] >> 1) & 0b111;
    let mask = (bytes[1] & 0x10 != 0).then(|| [bytes[2], bytes[3], bytes[4], bytes[5]]);
    // A shift spreads lengths over every magnitude.
    let raw = bytes[6..14].iter().fold(0u64, |n, &b| n << 8 | u64::from(b));
    let payload_len = raw >> (bytes[14] % 64);
    let header = FrameHeader { fin, rsv, opcode, mask, payload_len };
    let allowed =
        payload_len < 1 << 63 && (!opcode.is_control() || (fin && payload_len <= MAX_CONTROL_PAYLOAD as u64));
    if !allowed {
        return;
    }
    let mut out = [0u8; MAX_HEADER_LEN];
    let len = header.encode(&mut out);
    assert_eq!(len, header.encoded_len());
    assert_eq!(FrameHeader::decode(&out[..len]), Ok(Some((header, len))), "{header:?}");
}

fuzz_target!(|data: &[u8]| {
    encode_roundtrip(data);
    let decoded = FrameHeader::decode(data);
    let expected = reference(data);
    match (&decoded, &expected) {
        (Ok(None), Expected::NeedMore) | (Err(_), Expected::Error) => return,
        (Ok(Some((h, n))), Expected::Header { fin, rsv, opcode, mask, payload_len, len }) => {
            assert_eq!(
                (h.fin, h.rsv, h.opcode as u8, h.mask, h.payload_len, *n),
                (*fin, *rsv, *opcode, *mask, *payload_len, *len),
                "decode disagrees with the reference"
            );
        }
        _ => panic!("decode returned {decoded:?}, reference expects {expected:?}"),
    }
    let Ok(Some((header, n))) = decoded else { unreachable!() };
    assert!(n <= MAX_HEADER_LEN && n <= data.len(), "header length {n}");
    assert!(header.rsv <= 0b111);

    // Bytes after the header change nothing; shorter prefixes need more.
    assert_eq!(FrameHeader::decode(&data[..n]), Ok(Some((header, n))));
    for partial in 0..n {
        assert_eq!(FrameHeader::decode(&data[..partial]), Ok(None), "prefix of {partial} bytes");
    }

    let mut out = [0u8; MAX_HEADER_LEN];
    let len = header.encode(&mut out);
    assert_eq!(len, header.encoded_len(), "encode and encoded_len disagree");
    assert!(len <= n, "encoding ({len} bytes) longer than the input's ({n})");
    assert_eq!(FrameHeader::decode(&out[..len]), Ok(Some((header, len))), "re-encoded header");
    if shortest_form(header.payload_len, n, header.mask.is_some()) {
        assert_eq!(&out[..len], &data[..n], "shortest-form header does not roundtrip");
    } else {
        assert!(len < n, "non-minimal input encoding not shortened");
    }
});

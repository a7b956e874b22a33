//! The incremental `Utf8Validator` against `std::str::from_utf8`.
//!
//! The input is text plus the lengths of the pieces it is fed in.
//!
//! Invariants:
//! - fed in any pieces, the validator accepts (every `feed` and `finish` Ok)
//!   exactly when `from_utf8` accepts the whole;
//! - it fails at the first impossible byte: the first `feed` to fail is the
//!   one whose piece holds the first byte after which no continuation could
//!   make the text valid; earlier pieces are accepted;
//! - text cut inside a code point fails only at `finish`;
//! - `reset` forgets an unfinished code point, and the validator is reusable
//!   after `finish`.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use peregrine_proto::utf8::{self, Utf8Validator};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Lengths of the pieces, cycled; 0 feeds an empty piece.
    pieces: Vec<u8>,
    data: Vec<u8>,
}

/// The index of the first byte at which the text can no longer become valid
/// UTF-8, or `None` if it is valid or only cut short at the end.
fn first_impossible_byte(data: &[u8]) -> Option<usize> {
    let error = std::str::from_utf8(data).err()?;
    let error_len = error.error_len()?;
    let start = error.valid_up_to();
    // A lead byte that can start a sequence is rejected only at the byte that
    // breaks the sequence; any other byte is rejected on its own.
    Some(if matches!(data[start], 0xc2..=0xf4) { start + error_len } else { start })
}

fuzz_target!(|input: Input| {
    let Input { pieces, data } = input;
    let std_ok = std::str::from_utf8(&data).is_ok();
    assert_eq!(utf8::validate(&data).is_ok(), std_ok, "validate() disagrees with std");
    let impossible = first_impossible_byte(&data);

    // Cycle through the lengths; with none that is non-zero, feed it whole.
    let mut lengths: Vec<usize> = pieces.iter().map(|&l| usize::from(l)).collect();
    if lengths.iter().all(|&l| l == 0) {
        lengths.push(data.len().max(1));
    }
    let mut lengths = lengths.into_iter().cycle();
    let mut validator = Utf8Validator::default();
    let mut pos = 0;
    let mut failed_at = None;
    while pos < data.len() {
        let len = lengths.next().unwrap_or(1).min(data.len() - pos);
        if validator.feed(&data[pos..pos + len]).is_err() {
            failed_at = Some((pos, pos + len));
            break;
        }
        pos += len;
    }
    match (impossible, failed_at) {
        (None, None) => {
            let finished = validator.finish().is_ok();
            assert_eq!(finished, std_ok, "finish() disagrees with std on {data:x?}");
        }
        (Some(at), Some((start, end))) => assert!(
            (start..end).contains(&at),
            "failed on the piece {start}..{end}, but the first impossible byte is at {at}: {data:x?}"
        ),
        (Some(at), None) => panic!("never failed, but byte {at} is impossible: {data:x?}"),
        (None, Some((start, end))) => {
            panic!("failed on the piece {start}..{end} of text that is valid so far: {data:x?}")
        }
    }

    // After finish (or reset) the validator starts afresh.
    validator.reset();
    assert!(validator.feed("é€𝄞 ok".as_bytes()).is_ok());
    assert!(validator.finish().is_ok());
    assert!(validator.feed(&[0xe2, 0x82]).is_ok());
    validator.reset();
    assert!(validator.feed(b"a").is_ok());
    assert!(validator.finish().is_ok());
});

//! The fast masking path against the byte-at-a-time reference.
//!
//! Invariants, for arbitrary data, key, offset, alignment and split point:
//! - `apply_mask` equals `apply_mask_scalar`;
//! - masking in two pieces (the second at `offset + split`) equals masking
//!   the whole, as when a payload is unmasked while it arrives;
//! - masking twice restores the data.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use peregrine_proto::mask::{apply_mask, apply_mask_scalar};

#[derive(Debug, Arbitrary)]
struct Input {
    key: [u8; 4],
    offset: usize,
    /// Start of the masked slice inside the buffer, to vary alignment.
    skew: u8,
    split: u16,
    data: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let Input { key, offset, skew, split, data } = input;
    let start = usize::from(skew % 32).min(data.len());
    let original = &data[start..];

    let mut fast = data.clone();
    let mut slow = data.clone();
    apply_mask(&mut fast[start..], key, offset);
    apply_mask_scalar(&mut slow[start..], key, offset);
    assert_eq!(fast, slow, "fast path differs from scalar (key {key:?}, offset {offset}, start {start})");
    assert_eq!(fast[..start], data[..start], "bytes before the slice were touched");

    let split = usize::from(split).min(original.len());
    let mut pieces = original.to_vec();
    let (head, tail) = pieces.split_at_mut(split);
    apply_mask(head, key, offset);
    apply_mask(tail, key, offset.wrapping_add(split));
    assert_eq!(pieces, fast[start..], "piecewise masking differs (split {split})");

    apply_mask(&mut fast[start..], key, offset);
    assert_eq!(fast[start..], *original, "masking twice is not the identity");
});

//! Masking (RFC 6455 §5.3): XOR of the payload with a repeating 4-byte key.
//!
//! The fast path works on 16-byte words, which the compiler turns into SIMD
//! loads and stores on every target we build for; it needs no `unsafe`.
//! [`apply_mask_scalar`] is the byte-at-a-time reference the fuzzer compares
//! it against.

/// XORs `buf` with `key`, as if `buf` started `offset` bytes into the payload.
///
/// The offset lets a payload be unmasked piecewise as it arrives.
///
/// ```
/// use peregrine_proto::mask::apply_mask;
/// let key = [1, 2, 3, 4];
/// let mut data = *b"Hello, world";
/// apply_mask(&mut data[..5], key, 0);
/// apply_mask(&mut data[5..], key, 5);
/// apply_mask(&mut data, key, 0);
/// assert_eq!(&data, b"Hello, world");
/// ```
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    let wide = u128::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
        key[0], key[1], key[2], key[3],
    ]);
    let mut words = buf.chunks_exact_mut(16);
    for word in &mut words {
        let bytes: [u8; 16] = (&*word).try_into().unwrap_or([0; 16]);
        word.copy_from_slice(&(u128::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
    }
    // Each word is a multiple of 4 bytes, so the key phase is unchanged here.
    apply_mask_scalar(words.into_remainder(), key, 0);
}

/// Byte-at-a-time masking: the reference implementation.
pub fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let phase = offset & 3;
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(i + phase) & 3];
    }
}

fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    let mut rotated = key;
    rotated.rotate_left(offset & 3);
    rotated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_matches_scalar_for_every_length_and_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..100 {
            for offset in 0..4 {
                let original: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = original.clone();
                let mut slow = original.clone();
                apply_mask(&mut fast, key, offset);
                apply_mask_scalar(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn any_offset_is_accepted() {
        let mut data = [0, 0];
        apply_mask_scalar(&mut data, [1, 2, 3, 4], usize::MAX);
        assert_eq!(data, [4, 1]);
    }

    #[test]
    fn rfc_6455_example() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }
}

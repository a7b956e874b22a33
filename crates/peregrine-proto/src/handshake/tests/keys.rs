use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::super::{accept_key, fallback_nonce, generate_key, is_valid_key};
use super::{ACCEPT, KEY};

#[test]
fn accept_key_matches_rfc_6455_sample() {
    assert_eq!(accept_key(KEY.as_bytes()), ACCEPT);
}

#[test]
fn generated_key_is_base64_of_16_random_bytes() {
    let key = generate_key();
    assert_eq!(STANDARD.decode(&key).unwrap().len(), 16);
    assert!(is_valid_key(key.as_bytes()));
    assert_ne!(key, generate_key());
}

#[test]
fn fallback_nonce_differs_between_calls() {
    let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
    fallback_nonce(&mut a);
    fallback_nonce(&mut b);
    assert_ne!(a, b);
    assert!(is_valid_key(STANDARD.encode(a).as_bytes()));
}

#[test]
fn key_validation_requires_exactly_16_bytes_of_canonical_base64() {
    assert!(is_valid_key(KEY.as_bytes()));
    for bad in [
        "",
        "dGhlIHNhbXBsZSBub25jZQ",       // padding missing
        "dGhlIHNhbXBsZSBub25jZQ=",      // 23 characters
        "dGhlIHNhbXBsZSBub25j",         // 15 bytes
        "dGhlIHNhbXBsZSBub25jZTEy",     // 18 bytes
        "dGhlIHNhbXBsZSBub25jZR==",     // non-zero trailing bits
        "dGhlIHNhbXBsZSBub25jZ!==",     // not base64
        "dGhlIHNhbXBsZSBub25jZQ==AAAA", // too long
    ] {
        assert!(!is_valid_key(bad.as_bytes()), "{bad:?} accepted");
    }
}

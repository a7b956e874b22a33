//! Masking keys for client frames, from the operating system's CSPRNG.
//!
//! RFC 6455 §5.3 asks for keys an intermediary cannot predict. One
//! `getrandom` call fills a per-thread pool of 64 keys, so a key costs a copy
//! rather than a system call.

use std::cell::RefCell;

const POOL_KEYS: usize = 64;

struct Pool {
    bytes: [u8; POOL_KEYS * 4],
    next: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const { RefCell::new(Pool { bytes: [0; POOL_KEYS * 4], next: POOL_KEYS }) };
}

/// The next masking key.
pub(crate) fn next() -> [u8; 4] {
    POOL.with_borrow_mut(|pool| {
        if pool.next == POOL_KEYS {
            refill(&mut pool.bytes);
            pool.next = 0;
        }
        let i = pool.next * 4;
        pool.next += 1;
        [pool.bytes[i], pool.bytes[i + 1], pool.bytes[i + 2], pool.bytes[i + 3]]
    })
}

fn refill(bytes: &mut [u8]) {
    if getrandom::fill(bytes).is_err() {
        // The OS RNG is unavailable (it never is on supported platforms):
        // fall back to a clock-seeded generator rather than failing every send.
        let mut x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            | 1;
        for byte in bytes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
    }
}

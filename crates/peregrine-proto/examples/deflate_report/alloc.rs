//! A counting global allocator: bytes live at any moment, for the memory
//! figures.

// `unsafe impl GlobalAlloc` needs unsafe code, which the workspace's
// `unsafe_code = "deny"` forbids; the SAFETY comment on the impl shows why it
// is sound. This is the only unsafe code in the example.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes currently allocated through the global allocator (requested sizes,
/// without the allocator's own overhead).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Delegates to [`System`] and keeps [`LIVE`] up to date.
struct CountingAlloc;

// SAFETY: every method forwards to `System` with exactly the pointer, layout
// and new size it was given, and returns what `System` returned, so the
// `GlobalAlloc` contract (valid, suitably aligned blocks of at least the
// requested size; `dealloc`/`realloc` only on blocks from this allocator with
// their layout) is the one `System` already upholds: every block we hand out
// came from `System`, so handing it back to `System` is valid. The only extra
// work is relaxed atomic arithmetic on a counter, which neither allocates,
// panics nor touches the blocks. The counter uses wrapping arithmetic, so
// ordering between threads can make it transiently wrong but never unsound.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout (non-zero size) is passed on unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` (through `alloc`, `alloc_zeroed` or
        // `realloc` above) with this layout, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; `new_size` is the
        // caller's, valid for `layout.align()` as the caller guarantees.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // On failure the old block is untouched and still counted.
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

pub(crate) fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

//! The bytes a connection wants to send, as a queue of chunks.
//!
//! Headers and small payloads are copied into one contiguous tail so that many
//! small frames go out in one write; large payloads are queued as the caller's
//! own `Bytes`, never copied, and written with the headers around them in one
//! vectored write (see `chunks_vectored`).

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Payloads at least this long are queued by reference instead of copied.
const COPY_THRESHOLD: usize = 4096;

/// Outgoing bytes. Implements [`bytes::Buf`]: read with `chunk` or
/// `chunks_vectored`, then `advance` by what was written.
#[derive(Debug, Default)]
pub struct Output {
    /// Full chunks, oldest first; all of them come before `tail`.
    chunks: VecDeque<Bytes>,
    /// Copied bytes after the chunks; `tail[..written]` already went out.
    ///
    /// A plain `Vec` and an offset rather than a `BytesMut`: once everything
    /// is written, both go back to zero and the whole capacity is reused at
    /// no cost, where a drained `BytesMut` had to win its capacity back
    /// through `reserve` on every frame (measured: about 80 instructions per
    /// small frame).
    tail: Vec<u8>,
    written: usize,
    len: usize,
}

impl Output {
    /// Appends bytes by copying them.
    pub fn push_slice(&mut self, data: &[u8]) {
        self.make_room(data.len());
        self.tail.extend_from_slice(data);
        self.len += data.len();
    }

    /// Appends bytes, by reference when they are large.
    pub fn push_bytes(&mut self, data: Bytes) {
        if data.len() < COPY_THRESHOLD {
            return self.push_slice(&data);
        }
        self.seal_tail();
        self.len += data.len();
        self.chunks.push_back(data);
    }

    /// Room to write `additional` bytes in place at the end.
    pub fn tail_mut(&mut self, additional: usize) -> &mut Vec<u8> {
        self.make_room(additional);
        self.tail.reserve(additional);
        &mut self.tail
    }

    /// Records that `n` bytes were appended through [`Output::tail_mut`].
    pub fn commit_tail(&mut self, n: usize) {
        self.len += n;
    }

    /// Before the tail grows, drops its written prefix instead of keeping it.
    fn make_room(&mut self, additional: usize) {
        if self.written > 0 && self.tail.capacity() - self.tail.len() < additional {
            self.tail.drain(..self.written);
            self.written = 0;
        }
    }

    /// Moves the unwritten tail into a chunk, so a chunk can follow it.
    fn seal_tail(&mut self) {
        let pending = self.tail.len() - self.written;
        if pending == 0 {
            return;
        }
        let sealed = if pending < COPY_THRESHOLD {
            // A frame header or a few small frames: copying them keeps the
            // tail's allocation for the next ones.
            let sealed = Bytes::copy_from_slice(&self.tail[self.written..]);
            self.tail.clear();
            sealed
        } else {
            Bytes::from(std::mem::take(&mut self.tail)).slice(self.written..)
        };
        self.written = 0;
        self.chunks.push_back(sealed);
    }

    /// Frees the buffers if nothing is pending, so an idle connection holds no
    /// memory for output.
    pub fn release_if_empty(&mut self) {
        if self.len == 0 {
            self.tail = Vec::new();
            self.written = 0;
            self.chunks = VecDeque::new();
        }
    }

    /// Bytes of capacity held (for memory accounting).
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.tail.capacity() + self.chunks.capacity() * size_of::<Bytes>()
    }

    fn unwritten_tail(&self) -> &[u8] {
        &self.tail[self.written..]
    }
}

impl Buf for Output {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        match self.chunks.front() {
            Some(front) => front,
            None => self.unwritten_tail(),
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let tail = self.unwritten_tail();
        let tail = (!tail.is_empty()).then_some(tail);
        for chunk in self.chunks.iter().map(|c| &c[..]).chain(tail) {
            let Some(slot) = dst.get_mut(n) else { break };
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of the output");
        self.len -= cnt;
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                self.written += cnt;
                if self.written == self.tail.len() {
                    // All written: the whole capacity is free again.
                    self.tail.clear();
                    self.written = 0;
                }
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_copied_and_referenced_chunks() {
        let mut out = Output::default();
        out.push_slice(b"ab");
        out.push_bytes(Bytes::from(vec![b'x'; COPY_THRESHOLD]));
        out.push_slice(b"cd");
        let mut expected = b"ab".to_vec();
        expected.extend(vec![b'x'; COPY_THRESHOLD]);
        expected.extend_from_slice(b"cd");
        assert_eq!(drain(&mut out, 3), expected);
    }

    /// Drains `out` through `chunk` in pieces of at most `step` bytes.
    fn drain(out: &mut Output, step: usize) -> Vec<u8> {
        let mut all = Vec::new();
        while out.has_remaining() {
            let n = out.chunk().len().min(step);
            all.extend_from_slice(&out.chunk()[..n]);
            out.advance(n);
        }
        all
    }

    #[test]
    fn a_partly_written_tail_keeps_its_place_before_a_large_chunk() {
        for pending in [1, COPY_THRESHOLD + 1] {
            let mut out = Output::default();
            let small = vec![b's'; pending + 1];
            out.push_slice(&small);
            out.advance(1);
            out.push_bytes(Bytes::from(vec![b'L'; COPY_THRESHOLD]));
            out.push_slice(b"after");
            let mut expected = small[1..].to_vec();
            expected.extend(vec![b'L'; COPY_THRESHOLD]);
            expected.extend_from_slice(b"after");
            assert_eq!(out.remaining(), expected.len());
            assert_eq!(drain(&mut out, 7), expected, "pending {pending}");
        }
    }

    #[test]
    fn a_written_tail_reuses_its_capacity() {
        let mut out = Output::default();
        out.push_slice(&[1; 100]);
        let (ptr, capacity) = (out.tail.as_ptr(), out.tail.capacity());
        for _ in 0..1000 {
            // Written in two pieces, as a short write would.
            out.advance(60);
            out.advance(40);
            out.push_slice(&[2; 100]);
        }
        assert_eq!((out.tail.as_ptr(), out.tail.capacity()), (ptr, capacity), "no reallocation");
        // A partial write leaves a prefix that is dropped, not kept, when the tail grows.
        out.advance(90);
        out.push_slice(&vec![3; capacity]);
        assert_eq!(out.remaining(), 10 + capacity);
        assert!(out.tail.len() == out.remaining() && out.written == 0);
    }

    #[test]
    fn vectored_view_covers_everything() {
        let mut out = Output::default();
        out.push_slice(b"head");
        out.push_bytes(Bytes::from(vec![1; COPY_THRESHOLD]));
        out.push_slice(b"tail");
        let mut slices = [IoSlice::new(&[]); 8];
        let n = out.chunks_vectored(&mut slices);
        assert_eq!(n, 3);
        assert_eq!(slices[..n].iter().map(|s| s.len()).sum::<usize>(), out.remaining());
        out.advance(out.remaining());
        out.release_if_empty();
        assert_eq!(out.capacity(), 0);
    }
}

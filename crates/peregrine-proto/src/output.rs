//! The bytes a connection wants to send, as a queue of chunks.
//!
//! Headers and small payloads are copied into one contiguous tail so that many
//! small frames go out in one write; large payloads are queued as the caller's
//! own `Bytes`, never copied, and written with the headers around them in one
//! vectored write (see `chunks_vectored`).

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Payloads at least this long are queued by reference instead of copied.
const COPY_THRESHOLD: usize = 4096;

/// Outgoing bytes. Implements [`bytes::Buf`]: read with `chunk` or
/// `chunks_vectored`, then `advance` by what was written.
#[derive(Debug, Default)]
pub struct Output {
    /// Full chunks, oldest first; all of them come before `tail`.
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl Output {
    /// Appends bytes by copying them.
    pub fn push_slice(&mut self, data: &[u8]) {
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
    pub fn tail_mut(&mut self, additional: usize) -> &mut BytesMut {
        self.tail.reserve(additional);
        &mut self.tail
    }

    /// Records that `n` bytes were appended through [`Output::tail_mut`].
    pub fn commit_tail(&mut self, n: usize) {
        self.len += n;
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }

    /// Frees the buffers if nothing is pending, so an idle connection holds no
    /// memory for output.
    pub fn release_if_empty(&mut self) {
        if self.len == 0 {
            self.tail = BytesMut::new();
            self.chunks = VecDeque::new();
        }
    }

    /// Bytes of capacity held (for memory accounting).
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.tail.capacity() + self.chunks.capacity() * size_of::<Bytes>()
    }
}

impl Buf for Output {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        match self.chunks.front() {
            Some(front) => front,
            None => &self.tail,
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let tail = (!self.tail.is_empty()).then_some(&self.tail[..]);
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
                self.tail.advance(cnt);
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
        let mut all = Vec::new();
        while out.has_remaining() {
            let n = out.chunk().len().min(3);
            all.extend_from_slice(&out.chunk()[..n]);
            out.advance(n);
        }
        let mut expected = b"ab".to_vec();
        expected.extend(vec![b'x'; COPY_THRESHOLD]);
        expected.extend_from_slice(b"cd");
        assert_eq!(all, expected);
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

//! Pre-encoded client frames and a minimal frame counter for echoes.
//!
//! The generator does not run a WebSocket stack per message. A frame is
//! encoded and masked once per connection (the masking key is fixed per
//! connection: RFC 6455 wants a fresh key per frame to defeat cache-poisoning
//! attacks on proxies, which do not apply to a benchmark on loopback, and a
//! server cannot tell the difference); the same bytes are written again and
//! again. Echoes are counted by decoding headers with
//! [`FrameHeader::decode`] and skipping payloads, never copying or unmasking
//! them.

use peregrine::proto::OpCode;
use peregrine::proto::frame::{FrameHeader, MAX_HEADER_LEN};
use peregrine::proto::mask::apply_mask;

/// Frames concatenated per write buffer, at most this many bytes (at least
/// one frame).
const BATCH_BYTES: usize = 256 << 10;

/// One message as a masked client frame, repeated so that up to `depth`
/// frames leave in a single write.
#[derive(Debug)]
pub(crate) struct EncodedFrames {
    bytes: Vec<u8>,
    frame_len: usize,
}

impl EncodedFrames {
    /// `depth` copies (fewer when large) of a single-frame message of `size`
    /// payload bytes (the byte `x`, so text is valid UTF-8), masked with `key`.
    pub(crate) fn new(size: usize, text: bool, key: [u8; 4], depth: usize) -> Self {
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: if text { OpCode::Text } else { OpCode::Binary },
            mask: Some(key),
            payload_len: size as u64,
        };
        let mut head = [0; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        let mut frame = Vec::with_capacity(head_len + size);
        frame.extend_from_slice(&head[..head_len]);
        frame.resize(head_len + size, b'x');
        apply_mask(&mut frame[head_len..], key, 0);
        let frame_len = frame.len();
        let copies = depth.clamp(1, (BATCH_BYTES / frame_len).max(1));
        Self { bytes: frame.repeat(copies), frame_len }
    }

    /// The bytes of `count` frames (capped at the copies held).
    pub(crate) fn batch(&self, count: usize) -> &[u8] {
        &self.bytes[..self.frame_len * count.min(self.copies())]
    }

    /// Frames held in one buffer.
    pub(crate) fn copies(&self) -> usize {
        self.bytes.len() / self.frame_len
    }

    /// Bytes per frame, header included.
    pub(crate) fn frame_len(&self) -> usize {
        self.frame_len
    }
}

/// What a complete frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The last frame of a text or binary message: one echo, with the
    /// opcode of its first frame and the payload length of all its frames
    /// (so an echo can be checked without keeping its bytes).
    Message { opcode: OpCode, len: u64 },
    /// A close frame from the server.
    Close,
    /// A ping, a pong or a non-final data frame.
    Other,
}

/// Counts frames in a byte stream without keeping payloads.
#[derive(Debug, Default)]
pub(crate) struct FrameCounter {
    /// Payload bytes of the current frame still to skip.
    skip: u64,
    /// The current frame, once its header is decoded.
    current: Option<Seen>,
    /// A header split across reads.
    partial: [u8; MAX_HEADER_LEN],
    partial_len: usize,
    /// The message in progress: its first frame's opcode and the payload
    /// bytes of its frames so far.
    message_opcode: Option<OpCode>,
    message_len: u64,
}

impl FrameCounter {
    /// Feeds received bytes; calls `on_frame` for every frame completed.
    pub(crate) fn feed(&mut self, mut buf: &[u8], mut on_frame: impl FnMut(Seen)) -> anyhow::Result<()> {
        while !buf.is_empty() {
            if let Some(seen) = self.current {
                let take = self.skip.min(buf.len() as u64);
                self.skip -= take;
                buf = &buf[take as usize..];
                if self.skip == 0 {
                    self.current = None;
                    on_frame(seen);
                }
                continue;
            }
            let (header, used) = if self.partial_len > 0 {
                let have = self.partial_len;
                let add = (MAX_HEADER_LEN - have).min(buf.len());
                self.partial[have..have + add].copy_from_slice(&buf[..add]);
                match FrameHeader::decode(&self.partial[..have + add])? {
                    Some((header, len)) => {
                        self.partial_len = 0;
                        (header, len - have)
                    }
                    None => {
                        self.partial_len += add;
                        return Ok(());
                    }
                }
            } else {
                match FrameHeader::decode(buf)? {
                    Some(decoded) => decoded,
                    None => {
                        self.partial[..buf.len()].copy_from_slice(buf);
                        self.partial_len = buf.len();
                        return Ok(());
                    }
                }
            };
            buf = &buf[used..];
            let seen = match header.opcode {
                OpCode::Close => Seen::Close,
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    if header.opcode == OpCode::Continuation {
                        self.message_len += header.payload_len;
                    } else {
                        self.message_opcode = Some(header.opcode);
                        self.message_len = header.payload_len;
                    }
                    if header.fin {
                        // A continuation with no first frame shows as such.
                        let opcode = self.message_opcode.take().unwrap_or(OpCode::Continuation);
                        Seen::Message { opcode, len: std::mem::take(&mut self.message_len) }
                    } else {
                        Seen::Other
                    }
                }
                _ => Seen::Other,
            };
            if header.payload_len == 0 {
                on_frame(seen);
            } else {
                self.skip = header.payload_len;
                self.current = Some(seen);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_frames_split_at_every_byte() {
        let frames = EncodedFrames::new(300, false, [1, 2, 3, 4], 3);
        let mut stream = frames.batch(3).to_vec();
        stream.extend_from_slice(&[0x89, 0x00, 0x88, 0x02, 0x03, 0xe8]);
        for split in 0..stream.len() {
            let mut counter = FrameCounter::default();
            let mut seen = Vec::new();
            counter.feed(&stream[..split], |s| seen.push(s)).unwrap();
            counter.feed(&stream[split..], |s| seen.push(s)).unwrap();
            let echo = Seen::Message { opcode: OpCode::Binary, len: 300 };
            assert_eq!(seen, [echo, echo, echo, Seen::Other, Seen::Close], "split {split}");
        }
    }

    #[test]
    fn byte_at_a_time() {
        let frames = EncodedFrames::new(70_000, true, [9, 8, 7, 6], 2);
        let mut counter = FrameCounter::default();
        let mut count = 0;
        for byte in frames.batch(2).chunks(1) {
            counter.feed(byte, |_| count += 1).unwrap();
        }
        assert_eq!(count, 2);
    }

    #[test]
    fn a_fragmented_message_counts_once_with_its_whole_length() {
        // Text "abc" + "de" (unmasked, as a server sends), then binary of 1 byte.
        let stream = [0x01, 3, b'a', b'b', b'c', 0x80, 2, b'd', b'e', 0x82, 1, 0];
        let mut counter = FrameCounter::default();
        let mut seen = Vec::new();
        counter.feed(&stream, |s| seen.push(s)).unwrap();
        assert_eq!(
            seen,
            [
                Seen::Other,
                Seen::Message { opcode: OpCode::Text, len: 5 },
                Seen::Message { opcode: OpCode::Binary, len: 1 }
            ]
        );
    }

    #[test]
    fn large_frames_are_not_repeated_past_the_batch_size() {
        let frames = EncodedFrames::new(1 << 20, false, [0; 4], 16);
        assert_eq!(frames.copies(), 1);
        assert_eq!(frames.batch(16).len(), frames.frame_len());
    }
}

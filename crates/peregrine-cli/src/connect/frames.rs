//! The `--show-frames` display: a per-direction decoder fed with the raw bytes
//! of the connection (HTTP head first, then frames) that describes every frame
//! the way Wireshark does.
//!
//! It is only an observer: the connection decodes the same bytes itself. The
//! decoder keeps at most one frame header and [`MAX_DUMP`] bytes of payload,
//! whatever the frames declare, and stops (saying so) at bytes that are not a
//! valid frame.
//!
//! When the server's 101 accepts permessage-deflate, compressed messages are
//! also shown inflated, as Wireshark does: each direction keeps its own
//! inflater, carried from message to message unless that side resets its
//! context (`*_no_context_takeover`).

use std::fmt::Write as _;

use flate2::{Decompress, FlushDecompress};
use peregrine::CloseCode;
use peregrine::proto::extension::{DeflateConfig, DeflateParams};
use peregrine::proto::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use peregrine::proto::handshake::parse_extensions;
use peregrine::proto::mask::apply_mask;

/// Payload bytes shown per frame; the rest is counted, not kept.
pub const MAX_DUMP: usize = 4 << 10;
/// The longest HTTP head shown before giving up on finding its end.
const MAX_HEAD: usize = 16 << 10;
/// Bytes per hex dump line.
const DUMP_WIDTH: usize = 16;
/// A message inflating to more than this stops the display's inflating (the
/// connection's own limits apply to what it accepts): a few compressed bytes
/// can stand for gigabytes.
const MAX_INFLATED: u64 = 64 << 20;
/// The empty block's tail that a sender strips from each compressed message
/// (RFC 7692 §7.2.1) and a receiver puts back before inflating it.
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Which way the bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From us to the server.
    Sent,
    /// From the server to us.
    Received,
}

impl Direction {
    fn arrow(self) -> &'static str {
        match self {
            Self::Sent => "-->",
            Self::Received => "<--",
        }
    }
}

#[derive(Debug)]
enum Phase {
    /// The HTTP request or response head, up to the empty line.
    Head(Vec<u8>),
    /// WebSocket frames.
    Frames,
    /// Nothing more is decoded (a refused handshake, or undecodable bytes).
    Off,
}

/// The frame being received: its header and the start of its payload.
#[derive(Debug)]
struct Current {
    header: FrameHeader,
    /// Payload bytes not yet seen.
    remaining: u64,
    /// The first [`MAX_DUMP`] payload bytes, unmasked.
    dump: Vec<u8>,
    /// The frame belongs to a compressed message.
    compressed: bool,
}

/// One direction's inflater and the compressed message going through it.
#[derive(Debug)]
struct Inflate {
    /// A 15-bit window inflates what any smaller window compressed.
    decompress: Decompress,
    reset_each_message: bool,
    /// The message in progress is compressed (its first frame had RSV1).
    in_message: bool,
    /// The first [`MAX_DUMP`] inflated bytes of the message, and the count of all.
    shown: Vec<u8>,
    total: u64,
    /// Why inflating stopped for good (the context is lost after an error).
    stopped: Option<String>,
    /// The last chunk of payload unmasked, kept for its capacity.
    unmasked: Vec<u8>,
}

impl Inflate {
    fn new(reset_each_message: bool) -> Self {
        Self {
            decompress: Decompress::new(false),
            reset_each_message,
            in_message: false,
            shown: Vec::new(),
            total: 0,
            stopped: None,
            unmasked: Vec::new(),
        }
    }

    /// Inflates `input` (unmasked payload bytes), keeping what is shown.
    fn feed(&mut self, mut input: &[u8]) {
        let mut out = [0u8; 8 << 10];
        while self.stopped.is_none() {
            let (in_before, out_before) = (self.decompress.total_in(), self.decompress.total_out());
            if let Err(e) = self.decompress.decompress(input, &mut out, FlushDecompress::Sync) {
                self.stopped = Some(format!("inflating failed: {e}"));
                break;
            }
            let consumed = (self.decompress.total_in() - in_before) as usize;
            let produced = (self.decompress.total_out() - out_before) as usize;
            let keep = MAX_DUMP.saturating_sub(self.shown.len()).min(produced);
            self.shown.extend_from_slice(&out[..keep]);
            self.total += produced as u64;
            if self.total > MAX_INFLATED {
                self.stopped =
                    Some(format!("more than {MAX_INFLATED} bytes inflated; not inflating further"));
            }
            input = &input[consumed..];
            // A full output buffer may mean more output is pending.
            if (input.is_empty() && produced < out.len()) || (consumed == 0 && produced == 0) {
                break;
            }
        }
    }

    /// Ends the message (the sender removed the final empty block's tail);
    /// returns its inflated bytes to show and their total count.
    fn finish(&mut self) -> (Vec<u8>, u64) {
        self.feed(&DEFLATE_TAIL);
        if self.reset_each_message {
            self.decompress.reset(false);
        }
        self.in_message = false;
        (std::mem::take(&mut self.shown), std::mem::take(&mut self.total))
    }
}

/// Decodes one direction of a connection for display.
#[derive(Debug)]
pub struct FrameDecoder {
    direction: Direction,
    phase: Phase,
    /// Header bytes of the next frame received so far (at most 14).
    pending: Vec<u8>,
    current: Option<Current>,
    /// Set once the 101 accepted permessage-deflate.
    inflate: Option<Inflate>,
    /// What the 101 accepted, until [`FrameDecoder::take_negotiated`].
    negotiated: Option<DeflateParams>,
}

impl FrameDecoder {
    /// A decoder that expects an HTTP head first.
    #[must_use]
    pub fn new(direction: Direction) -> Self {
        Self {
            direction,
            phase: Phase::Head(Vec::new()),
            pending: Vec::new(),
            current: None,
            inflate: None,
            negotiated: None,
        }
    }

    /// A decoder that expects frames right away.
    #[cfg(test)]
    fn frames_only(direction: Direction) -> Self {
        Self { phase: Phase::Frames, ..Self::new(direction) }
    }

    /// The permessage-deflate a 101 response accepted, once (a received
    /// decoder finds it; the sent one is told with [`FrameDecoder::inflate`]).
    pub fn take_negotiated(&mut self) -> Option<DeflateParams> {
        self.negotiated.take()
    }

    /// Shows compressed messages inflated from now on; `reset_each_message`
    /// when their sender uses no context takeover.
    pub fn inflate(&mut self, reset_each_message: bool) {
        self.inflate = Some(Inflate::new(reset_each_message));
    }

    /// Feeds bytes that passed in this direction; returns the text to print
    /// (empty when no head or frame was completed).
    pub fn feed(&mut self, mut data: &[u8]) -> String {
        let mut out = String::new();
        while !data.is_empty() {
            data = match self.phase {
                Phase::Off => break,
                Phase::Head(_) => self.feed_head(data, &mut out),
                Phase::Frames => self.feed_frames(data, &mut out),
            };
        }
        out
    }

    fn feed_head<'a>(&mut self, data: &'a [u8], out: &mut String) -> &'a [u8] {
        let Phase::Head(head) = &mut self.phase else { return &[] };
        let search_from = head.len().saturating_sub(3);
        let room = MAX_HEAD + 4 - head.len();
        let taken = data.len().min(room);
        head.extend_from_slice(&data[..taken]);
        let Some(end) = find(&head[search_from..], b"\r\n\r\n").map(|i| search_from + i + 4) else {
            if head.len() >= MAX_HEAD {
                let _ = writeln!(
                    out,
                    "{} [no end of the HTTP head within {MAX_HEAD} bytes; not decoding further]",
                    self.direction.arrow()
                );
                self.phase = Phase::Off;
            }
            return &data[taken..];
        };
        // Bytes after the head that were appended belong to the first frames.
        let extra = head.len() - end;
        let text = String::from_utf8_lossy(&head[..end]).into_owned();
        write_head(out, self.direction, &text);
        let upgraded = self.direction == Direction::Sent || is_switching_protocols(&text);
        if upgraded && self.direction == Direction::Received {
            self.negotiated = negotiated_deflate(&text);
            if let Some(server_resets) = self.negotiated.as_ref().map(|n| n.server_no_context_takeover) {
                self.inflate(server_resets);
            }
        }
        let rest = &data[taken - extra..];
        self.phase = if upgraded { Phase::Frames } else { Phase::Off };
        rest
    }

    fn feed_frames<'a>(&mut self, mut data: &'a [u8], out: &mut String) -> &'a [u8] {
        if self.current.is_none() {
            let before = self.pending.len();
            let taken = data.len().min(MAX_HEADER_LEN - before);
            self.pending.extend_from_slice(&data[..taken]);
            match FrameHeader::decode(&self.pending) {
                Ok(None) => return &data[taken..],
                Ok(Some((header, len))) => {
                    data = &data[len - before..];
                    self.pending.clear();
                    let compressed = self.inflate.as_mut().is_some_and(|inflate| {
                        match header.opcode {
                            OpCode::Text | OpCode::Binary => inflate.in_message = header.rsv & 0b100 != 0,
                            OpCode::Continuation => {}
                            _ => return false,
                        }
                        inflate.in_message
                    });
                    self.current =
                        Some(Current { header, remaining: header.payload_len, dump: Vec::new(), compressed });
                }
                Err(error) => {
                    let _ = writeln!(out, "{} [undecodable frame header: {error}]", self.direction.arrow());
                    dump(out, &self.pending);
                    let _ = writeln!(out, "    [not decoding this direction further]");
                    self.phase = Phase::Off;
                    return &[];
                }
            }
        }
        let Some(current) = self.current.as_mut() else { return data };
        let taken = usize::try_from(current.remaining).map_or(data.len(), |r| r.min(data.len()));
        let chunk = &data[..taken];
        let keep = MAX_DUMP.saturating_sub(current.dump.len()).min(chunk.len());
        if keep > 0 {
            let start = current.dump.len();
            current.dump.extend_from_slice(&chunk[..keep]);
            if let Some(key) = current.header.mask {
                // The dump holds the payload from its start, so its length is the offset.
                apply_mask(&mut current.dump[start..], key, start);
            }
        }
        if current.compressed
            && let Some(inflate) = self.inflate.as_mut()
        {
            let mut unmasked = std::mem::take(&mut inflate.unmasked);
            unmasked.clear();
            unmasked.extend_from_slice(chunk);
            if let Some(key) = current.header.mask {
                let offset = (current.header.payload_len - current.remaining) as usize;
                apply_mask(&mut unmasked, key, offset);
            }
            inflate.feed(&unmasked);
            inflate.unmasked = unmasked;
        }
        current.remaining -= taken as u64;
        if current.remaining == 0 {
            describe(out, self.direction, &current.header, &current.dump);
            let (compressed, fin) = (current.compressed, current.header.fin);
            self.current = None;
            if compressed && fin {
                self.describe_inflated(out);
            }
        }
        &data[taken..]
    }

    /// After the last frame of a compressed message: the message inflated.
    fn describe_inflated(&mut self, out: &mut String) {
        let Some(inflate) = self.inflate.as_mut() else { return };
        let (shown, total) = inflate.finish();
        if let Some(why) = &inflate.stopped {
            let _ = writeln!(out, "    [{why}]");
            self.inflate = None;
            return;
        }
        let _ = writeln!(out, "    inflated message, {total} bytes:");
        dump(out, &shown);
        let hidden = total.saturating_sub(shown.len() as u64);
        if hidden > 0 {
            let _ = writeln!(out, "    ... {hidden} more bytes not shown (dumps stop at {MAX_DUMP} bytes)");
        }
    }
}

/// The permessage-deflate a 101 response head accepted, if any, checked as
/// the connection checks it (`connect --deflate` offers the default).
fn negotiated_deflate(head: &str) -> Option<DeflateParams> {
    let values = head.split("\r\n").filter_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("Sec-WebSocket-Extensions").then_some(value.trim())
    });
    let accepted = parse_extensions(values).ok()?;
    DeflateConfig::default().check_response(&accepted).ok()?
}

/// Whether an HTTP response head is a `101 Switching Protocols`.
fn is_switching_protocols(head: &str) -> bool {
    head.lines().next().is_some_and(|line| line.split_whitespace().nth(1) == Some("101"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn write_head(out: &mut String, direction: Direction, head: &str) {
    let mut first = true;
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        let prefix = if first { direction.arrow() } else { "   " };
        first = false;
        let _ = writeln!(out, "{prefix} {}", line.escape_debug());
    }
}

/// Writes the description of one complete frame: the header line, then the
/// payload dump.
pub fn describe(out: &mut String, direction: Direction, header: &FrameHeader, payload: &[u8]) {
    let _ = write!(
        out,
        "{} {}  FIN={} RSV={:03b} opcode=0x{:x} MASK={}",
        direction.arrow(),
        header.opcode.name(),
        u8::from(header.fin),
        header.rsv,
        header.opcode as u8,
        u8::from(header.mask.is_some()),
    );
    if let Some(key) = header.mask {
        let _ = write!(out, " key={:02x}{:02x}{:02x}{:02x}", key[0], key[1], key[2], key[3]);
    }
    let _ = write!(out, " len={}", header.payload_len);
    if header.opcode == OpCode::Close {
        out.push_str("  ");
        out.push_str(&close_summary(payload));
    }
    out.push('\n');
    dump(out, payload);
    let hidden = header.payload_len.saturating_sub(payload.len() as u64);
    if hidden > 0 {
        let _ = writeln!(out, "    ... {hidden} more bytes not shown (dumps stop at {MAX_DUMP} bytes)");
    }
}

/// `code=1000 (NORMAL_CLOSURE) reason="bye"` for a close payload.
fn close_summary(payload: &[u8]) -> String {
    match payload {
        [] => "(no status code)".to_owned(),
        [_] => "(invalid: a 1-byte close payload)".to_owned(),
        [hi, lo, reason @ ..] => {
            let code = CloseCode::from(u16::from_be_bytes([*hi, *lo]));
            let mut s = match code.name() {
                Some(name) => format!("code={} ({name})", code.as_u16()),
                None => format!("code={} ({})", code.as_u16(), code.meaning()),
            };
            if !reason.is_empty() {
                let _ = write!(s, " reason=\"{}\"", String::from_utf8_lossy(reason).escape_debug());
            }
            s
        }
    }
}

/// A hex and ASCII dump, 16 bytes per line with an extra space after 8, the
/// ASCII column aligned as in Wireshark.
pub fn dump(out: &mut String, bytes: &[u8]) {
    for (line, chunk) in bytes.chunks(DUMP_WIDTH).enumerate() {
        let mut hex = String::with_capacity(3 * DUMP_WIDTH);
        for (i, byte) in chunk.iter().enumerate() {
            if i > 0 {
                hex.push(' ');
            }
            if i == DUMP_WIDTH / 2 {
                hex.push(' ');
            }
            let _ = write!(hex, "{byte:02x}");
        }
        let ascii: String = chunk
            .iter()
            .map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '.' })
            .collect();
        let _ = writeln!(out, "    {:04x}  {hex:<48}  {ascii}", line * DUMP_WIDTH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked_hello() -> Vec<u8> {
        // RFC 6455 §5.7: a masked "Hello".
        vec![0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
    }

    #[test]
    fn masked_text_frame_matches_the_wireshark_layout() {
        let mut decoder = FrameDecoder::frames_only(Direction::Sent);
        assert_eq!(
            decoder.feed(&masked_hello()),
            "--> Text  FIN=1 RSV=000 opcode=0x1 MASK=1 key=37fa213d len=5\n\
             \x20   0000  48 65 6c 6c 6f                                    Hello\n"
        );
    }

    #[test]
    fn close_frame_names_its_code() {
        let mut decoder = FrameDecoder::frames_only(Direction::Received);
        assert_eq!(
            decoder.feed(&[0x88, 0x02, 0x03, 0xe8]),
            "<-- Connection Close  FIN=1 RSV=000 opcode=0x8 MASK=0 len=2  code=1000 (NORMAL_CLOSURE)\n\
             \x20   0000  03 e8                                             ..\n"
        );
        let text = decoder.feed(b"\x88\x05\x0f\xa0bye");
        assert!(text.contains("code=4000 (private use by the application) reason=\"bye\""), "{text}");
    }

    #[test]
    fn frames_split_across_reads_at_every_byte() {
        let mut bytes = masked_hello();
        bytes.extend_from_slice(&[0x89, 0x00]);
        let whole = FrameDecoder::frames_only(Direction::Sent).feed(&bytes);
        let mut decoder = FrameDecoder::frames_only(Direction::Sent);
        let pieces: String = bytes.iter().map(|b| decoder.feed(std::slice::from_ref(b))).collect();
        assert_eq!(pieces, whole);
        assert!(whole.contains("--> Ping  FIN=1 RSV=000 opcode=0x9 MASK=0 len=0\n"));
    }

    #[test]
    fn head_then_frames_in_one_read() {
        let mut decoder = FrameDecoder::new(Direction::Received);
        let mut bytes = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        bytes.extend_from_slice(b"\x81\x02hi");
        let text = decoder.feed(&bytes);
        assert!(text.starts_with("<-- HTTP/1.1 101 Switching Protocols\n    Upgrade: websocket\n"), "{text}");
        assert!(text.contains("<-- Text  FIN=1 RSV=000 opcode=0x1 MASK=0 len=2\n"), "{text}");
    }

    #[test]
    fn refused_handshake_stops_decoding() {
        let mut decoder = FrameDecoder::new(Direction::Received);
        let text = decoder.feed(b"HTTP/1.1 403 Forbidden\r\n\r\n\x81\x02hi");
        assert_eq!(text, "<-- HTTP/1.1 403 Forbidden\n");
    }

    #[test]
    fn large_payloads_are_truncated_with_a_note() {
        let mut decoder = FrameDecoder::frames_only(Direction::Received);
        let mut bytes = vec![0x82, 127, 0, 0, 0, 0, 0, 0, 0x20, 0x00]; // 8192 bytes
        bytes.extend(std::iter::repeat_n(0xab, 8192));
        let text = decoder.feed(&bytes);
        assert_eq!(text.lines().filter(|l| l.starts_with("    0")).count(), MAX_DUMP / 16);
        assert!(text.ends_with("    ... 4096 more bytes not shown (dumps stop at 4096 bytes)\n"), "{text}");
    }

    #[test]
    fn undecodable_bytes_stop_the_decoder() {
        let mut decoder = FrameDecoder::frames_only(Direction::Received);
        let text = decoder.feed(&[0x83, 0x00, 0x81, 0x00]);
        assert!(text.starts_with("<-- [undecodable frame header: "), "{text}");
        assert_eq!(decoder.feed(&[0x81, 0x00]), "");
    }

    /// `text` compressed as one permessage-deflate message (tail stripped),
    /// through `compress`, which keeps its context.
    fn deflated(compress: &mut flate2::Compress, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 64);
        compress.compress_vec(text, &mut out, flate2::FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&DEFLATE_TAIL));
        out.truncate(out.len() - DEFLATE_TAIL.len());
        out
    }

    fn unmasked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut frame = vec![first_byte, payload.len() as u8];
        frame.extend_from_slice(payload);
        frame
    }

    const DEFLATE_101: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\n\r\n";

    #[test]
    fn compressed_messages_are_inflated_with_the_context_kept() {
        let mut decoder = FrameDecoder::new(Direction::Received);
        let head = decoder.feed(DEFLATE_101);
        assert!(head.starts_with("<-- HTTP/1.1 101"), "{head}");
        let negotiated =
            decoder.take_negotiated().map(|n| (n.server_no_context_takeover, n.client_no_context_takeover));
        assert_eq!(negotiated, Some((false, false)));
        let mut compress = flate2::Compress::new(flate2::Compression::new(6), false);
        let first = deflated(&mut compress, b"Hello");
        let second = deflated(&mut compress, b"Hello");
        assert!(second.len() < first.len(), "a back-reference into the first message");
        let text = decoder.feed(&unmasked_frame(0xc1, &first));
        assert!(text.contains(" RSV=100 opcode=0x1 "), "{text}");
        assert!(text.ends_with(
            "    inflated message, 5 bytes:\n\
             \x20   0000  48 65 6c 6c 6f                                    Hello\n"
        ));
        // Fragmented: RSV1 on the first frame only, inflated after the last.
        let (a, b) = second.split_at(1);
        let text = decoder.feed(&unmasked_frame(0x41, a));
        assert!(!text.contains("inflated"), "{text}");
        let text = decoder.feed(&[unmasked_frame(0x89, b"ping"), unmasked_frame(0x80, b)].concat());
        assert!(text.contains("<-- Ping"), "{text}");
        assert!(
            text.ends_with(
                "inflated message, 5 bytes:\n\
             \x20   0000  48 65 6c 6c 6f                                    Hello\n"
            ),
            "{text}"
        );
        // An uncompressed message in between is shown as it is.
        let text = decoder.feed(&unmasked_frame(0x81, b"raw"));
        assert!(text.contains("RSV=000") && !text.contains("inflated"), "{text}");
    }

    #[test]
    fn masked_compressed_frames_are_unmasked_before_inflating() {
        let mut decoder = FrameDecoder::frames_only(Direction::Sent);
        decoder.inflate(true);
        let mut compress = flate2::Compress::new(flate2::Compression::new(6), false);
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for _ in 0..2 {
            // No context takeover: the compressor is reset after each message, and so is the display's.
            let mut payload = deflated(&mut compress, b"Hello");
            compress.reset();
            apply_mask(&mut payload, key, 0);
            let mut frame = vec![0xc1, 0x80 | payload.len() as u8];
            frame.extend_from_slice(&key);
            frame.extend_from_slice(&payload);
            let text = decoder.feed(&frame);
            assert!(text.contains("inflated message, 5 bytes:\n"), "{text}");
            assert!(text.ends_with("Hello\n"), "{text}");
        }
    }

    #[test]
    fn a_payload_that_does_not_inflate_stops_inflating() {
        let mut decoder = FrameDecoder::frames_only(Direction::Received);
        decoder.inflate(false);
        let text = decoder.feed(&unmasked_frame(0xc1, &[0xff, 0xff, 0xff]));
        assert!(text.contains("    [inflating failed: "), "{text}");
        // The context is lost: later compressed frames are shown as they are.
        let text = decoder.feed(&unmasked_frame(0xc1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]));
        assert!(text.contains("RSV=100") && !text.contains("inflat"), "{text}");
    }

    #[test]
    fn no_extension_header_means_no_inflating() {
        let mut decoder = FrameDecoder::new(Direction::Received);
        decoder.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
        assert!(decoder.take_negotiated().is_none());
        // Header names are case-insensitive; the flags are read per side.
        let head = "HTTP/1.1 101 x\r\nsec-websocket-extensions: permessage-deflate; \
                    server_no_context_takeover\r\n\r\n";
        let negotiated =
            negotiated_deflate(head).map(|n| (n.server_no_context_takeover, n.client_no_context_takeover));
        assert_eq!(negotiated, Some((true, false)));
    }

    #[test]
    fn long_dump_lines_have_the_middle_gap() {
        let mut out = String::new();
        dump(&mut out, b"0123456789abcdefXY");
        assert_eq!(
            out,
            "    0000  30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  0123456789abcdef\n\
             \x20   0010  58 59                                             XY\n"
        );
    }
}

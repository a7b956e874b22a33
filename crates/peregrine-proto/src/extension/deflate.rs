//! The permessage-deflate codec: raw DEFLATE through flate2 on zlib-rs.
//!
//! Each direction has its own context, created on first use so an idle
//! connection holds none. With context takeover the context lives as long as
//! the connection; without it, it is reset after every message and goes back
//! to a small per-thread pool, so connections without takeover share a few
//! contexts per thread instead of holding one each.
//!
//! zlib cannot compress with an 8-bit window (it silently uses 9, which a
//! peer with a 256-byte window cannot decode). When the negotiated window for
//! what we send is 8 bits, we send every message uncompressed, which RFC 7692
//! allows for any message. We always inflate with at least a 9-bit window:
//! a larger window decodes everything a smaller one does.

use std::cell::RefCell;

use bytes::BytesMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::DeflateParams;
use crate::connection::Role;
use crate::error::ProtocolError;

/// The empty stored block that ends each compressed message on the wire
/// (RFC 7692 §7.2.1): stripped when sending, appended when receiving.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Contexts kept per thread and direction for reuse without takeover.
const POOL_SIZE: usize = 4;
/// Output room for the first inflate step, beyond a guess from the input size.
const INFLATE_MIN_STEP: usize = 64;

thread_local! {
    static COMPRESSORS: RefCell<Vec<(u8, u32, Compress)>> = const { RefCell::new(Vec::new()) };
    static DECOMPRESSORS: RefCell<Vec<(u8, Decompress)>> = const { RefCell::new(Vec::new()) };
}

/// Per-connection permessage-deflate state.
pub(crate) struct Deflate {
    params: DeflateParams,
    compressor: Option<Compress>,
    decompressor: Option<Decompress>,
    /// Our compressor is reset after every message.
    compress_reset: bool,
    /// Window for what we compress; `None`: 8 bits, so we never compress.
    compress_bits: Option<u8>,
    decompress_reset: bool,
    decompress_bits: u8,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("params", &self.params)
            .field("compressor", &self.compressor.is_some())
            .field("decompressor", &self.decompressor.is_some())
            .finish()
    }
}

impl Deflate {
    pub(crate) fn new(role: Role, params: DeflateParams) -> Self {
        let (compress_reset, out_bits) = params.outgoing(role);
        let (decompress_reset, in_bits) = params.incoming(role);
        Self {
            compressor: None,
            decompressor: None,
            compress_reset,
            compress_bits: (out_bits >= 9).then_some(out_bits),
            decompress_reset,
            decompress_bits: in_bits.max(9),
            params,
        }
    }

    /// Whether a message of `len` bytes should be compressed.
    pub(crate) fn wants_to_compress(&self, len: usize) -> bool {
        self.compress_bits.is_some() && len >= self.params.threshold
    }

    /// Whether we may compress at all (for messages sent in fragments).
    pub(crate) fn can_compress(&self) -> bool {
        self.compress_bits.is_some()
    }

    /// Compresses one frame's worth of a message, appending to `out`. On the
    /// last frame (`fin`) the trailing empty block is stripped.
    pub(crate) fn compress(&mut self, input: &[u8], fin: bool, out: &mut Vec<u8>) {
        let Some(bits) = self.compress_bits else { return out.extend_from_slice(input) };
        let level = self.params.level;
        let compressor = self.compressor.get_or_insert_with(|| take_compressor(bits, level));
        let start = out.len();
        out.reserve(input.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let before = compressor.total_in();
            // Sync flush never fails on a valid stream; a failure would be a
            // zlib bug, and the sent bytes would fail the peer's inflate.
            let _ = compressor.compress_vec(&input[consumed..], out, FlushCompress::Sync);
            consumed += (compressor.total_in() - before) as usize;
            if consumed == input.len() && out.len() < out.capacity() {
                break;
            }
        }
        if fin {
            if out[start..].ends_with(&TAIL) {
                out.truncate(out.len() - TAIL.len());
            }
            if out.len() == start {
                // Nothing was pending (an empty message, or an empty last
                // fragment): the receiver appends 00 00 ff ff, which needs a
                // stored-block header before it. RFC 7692 §7.2.3.6: send 0x00.
                out.push(0x00);
            }
            if self.compress_reset
                && let Some(compressor) = self.compressor.take()
            {
                return_compressor(bits, level, compressor);
            }
        }
    }

    /// Inflates one frame of a compressed message, appending to `out`; `fin`
    /// adds the trailing empty block. Fails with 1009 as soon as `out` would
    /// exceed `limit` (so a decompression bomb costs at most `limit` bytes),
    /// and with 1007 on corrupt data.
    pub(crate) fn decompress(
        &mut self,
        input: &[u8],
        fin: bool,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), ProtocolError> {
        let bits = self.decompress_bits;
        let decompressor = self.decompressor.get_or_insert_with(|| take_decompressor(bits));
        let result = inflate(decompressor, input, out, limit)
            .and_then(|()| if fin { inflate(decompressor, &TAIL, out, limit) } else { Ok(()) });
        if result.is_err() {
            // The context is unusable after an error; never pool it.
            self.decompressor = None;
        } else if fin
            && self.decompress_reset
            && let Some(decompressor) = self.decompressor.take()
        {
            return_decompressor(bits, decompressor);
        }
        result
    }
}

fn inflate(d: &mut Decompress, input: &[u8], out: &mut BytesMut, limit: usize) -> Result<(), ProtocolError> {
    let mut consumed = 0;
    loop {
        let filled = out.len();
        if filled > limit {
            return Err(ProtocolError::MessageTooLarge { size: filled as u64, limit });
        }
        // Room for the next step: a guess from the input first (JSON inflates
        // 3-4x), then doubling; never more than one byte past the limit. Small
        // messages thus keep small buffers.
        let guess = (input.len() - consumed).saturating_mul(4).saturating_add(INFLATE_MIN_STEP);
        let room = guess.max(filled).min((limit - filled).saturating_add(1));
        out.resize(filled + room, 0);
        let (before_in, before_out) = (d.total_in(), d.total_out());
        let status = d.decompress(&input[consumed..], &mut out[filled..], FlushDecompress::Sync);
        let produced = (d.total_out() - before_out) as usize;
        let eaten = (d.total_in() - before_in) as usize;
        consumed += eaten;
        out.truncate(filled + produced);
        if produced == 0 && eaten == 0 && status.is_ok() && !matches!(status, Ok(Status::StreamEnd)) {
            // No progress with room to spare: done, or stuck on bad input.
            return if consumed == input.len() { Ok(()) } else { Err(ProtocolError::InvalidCompressedData) };
        }
        match status {
            Err(_) => return Err(ProtocolError::InvalidCompressedData),
            // A final block ends the stream: start a fresh one next time.
            Ok(Status::StreamEnd) => {
                d.reset(false);
                if consumed == input.len() {
                    return Ok(());
                }
            }
            Ok(_) => {}
        }
        if out.len() > limit {
            return Err(ProtocolError::MessageTooLarge { size: out.len() as u64, limit });
        }
        if consumed == input.len() && produced < room {
            return Ok(());
        }
    }
}

fn take_compressor(bits: u8, level: u32) -> Compress {
    let pooled = COMPRESSORS.with_borrow_mut(|pool| {
        let i = pool.iter().position(|(b, l, _)| *b == bits && *l == level)?;
        Some(pool.swap_remove(i).2)
    });
    pooled.unwrap_or_else(|| Compress::new_with_window_bits(Compression::new(level), false, bits))
}

fn return_compressor(bits: u8, level: u32, mut compressor: Compress) {
    compressor.reset();
    COMPRESSORS.with_borrow_mut(|pool| {
        if pool.len() < POOL_SIZE {
            pool.push((bits, level, compressor));
        }
    });
}

fn take_decompressor(bits: u8) -> Decompress {
    let pooled = DECOMPRESSORS.with_borrow_mut(|pool| {
        let i = pool.iter().position(|(b, _)| *b == bits)?;
        Some(pool.swap_remove(i).1)
    });
    pooled.unwrap_or_else(|| Decompress::new_with_window_bits(false, bits))
}

fn return_decompressor(bits: u8, mut decompressor: Decompress) {
    decompressor.reset(false);
    DECOMPRESSORS.with_borrow_mut(|pool| {
        if pool.len() < POOL_SIZE {
            pool.push((bits, decompressor));
        }
    });
}

//! Heap memory per connection, per mode, and what each zlib-rs context is
//! made of.

use bytes::Buf;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use peregrine_proto::{Connection, Message, Utf8Bytes};

use crate::alloc::live;
use crate::report::kib;
use crate::{Mode, expect_text, pair};

pub(crate) const CONNECTIONS: usize = 100;
pub(crate) const MEMORY_MESSAGES: usize = 50;

#[derive(Clone, Copy)]
pub(crate) struct Memory {
    /// Per connection, after the traffic with outputs written out.
    pub(crate) server: f64,
    pub(crate) client: f64,
    /// Per connection, after `release_idle_buffers`.
    pub(crate) server_idle: f64,
    pub(crate) client_idle: f64,
    /// Per connection before any traffic.
    pub(crate) fresh: f64,
    /// Still held once every connection is gone: per-thread pools.
    pub(crate) shared: usize,
}

/// Sends `message` from `from` to `to`, checks it, and leaves both outputs empty.
fn transfer(from: &mut Connection, to: &mut Connection, message: &Utf8Bytes) {
    from.send(Message::Text(message.clone())).expect("send");
    let output = from.output();
    while output.has_remaining() {
        let chunk = output.chunk();
        to.receive(chunk);
        let n = chunk.len();
        output.advance(n);
    }
    expect_text(to.next_event(), message);
    assert!(to.next_event().is_none() && !to.output().has_remaining());
}

/// Runs on a thread of its own, so the per-thread context pools start empty
/// and what they keep is counted.
pub(crate) fn memory(mode: &'static Mode, messages: Vec<Utf8Bytes>) -> Memory {
    std::thread::spawn(move || {
        let mut servers = Vec::with_capacity(CONNECTIONS);
        let mut clients = Vec::with_capacity(CONNECTIONS);
        // Clone once so the clones below allocate nothing (`Bytes` made from a
        // `Vec` allocates its shared header on the first clone).
        drop(messages.clone());
        let conn_struct = size_of::<Connection>() as f64;
        let per = |bytes: usize| bytes as f64 / CONNECTIONS as f64 + conn_struct;

        let base = live();
        for _ in 0..CONNECTIONS {
            let (server, client) = pair(mode);
            servers.push(server);
            clients.push(client);
        }
        let fresh = live().saturating_sub(base) as f64 / (2 * CONNECTIONS) as f64 + conn_struct;
        for (server, client) in servers.iter_mut().zip(&mut clients) {
            for message in &messages {
                // Both ways, so each side holds a compressor and a decompressor.
                transfer(server, client, message);
                transfer(client, server, message);
            }
        }
        let after_traffic = live();
        servers.iter_mut().for_each(Connection::release_idle_buffers);
        let server_buffers = after_traffic - live();
        let before = live();
        clients.iter_mut().for_each(Connection::release_idle_buffers);
        let client_buffers = before - live();
        let before = live();
        servers.clear();
        let server_rest = before - live();
        let before = live();
        clients.clear();
        let client_rest = before - live();
        Memory {
            server: per(server_buffers + server_rest),
            client: per(client_buffers + client_rest),
            server_idle: per(server_rest),
            client_idle: per(client_rest),
            fresh,
            shared: live().saturating_sub(base),
        }
    })
    .join()
    .expect("memory thread")
}

/// What one zlib-rs context is made of, by the sizes zlib-rs 0.6 allocates.
fn context_parts(compressor: bool, bits: u32) -> String {
    let window = 1usize << bits;
    if compressor {
        format!(
            "window {} + prev {} + hash heads 128 KiB + pending 64 KiB + symbols 48 KiB + state",
            kib((2 * window) as f64),
            kib((2 * window) as f64),
        )
    } else {
        "window 32 KiB (zlib-rs always allocates 15 bits) + state".to_string()
    }
}

/// Heap bytes of each zlib-rs context on its own, made as the codec makes
/// them (flate2, raw deflate), after one message went through.
pub(crate) fn contexts(sample: &[u8]) -> Vec<(String, usize, String)> {
    let mut rows = Vec::new();
    let mut out = Vec::with_capacity(4 * sample.len() + 64);
    for bits in [15u8, 10, 9] {
        let sizes: Vec<usize> = [6, 1]
            .into_iter()
            .map(|level| {
                let before = live();
                let mut compress = Compress::new_with_window_bits(Compression::new(level), false, bits);
                out.clear();
                compress.compress_vec(sample, &mut out, FlushCompress::Sync).expect("compress");
                live() - before
            })
            .collect();
        assert_eq!(sizes[0], sizes[1], "the level does not change the compressor's size");
        let what = format!("compressor, {bits}-bit window (any level)");
        rows.push((what, sizes[0], context_parts(true, bits.into())));
    }
    let mut inflated = Vec::with_capacity(sample.len() + 64);
    for bits in [15u8, 10, 9] {
        let before = live();
        let mut decompress = Decompress::new_with_window_bits(false, bits);
        inflated.clear();
        decompress.decompress_vec(&out, &mut inflated, FlushDecompress::Sync).expect("inflate");
        assert_eq!(inflated, sample);
        let what = format!("decompressor, {bits}-bit window");
        rows.push((what, live() - before, context_parts(false, bits.into())));
    }
    rows
}

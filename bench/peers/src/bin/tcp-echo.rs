//! Plain TCP echo server, the ceiling: `tcp-echo ADDR`.
//!
//! No WebSocket at all: `tokio::io::copy` from the read half to the write
//! half. The load generator's masked frames come back unchanged and still
//! parse as frames; a handshake request comes back as itself, which ends in
//! an empty line, so `bench handshake --any-response` times TCP connect plus
//! one round trip.

fn main() -> std::io::Result<()> {
    peregrine_bench_peers::serve("plain TCP", |mut tcp| async move {
        let (mut read, mut write) = tcp.split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
    })
}

//! Frame decoding and encoding through `Connection`.
//!
//! decode: a server receives a stream of masked frames (one `receive` of the
//! whole stream, then `next_event` until `None`), reusing its connection.
//! encode: `Connection::send` of one binary message, then the output is
//! cleared; as a server (payloads of 4 KiB and more are queued by reference,
//! not copied) and as a client (the payload is copied and masked).
//!
//! Throughput counts payload bytes; divide the time by the frame count in
//! the benchmark name for the cost of one frame.

use std::hint::black_box;

use bytes::{Buf, Bytes};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use peregrine_proto::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use peregrine_proto::mask::apply_mask;
use peregrine_proto::{Connection, Message, Role};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// `count` masked frames of `size` bytes each, as a client sends them.
fn masked_stream(opcode: OpCode, size: usize, count: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut stream = Vec::with_capacity(count * (size + MAX_HEADER_LEN));
    for i in 0..count {
        let key = (i as u32).wrapping_mul(0x9e37_79b9).to_be_bytes();
        let header = FrameHeader { fin: true, rsv: 0, opcode, mask: Some(key), payload_len: size as u64 };
        let mut head = [0; MAX_HEADER_LEN];
        let len = header.encode(&mut head);
        stream.extend_from_slice(&head[..len]);
        let start = stream.len();
        stream.extend_from_slice(&payload);
        apply_mask(&mut stream[start..], key, 0);
    }
    stream
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    let cases = [
        ("text", OpCode::Text, 32, 1024),
        ("binary", OpCode::Binary, 16 * KIB, 64),
        ("binary", OpCode::Binary, MIB, 2),
    ];
    for (kind, opcode, size, count) in cases {
        let stream = masked_stream(opcode, size, count);
        group.throughput(Throughput::Bytes((size * count) as u64));
        let id = BenchmarkId::new(format!("server/{kind}/{}x", count), label(size));
        let mut server = Connection::new(Role::Server);
        group.bench_function(id, |b| {
            b.iter(|| {
                server.receive(black_box(&stream));
                let mut events = 0;
                while let Some(event) = server.next_event() {
                    black_box(event.expect("valid frame"));
                    events += 1;
                }
                assert_eq!(events, count);
            });
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for role in [Role::Server, Role::Client] {
        for size in [32, 16 * KIB, MIB] {
            let payload = Bytes::from(vec![0x5a; size]);
            group.throughput(Throughput::Bytes(size as u64));
            let name = if role == Role::Server { "server/binary" } else { "client/binary" };
            let mut conn = Connection::new(role);
            group.bench_function(BenchmarkId::new(name, label(size)), |b| {
                b.iter(|| {
                    conn.send(Message::Binary(black_box(payload.clone()))).expect("send");
                    let output = conn.output();
                    black_box(output.chunk());
                    let n = output.remaining();
                    output.advance(n);
                });
            });
        }
    }
    group.finish();
}

fn label(size: usize) -> String {
    match size {
        s if s >= MIB => format!("{}MiB", s / MIB),
        s if s >= KIB => format!("{}KiB", s / KIB),
        s => format!("{s}B"),
    }
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);

//! Masking throughput: the fast path (on an aligned buffer and on a payload
//! that follows a frame header) beside the byte-at-a-time reference.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use peregrine_proto::mask::{apply_mask, apply_mask_scalar};

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    let key = [0x37, 0xfa, 0x21, 0x3d];
    for (label, size) in
        [("16B", 16), ("256B", 256), ("1KiB", 1024), ("16KiB", 16 * 1024), ("1MiB", 1024 * 1024)]
    {
        let mut buf: Vec<u8> = (0..size).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("apply_mask", label), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(key), 0));
        });
        // A payload as a server receives it: after a 14-byte header (64-bit
        // length and mask key), so not aligned to the buffer's start.
        let mut framed: Vec<u8> = (0..size + 14).map(|i| i as u8).collect();
        group.bench_function(BenchmarkId::new("apply_mask_after_header", label), |b| {
            b.iter(|| apply_mask(black_box(&mut framed[14..]), black_box(key), 0));
        });
        group.bench_function(BenchmarkId::new("apply_mask_scalar", label), |b| {
            b.iter(|| apply_mask_scalar(black_box(&mut buf), black_box(key), 0));
        });
    }
    group.finish();
}

criterion_group!(benches, mask);
criterion_main!(benches);

//! UTF-8 validation throughput: the incremental `Utf8Validator` (one `feed`
//! of the whole text, then `finish`) beside `std::str::from_utf8`, on ASCII
//! and on mixed text with 1- to 4-byte code points.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use peregrine_proto::utf8::Utf8Validator;

/// `size` bytes of valid UTF-8: `sample` repeated, cut at a code point and
/// padded with ASCII.
fn text(sample: &str, size: usize) -> Vec<u8> {
    let mut out = String::with_capacity(size);
    'fill: loop {
        for ch in sample.chars() {
            if out.len() + ch.len_utf8() > size {
                break 'fill;
            }
            out.push(ch);
        }
    }
    while out.len() < size {
        out.push(' ');
    }
    out.into_bytes()
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    let ascii = "The quick brown fox jumps over the lazy dog. 0123456789 {\"json\": true}\n";
    let mixed = "Hello, κόσμε! Grüße, ¿qué tal? 日本語のテキスト 한국어 🦀🚀 привет мир €100 ";
    for (kind, sample) in [("ascii", ascii), ("mixed", mixed)] {
        for (label, size) in [("1KiB", 1024), ("1MiB", 1024 * 1024)] {
            let data = text(sample, size);
            assert!(std::str::from_utf8(&data).is_ok());
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(BenchmarkId::new(format!("validator/{kind}"), label), |b| {
                b.iter(|| {
                    let mut validator = Utf8Validator::default();
                    validator.feed(black_box(&data)).expect("valid");
                    validator.finish().expect("complete");
                });
            });
            group.bench_function(BenchmarkId::new(format!("std/{kind}"), label), |b| {
                b.iter(|| std::str::from_utf8(black_box(&data)).is_ok());
            });
        }
    }
    group.finish();
}

criterion_group!(benches, utf8);
criterion_main!(benches);

//! Benchmarks for BLAKE3 over whole buffers, the digest every file body
//! carries in its trailer.
//!
//! Single-threaded on purpose: `Hasher::update` is what the transport calls,
//! and `update_rayon` would need blake3's `rayon` feature, which ferry does
//! not enable. Run with `cargo bench --bench hashing`.

use std::hint::black_box;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Buffer sizes, with the id each is benchmarked under.
const SIZES: [(&str, usize); 4] = [
    ("16KiB", 16 * KIB),
    ("256KiB", 256 * KIB),
    ("1MiB", MIB),
    ("16MiB", 16 * MIB),
];

fn blake3_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("blake3");
    // A 16 MiB sample takes milliseconds; flat sampling keeps the run short
    // without changing what is measured.
    group.sampling_mode(SamplingMode::Flat);
    for (id, len) in SIZES {
        // Written bytes, not `vec![0; len]`: untouched zeroed pages can all
        // map one shared page and stay in cache, flattering the large sizes.
        let buffer: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("update", id), |b| {
            b.iter(|| {
                let mut hasher = blake3::Hasher::new();
                hasher.update(black_box(&buffer));
                hasher.finalize()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, blake3_update);
criterion_main!(benches);

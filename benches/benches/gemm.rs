//! Criterion benches of the model's dense products: drsae's GEMM beside `matrixmultiply`, plus
//! the FMA-throughput microbenchmark that measures this core's peak.
//!
//! Throughput is `2·m·k·n` elements, so criterion's "elements/s" reads as FLOP/s. The peak to
//! compare with is one AVX-512 core: 16 lanes × 2 flops × 2 FMA ports per cycle (64 flops per
//! cycle); the `fma_peak` group measures what this core actually sustains.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use drsae_benches::{BATCHES, GemmProblem, fma_chains, model_shapes};
use std::time::Duration;

fn gemm(c: &mut Criterion) {
    let kern = drsae_kernels::kernels();
    for shape in model_shapes(1) {
        let mut group = c.benchmark_group(format!("gemm/{}", shape.op));
        group
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(20);
        for &b in &BATCHES {
            let shape = model_shapes(b)
                .into_iter()
                .find(|s| s.op == shape.op)
                .expect("same ops at every batch size");
            group.throughput(Throughput::Elements(shape.flops()));
            let mut p = GemmProblem::new(shape, 42);
            group.bench_function(BenchmarkId::new(kern.name(), shape.dims()), |bch| {
                bch.iter(|| p.run_ours(kern))
            });
            group.bench_function(BenchmarkId::new("matrixmultiply", shape.dims()), |bch| {
                bch.iter(|| p.run_matrixmultiply())
            });
        }
        group.finish();
    }
}

fn fma_peak(c: &mut Criterion) {
    let iters = 100_000;
    let flops = fma_chains(1) * iters;
    let mut group = c.benchmark_group("fma_peak");
    group
        .throughput(Throughput::Elements(flops))
        .measurement_time(Duration::from_secs(1));
    group.bench_function("independent_fma_chains", |b| b.iter(|| fma_chains(iters)));
    group.finish();
}

criterion_group!(benches, gemm, fma_peak);
criterion_main!(benches);

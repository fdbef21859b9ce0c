//! Criterion benches of the sparse products beside the dense GEMM they replace:
//! `(B×784 sparse)(784×400)` and `(B×400 sparse)(400×400)` at 5 %, 15 % and 30 % density, by
//! row gathers (`sparse_gemm`) and over the depth some row needs (`gemm_depth_subset`).
//!
//! Throughput is the dense product's `2·B·K·N`, so the sparse rows read as "dense-equivalent"
//! FLOP/s and compare directly with the dense rows.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use drsae_benches::{BATCHES, DENSITIES, N_HIDDEN, N_INPUT, SparseProblem};
use std::time::Duration;

fn sparse(c: &mut Criterion) {
    let kern = drsae_kernels::kernels();
    for (op, k) in [("enc", N_INPUT), ("rec", N_HIDDEN)] {
        let mut group = c.benchmark_group(format!("sparse_gemm/{op}"));
        group
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(20);
        for &b in &BATCHES {
            let mut dense = SparseProblem::new(op, b, k, N_HIDDEN, 1.0, 3);
            group.throughput(Throughput::Elements(dense.dense_flops()));
            group.bench_function(BenchmarkId::new("dense_gemm", dense.dims()), |bch| {
                bch.iter(|| dense.run_dense(kern))
            });
            for &d in &DENSITIES {
                let mut p = SparseProblem::new(op, b, k, N_HIDDEN, d, 3);
                let id = format!("{}/density={:.0}%", p.dims(), d * 100.0);
                group.bench_function(BenchmarkId::new("sparse_gemm", &id), |bch| {
                    bch.iter(|| p.run_sparse(kern))
                });
                group.bench_function(BenchmarkId::new("gemm_depth_subset", &id), |bch| {
                    bch.iter(|| p.run_depth_subset(kern))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, sparse);
criterion_main!(benches);

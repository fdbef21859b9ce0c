//! Shared helpers for the drsae benchmarks: the model's shapes, seeded operands, the two GEMM
//! implementations behind one call, a timer, and the FMA-throughput peak.
//!
//! Used by the criterion benches (`benches/*.rs`) and by the `kernel_table` binary, so both
//! measure exactly the same problems.

use drsae_kernels::{AlignedVec, Kernels, MatMut, MatRef, SparseRows};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::hint::black_box;
use std::time::Duration;
#[cfg(not(target_os = "linux"))]
use std::time::Instant;

/// Minibatch sizes the model runs: single examples, the default minibatch, a large one.
pub const BATCHES: [usize; 3] = [1, 10, 128];
/// Densities of the sparse operand in the sparse benches.
pub const DENSITIES: [f64; 3] = [0.05, 0.15, 0.30];
/// Pixels per MNIST image (m in the paper).
pub const N_INPUT: usize = 784;
/// Hidden units (n in the paper).
pub const N_HIDDEN: usize = 400;

/// One dense product of the model: `C (m×n) = A (m×k) · B (k×n)` with a storage layout.
#[derive(Clone, Copy, Debug)]
pub struct GemmShape {
    /// Short name of the product, e.g. `enc_fwd_nt`.
    pub op: &'static str,
    /// Rows of C.
    pub m: usize,
    /// Depth.
    pub k: usize,
    /// Columns of C.
    pub n: usize,
    /// A is stored transposed (column-major view), e.g. `d_uᵀ`.
    pub a_t: bool,
    /// B is stored transposed, e.g. `Eᵀ` read from the row-major `E`.
    pub b_t: bool,
    /// Minibatch size the shape was built for.
    pub batch: usize,
}

impl GemmShape {
    /// `m×k*k×n`, e.g. `10x784*784x400`.
    pub fn dims(&self) -> String {
        format!("{}x{}*{}x{}", self.m, self.k, self.k, self.n)
    }

    /// Floating-point operations of one product: `2·m·k·n`.
    pub fn flops(&self) -> u64 {
        2 * (self.m * self.k * self.n) as u64
    }
}

/// The model's dense products at minibatch `b`:
/// encoder `(B×784)(784×400)` and recurrence `(B×400)(400×400)`, each with the weight stored
/// transposed (`x·Eᵀ` from row-major `E`: "nt") and pre-transposed ("nn"), and the weight
/// gradients `(400×B)(B×784)` and `(400×B)(B×400)` (`d_uᵀ·x`: "tn").
pub fn model_shapes(b: usize) -> Vec<GemmShape> {
    let s = |op, m, k, n, a_t, b_t| GemmShape {
        op,
        m,
        k,
        n,
        a_t,
        b_t,
        batch: b,
    };
    vec![
        s("enc_fwd_nt", b, N_INPUT, N_HIDDEN, false, true),
        s("enc_fwd_nn", b, N_INPUT, N_HIDDEN, false, false),
        s("rec_fwd_nt", b, N_HIDDEN, N_HIDDEN, false, true),
        s("rec_fwd_nn", b, N_HIDDEN, N_HIDDEN, false, false),
        s("grad_e_tn", N_HIDDEN, b, N_INPUT, true, false),
        s("grad_s_tn", N_HIDDEN, b, N_HIDDEN, true, false),
    ]
}

/// Seeded uniform values in [-1, 1).
pub fn random_matrix(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..rows * cols)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect()
}

/// Seeded matrix whose entries are non-zero with probability `density` (uniformly placed).
pub fn sparse_matrix(seed: u64, rows: usize, cols: usize, density: f64) -> Vec<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..rows * cols)
        .map(|_| {
            if rng.random_bool(density) {
                rng.random_range(0.0f32..1.0)
            } else {
                0.0
            }
        })
        .collect()
}

/// Operands of one dense product, stored as the layout says, each starting a cache line as the
/// engine's matrices do.
pub struct GemmProblem {
    /// The shape.
    pub shape: GemmShape,
    a: AlignedVec,
    b: AlignedVec,
    c: AlignedVec,
}

impl GemmProblem {
    /// Seeded operands for `shape`.
    pub fn new(shape: GemmShape, seed: u64) -> Self {
        GemmProblem {
            shape,
            a: AlignedVec::from_slice(&random_matrix(seed, shape.m, shape.k)),
            b: AlignedVec::from_slice(&random_matrix(seed + 1, shape.k, shape.n)),
            c: AlignedVec::zeros(shape.m * shape.n),
        }
    }

    /// (pointer, row stride, column stride) of A and B as stored.
    fn strides(&self) -> ((usize, usize), (usize, usize)) {
        let GemmShape { m, k, n, .. } = self.shape;
        let a = if self.shape.a_t { (1, m) } else { (k, 1) };
        let b = if self.shape.b_t { (1, k) } else { (n, 1) };
        let _ = n;
        (a, b)
    }

    /// `C = A·B` with drsae's kernels (β = 0).
    pub fn run_ours(&mut self, kern: &Kernels) {
        let GemmShape { m, k, n, .. } = self.shape;
        let ((ars, acs), (brs, bcs)) = self.strides();
        let a = MatRef::new(&self.a, m, k, ars, acs).expect("A view");
        let b = MatRef::new(&self.b, k, n, brs, bcs).expect("B view");
        let c = MatMut::row_major(&mut self.c, m, n).expect("C view");
        kern.gemm(1.0, a, b, 0.0, c);
        black_box(&mut self.c);
    }

    /// `C = A·B` with `matrixmultiply::sgemm` (β = 0) on the same storage.
    pub fn run_matrixmultiply(&mut self) {
        let GemmShape { m, k, n, .. } = self.shape;
        let ((ars, acs), (brs, bcs)) = self.strides();
        // SAFETY: A is m×k, B is k×n and C is m×n with the strides above, each inside its
        // vector (allocated with exactly m·k, k·n and m·n elements); C does not alias A or B.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                self.a.as_ptr(),
                ars as isize,
                acs as isize,
                self.b.as_ptr(),
                brs as isize,
                bcs as isize,
                0.0,
                self.c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        black_box(&mut self.c);
    }
}

/// A sparse product `Y (B×N) += X (B×K, sparse) · W (K×N)` and the dense product it replaces.
pub struct SparseProblem {
    /// Short name: `enc` (K = 784) or `rec` (K = 400).
    pub op: &'static str,
    /// Rows of X (minibatch).
    pub batch: usize,
    /// Depth.
    pub k: usize,
    /// Columns.
    pub n: usize,
    /// Target density of X.
    pub density: f64,
    x_dense: AlignedVec,
    x: SparseRows,
    /// The columns of X that hold a non-zero in some row: the depth of the subset product.
    depth: Vec<u32>,
    w: AlignedVec,
    /// `Wᵀ` stored row-major (`N × K`), as the model stores `E` (`n × m`).
    wt: AlignedVec,
    y: AlignedVec,
}

impl SparseProblem {
    /// Seeded operands; W is row-major `K × N` (e.g. `Eᵀ` kept pre-transposed), and a row-major
    /// copy of `Wᵀ` for the dense `A·Wᵀ` layout.
    pub fn new(
        op: &'static str,
        batch: usize,
        k: usize,
        n: usize,
        density: f64,
        seed: u64,
    ) -> Self {
        let x_dense = sparse_matrix(seed, batch, k, density);
        let mut x = SparseRows::new();
        x.from_dense_into(
            drsae_kernels::kernels(),
            MatRef::row_major(&x_dense, batch, k).expect("X view"),
        );
        let depth = (0..k)
            .filter(|&p| (0..batch).any(|r| x_dense[r * k + p] != 0.0))
            .map(|p| p as u32)
            .collect();
        let w = random_matrix(seed + 1, k, n);
        let mut wt = vec![0.0; k * n];
        for p in 0..k {
            for j in 0..n {
                wt[j * k + p] = w[p * n + j];
            }
        }
        SparseProblem {
            op,
            batch,
            k,
            n,
            density,
            x_dense: AlignedVec::from_slice(&x_dense),
            x,
            depth,
            w: AlignedVec::from_slice(&w),
            wt: AlignedVec::from_slice(&wt),
            y: AlignedVec::zeros(batch * n),
        }
    }

    /// `(B×K)(K×N)` as text.
    pub fn dims(&self) -> String {
        format!("{}x{}*{}x{}", self.batch, self.k, self.k, self.n)
    }

    /// Flops of the dense product this replaces: `2·B·K·N`.
    pub fn dense_flops(&self) -> u64 {
        2 * (self.batch * self.k * self.n) as u64
    }

    /// Flops the sparse product performs: `2·nnz·N`.
    pub fn sparse_flops(&self) -> u64 {
        2 * (self.x.nnz() * self.n) as u64
    }

    /// Measured density of X.
    pub fn actual_density(&self) -> f64 {
        self.x.density()
    }

    /// Fraction of the depth that some row of X needs (the union of their non-zero columns).
    pub fn depth_fraction(&self) -> f64 {
        self.depth.len() as f64 / self.k.max(1) as f64
    }

    /// Flops the depth-subset product performs: `2·B·|depth|·N`.
    pub fn depth_subset_flops(&self) -> u64 {
        2 * (self.batch * self.depth.len() * self.n) as u64
    }

    /// `Y += X·W` with the dense GEMM over the depth that some row of X needs.
    pub fn run_depth_subset(&mut self, kern: &Kernels) {
        let x = MatRef::row_major(&self.x_dense, self.batch, self.k).expect("X view");
        let w = MatRef::row_major(&self.w, self.k, self.n).expect("W view");
        let y = MatMut::row_major(&mut self.y, self.batch, self.n).expect("Y view");
        kern.gemm_depth_subset(1.0, x, w, &self.depth, 1.0, y);
        black_box(&mut self.y);
    }

    /// `Y += X·W` with the sparse kernel.
    pub fn run_sparse(&mut self, kern: &Kernels) {
        let w = MatRef::row_major(&self.w, self.k, self.n).expect("W view");
        let y = MatMut::row_major(&mut self.y, self.batch, self.n).expect("Y view");
        kern.sparse_gemm(&self.x, w, y);
        black_box(&mut self.y);
    }

    /// Rebuilds the sparse X from its dense form, then `Y += X·W` (the cost when X changes).
    pub fn run_convert_and_sparse(&mut self, kern: &Kernels) {
        self.x.from_dense_into(
            kern,
            MatRef::row_major(&self.x_dense, self.batch, self.k).expect("X view"),
        );
        self.run_sparse(kern);
    }

    /// `Y += X·W` with the dense GEMM on the dense X.
    pub fn run_dense(&mut self, kern: &Kernels) {
        let x = MatRef::row_major(&self.x_dense, self.batch, self.k).expect("X view");
        let w = MatRef::row_major(&self.w, self.k, self.n).expect("W view");
        let y = MatMut::row_major(&mut self.y, self.batch, self.n).expect("Y view");
        kern.gemm(1.0, x, w, 1.0, y);
        black_box(&mut self.y);
    }

    /// `Y += X·W` with the dense GEMM reading `W` as the transpose of the row-major `Wᵀ` (the
    /// model's `x·Eᵀ` with `E` as stored).
    pub fn run_dense_nt(&mut self, kern: &Kernels) {
        let x = MatRef::row_major(&self.x_dense, self.batch, self.k).expect("X view");
        let w = MatRef::row_major(&self.wt, self.n, self.k)
            .expect("Wt view")
            .t();
        let y = MatMut::row_major(&mut self.y, self.batch, self.n).expect("Y view");
        kern.gemm(1.0, x, w, 1.0, y);
        black_box(&mut self.y);
    }

    /// `Y += X·W` with `matrixmultiply::sgemm` on the dense X.
    pub fn run_matrixmultiply(&mut self) {
        // SAFETY: X is B×K, W is K×N, Y is B×N, all row-major inside vectors of exactly that
        // size; Y aliases neither input.
        unsafe {
            matrixmultiply::sgemm(
                self.batch,
                self.k,
                self.n,
                1.0,
                self.x_dense.as_ptr(),
                self.k as isize,
                1,
                self.w.as_ptr(),
                self.n as isize,
                1,
                1.0,
                self.y.as_mut_ptr(),
                self.n as isize,
                1,
            );
        }
        black_box(&mut self.y);
    }

    /// Resets Y to zero (keeps values bounded across many accumulating runs).
    pub fn reset(&mut self) {
        self.y.fill(0.0);
    }
}

/// Shares of an example's units active at some step, for the recurrent-gradient bench (after
/// fine-tuning the model sits near 0.45; the engine switches to the dense product above 2/3).
pub const ROW_SHARES: [f64; 3] = [0.3, 0.45, 0.6];

/// The recurrent-weight gradient of a minibatch, `C (n×n) += Z_stepsᵀ·DA_steps` over
/// `steps × B` stacked rows: per example over the units it activates at some step
/// ([`Kernels::gemm_tn_rows`], lists by [`Kernels::nonzero_columns`]), or dense.
pub struct RecGradProblem {
    /// Minibatch.
    pub batch: usize,
    /// Recurrent steps whose states enter the gradient (T − 1).
    pub steps: usize,
    /// Hidden units.
    pub n: usize,
    /// States, `steps × B × n`: row `s·B + b` is example b after step s+1.
    z: AlignedVec,
    /// Masked adjoints, same layout.
    da: AlignedVec,
    c: AlignedVec,
    rows: Vec<u32>,
    /// Σ over examples of the units each activates at some step.
    active_rows: usize,
}

impl RecGradProblem {
    /// Seeded states in which each unit is active in an example with probability `share`
    /// and then at each step with probability 0.65 (an active unit tends to stay on).
    pub fn new(batch: usize, steps: usize, n: usize, share: f64, seed: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut z = AlignedVec::zeros(steps * batch * n);
        let mut active_rows = 0;
        for b in 0..batch {
            for j in 0..n {
                if !rng.random_bool(share) {
                    continue;
                }
                let mut any = false;
                for s in 0..steps {
                    if rng.random_bool(0.65) {
                        z[(s * batch + b) * n + j] = rng.random_range(0.0f32..1.0);
                        any = true;
                    }
                }
                active_rows += usize::from(any);
            }
        }
        RecGradProblem {
            batch,
            steps,
            n,
            z,
            da: AlignedVec::from_slice(&sparse_matrix(seed + 1, steps * batch, n, 0.3)),
            c: AlignedVec::zeros(n * n),
            rows: vec![0; n],
            active_rows,
        }
    }

    /// `(n×K)(K×n)` as text, K = steps·B.
    pub fn dims(&self) -> String {
        let k = self.steps * self.batch;
        format!("{}x{k}*{k}x{}", self.n, self.n)
    }

    /// Share of the (example, unit) rows active at some step.
    pub fn row_share(&self) -> f64 {
        self.active_rows as f64 / (self.batch * self.n) as f64
    }

    /// Flops of the dense product: `2·n·K·n`.
    pub fn dense_flops(&self) -> u64 {
        2 * (self.n * self.steps * self.batch * self.n) as u64
    }

    /// Flops of the per-example products: `2·rows·steps·n`.
    pub fn rows_flops(&self) -> u64 {
        2 * (self.active_rows * self.steps * self.n) as u64
    }

    /// Per example: its active units, then its product over their rows.
    pub fn run_rows(&mut self, kern: &Kernels) {
        let (b_all, n, sz) = (self.batch, self.n, self.batch * self.n);
        for b in 0..b_all {
            let z_b = MatRef::new(&self.z[b * n..], self.steps, n, sz, 1).expect("Z_b view");
            let count = kern.nonzero_columns(z_b, &mut self.rows);
            let da_b = MatRef::new(&self.da[b * n..], self.steps, n, sz, 1).expect("DA_b view");
            let c = MatMut::row_major(&mut self.c, n, n).expect("C view");
            kern.gemm_tn_rows(1e-6, z_b, da_b, &self.rows[..count], c);
        }
        black_box(&mut self.c);
    }

    /// One dense product over the stacked steps.
    pub fn run_dense(&mut self, kern: &Kernels) {
        let (k, n) = (self.steps * self.batch, self.n);
        let z = MatRef::row_major(&self.z, k, n).expect("Z view").t();
        let da = MatRef::row_major(&self.da, k, n).expect("DA view");
        let c = MatMut::row_major(&mut self.c, n, n).expect("C view");
        kern.gemm(1e-6, z, da, 1.0, c);
        black_box(&mut self.c);
    }

    /// The dense product with `matrixmultiply::sgemm`.
    pub fn run_matrixmultiply(&mut self) {
        let (k, n) = (self.steps * self.batch, self.n);
        // SAFETY: Zᵀ is read as n×k (row stride 1, column stride n) from the k×n Z, DA is k×n
        // and C n×n, all row-major inside vectors of at least that size; C aliases neither.
        unsafe {
            matrixmultiply::sgemm(
                n,
                k,
                n,
                1e-6,
                self.z.as_ptr(),
                1,
                n as isize,
                self.da.as_ptr(),
                n as isize,
                1,
                1.0,
                self.c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        black_box(&mut self.c);
    }
}

/// A clock for benchmarks: on Linux the CPU time of the calling thread, so time the thread
/// spends descheduled (other processes on a shared machine) is not counted; elsewhere the
/// wall clock.
#[derive(Clone, Copy)]
pub struct Clock(f64);

impl Clock {
    /// Now.
    pub fn now() -> Clock {
        Clock(clock_secs())
    }

    /// Seconds since `self`.
    pub fn elapsed(self) -> f64 {
        clock_secs() - self.0
    }
}

#[cfg(target_os = "linux")]
fn clock_secs() -> f64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `struct timespec` (two 64-bit fields on 64-bit Linux)
    // to a valid pointer; CLOCK_THREAD_CPUTIME_ID is always supported on Linux.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(not(target_os = "linux"))]
fn clock_secs() -> f64 {
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Median seconds per call of each closure, measured in interleaved timed batches so that
/// machine noise hits all of them alike. Times are [`Clock`] times (thread CPU time on Linux).
///
/// Warm-up: each closure runs until `warmup` has passed. Then a batch size per closure is chosen
/// so one batch lasts about `batch_time`, and `repeats` rounds each time one batch per closure.
pub fn median_secs_interleaved(
    fs: &mut [&mut dyn FnMut()],
    warmup: Duration,
    batch_time: Duration,
    repeats: usize,
) -> Vec<f64> {
    let mut per_call = Vec::with_capacity(fs.len());
    for f in fs.iter_mut() {
        let start = Clock::now();
        let mut calls = 0u64;
        while calls < 3 || start.elapsed() < warmup.as_secs_f64() {
            f();
            calls += 1;
        }
        per_call.push(start.elapsed() / calls as f64);
    }
    let batches: Vec<u64> = per_call
        .iter()
        .map(|&t| ((batch_time.as_secs_f64() / t).ceil() as u64).max(1))
        .collect();
    let mut samples = vec![Vec::with_capacity(repeats); fs.len()];
    for _ in 0..repeats {
        for (i, f) in fs.iter_mut().enumerate() {
            let start = Clock::now();
            for _ in 0..batches[i] {
                f();
            }
            samples[i].push(start.elapsed() / batches[i] as f64);
        }
    }
    samples.into_iter().map(median).collect()
}

/// Median of a sample (mean of the middle two for even sizes).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Independent FMA chains in one microbenchmark iteration.
pub const FMA_CHAINS: usize = 16;

/// Runs `iters` iterations of [`FMA_CHAINS`] independent FMA chains on the widest vectors the
/// CPU has; returns the flops performed (and a checksum through `black_box`).
///
/// 16 chains: the FMA latency (4 cycles) times the two FMA ports needs ≥ 8 chains in flight,
/// so 16 saturate both ports with slack; no loads or stores disturb the loop.
pub fn fma_chains(iters: u64) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: avx512f was just detected.
            let s = unsafe { fma_chains_avx512(iters) };
            black_box(s);
            return iters * (FMA_CHAINS * 16 * 2) as u64;
        }
        if std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("avx") {
            // SAFETY: fma and avx were just detected.
            let s = unsafe { fma_chains_avx2(iters) };
            black_box(s);
            return iters * (FMA_CHAINS * 8 * 2) as u64;
        }
    }
    let mut acc = [0.0f32; FMA_CHAINS];
    for _ in 0..iters {
        for a in &mut acc {
            *a = black_box(*a).mul_add(0.5, 1.0);
        }
    }
    black_box(acc);
    iters * (FMA_CHAINS * 2) as u64
}

/// AVX-512 FMA chains: `acc ← acc·0.5 + 1` (converges to 2, never overflows or goes subnormal).
///
/// # Safety
/// The CPU must support avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.5);
    let b = _mm512_set1_ps(1.0);
    let mut acc = [_mm512_setzero_ps(); FMA_CHAINS];
    for _ in 0..iters {
        for x in &mut acc {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for x in acc {
        s = _mm512_add_ps(s, x);
    }
    _mm512_reduce_add_ps(s)
}

/// AVX2 FMA chains, as [`fma_chains_avx512`].
///
/// # Safety
/// The CPU must support avx and fma.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,fma")]
unsafe fn fma_chains_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.5);
    let b = _mm256_set1_ps(1.0);
    let mut acc = [_mm256_setzero_ps(); FMA_CHAINS];
    for _ in 0..iters {
        for x in &mut acc {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut s = _mm256_setzero_ps();
    for x in acc {
        s = _mm256_add_ps(s, x);
    }
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

/// Measured single-thread FMA peak in GFLOP/s: the median of `repeats` runs of ~20 ms each.
pub fn fma_peak_gflops(repeats: usize) -> f64 {
    let iters = 1_000_000;
    fma_chains(iters); // warm-up (frequency ramp)
    let samples = (0..repeats)
        .map(|_| {
            let start = Clock::now();
            let flops = fma_chains(iters);
            flops as f64 / start.elapsed() / 1e9
        })
        .collect();
    median(samples)
}

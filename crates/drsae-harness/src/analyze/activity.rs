//! What the network does on data: one pass of the f64 reference forward over the test
//! examples, tallying per-unit activity, the step at which each unit first turns on, errors,
//! and the sums Z^tᵀZ^t and Z^tᵀX from which the per-step least-squares decoders are solved.
//!
//! Examples are processed in fixed chunks whose partial sums are added in chunk order, so every
//! number (floating-point sums included) is the same for any thread count.

use drsae_model::Params;
use drsae_model::reference::{self, Trace};
use rayon::prelude::*;

/// Examples per chunk: the unit of parallel work and of the fixed summation order.
pub const CHUNK: usize = 250;

/// Chunks summed per round. Each chunk carries T·(n² + n·m) f64 of sums (42 MB at n = 400,
/// m = 784, T = 11), so only this many are alive at once; a constant, not the thread count,
/// so that the summation order does not depend on the machine.
const CHUNKS_PER_ROUND: usize = 4;

/// Activity tallies of one unit over the examples seen.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitActivity {
    /// Examples with z^T_i > 0 (active in the final code, the one the classifier reads).
    pub active: u64,
    /// Σ z^T_i over those examples.
    pub sum_active: f64,
    /// `first_on[t − 1]` counts examples whose smallest t with z^t_i > 0 is t (t = 1..=T);
    /// `first_on[T]` counts examples where the unit never turns on.
    pub first_on: Vec<u64>,
}

impl UnitActivity {
    /// Mean z^T_i over the examples where it is active (None if it never is).
    pub fn mean_when_active(&self) -> Option<f64> {
        (self.active > 0).then(|| self.sum_active / self.active as f64)
    }

    /// Examples in which the unit turns on at some step.
    pub fn ever_on(&self) -> u64 {
        self.first_on[..self.first_on.len() - 1].iter().sum()
    }

    /// P(first turns on at step `t` | turns on at some step); None if it never turns on.
    pub fn p_first_on(&self, t: usize) -> Option<f64> {
        let ever = self.ever_on();
        (ever > 0).then(|| self.first_on[t - 1] as f64 / ever as f64)
    }

    /// Mean first step at which the unit turns on, over the examples where it does.
    pub fn mean_first_step(&self) -> Option<f64> {
        let ever = self.ever_on();
        (ever > 0).then(|| {
            let total: u64 = self.first_on[..self.first_on.len() - 1]
                .iter()
                .enumerate()
                .map(|(t, &c)| (t as u64 + 1) * c)
                .sum();
            total as f64 / ever as f64
        })
    }
}

/// Everything one pass over a set of examples collects.
#[derive(Debug, Clone, PartialEq)]
pub struct PassStats {
    /// Input dimension m.
    pub n_input: usize,
    /// Hidden units n.
    pub n_hidden: usize,
    /// T, the steps run.
    pub n_steps: usize,
    /// Examples seen.
    pub examples: u64,
    /// Examples whose argmax logit (first index on ties) is not the label.
    pub errors: u64,
    /// `active_per_step[t − 1]` = Σ over examples of the number of units with z^t_i > 0.
    pub active_per_step: Vec<u64>,
    /// Per-unit tallies.
    pub units: Vec<UnitActivity>,
    /// `gram[t − 1]` = Z^tᵀZ^t (n×n row-major; only the upper triangle j ≥ i is summed).
    pub gram: Vec<Vec<f64>>,
    /// `cross[t − 1]` = Z^tᵀX (n×m row-major).
    pub cross: Vec<Vec<f64>>,
}

impl PassStats {
    /// Empty tallies for n units, m inputs and T steps.
    pub fn new(n_input: usize, n_hidden: usize, n_steps: usize) -> Self {
        let (m, n) = (n_input, n_hidden);
        PassStats {
            n_input,
            n_hidden,
            n_steps,
            examples: 0,
            errors: 0,
            active_per_step: vec![0; n_steps],
            units: vec![
                UnitActivity {
                    active: 0,
                    sum_active: 0.0,
                    first_on: vec![0; n_steps + 1],
                };
                n
            ],
            gram: vec![vec![0.0; n * n]; n_steps],
            cross: vec![vec![0.0; n * m]; n_steps],
        }
    }

    /// Adds one example's forward trace; `x` is its input, `label` its class.
    pub fn add(&mut self, trace: &Trace, x: &[f64], label: u8) {
        self.add_batch(std::slice::from_ref(trace), &[x], &[label]);
    }

    /// Adds several examples: `traces[e]` of input `xs[e]` with label `labels[e]`.
    ///
    /// Z^tᵀZ^t and Z^tᵀX are summed step by step over the whole batch, so that one step's
    /// n×n and n×m blocks stay in cache while every example adds to them. Each entry still
    /// sums the examples in batch order: the result is bit-identical to adding them one by one.
    pub fn add_batch(&mut self, traces: &[Trace], xs: &[&[f64]], labels: &[u8]) {
        let (m, n) = (self.n_input, self.n_hidden);
        let mut pixels = Vec::with_capacity(traces.len());
        for ((trace, x), &label) in traces.iter().zip(xs).zip(labels) {
            self.examples += 1;
            let predicted = trace
                .logits
                .iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |best, (q, &v)| {
                    if v > best.1 { (q, v) } else { best }
                })
                .0;
            self.errors += u64::from(predicted != usize::from(label));
            for (i, first) in first_on(trace).into_iter().enumerate() {
                self.units[i].first_on[first.unwrap_or(self.n_steps + 1) - 1] += 1;
            }
            for (i, &v) in trace.z_final().iter().enumerate() {
                if v > 0.0 {
                    self.units[i].active += 1;
                    self.units[i].sum_active += v;
                }
            }
            let nonzero: Vec<(usize, f64)> = x
                .iter()
                .enumerate()
                .filter(|(_, v)| **v != 0.0)
                .map(|(k, &v)| (k, v))
                .collect();
            pixels.push(nonzero);
        }
        let mut active: Vec<(usize, f64)> = Vec::with_capacity(n);
        for t in 1..=self.n_steps {
            let gram = &mut self.gram[t - 1];
            let cross = &mut self.cross[t - 1];
            for (trace, pixels) in traces.iter().zip(&pixels) {
                // Only active units and non-zero pixels contribute: z and x are both sparse.
                active.clear();
                active.extend(
                    trace.z[t]
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| **v > 0.0)
                        .map(|(i, &v)| (i, v)),
                );
                self.active_per_step[t - 1] += active.len() as u64;
                for (a, &(i, zi)) in active.iter().enumerate() {
                    for &(j, zj) in &active[a..] {
                        gram[i * n + j] += zi * zj;
                    }
                    for &(k, xk) in pixels {
                        cross[i * m + k] += zi * xk;
                    }
                }
            }
        }
    }

    /// Adds another set of tallies (of the same dimensions) to this one.
    pub fn merge(&mut self, other: &PassStats) {
        self.examples += other.examples;
        self.errors += other.errors;
        for (a, b) in self.active_per_step.iter_mut().zip(&other.active_per_step) {
            *a += b;
        }
        for (a, b) in self.units.iter_mut().zip(&other.units) {
            a.active += b.active;
            a.sum_active += b.sum_active;
            for (x, y) in a.first_on.iter_mut().zip(&b.first_on) {
                *x += y;
            }
        }
        for (a, b) in self.gram.iter_mut().zip(&other.gram) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        for (a, b) in self.cross.iter_mut().zip(&other.cross) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
    }

    /// The misclassified fraction.
    pub fn error_rate(&self) -> f64 {
        self.errors as f64 / self.examples.max(1) as f64
    }

    /// Mean number of active units after each step 1..=T.
    pub fn mean_active_per_step(&self) -> Vec<f64> {
        self.active_per_step
            .iter()
            .map(|&a| a as f64 / self.examples.max(1) as f64)
            .collect()
    }
}

/// For each unit, the smallest step t ≥ 1 with z^t_i > 0, or None if it never turns on.
pub fn first_on(trace: &Trace) -> Vec<Option<usize>> {
    let n = trace.u.len();
    (0..n)
        .map(|i| (1..trace.z.len()).find(|&t| trace.z[t][i] > 0.0))
        .collect()
}

/// One example's input in f64.
pub fn example(images: &[f32], m: usize, index: usize) -> Vec<f64> {
    images[index * m..(index + 1) * m]
        .iter()
        .map(|&v| f64::from(v))
        .collect()
}

/// Runs the reference forward (T = `n_steps`) over every example of `images` (row-major,
/// `labels.len()` × m) on `pool`, in chunks of `chunk` examples summed in order.
pub fn run_pass(
    p: &Params<f64>,
    images: &[f32],
    labels: &[u8],
    n_steps: usize,
    chunk: usize,
    pool: &rayon::ThreadPool,
) -> PassStats {
    let (m, n) = (p.n_input, p.n_hidden);
    let ranges: Vec<(usize, usize)> = (0..labels.len())
        .step_by(chunk.max(1))
        .map(|s| (s, (s + chunk.max(1)).min(labels.len())))
        .collect();
    let mut total = PassStats::new(m, n, n_steps);
    for round in ranges.chunks(CHUNKS_PER_ROUND) {
        let parts: Vec<PassStats> = pool.install(|| {
            round
                .par_iter()
                .map(|&(start, end)| {
                    let mut part = PassStats::new(m, n, n_steps);
                    let xs: Vec<Vec<f64>> = (start..end).map(|i| example(images, m, i)).collect();
                    let traces: Vec<Trace> = xs
                        .iter()
                        .map(|x| reference::forward(p, x, n_steps))
                        .collect();
                    let x_refs: Vec<&[f64]> = xs.iter().map(Vec::as_slice).collect();
                    part.add_batch(&traces, &x_refs, &labels[start..end]);
                    part
                })
                .collect()
        });
        for part in &parts {
            total.merge(part);
        }
    }
    total
}

/// The per-step least-squares decoders: for each step t, the D^t minimising
/// Σ over examples ‖x − D^t z^t‖², from the normal equations (Z^tᵀZ^t + εI)·D^tᵀ = Z^tᵀX with
/// ε = `ridge` × (trace(Z^tᵀZ^t)/n) (just `ridge` when the trace is zero), which keeps the
/// system positive definite when some units never turn on at step t (their decoders are 0).
/// Returns, per step, D^tᵀ as n×m row-major: row i is unit i's decoder at step t.
pub fn step_decoders(stats: &PassStats, ridge: f64, pool: &rayon::ThreadPool) -> Vec<Vec<f64>> {
    let (m, n) = (stats.n_input, stats.n_hidden);
    pool.install(|| {
        (0..stats.n_steps)
            .into_par_iter()
            .map(|t| {
                let mut a = stats.gram[t].clone();
                // Only the upper triangle was summed: mirror it.
                for i in 0..n {
                    for j in 0..i {
                        a[i * n + j] = a[j * n + i];
                    }
                }
                let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
                let eps = if trace > 0.0 {
                    ridge * trace / n as f64
                } else {
                    ridge
                };
                for i in 0..n {
                    a[i * n + i] += eps;
                }
                let mut w = stats.cross[t].clone();
                cholesky_solve(&mut a, &mut w, n, m);
                w
            })
            .collect()
    })
}

/// Solves A·W = B in place for a symmetric positive-definite n×n `a` (overwritten by its
/// Cholesky factor L, A = L·Lᵀ) and an n×k right-hand side `b` (overwritten by W).
///
/// A non-positive pivot (A not positive definite in floating point) is clamped to the
/// smallest positive normal number's square root, so that the solve finishes with huge but
/// finite entries rather than NaN; callers add a ridge so that this does not happen.
pub fn cholesky_solve(a: &mut [f64], b: &mut [f64], n: usize, k: usize) {
    // Factor: for each column j, L_jj = sqrt(A_jj − Σ_{p<j} L_jp²),
    // L_ij = (A_ij − Σ_{p<j} L_ip·L_jp) / L_jj for i > j. L is kept in the lower triangle.
    for j in 0..n {
        let mut d = a[j * n + j];
        for p in 0..j {
            d -= a[j * n + p] * a[j * n + p];
        }
        let ljj = d.max(f64::MIN_POSITIVE).sqrt();
        a[j * n + j] = ljj;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for p in 0..j {
                s -= a[i * n + p] * a[j * n + p];
            }
            a[i * n + j] = s / ljj;
        }
    }
    // Forward: L·Y = B, row by row; each row of Y is B's row minus earlier rows (axpy over k).
    for i in 0..n {
        for p in 0..i {
            let l = a[i * n + p];
            if l != 0.0 {
                let (done, rest) = b.split_at_mut(i * k);
                let src = &done[p * k..(p + 1) * k];
                for (dst, s) in rest[..k].iter_mut().zip(src) {
                    *dst -= l * s;
                }
            }
        }
        let inv = 1.0 / a[i * n + i];
        b[i * k..(i + 1) * k].iter_mut().for_each(|v| *v *= inv);
    }
    // Backward: Lᵀ·W = Y, from the last row up.
    for i in (0..n).rev() {
        for p in i + 1..n {
            let l = a[p * n + i];
            if l != 0.0 {
                let (head, tail) = b.split_at_mut(p * k);
                let src = &tail[..k];
                for (dst, s) in head[i * k..(i + 1) * k].iter_mut().zip(src) {
                    *dst -= l * s;
                }
            }
        }
        let inv = 1.0 / a[i * n + i];
        b[i * k..(i + 1) * k].iter_mut().for_each(|v| *v *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::units::tests::hand_network;
    use rand::{RngExt, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a test thread pool starts")
    }

    #[test]
    fn first_on_steps_of_hand_built_network() {
        let p = hand_network();
        let x = [1.0, 0.0, 0.0, 0.0];
        let trace = reference::forward(&p, &x, 3);
        // u = (0.1, −0.01, −0.01, −0.05): unit 0 on at step 1; unit 3 gets 0.1·S_30 = 0.1 at
        // step 2; unit 1's inputs are all ≤ 0 and unit 2 has none.
        assert_eq!(first_on(&trace), [Some(1), None, None, Some(2)]);
        let mut stats = PassStats::new(4, 4, 3);
        stats.add(&trace, &x, 0);
        stats.add(&trace, &x, 1);
        assert_eq!(stats.examples, 2);
        assert_eq!(stats.active_per_step, [2, 4, 4]);
        assert_eq!(stats.units[0].first_on, [2, 0, 0, 0]);
        assert_eq!(stats.units[1].first_on, [0, 0, 0, 2]);
        assert_eq!(stats.units[3].first_on, [0, 2, 0, 0]);
        assert_eq!(stats.units[3].p_first_on(2), Some(1.0));
        assert_eq!(stats.units[3].mean_first_step(), Some(2.0));
        assert_eq!(stats.units[1].p_first_on(2), None);
        // z^3 = (0.261, 0, 0, 0.205) by hand (see the units test's table).
        assert_eq!(stats.units[0].active, 2);
        assert!((stats.units[0].mean_when_active().unwrap_or(0.0) - 0.261).abs() < 1e-12);
        assert!((stats.units[3].mean_when_active().unwrap_or(0.0) - 0.205).abs() < 1e-12);
        assert_eq!(stats.units[2].mean_when_active(), None);
        // logits = C·ẑ + c with ẑ ∝ (0.261, 0, 0, 0.205): class 0 scores 0.261 + 0.5·0.205,
        // class 1 scores −4·0.205, so class 0 is predicted: label 1 is the one error.
        assert_eq!(stats.errors, 1);
        // Z^1ᵀZ^1 has only (0, 0) = 0.01; Z^2ᵀX has (0, 0) = 2·0.19 and (3, 0) = 2·0.05.
        assert!((stats.gram[0][0] - 0.02).abs() < 1e-15);
        assert_eq!(stats.gram[0].iter().filter(|v| **v != 0.0).count(), 1);
        assert!((stats.cross[1][0] - 0.38).abs() < 1e-12);
        assert!((stats.cross[1][3 * 4] - 0.1).abs() < 1e-12);
    }

    fn random_network(seed: u64) -> (Params<f64>, Vec<f32>, Vec<u8>) {
        let (m, n, l, count) = (9, 6, 3, 37);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut p = Params::<f64>::zeros(m, n, l);
        for v in p.e.iter_mut().chain(&mut p.d).chain(&mut p.c) {
            *v = rng.random_range(-1.0..1.0);
        }
        for v in &mut p.s {
            *v = rng.random_range(-0.3..0.3);
        }
        for v in &mut p.b {
            *v = rng.random_range(-0.1..0.3);
        }
        let images: Vec<f32> = (0..count * m)
            .map(|_| {
                let v: f32 = rng.random_range(-0.5..1.0);
                v.max(0.0)
            })
            .collect();
        let labels: Vec<u8> = (0..count).map(|_| rng.random_range(0..3u8)).collect();
        (p, images, labels)
    }

    #[test]
    fn pass_is_identical_for_any_thread_count() {
        let (p, images, labels) = random_network(7);
        let one = run_pass(&p, &images, &labels, 4, 5, &pool(1));
        let three = run_pass(&p, &images, &labels, 4, 5, &pool(3));
        assert_eq!(one.examples, 37);
        assert_eq!(one, three);
        // Within a chunk, the batched sums equal adding the examples one at a time, exactly.
        let mut batched = PassStats::new(9, 6, 4);
        let mut single = PassStats::new(9, 6, 4);
        let xs: Vec<Vec<f64>> = (0..labels.len()).map(|i| example(&images, 9, i)).collect();
        let traces: Vec<Trace> = xs.iter().map(|x| reference::forward(&p, x, 4)).collect();
        let x_refs: Vec<&[f64]> = xs.iter().map(Vec::as_slice).collect();
        batched.add_batch(&traces, &x_refs, &labels);
        for ((trace, x), &label) in traces.iter().zip(&x_refs).zip(&labels) {
            single.add(trace, x, label);
        }
        assert_eq!(batched, single);
        // Across chunks the order of additions differs, so only rounding separates the two.
        assert_eq!(single.units.iter().map(|u| u.active).sum::<u64>(), {
            one.units.iter().map(|u| u.active).sum::<u64>()
        });
        assert!(one.active_per_step.iter().sum::<u64>() > 0);
        for (a, b) in single.cross.concat().iter().zip(one.cross.concat()) {
            assert!((a - b).abs() <= 1e-12 * (1.0 + a.abs()));
        }
    }

    #[test]
    fn cholesky_solve_matches_a_known_solution() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let (n, k) = (17, 5);
        // A = MᵀM + I is positive definite; B = A·W for a known W.
        let mmat: Vec<f64> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n)
                    .map(|r| mmat[r * n + i] * mmat[r * n + j])
                    .sum::<f64>()
                    + f64::from(u8::from(i == j));
            }
        }
        let w: Vec<f64> = (0..n * k).map(|_| rng.random_range(-2.0..2.0)).collect();
        let mut b = vec![0.0; n * k];
        for i in 0..n {
            for c in 0..k {
                b[i * k + c] = (0..n).map(|j| a[i * n + j] * w[j * k + c]).sum();
            }
        }
        cholesky_solve(&mut a, &mut b, n, k);
        let worst = b
            .iter()
            .zip(&w)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-10, "largest error {worst}");
    }

    #[test]
    fn step_decoders_recover_an_exact_linear_decoder() {
        // Inputs built as x = D_true·z from non-negative codes: the least-squares decoder of
        // every step whose codes span the space is D_true.
        let (m, n, steps, count) = (5, 3, 2, 40);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let d_true: Vec<f64> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut stats = PassStats::new(m, n, steps);
        for _ in 0..count {
            let z: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..1.0)).collect();
            let x: Vec<f64> = (0..m)
                .map(|k| (0..n).map(|i| d_true[k * n + i] * z[i]).sum())
                .collect();
            let trace = Trace {
                u: vec![0.0; n],
                pre: vec![z.clone(); steps],
                z: vec![vec![0.0; n], z.clone(), z.clone()],
                x_hat: x.clone(),
                z_norm: 1.0,
                z_hat: z,
                logits: vec![0.0],
                probs: vec![1.0],
            };
            stats.add(&trace, &x, 0);
        }
        let decoders = step_decoders(&stats, 1e-12, &pool(2));
        assert_eq!(decoders.len(), steps);
        for dt in &decoders {
            for i in 0..n {
                for k in 0..m {
                    let err = (dt[i * m + k] - d_true[k * n + i]).abs();
                    assert!(err < 1e-6, "unit {i} pixel {k}: error {err}");
                }
            }
        }
    }
}

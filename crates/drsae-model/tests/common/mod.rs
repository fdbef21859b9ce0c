//! Helpers shared by the integration tests: seeded random networks and inputs.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

use drsae_model::Params;
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// The generator every test uses, so a failing seed reproduces anywhere.
pub fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// `len` draws uniform in [lo, hi).
pub fn uniform(rng: &mut Xoshiro256PlusPlus, len: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(lo..hi)).collect()
}

/// A random network that is not at ISTA values: b of both signs, S a random matrix near a
/// scaled identity (so the recurrence neither dies nor explodes over a few steps).
pub fn random_params(
    rng: &mut Xoshiro256PlusPlus,
    m: usize,
    n: usize,
    l: usize,
    classifier_bias: bool,
) -> Params<f64> {
    let mut p = Params::<f64>::zeros(m, n, l);
    p.e = uniform(rng, n * m, -1.0, 1.0);
    let spread = 0.8 / (n as f64).sqrt();
    p.s = uniform(rng, n * n, -spread, spread);
    for i in 0..n {
        p.s[i * n + i] += 0.3;
    }
    p.b = uniform(rng, n, -0.3, 0.3);
    p.d = uniform(rng, m * n, -1.0, 1.0);
    p.c = uniform(rng, l * n, -1.0, 1.0);
    if classifier_bias {
        p.c_bias = uniform(rng, l, -0.5, 0.5);
    }
    p
}

/// Unit-norm non-negative "images" (count × m), like the preprocessed MNIST rows.
pub fn unit_images(rng: &mut Xoshiro256PlusPlus, count: usize, m: usize) -> Vec<f64> {
    let mut xs = uniform(rng, count * m, 0.0, 1.0);
    for row in xs.chunks_exact_mut(m) {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    xs
}

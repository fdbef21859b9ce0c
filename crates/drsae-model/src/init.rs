//! Initial parameters (spec §4): a decoder seeded with training images, and E, S, b set so that
//! the encoder starts as non-negative ISTA on the phase-1 loss.
//!
//! ISTA for `min_z ½‖x − Dz‖² + θ Σ z, z ≥ 0` with step α ≤ 1/L (L = largest eigenvalue of
//! DᵀD) iterates `z ← relu(z − α Dᵀ(Dz − x) − αθ) = relu(αDᵀx − αθ + (I − αDᵀD) z)`, which is
//! the DrSAE recurrence with E = αDᵀ, S = I − αDᵀD, b = αθ. The phase-1 loss divided by w_rec
//! has θ = λ / w_rec.

use rand::{Rng, RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::config::Config;
use crate::params::Params;

/// Parameters that make the recurrence run ISTA with decoder `d` (m×n row-major, column i =
/// unit i): E = α·Dᵀ, S = I − α·DᵀD, every b_i = `b_value` (αθ for ISTA with threshold θ),
/// C = 0 and c = 0 with `n_classes` rows.
///
/// # Panics
/// If `d.len() != n_input * n_hidden`.
pub fn ista_params(
    d: &[f64],
    n_input: usize,
    n_hidden: usize,
    n_classes: usize,
    alpha: f64,
    b_value: f64,
) -> Params<f64> {
    let (m, n) = (n_input, n_hidden);
    assert_eq!(d.len(), m * n, "d must be n_input × n_hidden");
    let mut p = Params::<f64>::zeros(m, n, n_classes);
    p.d.copy_from_slice(d);
    // E_ik = α D_ki
    for i in 0..n {
        for k in 0..m {
            p.e[i * m + k] = alpha * d[k * n + i];
        }
    }
    // S_ij = δ_ij − α Σ_k D_ki D_kj
    for i in 0..n {
        for j in 0..n {
            let dot: f64 = (0..m).map(|k| d[k * n + i] * d[k * n + j]).sum();
            p.s[i * n + j] = if i == j { 1.0 } else { 0.0 } - alpha * dot;
        }
    }
    p.b.fill(b_value);
    p
}

/// Scales `v` (read with stride `stride` from `start`, `len` entries) to unit L2 norm; a zero
/// vector is left as it is, since it has no direction to keep.
fn normalise_strided(v: &mut [f64], start: usize, stride: usize, len: usize) {
    let norm = (0..len)
        .map(|k| v[start + k * stride].powi(2))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for k in 0..len {
            v[start + k * stride] /= norm;
        }
    }
}

/// The initial parameters of spec §4, drawn from `rng`.
///
/// `train_images` holds the training examples row by row (count × n_input), each already
/// scaled to unit norm (they are renormalised here anyway, so that the template weight means
/// what it says).
///
/// The random draws, in order (this order is part of reproducibility; change it and every
/// seeded run changes):
/// 1. D: `n_input × n_hidden` draws uniform in [−1, 1) as f64, column by column (column 0
///    rows 0..m, then column 1, …); each column is then scaled to unit norm.
/// 2. Templates, only when `template_weight > 0`: for each column i in order, one image index
///    uniform in 0..count; column i += template_weight · image, then scaled to unit norm.
/// 3. C: `n_classes × n_hidden` draws uniform in [−1, 1), row by row; each row is scaled to
///    unit norm. (Symmetric uniform, like D, so that no class starts favoured.)
///
/// D is then rounded to f32, and E = α·Dᵀ, S = I − α·DᵀD are computed in f64 from the rounded
/// D before rounding, so they match the stored decoder as closely as f32 allows. b = `b_init`
/// everywhere, c = 0.
///
/// # Panics
/// If `train_images` is not a whole number of rows, or is empty while `template_weight > 0`.
pub fn initialize<R: Rng + ?Sized>(cfg: &Config, train_images: &[f32], rng: &mut R) -> Params<f32> {
    let (m, n, l) = (cfg.n_input, cfg.n_hidden, cfg.n_classes);
    assert!(
        train_images.len().is_multiple_of(m),
        "train_images must be a whole number of rows of n_input = {m}"
    );
    let count = train_images.len() / m;

    // 1. Random decoder columns.
    let mut d = vec![0.0f64; m * n];
    for i in 0..n {
        for k in 0..m {
            d[k * n + i] = rng.random_range(-1.0..1.0);
        }
        normalise_strided(&mut d, i, n, m);
    }

    // 2. Seed each column with a training image, so units start near parts of real digits.
    if cfg.template_weight > 0.0 {
        assert!(
            count > 0,
            "template_weight > 0 needs at least one training image"
        );
        for i in 0..n {
            let j: usize = rng.random_range(0..count);
            let img = &train_images[j * m..(j + 1) * m];
            let norm = img
                .iter()
                .map(|&v| f64::from(v).powi(2))
                .sum::<f64>()
                .sqrt();
            if norm > 0.0 {
                for k in 0..m {
                    d[k * n + i] += cfg.template_weight * f64::from(img[k]) / norm;
                }
            }
            normalise_strided(&mut d, i, n, m);
        }
    }

    // 3. Random unit-norm classifier rows.
    let mut c = vec![0.0f64; l * n];
    for q in 0..l {
        for i in 0..n {
            c[q * n + i] = rng.random_range(-1.0..1.0);
        }
        normalise_strided(&mut c, q * n, 1, n);
    }

    // Round D first so E and S are derived from exactly the decoder that is stored.
    let d_rounded: Vec<f64> = d.iter().map(|&v| f64::from(v as f32)).collect();
    let mut p = ista_params(&d_rounded, m, n, l, cfg.alpha(), cfg.b_init);
    p.c = c;
    p.to_f32()
}

/// [`initialize`] with a `Xoshiro256PlusPlus` seeded from `cfg.seed` (`seed_from_u64`): the
/// initialisation a config fully determines.
pub fn initialize_seeded(cfg: &Config, train_images: &[f32]) -> Params<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    initialize(cfg, train_images, &mut rng)
}

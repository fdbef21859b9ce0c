//! Plain SGD with per-parameter gradient multipliers, and the norm projections (spec §5).

use crate::config::Config;
use crate::params::{Grads, Params, Scalar};

/// One SGD update: `p ← p − η_k · mult · g` for each tensor, with η_k =
/// [`Config::learning_rate_at`]`(k)` and the multipliers of [`Config`] (E and b: 1/T, S:
/// 1/(T−1), D: 1, C and c: 0.2 by default). `k` counts the updates made before this one since
/// phase 1 began (0 for the very first).
///
/// The step size is formed in f64 and each entry is updated in f64 then rounded once, so f32
/// and f64 parameters follow the same arithmetic up to that rounding.
///
/// # Panics
/// If `p` and `g` have different dimensions.
pub fn sgd_step<F: Scalar>(p: &mut Params<F>, g: &Grads<F>, cfg: &Config, k: u64) {
    assert_eq!(
        (p.n_input, p.n_hidden, p.n_classes),
        (g.n_input, g.n_hidden, g.n_classes),
        "parameter and gradient dimensions differ"
    );
    let eta = cfg.learning_rate_at(k);
    let step = |dst: &mut [F], src: &[F], mult: f64| {
        let scale = eta * mult;
        for (a, &d) in dst.iter_mut().zip(src) {
            *a = F::from_f64(a.to_f64() - scale * d.to_f64());
        }
    };
    step(&mut p.e, &g.e, cfg.mult_e());
    step(&mut p.s, &g.s, cfg.mult_s());
    step(&mut p.b, &g.b, cfg.mult_b());
    step(&mut p.d, &g.d, cfg.mult_d);
    step(&mut p.c, &g.c, cfg.mult_c);
    step(&mut p.c_bias, &g.c_bias, cfg.mult_c_bias);
}

/// Whether to project after the update that was made with index `k` (k = updates before it):
/// true when `(k + 1) % projection_interval == 0`, i.e. after the interval-th, 2·interval-th, …
/// update. With the default interval 1 that is after every update.
pub fn should_project(cfg: &Config, k: u64) -> bool {
    (k + 1).is_multiple_of(cfg.projection_interval as u64)
}

/// Scales the `count` vectors of `len` entries (vector v's entry j at `v*vec_stride + j*stride`)
/// down to L2 norm `bound` where they exceed it; vectors within the bound are left bit-identical.
fn clamp_norms<F: Scalar>(
    data: &mut [F],
    count: usize,
    len: usize,
    vec_stride: usize,
    stride: usize,
    bound: f64,
) {
    for v in 0..count {
        let at = |j: usize| v * vec_stride + j * stride;
        let norm = (0..len)
            .map(|j| data[at(j)].to_f64().powi(2))
            .sum::<f64>()
            .sqrt();
        if norm > bound {
            let scale = bound / norm;
            for j in 0..len {
                let x = &mut data[at(j)];
                *x = F::from_f64(x.to_f64() * scale);
            }
        }
    }
}

/// Projects onto the constraint set: each column of D to norm ≤ `d_col_bound`, each row of E to
/// norm ≤ `e_row_bound()`, each row of C to norm ≤ `c_row_bound`. Only vectors over their bound
/// change (they are scaled down onto it); S, b and c are unconstrained.
pub fn project<F: Scalar>(p: &mut Params<F>, cfg: &Config) {
    let (m, n, l) = (p.n_input, p.n_hidden, p.n_classes);
    // Column i of D: entries d[k*n + i], k = 0..m.
    clamp_norms(&mut p.d, n, m, 1, n, cfg.d_col_bound);
    // Row i of E: entries e[i*m + k].
    clamp_norms(&mut p.e, n, m, m, 1, cfg.e_row_bound());
    // Row q of C: entries c[q*n + i].
    clamp_norms(&mut p.c, l, n, n, 1, cfg.c_row_bound);
}

//! The f64 oracle: forward pass, loss and analytic BPTT gradient, one example at a time.
//!
//! This module is written to be read and checked, not to be fast: plain loops over the spec's
//! formulas, no kernels, every adjoint stated as a formula above the code that computes it.
//! The fast engine is tested against it; it is tested against central differences.
//!
//! Index conventions (spec §1, `Params`): `e[i*m + k]` = E_ik, `s[i*n + j]` = S_ij (from unit j
//! to unit i), `d[k*n + i]` = D_ki, `c[q*n + i]` = C_qi, with m inputs, n units, l classes.
#![allow(
    clippy::needless_range_loop,
    reason = "index loops mirror the subscripts of the formulas they implement"
)]

use std::ops::AddAssign;

use crate::config::{Config, LossWeights, Phase};
use crate::params::{Grads, Params};

/// Added to ‖z^T‖² before the square root, so that an all-zero code normalises to zero, not NaN.
pub const NORM_EPS: f64 = 1e-8;

/// What the reference needs besides the parameters: the unrolled depth, the bias switch and
/// the loss weights of the current phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    /// T, the number of rectifications.
    pub n_steps: usize,
    /// Whether the classifier bias c is trained (when off, c stays zero: its gradient is zero).
    pub classifier_bias: bool,
    /// The weights of the loss terms.
    pub weights: LossWeights,
}

impl Model {
    /// The model a config describes during `phase`.
    pub fn new(cfg: &Config, phase: Phase) -> Self {
        Model {
            n_steps: cfg.n_steps,
            classifier_bias: cfg.classifier_bias,
            weights: cfg.loss_weights(phase),
        }
    }
}

/// Every intermediate of one forward pass, kept for the backward pass and for analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// u = E·x − b (n), the input drive shared by every step.
    pub u: Vec<f64>,
    /// `pre[t]` = a^{t+1}, the pre-activation of step t+1, for t = 0..T (a^1 = u).
    pub pre: Vec<Vec<f64>>,
    /// `z[t]` = the state after step t, t = 0..=T; `z[0]` = 0.
    pub z: Vec<Vec<f64>>,
    /// x̂ = D·z^T (m), the reconstruction.
    pub x_hat: Vec<f64>,
    /// ν = sqrt(‖z^T‖² + 1e-8), the norm used to normalise the code.
    pub z_norm: f64,
    /// ẑ = z^T / ν (n), the normalised code fed to the classifier.
    pub z_hat: Vec<f64>,
    /// C·ẑ + c (l).
    pub logits: Vec<f64>,
    /// softmax(logits) (l).
    pub probs: Vec<f64>,
}

impl Trace {
    /// T, the number of steps this trace ran.
    pub fn n_steps(&self) -> usize {
        self.pre.len()
    }

    /// z^T, the final state that enters the loss.
    pub fn z_final(&self) -> &[f64] {
        self.z.last().expect("a trace always holds z^0")
    }
}

/// The weighted loss terms of spec §3, for one example or summed over several.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossTerms {
    /// w_rec · ½‖x − x̂‖².
    pub rec: f64,
    /// λ · Σ_i z^T_i.
    pub sparsity: f64,
    /// w_cls · CE(softmax(logits), y).
    pub cls: f64,
    /// Examples whose argmax logit (first index on ties) is not the label.
    pub errors: usize,
}

impl LossTerms {
    /// rec + sparsity + cls.
    pub fn total(&self) -> f64 {
        self.rec + self.sparsity + self.cls
    }
}

impl AddAssign for LossTerms {
    fn add_assign(&mut self, o: LossTerms) {
        self.rec += o.rec;
        self.sparsity += o.sparsity;
        self.cls += o.cls;
        self.errors += o.errors;
    }
}

fn relu(v: f64) -> f64 {
    if v > 0.0 { v } else { 0.0 }
}

/// Runs the recurrence of spec §2 on one example `x` (length m) for `n_steps` = T steps.
///
/// The logits add `c_bias` as stored: with `classifier_bias` off it is zero at
/// initialisation and its gradient is exactly zero, so it stays zero.
///
/// # Panics
/// If `n_steps` is 0 or `x` has the wrong length.
pub fn forward(p: &Params<f64>, x: &[f64], n_steps: usize) -> Trace {
    let (m, n, l) = (p.n_input, p.n_hidden, p.n_classes);
    assert!(n_steps >= 1, "n_steps must be ≥ 1");
    assert_eq!(x.len(), m, "input length must be n_input");

    // u_i = Σ_k E_ik x_k − b_i
    let mut u = vec![0.0; n];
    for i in 0..n {
        let mut acc = 0.0;
        for k in 0..m {
            acc += p.e[i * m + k] * x[k];
        }
        u[i] = acc - p.b[i];
    }

    // a^1 = u (S·z^0 = 0);  a^{t+1} = u + S·z^t;  z^{t+1} = relu(a^{t+1}).
    let mut pre = Vec::with_capacity(n_steps);
    let mut z = Vec::with_capacity(n_steps + 1);
    z.push(vec![0.0; n]);
    for t in 0..n_steps {
        let zt: &Vec<f64> = &z[t];
        let mut a = u.clone();
        if t > 0 {
            for i in 0..n {
                let mut acc = 0.0;
                for j in 0..n {
                    acc += p.s[i * n + j] * zt[j];
                }
                a[i] += acc;
            }
        }
        let next: Vec<f64> = a.iter().map(|&v| relu(v)).collect();
        pre.push(a);
        z.push(next);
    }
    let z_t = &z[n_steps];

    // x̂_k = Σ_i D_ki z^T_i
    let mut x_hat = vec![0.0; m];
    for k in 0..m {
        let mut acc = 0.0;
        for i in 0..n {
            acc += p.d[k * n + i] * z_t[i];
        }
        x_hat[k] = acc;
    }

    // ν = sqrt(‖z^T‖² + ε);  ẑ = z^T / ν
    let z_norm = (z_t.iter().map(|v| v * v).sum::<f64>() + NORM_EPS).sqrt();
    let z_hat: Vec<f64> = z_t.iter().map(|v| v / z_norm).collect();

    // logits_q = Σ_i C_qi ẑ_i + c_q
    let mut logits = vec![0.0; l];
    for q in 0..l {
        let mut acc = p.c_bias[q];
        for i in 0..n {
            acc += p.c[q * n + i] * z_hat[i];
        }
        logits[q] = acc;
    }

    // softmax, shifted by the largest logit so that exp never overflows.
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let probs = exps.iter().map(|v| v / sum).collect();

    Trace {
        u,
        pre,
        z,
        x_hat,
        z_norm,
        z_hat,
        logits,
        probs,
    }
}

/// The weighted loss terms of one example from its trace.
///
/// # Panics
/// If `y` is not a class index.
pub fn loss(x: &[f64], y: u8, trace: &Trace, w: &LossWeights) -> LossTerms {
    let y = usize::from(y);
    assert!(y < trace.logits.len(), "label {y} out of range");

    // rec = w_rec · ½ Σ_k (x_k − x̂_k)²
    let rec = 0.5
        * x.iter()
            .zip(&trace.x_hat)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>();
    // sparsity = λ Σ_i z^T_i  (z ≥ 0, so this is λ‖z^T‖₁)
    let l1: f64 = trace.z_final().iter().sum();
    // CE = −log softmax(logits)_y = logsumexp(logits) − logits_y, written this way rather than
    // −ln(probs[y]) so that a tiny probability keeps its precision.
    let max = trace
        .logits
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let lse = max
        + trace
            .logits
            .iter()
            .map(|v| (v - max).exp())
            .sum::<f64>()
            .ln();
    let ce = lse - trace.logits[y];

    let argmax =
        trace.logits.iter().enumerate().fold(
            0,
            |best, (q, &v)| if v > trace.logits[best] { q } else { best },
        );

    LossTerms {
        rec: w.w_rec * rec,
        sparsity: w.lambda * l1,
        // Skipping the product when w_cls = 0 keeps phase 1 finite even if CE overflowed.
        cls: if w.w_cls == 0.0 { 0.0 } else { w.w_cls * ce },
        errors: usize::from(argmax != y),
    }
}

/// Accumulates into `g` the analytic gradient (BPTT) of one example's loss.
///
/// `trace` must be `forward(p, x, model.n_steps)`. ReLU and |·| use the subgradient 0 at 0:
/// `1[a > 0]` for the rectifier and `1[z > 0]` for the sparsity term.
///
/// # Panics
/// If the dimensions disagree or `y` is not a class index.
pub fn backward(
    p: &Params<f64>,
    x: &[f64],
    y: u8,
    trace: &Trace,
    model: &Model,
    g: &mut Grads<f64>,
) {
    let (m, n, l) = (p.n_input, p.n_hidden, p.n_classes);
    let w = &model.weights;
    let t_steps = trace.n_steps();
    assert_eq!(
        t_steps, model.n_steps,
        "trace depth differs from the model's n_steps"
    );
    assert_eq!(x.len(), m, "input length must be n_input");
    assert_eq!(
        (g.n_input, g.n_hidden, g.n_classes),
        (m, n, l),
        "gradient dimensions differ from the parameters'"
    );
    let y = usize::from(y);
    assert!(y < l, "label {y} out of range");
    let z_t = trace.z_final();

    // Reconstruction:  ∂L/∂x̂ = w_rec (x̂ − x)
    let d_xhat: Vec<f64> = (0..m).map(|k| w.w_rec * (trace.x_hat[k] - x[k])).collect();

    // ∂L/∂D_ki = d_xhat_k · z^T_i
    for k in 0..m {
        for i in 0..n {
            g.d[k * n + i] += d_xhat[k] * z_t[i];
        }
    }

    // d_z^T = Dᵀ d_xhat + λ · 1[z^T > 0]   (sparsity subgradient: 1 where active, 0 at z = 0)
    let mut d_z = vec![0.0; n];
    for i in 0..n {
        let mut acc = 0.0;
        for k in 0..m {
            acc += p.d[k * n + i] * d_xhat[k];
        }
        d_z[i] = acc + if z_t[i] > 0.0 { w.lambda } else { 0.0 };
    }

    // Classifier: skipped entirely when w_cls = 0, so C and c get exactly zero gradient.
    if w.w_cls != 0.0 {
        // Softmax cross-entropy:  d_logits = w_cls (softmax(logits) − onehot(y))
        let d_logits: Vec<f64> = (0..l)
            .map(|q| w.w_cls * (trace.probs[q] - if q == y { 1.0 } else { 0.0 }))
            .collect();

        // ∂L/∂C_qi = d_logits_q · ẑ_i;  ∂L/∂c_q = d_logits_q (only when the bias is on)
        for q in 0..l {
            for i in 0..n {
                g.c[q * n + i] += d_logits[q] * trace.z_hat[i];
            }
            if model.classifier_bias {
                g.c_bias[q] += d_logits[q];
            }
        }

        // d_ẑ = Cᵀ d_logits
        let mut d_zhat = vec![0.0; n];
        for i in 0..n {
            for q in 0..l {
                d_zhat[i] += p.c[q * n + i] * d_logits[q];
            }
        }

        // ẑ = z/ν with ν = sqrt(‖z‖² + ε) has Jacobian ∂ẑ/∂z = (I − ẑẑᵀ)/ν (symmetric), so
        // d_z^T += (d_ẑ − ẑ (ẑᵀ d_ẑ)) / ν
        let proj: f64 = (0..n).map(|i| trace.z_hat[i] * d_zhat[i]).sum();
        for i in 0..n {
            d_z[i] += (d_zhat[i] - trace.z_hat[i] * proj) / trace.z_norm;
        }
    }

    // Back through time, t = T .. 1, with d_z holding d_z^t on entry:
    //   d_a^t     = d_z^t ⊙ 1[a^t > 0]
    //   d_u      += d_a^t                      (u enters every a^t)
    //   ∂L/∂S    += d_a^t (z^{t−1})ᵀ           (for t ≥ 2; a^1 has no S term)
    //   d_z^{t−1} = Sᵀ d_a^t                    (for t ≥ 2; z^0 is a constant)
    let mut d_u = vec![0.0; n];
    for t in (1..=t_steps).rev() {
        let a = &trace.pre[t - 1];
        let d_a: Vec<f64> = (0..n)
            .map(|i| if a[i] > 0.0 { d_z[i] } else { 0.0 })
            .collect();
        for i in 0..n {
            d_u[i] += d_a[i];
        }
        if t >= 2 {
            let z_prev = &trace.z[t - 1];
            for i in 0..n {
                for j in 0..n {
                    g.s[i * n + j] += d_a[i] * z_prev[j];
                }
            }
            for j in 0..n {
                let mut acc = 0.0;
                for i in 0..n {
                    acc += p.s[i * n + j] * d_a[i];
                }
                d_z[j] = acc;
            }
        }
    }

    // u = E·x − b:  ∂L/∂E_ik = d_u_i · x_k;  ∂L/∂b_i = −d_u_i
    for i in 0..n {
        for k in 0..m {
            g.e[i * m + k] += d_u[i] * x[k];
        }
        g.b[i] -= d_u[i];
    }
}

/// The loss of a minibatch, summed over its examples (spec §3), without gradients.
///
/// `xs` holds the examples row by row (batch × m); `ys` their labels.
pub fn batch_loss(p: &Params<f64>, xs: &[f64], ys: &[u8], model: &Model) -> LossTerms {
    let m = p.n_input;
    assert_eq!(
        xs.len(),
        ys.len() * m,
        "xs must hold ys.len() rows of n_input"
    );
    let mut total = LossTerms::default();
    for (x, &y) in xs.chunks_exact(m).zip(ys) {
        let trace = forward(p, x, model.n_steps);
        total += loss(x, y, &trace, &model.weights);
    }
    total
}

/// The loss and its gradient for a minibatch, both summed over its examples (spec §3).
///
/// `xs` holds the examples row by row (batch × m); `ys` their labels.
pub fn loss_and_grad(
    p: &Params<f64>,
    xs: &[f64],
    ys: &[u8],
    model: &Model,
) -> (LossTerms, Grads<f64>) {
    let m = p.n_input;
    assert_eq!(
        xs.len(),
        ys.len() * m,
        "xs must hold ys.len() rows of n_input"
    );
    let mut total = LossTerms::default();
    let mut g = Grads::zeros(p.n_input, p.n_hidden, p.n_classes);
    for (x, &y) in xs.chunks_exact(m).zip(ys) {
        let trace = forward(p, x, model.n_steps);
        total += loss(x, y, &trace, &model.weights);
        backward(p, x, y, &trace, model, &mut g);
    }
    (total, g)
}

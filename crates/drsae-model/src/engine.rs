//! The fast f32 training engine: the reference's mathematics on minibatches, doing only the
//! work that the zeros of the input, of every `z^t` and of every ReLU-masked adjoint leave.
//!
//! A minibatch step has two parallel phases, and neither's result depends on the thread count:
//!
//! 1. *Per example* (examples split over threads): the forward recurrence over active units
//!    only, the loss, and the backward recurrence, leaving in the example's slot the dense
//!    `z^t`, the adjoints `d_a^t`, `d_u = Σ_t d_a^t`, the residual `x̂ − x` and the classifier
//!    adjoint.
//! 2. *Per parameter row* (rows split over threads): each row of `Sᵀ`, `Eᵀ` and `Dᵀ` receives
//!    the contributions of every example and step that touches it, in a fixed order (example,
//!    then step), then is projected. A row's arithmetic is the same whichever thread runs it,
//!    so parameters after an epoch are bit-identical for every thread count.
//!
//! Layout: the engine keeps `Eᵀ` (m×n), `Sᵀ` (n×n) and `Dᵀ` (n×m) so that every sparse
//! product is a sum of contiguous rows selected by an active set: `E·x = Σ_{j: x_j≠0} x_j Eᵀ_j`,
//! `S·z = Σ_{j active} z_j Sᵀ_j`, `D·z = Σ_{i active} z_i Dᵀ_i`, and every gradient is a set of
//! row updates. [`Engine::params`] converts back to the paper's layout.

use drsae_kernels::{Kernels, MatRef};
use rayon::prelude::*;

use crate::config::LossWeights;
use crate::config::{Config, Phase};
use crate::params::{Grads, Params};
use crate::reference::LossTerms;

/// Rows of a weight matrix handled by one parallel task. Fixed, so that the partial sums of
/// the E-row norms are reduced in the same order for every thread count.
const ROWS_PER_TASK: usize = 16;

/// Added to ‖z^T‖² before the square root, as in the reference: no NaN for an all-zero code.
const NORM_EPS: f32 = crate::reference::NORM_EPS as f32;

/// Every weight buffer is allocated with its matrix's exact size.
const SHAPED: &str = "engine weight buffers have their matrices' sizes";

/// Parameters in the engine's row-oriented layout.
#[derive(Clone, Debug)]
struct Weights {
    /// `Eᵀ`, m×n: row j holds the weights from input pixel j to every unit.
    et: Vec<f32>,
    /// `Sᵀ`, n×n: row j holds the weights from unit j to every unit.
    st: Vec<f32>,
    /// Thresholds `b`, n.
    b: Vec<f32>,
    /// `Dᵀ`, n×m: row i is unit i's decoder column.
    dt: Vec<f32>,
    /// Classifier `C`, l×n.
    c: Vec<f32>,
    /// Classifier bias `c`, l.
    c_bias: Vec<f32>,
}

impl Weights {
    fn zeros(m: usize, n: usize, l: usize) -> Self {
        Self {
            et: vec![0.0; m * n],
            st: vec![0.0; n * n],
            b: vec![0.0; n],
            dt: vec![0.0; n * m],
            c: vec![0.0; l * n],
            c_bias: vec![0.0; l],
        }
    }

    fn fill_zero(&mut self) {
        for v in [
            &mut self.et,
            &mut self.st,
            &mut self.b,
            &mut self.dt,
            &mut self.c,
            &mut self.c_bias,
        ] {
            v.fill(0.0);
        }
    }
}

/// Row-major transpose of an r×c matrix into a c×r one.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    for i in 0..rows {
        for j in 0..cols {
            dst[j * rows + i] = src[i * cols + j];
        }
    }
}

/// One example's forward and backward state, allocated once and reused every step.
#[derive(Clone, Debug)]
struct Slot {
    /// Non-zero input pixels: indices and values.
    x_idx: Vec<u32>,
    x_val: Vec<f32>,
    /// `u = E·x − b`.
    u: Vec<f32>,
    /// Scratch for a pre-activation `a^{t+1} = u + S·z^t`.
    acc: Vec<f32>,
    /// Dense `z^t` for t = 1..T, step t at `(t−1)·n`.
    z: Vec<f32>,
    /// Active units of `z^t` (ascending) and their values, step t at `(t−1)·n`.
    z_idx: Vec<u32>,
    z_val: Vec<f32>,
    /// Number of active units at each step.
    z_cnt: Vec<usize>,
    /// Dense adjoints `d_a^t` (zero outside the active set), step t at `(t−1)·n`.
    da: Vec<f32>,
    /// `d_u = Σ_t d_a^t`, so that `∂L/∂E = d_u·xᵀ` and `∂L/∂b = −d_u`.
    du: Vec<f32>,
    /// Residual `x̂ − x`.
    r: Vec<f32>,
    /// Scratch for gathered dot products over an active set.
    dots: Vec<f32>,
    /// Normalised code `ẑ` on the active set of `z^T` (packed like `z_val`).
    z_hat: Vec<f32>,
    /// Softmax probabilities, then `∂L/∂logits`.
    d_logits: Vec<f32>,
    /// This example's loss terms.
    loss: LossTerms,
}

impl Slot {
    fn new(m: usize, n: usize, l: usize, t: usize) -> Self {
        Self {
            x_idx: vec![0; m],
            x_val: vec![0.0; m],
            u: vec![0.0; n],
            acc: vec![0.0; n],
            z: vec![0.0; t * n],
            z_idx: vec![0; t * n],
            z_val: vec![0.0; t * n],
            z_cnt: vec![0; t],
            da: vec![0.0; t * n],
            du: vec![0.0; n],
            r: vec![0.0; m],
            dots: vec![0.0; n],
            z_hat: vec![0.0; n],
            d_logits: vec![0.0; l],
            loss: LossTerms::default(),
        }
    }
}

/// Sizes and switches that every slot computation needs.
#[derive(Clone, Copy, Debug)]
struct Dims {
    m: usize,
    n: usize,
    l: usize,
    t: usize,
    classifier_bias: bool,
}

/// Scale applied to each parameter's gradient when it is accumulated into a target: −η_k times
/// the per-parameter multiplier for an SGD step, or 1 to extract the gradient itself.
#[derive(Clone, Copy, Debug)]
struct Scales {
    e: f32,
    s: f32,
    b: f32,
    d: f32,
    c: f32,
    c_bias: f32,
}

/// Norm bounds of spec §5, applied after an update when the projection interval says so.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    e_row: f32,
    d_col: f32,
    c_row: f32,
}

/// Activity of the minibatch or split most recently processed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Activity {
    /// Examples counted.
    pub examples: usize,
    /// Sum over examples of the number of active units after each step t = 1..T.
    pub active_per_step: Vec<u64>,
}

impl Activity {
    /// Mean number of active units after each step.
    pub fn mean_per_step(&self) -> Vec<f64> {
        self.active_per_step
            .iter()
            .map(|&a| a as f64 / self.examples.max(1) as f64)
            .collect()
    }

    fn add_slot(&mut self, slot: &Slot) {
        if self.active_per_step.len() < slot.z_cnt.len() {
            self.active_per_step.resize(slot.z_cnt.len(), 0);
        }
        for (acc, &c) in self.active_per_step.iter_mut().zip(&slot.z_cnt) {
            *acc += c as u64;
        }
        self.examples += 1;
    }

    /// Adds another tally to this one.
    pub fn merge(&mut self, other: &Activity) {
        if self.active_per_step.len() < other.active_per_step.len() {
            self.active_per_step.resize(other.active_per_step.len(), 0);
        }
        for (acc, &c) in self.active_per_step.iter_mut().zip(&other.active_per_step) {
            *acc += c;
        }
        self.examples += other.examples;
    }
}

/// Result of evaluating a split: summed loss terms, errors, predictions and activity.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// Loss terms summed over the split (with the weights passed in).
    pub loss: LossTerms,
    /// Predicted class of every example, in order.
    pub predictions: Vec<u8>,
    /// Activity per step.
    pub activity: Activity,
}

impl Evaluation {
    /// Fraction of misclassified examples.
    pub fn error_rate(&self) -> f64 {
        self.loss.errors as f64 / self.predictions.len().max(1) as f64
    }
}

/// The fast f32 DrSAE engine: owns the parameters in its own layout and all scratch memory.
pub struct Engine {
    config: Config,
    dims: Dims,
    w: Weights,
    /// Gradient target for [`Engine::gradient`]; allocated on first use.
    grad: Option<Weights>,
    slots: Vec<Slot>,
    /// Decoder rows changed since they were last projected (only matters when the
    /// projection interval is above 1).
    d_dirty: Vec<bool>,
    /// Per-task partial sums of squared E-row norms, reduced in task order.
    e_norm_parts: Vec<f32>,
    e_scale: Vec<f32>,
    pool: rayon::ThreadPool,
    kernels: &'static Kernels,
    /// Activity of the last [`Engine::train_step`] or [`Engine::gradient`].
    last_activity: Activity,
}

/// Errors the engine reports instead of panicking.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The parameters do not have the shapes the configuration asks for.
    #[error("parameter shapes {found} do not match the configuration ({expected})")]
    Shape {
        /// What the config implies.
        expected: String,
        /// What the parameters have.
        found: String,
    },
    /// A minibatch's buffers disagree with the model's sizes.
    #[error(
        "minibatch of {examples} examples has {values} input values; expected {expected} per example"
    )]
    Batch {
        /// Examples in the batch.
        examples: usize,
        /// Input values given.
        values: usize,
        /// Input size of the model.
        expected: usize,
    },
    /// A label is not a class of the model.
    #[error("label {label} of example {index} is not below the number of classes {classes}")]
    Label {
        /// Example index in the batch.
        index: usize,
        /// The label.
        label: u8,
        /// Number of classes.
        classes: usize,
    },
    /// The thread pool could not be built.
    #[error("cannot start {threads} worker threads: {message}")]
    Threads {
        /// Threads requested.
        threads: usize,
        /// The system's message.
        message: String,
    },
}

impl Engine {
    /// Builds an engine holding `params`, running on `threads` worker threads.
    pub fn new(params: &Params<f32>, config: &Config, threads: usize) -> Result<Self, EngineError> {
        let (m, n, l) = (config.n_input, config.n_hidden, config.n_classes);
        if (params.n_input, params.n_hidden, params.n_classes) != (m, n, l)
            || params.e.len() != n * m
            || params.s.len() != n * n
            || params.b.len() != n
            || params.d.len() != m * n
            || params.c.len() != l * n
            || params.c_bias.len() != l
        {
            return Err(EngineError::Shape {
                expected: format!("n_input {m}, n_hidden {n}, n_classes {l}"),
                found: format!(
                    "n_input {}, n_hidden {}, n_classes {}",
                    params.n_input, params.n_hidden, params.n_classes
                ),
            });
        }
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| EngineError::Threads {
                threads,
                message: e.to_string(),
            })?;
        let dims = Dims {
            m,
            n,
            l,
            t: config.n_steps,
            classifier_bias: config.classifier_bias,
        };
        let mut engine = Self {
            config: config.clone(),
            dims,
            w: Weights::zeros(m, n, l),
            grad: None,
            slots: Vec::new(),
            d_dirty: vec![true; n],
            e_norm_parts: vec![0.0; m.div_ceil(ROWS_PER_TASK) * n],
            e_scale: vec![1.0; n],
            pool,
            kernels: drsae_kernels::kernels(),
            last_activity: Activity::default(),
        };
        engine.set_params(params);
        Ok(engine)
    }

    /// Replaces the parameters (layout conversion included).
    pub fn set_params(&mut self, p: &Params<f32>) {
        let Dims { m, n, .. } = self.dims;
        transpose(&p.e, n, m, &mut self.w.et);
        transpose(&p.s, n, n, &mut self.w.st);
        self.w.b.copy_from_slice(&p.b);
        transpose(&p.d, m, n, &mut self.w.dt);
        self.w.c.copy_from_slice(&p.c);
        self.w.c_bias.copy_from_slice(&p.c_bias);
        self.d_dirty.fill(true);
    }

    /// The parameters in the paper's layout.
    pub fn params(&self) -> Params<f32> {
        weights_to_params(&self.w, self.dims)
    }

    /// The configuration the engine runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Name of the kernel set in use, for result files.
    pub fn kernel_name(&self) -> &'static str {
        self.kernels.name()
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Activity of the last training step or gradient computation.
    pub fn last_activity(&self) -> &Activity {
        &self.last_activity
    }

    /// One SGD update on a minibatch (`x`: batch × n_input, row-major), as update number `k`
    /// (counted from the start of phase 1): gradient at the current parameters, step
    /// `−η_k·multiplier`, then the projections of spec §5 when the interval says so.
    /// Returns the minibatch's summed loss terms, computed before the update.
    pub fn train_step(
        &mut self,
        x: &[f32],
        y: &[u8],
        phase: Phase,
        k: u64,
    ) -> Result<LossTerms, EngineError> {
        let weights = self.config.loss_weights(phase);
        let loss = self.forward_backward(x, y, &weights)?;
        let lr = self.config.learning_rate_at(k);
        let cfg = &self.config;
        let scales = Scales {
            e: (-lr * cfg.mult_e()) as f32,
            s: (-lr * cfg.mult_s()) as f32,
            b: (-lr * cfg.mult_b()) as f32,
            d: (-lr * cfg.mult_d) as f32,
            c: (-lr * cfg.mult_c) as f32,
            c_bias: (-lr * cfg.mult_c_bias) as f32,
        };
        let bounds = crate::optim::should_project(cfg, k).then(|| Bounds {
            e_row: cfg.e_row_bound() as f32,
            d_col: cfg.d_col_bound as f32,
            c_row: cfg.c_row_bound as f32,
        });
        let batch = y.len();
        let Self {
            w,
            slots,
            d_dirty,
            e_norm_parts,
            e_scale,
            pool,
            kernels,
            dims,
            ..
        } = self;
        let ctx = UpdateCtx {
            slots: &slots[..batch],
            x,
            dims: *dims,
            w_rec: weights.w_rec as f32,
            classify: weights.w_cls != 0.0,
            kernels,
        };
        pool.install(|| {
            ctx.accumulate(w, scales, bounds, d_dirty, e_norm_parts, e_scale);
        });
        Ok(loss)
    }

    /// The minibatch's summed loss terms and gradient at the current parameters, in the
    /// paper's layout (for checking against the reference).
    pub fn gradient(
        &mut self,
        x: &[f32],
        y: &[u8],
        weights: &LossWeights,
    ) -> Result<(LossTerms, Grads<f32>), EngineError> {
        let loss = self.forward_backward(x, y, weights)?;
        let Dims { m, n, l, .. } = self.dims;
        let mut grad = self.grad.take().unwrap_or_else(|| Weights::zeros(m, n, l));
        grad.fill_zero();
        let ones = Scales {
            e: 1.0,
            s: 1.0,
            b: 1.0,
            d: 1.0,
            c: 1.0,
            c_bias: 1.0,
        };
        let mut unused_dirty = vec![false; n];
        let ctx = UpdateCtx {
            slots: &self.slots[..y.len()],
            x,
            dims: self.dims,
            w_rec: weights.w_rec as f32,
            classify: weights.w_cls != 0.0,
            kernels: self.kernels,
        };
        let (parts, scale) = (&mut self.e_norm_parts, &mut self.e_scale);
        self.pool.install(|| {
            ctx.accumulate(&mut grad, ones, None, &mut unused_dirty, parts, scale);
        });
        let out = weights_to_params(&grad, self.dims);
        self.grad = Some(grad);
        Ok((loss, out))
    }

    /// Forward pass over a whole split (`x`: examples × n_input), in parallel chunks:
    /// summed loss terms, errors, predictions and activity.
    pub fn evaluate(
        &mut self,
        x: &[f32],
        y: &[u8],
        weights: &LossWeights,
    ) -> Result<Evaluation, EngineError> {
        check_batch(x, y, self.dims)?;
        const CHUNK: usize = 64;
        let dims = self.dims;
        let w = &self.w;
        let kernels = self.kernels;
        let chunks: Vec<(LossTerms, Activity, Vec<u8>)> = self.pool.install(|| {
            y.par_chunks(CHUNK)
                .zip(x.par_chunks(CHUNK * dims.m))
                .map(|(yc, xc)| {
                    let mut slot = Slot::new(dims.m, dims.n, dims.l, dims.t);
                    let mut loss = LossTerms::default();
                    let mut act = Activity::default();
                    let mut preds = Vec::with_capacity(yc.len());
                    for (i, &label) in yc.iter().enumerate() {
                        let xi = &xc[i * dims.m..(i + 1) * dims.m];
                        let pred = forward(&mut slot, xi, label, w, dims, weights, kernels);
                        loss += slot.loss;
                        act.add_slot(&slot);
                        preds.push(pred);
                    }
                    (loss, act, preds)
                })
                .collect()
        });
        let mut eval = Evaluation {
            predictions: Vec::with_capacity(y.len()),
            ..Evaluation::default()
        };
        for (loss, act, preds) in chunks {
            eval.loss += loss;
            eval.activity.merge(&act);
            eval.predictions.extend(preds);
        }
        Ok(eval)
    }

    /// Phase 1 of a step: every example's forward and backward pass, in parallel.
    fn forward_backward(
        &mut self,
        x: &[f32],
        y: &[u8],
        weights: &LossWeights,
    ) -> Result<LossTerms, EngineError> {
        check_batch(x, y, self.dims)?;
        let dims = self.dims;
        while self.slots.len() < y.len() {
            self.slots.push(Slot::new(dims.m, dims.n, dims.l, dims.t));
        }
        let w = &self.w;
        let kernels = self.kernels;
        let slots = &mut self.slots[..y.len()];
        self.pool.install(|| {
            slots
                .par_iter_mut()
                .zip(x.par_chunks(dims.m))
                .zip(y.par_iter())
                .for_each(|((slot, xi), &label)| {
                    forward(slot, xi, label, w, dims, weights, kernels);
                    backward(slot, label, w, dims, weights, kernels);
                });
        });
        let mut loss = LossTerms::default();
        let mut activity = Activity::default();
        for slot in slots.iter() {
            loss += slot.loss;
            activity.add_slot(slot);
        }
        self.last_activity = activity;
        Ok(loss)
    }
}

fn check_batch(x: &[f32], y: &[u8], dims: Dims) -> Result<(), EngineError> {
    if x.len() != y.len() * dims.m {
        return Err(EngineError::Batch {
            examples: y.len(),
            values: x.len(),
            expected: dims.m,
        });
    }
    if let Some((index, &label)) = y.iter().enumerate().find(|&(_, &l)| l as usize >= dims.l) {
        return Err(EngineError::Label {
            index,
            label,
            classes: dims.l,
        });
    }
    Ok(())
}

fn weights_to_params(w: &Weights, dims: Dims) -> Params<f32> {
    let Dims { m, n, l, .. } = dims;
    let mut p = Params::zeros(m, n, l);
    transpose(&w.et, m, n, &mut p.e);
    transpose(&w.st, n, n, &mut p.s);
    p.b.copy_from_slice(&w.b);
    transpose(&w.dt, n, m, &mut p.d);
    p.c.copy_from_slice(&w.c);
    p.c_bias.copy_from_slice(&w.c_bias);
    p
}

/// Forward pass of one example into its slot; returns the predicted class.
fn forward(
    s: &mut Slot,
    x: &[f32],
    label: u8,
    w: &Weights,
    dims: Dims,
    lw: &LossWeights,
    k: &Kernels,
) -> u8 {
    let Dims { m, n, l, t, .. } = dims;
    // u = E·x − b = −b + Σ_{j: x_j ≠ 0} x_j·Eᵀ_j
    let nx = k.nonzeros(x, &mut s.x_idx, &mut s.x_val);
    for (u, &b) in s.u.iter_mut().zip(&w.b) {
        *u = -b;
    }
    let et = MatRef::row_major(&w.et, m, n).expect(SHAPED);
    k.gather_axpy(&mut s.u, et, &s.x_idx[..nx], &s.x_val[..nx]);
    // z^1 = relu(u); z^{t+1} = relu(u + S·z^t) with S·z^t = Σ_{j active} z^t_j·Sᵀ_j
    let st = MatRef::row_major(&w.st, n, n).expect(SHAPED);
    for step in 0..t {
        if step == 0 {
            s.acc.copy_from_slice(&s.u);
        } else {
            let (prev, _) = s.z_idx.split_at(step * n);
            let cnt = s.z_cnt[step - 1];
            let idx = &prev[(step - 1) * n..(step - 1) * n + cnt];
            let val = &s.z_val[(step - 1) * n..(step - 1) * n + cnt];
            s.acc.copy_from_slice(&s.u);
            k.gather_axpy(&mut s.acc, st, idx, val);
        }
        let range = step * n..(step + 1) * n;
        let cnt = k.relu_active(&s.acc, &mut s.z[range.clone()], &mut s.z_idx[range.clone()]);
        s.z_cnt[step] = cnt;
        let (z, idx, val) = (
            &s.z[range.clone()],
            &s.z_idx[range.clone()],
            &mut s.z_val[range],
        );
        for (v, &i) in val[..cnt].iter_mut().zip(&idx[..cnt]) {
            *v = z[i as usize];
        }
    }
    let last = (t - 1) * n;
    let cnt = s.z_cnt[t - 1];
    let (z_idx, z_val) = (&s.z_idx[last..last + cnt], &s.z_val[last..last + cnt]);
    // r = x̂ − x = D·z^T − x
    for (r, &xv) in s.r.iter_mut().zip(x) {
        *r = -xv;
    }
    k.gather_axpy(
        &mut s.r,
        MatRef::row_major(&w.dt, n, m).expect(SHAPED),
        z_idx,
        z_val,
    );
    let rec = 0.5 * f64::from(k.dot(&s.r, &s.r));
    let l1: f64 = z_val.iter().map(|&v| f64::from(v)).sum();
    // ẑ = z^T / sqrt(‖z^T‖² + ε); logits = C·ẑ + c
    let norm = (z_val.iter().map(|&v| v * v).sum::<f32>() + NORM_EPS).sqrt();
    for (h, &v) in s.z_hat[..cnt].iter_mut().zip(z_val) {
        *h = v / norm;
    }
    let logits = &mut s.d_logits;
    for (class, logit) in logits.iter_mut().enumerate() {
        let row = &w.c[class * n..(class + 1) * n];
        let mut acc = if dims.classifier_bias {
            w.c_bias[class]
        } else {
            0.0
        };
        for (&i, &h) in z_idx.iter().zip(&s.z_hat[..cnt]) {
            acc += row[i as usize] * h;
        }
        *logit = acc;
    }
    // softmax and cross-entropy, with the maximum subtracted for stability
    let mut pred = 0usize;
    for class in 1..l {
        if logits[class] > logits[pred] {
            pred = class;
        }
    }
    let max = logits[pred];
    let mut sum = 0.0f32;
    for v in logits.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in logits.iter_mut() {
        *v /= sum;
    }
    let ce = -f64::from(logits[label as usize].max(f32::MIN_POSITIVE)).ln();
    s.loss = LossTerms {
        rec: lw.w_rec * rec,
        sparsity: lw.lambda * l1,
        cls: lw.w_cls * ce,
        errors: usize::from(pred != label as usize),
    };
    pred as u8
}

/// Backward pass (analytic BPTT, as in the reference) of the example whose forward pass is
/// in the slot. Leaves `d_a^t`, `d_u` and `∂L/∂logits` in the slot.
fn backward(s: &mut Slot, label: u8, w: &Weights, dims: Dims, lw: &LossWeights, k: &Kernels) {
    let Dims { m, n, t, .. } = dims;
    let last = (t - 1) * n;
    let cnt = s.z_cnt[t - 1];
    // ∂L/∂logits = w_cls·(p − onehot(y))
    let w_cls = lw.w_cls as f32;
    for (class, g) in s.d_logits.iter_mut().enumerate() {
        let target = if class == label as usize { 1.0 } else { 0.0 };
        *g = w_cls * (*g - target);
    }
    // d_z^T_i = w_rec·(Dᵀ_i·r) + λ + [(I − ẑẑᵀ)/‖z‖·Cᵀ·∂L/∂logits]_i, for active i only:
    // inactive units have d_a^T = 0 whatever d_z^T is.
    let z_idx = &s.z_idx[last..last + cnt];
    let dots = &mut s.dots[..cnt];
    k.gather_dots(
        dots,
        MatRef::row_major(&w.dt, n, m).expect(SHAPED),
        z_idx,
        &s.r,
    );
    let (w_rec, lambda) = (lw.w_rec as f32, lw.lambda as f32);
    for d in dots.iter_mut() {
        *d = w_rec * *d + lambda;
    }
    if w_cls != 0.0 {
        let z_val = &s.z_val[last..last + cnt];
        let norm = (z_val.iter().map(|&v| v * v).sum::<f32>() + NORM_EPS).sqrt();
        // d_ẑ_i = Σ_k C_ki·∂L/∂logit_k, reusing `acc` as scratch for the packed d_ẑ
        let dzh = &mut s.acc[..cnt];
        for (a, &i) in dzh.iter_mut().zip(z_idx) {
            *a = s
                .d_logits
                .iter()
                .enumerate()
                .map(|(class, &g)| w.c[class * n + i as usize] * g)
                .sum();
        }
        let proj: f32 = dzh.iter().zip(&s.z_hat[..cnt]).map(|(a, h)| a * h).sum();
        for ((d, &a), &h) in dots.iter_mut().zip(dzh.iter()).zip(&s.z_hat[..cnt]) {
            *d += (a - h * proj) / norm;
        }
    }
    // d_a^T = d_z^T ⊙ 1[a^T > 0]; d_u accumulates every d_a^t
    s.du.fill(0.0);
    let da_t = &mut s.da[last..last + n];
    da_t.fill(0.0);
    for (&i, &d) in z_idx.iter().zip(dots.iter()) {
        da_t[i as usize] = d;
        s.du[i as usize] = d;
    }
    // for t = T−1 … 1: d_z^t = Sᵀ·d_a^{t+1} (needed on the active set of z^t only),
    // d_a^t = d_z^t ⊙ 1[a^t > 0]
    let st = MatRef::row_major(&w.st, n, n).expect(SHAPED);
    for step in (0..t - 1).rev() {
        let cnt = s.z_cnt[step];
        let (lower, upper) = s.da.split_at_mut((step + 1) * n);
        let next = &upper[..n];
        let idx = &s.z_idx[step * n..step * n + cnt];
        let dots = &mut s.dots[..cnt];
        k.gather_dots(dots, st, idx, next);
        let cur = &mut lower[step * n..];
        cur.fill(0.0);
        for (&j, &d) in idx.iter().zip(dots.iter()) {
            cur[j as usize] = d;
            s.du[j as usize] += d;
        }
    }
}

/// Phase 2 of a step: the per-example results of a minibatch, applied row by row.
struct UpdateCtx<'a> {
    slots: &'a [Slot],
    x: &'a [f32],
    dims: Dims,
    w_rec: f32,
    classify: bool,
    kernels: &'a Kernels,
}

impl UpdateCtx<'_> {
    /// Adds `scale × gradient` of the minibatch to `target`, then projects when `bounds` is
    /// given. Each row sums its contributions in the order (example, step), whatever thread
    /// runs it.
    fn accumulate(
        &self,
        target: &mut Weights,
        scales: Scales,
        bounds: Option<Bounds>,
        d_dirty: &mut [bool],
        e_norm_parts: &mut [f32],
        e_scale: &mut [f32],
    ) {
        let Dims { m, n, l, t, .. } = self.dims;
        let k = self.kernels;
        let slots = self.slots;
        let x = self.x;
        let w_rec = self.w_rec;
        let Weights {
            et,
            st,
            b,
            dt,
            c,
            c_bias,
        } = target;
        rayon::scope(|scope| {
            // ∂L/∂S = Σ_t d_a^{t+1}·(z^t)ᵀ, so row j of Sᵀ gains Σ_{b,t} z^t_bj·d_a^{t+1}_b.
            scope.spawn(|_| {
                st.par_chunks_mut(ROWS_PER_TASK * n)
                    .enumerate()
                    .for_each(|(task, rows)| {
                        for (r, row) in rows.chunks_mut(n).enumerate() {
                            let j = task * ROWS_PER_TASK + r;
                            for slot in slots {
                                for step in 0..t - 1 {
                                    let zj = slot.z[step * n + j];
                                    if zj != 0.0 {
                                        let next = &slot.da[(step + 1) * n..(step + 2) * n];
                                        k.axpy(row, scales.s * zj, next);
                                    }
                                }
                            }
                        }
                    });
            });
            // ∂L/∂E = d_u·xᵀ, so row j of Eᵀ gains Σ_b x_bj·d_u_b; with a projection due,
            // each task also sums the squares of its rows per column (E-row norms).
            scope.spawn(|_| {
                let project = bounds.is_some();
                et.par_chunks_mut(ROWS_PER_TASK * n)
                    .zip(e_norm_parts.par_chunks_mut(n))
                    .enumerate()
                    .for_each(|(task, (rows, part))| {
                        part.fill(0.0);
                        for (r, row) in rows.chunks_mut(n).enumerate() {
                            let j = task * ROWS_PER_TASK + r;
                            for (bi, slot) in slots.iter().enumerate() {
                                let xj = x[bi * m + j];
                                if xj != 0.0 {
                                    k.axpy(row, scales.e * xj, &slot.du);
                                }
                            }
                            if project {
                                for (p, &v) in part.iter_mut().zip(row.iter()) {
                                    *p += v * v;
                                }
                            }
                        }
                    });
            });
            // ∂L/∂D = w_rec·r·(z^T)ᵀ, so row i of Dᵀ gains w_rec·Σ_b z^T_bi·r_b; then the
            // column bound, on the rows changed since their last projection.
            scope.spawn(|_| {
                dt.par_chunks_mut(ROWS_PER_TASK * m)
                    .zip(d_dirty.par_chunks_mut(ROWS_PER_TASK))
                    .enumerate()
                    .for_each(|(task, (rows, dirty))| {
                        for (r, row) in rows.chunks_mut(m).enumerate() {
                            let i = task * ROWS_PER_TASK + r;
                            for slot in slots {
                                let zi = slot.z[(t - 1) * n + i];
                                if zi != 0.0 {
                                    k.axpy(row, scales.d * w_rec * zi, &slot.r);
                                    dirty[r] = true;
                                }
                            }
                            if let Some(bounds) = bounds
                                && dirty[r]
                            {
                                clip_norm(k, row, bounds.d_col);
                                dirty[r] = false;
                            }
                        }
                    });
            });
            // ∂L/∂b = −d_u.
            for slot in slots {
                for (bv, &d) in b.iter_mut().zip(&slot.du) {
                    *bv -= scales.b * d;
                }
            }
            // ∂L/∂C = (∂L/∂logits)·ẑᵀ, ∂L/∂c = ∂L/∂logits (both zero without a classifier
            // loss; the bias only when it is switched on).
            if self.classify {
                let last = (t - 1) * n;
                for slot in slots {
                    let cnt = slot.z_cnt[t - 1];
                    let idx = &slot.z_idx[last..last + cnt];
                    for class in 0..l {
                        let g = scales.c * slot.d_logits[class];
                        let row = &mut c[class * n..(class + 1) * n];
                        for (&i, &h) in idx.iter().zip(&slot.z_hat[..cnt]) {
                            row[i as usize] += g * h;
                        }
                    }
                    if self.dims.classifier_bias {
                        for (cb, &g) in c_bias.iter_mut().zip(&slot.d_logits) {
                            *cb += scales.c_bias * g;
                        }
                    }
                }
            }
            if let Some(bounds) = bounds {
                for row in c.chunks_mut(n) {
                    clip_norm(k, row, bounds.c_row);
                }
            }
        });
        // Rows of E are columns of Eᵀ: reduce the per-task squared norms in task order,
        // then scale the columns that exceed the bound.
        if let Some(bounds) = bounds {
            e_scale.fill(0.0);
            for part in e_norm_parts.chunks(n) {
                for (acc, &p) in e_scale.iter_mut().zip(part) {
                    *acc += p;
                }
            }
            let mut any = false;
            for s in e_scale.iter_mut() {
                let norm = s.sqrt();
                *s = if norm > bounds.e_row {
                    any = true;
                    bounds.e_row / norm
                } else {
                    1.0
                };
            }
            if any {
                let e_scale = &*e_scale;
                et.par_chunks_mut(ROWS_PER_TASK * n).for_each(|rows| {
                    for row in rows.chunks_mut(n) {
                        for (v, &s) in row.iter_mut().zip(e_scale) {
                            *v *= s;
                        }
                    }
                });
            }
        }
    }
}

/// Scales `row` down to norm `bound` if it is longer.
fn clip_norm(k: &Kernels, row: &mut [f32], bound: f32) {
    let norm = k.dot(row, row).sqrt();
    if norm > bound {
        let s = bound / norm;
        for v in row.iter_mut() {
            *v *= s;
        }
    }
}

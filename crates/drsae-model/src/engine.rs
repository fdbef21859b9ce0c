//! The fast f32 training engine: the reference's mathematics on whole minibatches, as a
//! handful of matrix products per recurrent step through the kernels crate.
//!
//! The examples of a minibatch are carried through the recurrence together, so each weight
//! matrix streams through the cache once per step for several examples instead of once per
//! example; at the activity DrSAE trains with (30–50 % of units on after pretraining) a row
//! that is needed by one example is needed by nearly all of them, and a minibatch product on
//! the register-tiled GEMM beats gathering active rows per example (see `results/kernels.csv`).
//! The sparsity that survives batching is used through the depth of the products: each
//! step's state `Z_t` and adjoint `DA_t` are zero outside the units active in some example of
//! the group, so `Z_t·Sᵀ`, `DA_t·S` and `Z_T·Dᵀ` run over those units' rows of the weights
//! only ([`Kernels::gemm_depth_subset`]); at minibatch 1 this is the per-example sparse
//! product.
//!
//! Step by step, with `Z_t`, `DA_t` (B × n) the states and masked adjoints of step t:
//! - forward: `U = X·Eᵀ − b`, `Z_1 = relu(U)`, `Z_{t+1} = relu(U + Z_t·Sᵀ)`, `R = Z_T·Dᵀ − X`;
//! - backward: `DA_T = mask_T ⊙ (w_rec·R·D + λ + classifier term)`,
//!   `DA_t = mask_t ⊙ (DA_{t+1}·S)`, `DU = Σ_t DA_t`;
//! - update: `Sᵀ += α·[Z_1;…;Z_{T−1}]ᵀ·[DA_2;…;DA_T]` (per group, one product over the
//!   stacked steps),
//!   `E += α·DUᵀ·X`, `Dᵀ += α·w_rec·Z_Tᵀ·R`, then the projections of spec §5.
//!
//! Parallelism and reproducibility: the minibatch is cut into two groups (`GROUPS`) of
//! consecutive examples whose sizes depend on the batch size alone; each group runs the whole
//! forward and backward recurrence as one task, and the update splits every weight matrix
//! into fixed row blocks, each adding the groups' products in order. Every element's
//! arithmetic is therefore the same whichever thread runs it: parameters after an epoch are
//! bit-identical for every thread count. Layout: `E` and `Dᵀ` are unit-major (row i belongs to
//! unit i, so the norm bounds of spec §5 are row norms and each row block is projected by the
//! task that updated it), and `Sᵀ` is kept so that the forward product reads it row by row.
//! [`Engine::params`] converts back to the paper's layout.

use drsae_kernels::{AlignedVec, Kernels, MatMut, MatRef};
use rayon::prelude::*;
use std::sync::Arc;

use crate::config::LossWeights;
use crate::config::{Config, Phase};
use crate::params::{Grads, Params};
use crate::reference::LossTerms;

mod active;
mod codes;
pub use codes::Codes;

/// Output columns of a minibatch product computed by one task: two AVX-512 register tiles.
const COLS_PER_TASK: usize = 64;

/// Weight rows updated (and projected) by one task: a multiple of every ISA's tile height.
const ROWS_PER_TASK: usize = 48;

/// Examples per task when evaluating a split.
const EVAL_CHUNK: usize = 128;

/// A training minibatch is cut into this many groups of consecutive examples (sizes fixed by
/// the batch size alone), each carried through the forward and backward recurrence by one
/// task without synchronising with the others: on two cores that beats splitting every
/// step's product, whose per-step join costs more than half a product at minibatch 10.
const GROUPS: usize = 2;

/// Added to ‖z^T‖² before the square root, as in the reference: no NaN for an all-zero code.
const NORM_EPS: f32 = crate::reference::NORM_EPS as f32;

/// Every buffer is allocated with its matrix's exact size (or more).
const SHAPED: &str = "engine buffers have their matrices' sizes";

/// Parameters in the engine's layout.
#[derive(Clone, Debug)]
struct Weights {
    /// `E`, n×m: row i holds unit i's input weights.
    e: AlignedVec,
    /// `Sᵀ`, n×n: row j holds the weights from unit j to every unit.
    st: AlignedVec,
    /// Thresholds `b`, n.
    b: AlignedVec,
    /// `Dᵀ`, n×m: row i is unit i's decoder column.
    dt: AlignedVec,
    /// Classifier `C`, l×n.
    c: AlignedVec,
    /// Classifier bias `c`, l.
    c_bias: AlignedVec,
}

impl Weights {
    fn zeros(m: usize, n: usize, l: usize) -> Self {
        Self {
            e: AlignedVec::zeros(n * m),
            st: AlignedVec::zeros(n * n),
            b: AlignedVec::zeros(n),
            dt: AlignedVec::zeros(n * m),
            c: AlignedVec::zeros(l * n),
            c_bias: AlignedVec::zeros(l),
        }
    }

    fn fill_zero(&mut self) {
        for v in [
            &mut self.e,
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
    drsae_kernels::kernels().transpose(view(src, rows, cols), view_mut(dst, cols, rows));
}

/// Sizes and switches that every batch computation needs.
#[derive(Clone, Copy, Debug)]
struct Dims {
    m: usize,
    n: usize,
    l: usize,
    t: usize,
    classifier_bias: bool,
}

/// A minibatch's forward and backward state, allocated for `cap` examples and reused every
/// step. Per-step blocks are laid out for the current batch size `bs`: step s (holding
/// `z^{s+1}`) occupies `s·bs·n .. (s+1)·bs·n`, so consecutive steps stack into one matrix.
#[derive(Clone, Debug)]
struct Batch {
    cap: usize,
    /// Examples in the current pass (`bs` below).
    len: usize,
    /// `U = X·Eᵀ − b`, bs×n.
    u: AlignedVec,
    /// Pre-activation scratch, bs×n.
    a: AlignedVec,
    /// States `Z_1 … Z_T`.
    z: AlignedVec,
    /// Masked adjoints `DA_1 … DA_T`.
    da: AlignedVec,
    /// `DU = Σ_t DA_t`, bs×n: `∂L/∂E = DUᵀ·X` and `∂L/∂b = −Σ_b DU_b`.
    du: AlignedVec,
    /// Residuals `R = X̂ − X`, bs×m.
    r: AlignedVec,
    /// Normalised codes `ẑ = z^T / ‖z^T‖`, bs×n.
    z_hat: AlignedVec,
    /// `‖z^T‖` (with ε) per example.
    norm: AlignedVec,
    /// Softmax probabilities, then `∂L/∂logits`, bs×l.
    d_logits: AlignedVec,
    /// Scratch: `∂L/∂ẑ` of one example (n) and the active-index output of the ReLU (n).
    dzh: AlignedVec,
    idx: Vec<u32>,
    /// Active units per step and example, step s at `s·bs`.
    counts: Vec<usize>,
    /// Per step, the units active in at least one example: the depth the next products need.
    active: active::ActiveUnion,
    /// Loss terms and predicted class per example.
    loss: Vec<LossTerms>,
    preds: Vec<u8>,
}

impl Batch {
    fn new(cap: usize, d: Dims) -> Self {
        let Dims { m, n, l, t, .. } = d;
        Self {
            cap,
            len: 0,
            u: AlignedVec::zeros(cap * n),
            a: AlignedVec::zeros(cap * n),
            z: AlignedVec::zeros(t * cap * n),
            da: AlignedVec::zeros(t * cap * n),
            du: AlignedVec::zeros(cap * n),
            r: AlignedVec::zeros(cap * m),
            z_hat: AlignedVec::zeros(cap * n),
            norm: AlignedVec::zeros(cap),
            d_logits: AlignedVec::zeros(cap * l),
            dzh: AlignedVec::zeros(n),
            idx: vec![0; n],
            counts: vec![0; t * cap],
            active: active::ActiveUnion::new(t, n),
            loss: vec![LossTerms::default(); cap],
            preds: vec![0; cap],
        }
    }

    /// Sum of the loss terms of the current pass's examples, in order.
    fn loss_sum(&self) -> LossTerms {
        let mut sum = LossTerms::default();
        for &l in &self.loss[..self.len] {
            sum += l;
        }
        sum
    }

    /// Adds the activity of the current pass's examples to `into`, in place (no allocation
    /// once `into` has its `steps` entries).
    fn add_activity(&self, steps: usize, into: &mut Activity) {
        let bs = self.len;
        into.active_per_step
            .resize(into.active_per_step.len().max(steps), 0);
        for (s, acc) in into.active_per_step[..steps].iter_mut().enumerate() {
            *acc += self.counts[s * bs..(s + 1) * bs].iter().sum::<usize>() as u64;
        }
        into.examples += bs;
    }
}

/// The groups' `z^T`, `DU` and residuals stacked into whole-minibatch matrices, so that the
/// shallow weight-gradient products (depth = minibatch), bound by reading and writing the
/// weights, pass over E and Dᵀ once per step rather than once per group.
#[derive(Clone, Debug, Default)]
struct Stacked {
    z_last: AlignedVec,
    du: AlignedVec,
    r: AlignedVec,
}

impl Stacked {
    /// Copies the current pass of `groups` (in order) into the first whole-minibatch rows,
    /// growing the buffers only when the minibatch outgrows them.
    fn gather(&mut self, groups: &[Batch], d: Dims) {
        let Dims { m, n, t, .. } = d;
        let len: usize = groups.iter().map(|g| g.len).sum();
        let z_last = self.z_last.prefix_mut(len * n);
        let du = self.du.prefix_mut(len * n);
        let r = self.r.prefix_mut(len * m);
        let mut row = 0;
        for g in groups {
            let (at, bs) = (row * n, g.len * n);
            z_last[at..at + bs].copy_from_slice(&g.z[(t - 1) * bs..t * bs]);
            du[at..at + bs].copy_from_slice(&g.du[..bs]);
            r[row * m..(row + g.len) * m].copy_from_slice(&g.r[..g.len * m]);
            row += g.len;
        }
    }
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

impl Scales {
    /// The gradient itself.
    const ONES: Scales = Scales {
        e: 1.0,
        s: 1.0,
        b: 1.0,
        d: 1.0,
        c: 1.0,
        c_bias: 1.0,
    };
    /// No change.
    const ZEROS: Scales = Scales {
        e: 0.0,
        s: 0.0,
        b: 0.0,
        d: 0.0,
        c: 0.0,
        c_bias: 0.0,
    };
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
    /// `S` in the paper's layout, refreshed from `w.st` after every update: the backward
    /// product `DA·S` then reads rows too, which the register-tiled GEMM runs ~1.4× faster at
    /// minibatch 10 than the dot-product form `DA·(Sᵀ)ᵀ`, for less than a tenth of that gain.
    s: AlignedVec,
    /// The minibatch's inputs, in line-aligned storage.
    inputs: AlignedVec,
    /// State of the training minibatch's groups (see [`GROUPS`]).
    groups: Vec<Batch>,
    /// The groups' results in whole-minibatch rows, for the update.
    stacked: Stacked,
    /// Probabilities, then `∂L/∂logits`, of a minibatch of cached codes.
    logits_scratch: Vec<f32>,
    pool: Arc<rayon::ThreadPool>,
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
            s: AlignedVec::zeros(n * n),
            inputs: AlignedVec::default(),
            groups: Vec::new(),
            stacked: Stacked::default(),
            logits_scratch: Vec::new(),
            pool: Arc::new(pool),
            kernels: drsae_kernels::kernels(),
            last_activity: Activity::default(),
        };
        engine.set_params(params);
        Ok(engine)
    }

    /// Replaces the parameters (layout conversion included).
    pub fn set_params(&mut self, p: &Params<f32>) {
        let Dims { m, n, .. } = self.dims;
        self.w.e.copy_from_slice(&p.e);
        transpose(&p.s, n, n, &mut self.w.st);
        self.s.copy_from_slice(&p.s);
        self.w.b.copy_from_slice(&p.b);
        transpose(&p.d, m, n, &mut self.w.dt);
        self.w.c.copy_from_slice(&p.c);
        self.w.c_bias.copy_from_slice(&p.c_bias);
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

    /// Runs `f` on one of the engine's worker threads. A training loop run this way hands no
    /// work between threads at each step: the engine's calls find themselves inside the pool
    /// already, instead of waking a worker and sleeping until it is done.
    pub fn run_in_pool<R: Send>(&mut self, f: impl FnOnce(&mut Self) -> R + Send) -> R {
        let pool = Arc::clone(&self.pool);
        pool.install(|| f(self))
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
        let lr = self.config.learning_rate_at(k);
        let cfg = &self.config;
        let enc = lr * cfg.encoder_rate_factor(phase);
        let scales = Scales {
            e: (-enc * cfg.mult_e()) as f32,
            s: (-enc * cfg.mult_s()) as f32,
            b: (-enc * cfg.mult_b()) as f32,
            d: (-enc * cfg.mult_d) as f32,
            c: (-lr * cfg.mult_c) as f32,
            c_bias: (-lr * cfg.mult_c_bias) as f32,
        };
        let bounds = crate::optim::should_project(cfg, k).then(|| Bounds {
            e_row: cfg.e_row_bound() as f32,
            d_col: cfg.d_col_bound as f32,
            c_row: cfg.c_row_bound as f32,
        });
        self.step(x, y, &weights, Target::Weights(scales, bounds))
    }

    /// The minibatch's summed loss terms and gradient at the current parameters, in the
    /// paper's layout (for checking against the reference).
    pub fn gradient(
        &mut self,
        x: &[f32],
        y: &[u8],
        weights: &LossWeights,
    ) -> Result<(LossTerms, Grads<f32>), EngineError> {
        let Dims { m, n, l, .. } = self.dims;
        if self.grad.is_none() {
            self.grad = Some(Weights::zeros(m, n, l));
        }
        let loss = self.step(x, y, weights, Target::Gradient)?;
        let grad = self.grad.as_ref().expect("allocated above");
        Ok((loss, weights_to_params(grad, self.dims)))
    }

    /// Forward pass over a whole split (`x`: examples × n_input) in fixed chunks run in
    /// parallel: summed loss terms, errors, predictions and activity.
    pub fn evaluate(
        &mut self,
        x: &[f32],
        y: &[u8],
        weights: &LossWeights,
    ) -> Result<Evaluation, EngineError> {
        self.forward_split(x, y, weights, false)
            .map(|(eval, _)| eval)
    }

    /// [`Engine::evaluate`], also returning the normalised codes ẑ (examples × n) when
    /// `keep_codes` is set.
    fn forward_split(
        &mut self,
        x: &[f32],
        y: &[u8],
        weights: &LossWeights,
        keep_codes: bool,
    ) -> Result<(Evaluation, Vec<f32>), EngineError> {
        check_batch(x, y, self.dims.m, self.dims)?;
        let dims = self.dims;
        let (w, s) = (&self.w, &self.s);
        let kernels = self.kernels;
        type Chunk = (LossTerms, Activity, Vec<u8>, Vec<f32>);
        let chunks: Vec<Chunk> = self.pool.install(|| {
            y.par_chunks(EVAL_CHUNK)
                .zip(x.par_chunks(EVAL_CHUNK * dims.m))
                .map_init(
                    || Batch::new(EVAL_CHUNK, dims),
                    |batch, (yc, xc)| {
                        let pass = Pass {
                            w,
                            s,
                            dims,
                            lw: weights,
                            k: kernels,
                            par: false,
                        };
                        pass.forward(batch, xc, yc);
                        let mut activity = Activity::default();
                        batch.add_activity(dims.t, &mut activity);
                        let codes = if keep_codes {
                            batch.z_hat[..yc.len() * dims.n].to_vec()
                        } else {
                            Vec::new()
                        };
                        (
                            batch.loss_sum(),
                            activity,
                            batch.preds[..yc.len()].to_vec(),
                            codes,
                        )
                    },
                )
                .collect()
        });
        let mut eval = Evaluation {
            predictions: Vec::with_capacity(y.len()),
            ..Evaluation::default()
        };
        let mut codes = Vec::with_capacity(if keep_codes { y.len() * dims.n } else { 0 });
        for (loss, act, preds, chunk_codes) in chunks {
            eval.loss += loss;
            eval.activity.merge(&act);
            eval.predictions.extend(preds);
            codes.extend(chunk_codes);
        }
        Ok((eval, codes))
    }

    /// The forward and backward pass of a minibatch (its groups in parallel), then its
    /// gradient added to `target`, all in one hand-off to the thread pool.
    fn step(
        &mut self,
        x: &[f32],
        y: &[u8],
        weights: &LossWeights,
        target: Target,
    ) -> Result<LossTerms, EngineError> {
        check_batch(x, y, self.dims.m, self.dims)?;
        let (size, count) = (group_size(y.len()), group_count(y.len()));
        let dims = self.dims;
        if self.groups.len() < count || self.groups.iter().any(|g| g.cap < size) {
            self.groups = (0..count).map(|_| Batch::new(size, dims)).collect();
        }
        // The inputs, copied to start a cache line: `X` is the row operand of `∂L/∂E = DUᵀ·X`.
        self.inputs.prefix_mut(x.len()).copy_from_slice(x);
        let Self {
            w,
            s,
            grad,
            groups,
            stacked,
            inputs,
            pool,
            kernels,
            ..
        } = self;
        let x = &inputs[..x.len()];
        let (groups, kernels) = (&mut groups[..count], *kernels);
        pool.install(|| {
            let pass = Pass {
                w,
                s,
                dims,
                lw: weights,
                k: kernels,
                // Split a product's columns over threads only when there is a single group
                // (minibatch 1): with two, each thread keeps its group's products to itself.
                par: count == 1,
            };
            groups
                .par_iter_mut()
                .zip(y.par_chunks(size))
                .zip(x.par_chunks(size * dims.m))
                .for_each(|((bt, yc), xc)| {
                    pass.forward(bt, xc, yc);
                    pass.backward(bt, yc);
                });
            stacked.gather(groups, dims);
            let ctx = UpdateCtx {
                groups,
                stacked,
                x,
                dims,
                w_rec: weights.w_rec as f32,
                classify: weights.w_cls != 0.0,
                kernels,
            };
            match target {
                Target::Weights(scales, bounds) => {
                    ctx.accumulate(w, scales, bounds);
                    mirror(kernels, &w.st, s, dims.n);
                }
                Target::Gradient => {
                    let g = grad
                        .as_mut()
                        .expect("the gradient buffer is allocated first");
                    g.fill_zero();
                    ctx.accumulate(g, Scales::ONES, None);
                }
            }
        });
        let mut loss = LossTerms::default();
        self.last_activity.examples = 0;
        self.last_activity.active_per_step.fill(0);
        for g in &self.groups[..count] {
            loss += g.loss_sum();
            g.add_activity(dims.t, &mut self.last_activity);
        }
        Ok(loss)
    }
}

/// Where [`Engine::step`] adds the minibatch's gradient.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The engine's weights, as an SGD step with these scales, then projected if bounds
    /// are given.
    Weights(Scales, Option<Bounds>),
    /// The gradient buffer, zeroed first (for checking against the reference).
    Gradient,
}

/// `s ← stᵀ` (n×n), in fixed row blocks.
fn mirror(k: &Kernels, st: &[f32], s: &mut [f32], n: usize) {
    s.par_chunks_mut(ROWS_PER_TASK * n)
        .enumerate()
        .for_each(|(task, rows)| {
            let (r0, h) = (task * ROWS_PER_TASK, rows.len() / n);
            k.transpose(view(st, n, n).block(0, r0, n, h), view_mut(rows, h, n));
        });
}

/// Examples per group of a minibatch of `bs` (see [`GROUPS`]).
fn group_size(bs: usize) -> usize {
    bs.div_ceil(GROUPS).max(1)
}

/// Groups in a minibatch of `bs` examples.
fn group_count(bs: usize) -> usize {
    bs.div_ceil(group_size(bs))
}

/// Checks a batch of `width` values per example (the input size, or n for codes) and its
/// labels.
fn check_batch(x: &[f32], y: &[u8], width: usize, dims: Dims) -> Result<(), EngineError> {
    if x.len() != y.len() * width {
        return Err(EngineError::Batch {
            examples: y.len(),
            values: x.len(),
            expected: width,
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
    p.e.copy_from_slice(&w.e);
    transpose(&w.st, n, n, &mut p.s);
    p.b.copy_from_slice(&w.b);
    transpose(&w.dt, n, m, &mut p.d);
    p.c.copy_from_slice(&w.c);
    p.c_bias.copy_from_slice(&w.c_bias);
    p
}

/// A row-major view of the first `rows·cols` elements of an engine buffer.
fn view(data: &[f32], rows: usize, cols: usize) -> MatRef<'_> {
    MatRef::row_major(data, rows, cols).expect(SHAPED)
}

/// A mutable row-major view of the first `rows·cols` elements of an engine buffer.
fn view_mut(data: &mut [f32], rows: usize, cols: usize) -> MatMut<'_> {
    MatMut::row_major(data, rows, cols).expect(SHAPED)
}

/// What a forward or backward pass reads: weights, sizes, loss weights and kernels.
#[derive(Clone, Copy)]
struct Pass<'a> {
    w: &'a Weights,
    /// `S` itself (the transpose of `w.st`), for the backward product.
    s: &'a [f32],
    dims: Dims,
    lw: &'a LossWeights,
    k: &'a Kernels,
    /// Run the column blocks of each product as parallel tasks.
    par: bool,
}

/// The depth steps worth restricting a product to: the active units `list` when they leave
/// out some of the `k` rows of the weights, else none (the plain product).
fn subset(list: &[u32], k: usize) -> Option<&[u32]> {
    (list.len() < k).then_some(list)
}

impl Pass<'_> {
    /// `C ← α·A·B + β·C`, over the depth steps `depth` alone when given (A is zero elsewhere,
    /// so those rows of B are never read). With `par`, C's columns are cut into blocks of
    /// [`COLS_PER_TASK`] by halving at block boundaries and the halves run as rayon tasks:
    /// the blocks depend only on the shapes, and no element's arithmetic on the blocking.
    fn gemm(
        &self,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        depth: Option<&[u32]>,
        beta: f32,
        c: MatMut<'_>,
    ) {
        let n = c.cols();
        if !self.par || n <= COLS_PER_TASK {
            match depth {
                Some(d) => self.k.gemm_depth_subset(alpha, a, b, d, beta, c),
                None => self.k.gemm(alpha, a, b, beta, c),
            }
            return;
        }
        let half = (n / COLS_PER_TASK).div_ceil(2) * COLS_PER_TASK;
        let (cl, cr) = c.split_at_col(half);
        let (bl, br) = (
            b.block(0, 0, b.rows(), half),
            b.block(0, half, b.rows(), n - half),
        );
        rayon::join(
            || self.gemm(alpha, a, bl, depth, beta, cl),
            || self.gemm(alpha, a, br, depth, beta, cr),
        );
    }

    /// Forward pass of the minibatch `x` (bs × m) into `bt`: states, residuals, softmax
    /// probabilities, loss terms, predictions and active counts.
    fn forward(&self, bt: &mut Batch, x: &[f32], y: &[u8]) {
        let Dims { m, n, l, t, .. } = self.dims;
        let (w, k) = (self.w, self.k);
        let bs = y.len();
        bt.len = bs;
        let sz = bs * n;
        // U = X·Eᵀ − b
        for row in bt.u[..sz].chunks_exact_mut(n) {
            for (u, &b) in row.iter_mut().zip(&w.b) {
                *u = -b;
            }
        }
        let xm = view(x, bs, m);
        let e_t = view(&w.e, n, m).t();
        self.gemm(1.0, xm, e_t, None, 1.0, view_mut(&mut bt.u, bs, n));
        // Z_1 = relu(U); Z_{t+1} = relu(U + Z_t·Sᵀ)
        let st = view(&w.st, n, n);
        for s in 0..t {
            let (done, rest) = bt.z.split_at_mut(s * sz);
            let src = if s == 0 {
                &bt.u[..sz]
            } else {
                bt.a[..sz].copy_from_slice(&bt.u[..sz]);
                let prev = view(&done[(s - 1) * sz..], bs, n);
                let depth = subset(bt.active.step(s - 1), n);
                self.gemm(1.0, prev, st, depth, 1.0, view_mut(&mut bt.a, bs, n));
                &bt.a[..sz]
            };
            let counts = &mut bt.counts[s * bs..(s + 1) * bs];
            let idx = &mut bt.idx;
            bt.active.build(s, |union| {
                for ((a_row, z_row), count) in src
                    .chunks_exact(n)
                    .zip(rest[..sz].chunks_exact_mut(n))
                    .zip(counts)
                {
                    *count = k.relu_active(a_row, z_row, idx);
                    union.add(&idx[..*count]);
                }
            });
        }
        // R = Z_T·Dᵀ − X
        let z_last = &bt.z[(t - 1) * sz..t * sz];
        for (r, &xv) in bt.r[..bs * m].iter_mut().zip(x) {
            *r = -xv;
        }
        let dt = view(&w.dt, n, m);
        let depth = subset(bt.active.step(t - 1), n);
        self.gemm(
            1.0,
            view(z_last, bs, n),
            dt,
            depth,
            1.0,
            view_mut(&mut bt.r, bs, m),
        );
        // Per example: loss terms, ẑ = z^T / sqrt(‖z^T‖² + ε), logits = C·ẑ + c, softmax.
        for (b, &label) in y.iter().enumerate() {
            let z = &z_last[b * n..(b + 1) * n];
            let r = &bt.r[b * m..(b + 1) * m];
            let rec = 0.5 * f64::from(k.dot(r, r));
            let l1: f64 = z.iter().map(|&v| f64::from(v)).sum();
            let norm = (k.dot(z, z) + NORM_EPS).sqrt();
            bt.norm[b] = norm;
            let z_hat = &mut bt.z_hat[b * n..(b + 1) * n];
            for (h, &v) in z_hat.iter_mut().zip(z) {
                *h = v / norm;
            }
            let probs = &mut bt.d_logits[b * l..(b + 1) * l];
            let (pred, ce) = classify(k, w, self.dims.classifier_bias, z_hat, label, probs);
            bt.loss[b] = LossTerms {
                rec: self.lw.w_rec * rec,
                sparsity: self.lw.lambda * l1,
                cls: self.lw.w_cls * ce,
                errors: usize::from(pred != label as usize),
            };
            bt.preds[b] = pred as u8;
        }
    }

    /// Backward pass (analytic BPTT, as in the reference) of the minibatch whose forward
    /// pass is in `bt`: leaves `DA_t`, `DU` and `∂L/∂logits`.
    fn backward(&self, bt: &mut Batch, y: &[u8]) {
        let Dims { m, n, l, t, .. } = self.dims;
        let (w, k) = (self.w, self.k);
        let bs = y.len();
        let sz = bs * n;
        let (w_rec, lambda, w_cls) = (
            self.lw.w_rec as f32,
            self.lw.lambda as f32,
            self.lw.w_cls as f32,
        );
        for (probs, &label) in bt.d_logits.chunks_exact_mut(l).zip(y) {
            logit_grad(w_cls, label, probs);
        }
        // d_z^T = w_rec·D·r + λ + (I − ẑẑᵀ)/‖z‖·Cᵀ·∂L/∂logits, masked by z^T > 0
        let last = (t - 1) * sz;
        let dt_t = view(&w.dt, n, m).t();
        self.gemm(
            w_rec,
            view(&bt.r, bs, m),
            dt_t,
            None,
            0.0,
            view_mut(&mut bt.da[last..], bs, n),
        );
        for b in 0..bs {
            let rows = b * n..(b + 1) * n;
            let da = &mut bt.da[last + b * n..last + (b + 1) * n];
            let z = &bt.z[last + b * n..last + (b + 1) * n];
            let z_hat = &bt.z_hat[rows.clone()];
            if w_cls != 0.0 {
                let dzh = &mut bt.dzh;
                dzh.fill(0.0);
                for (class, &g) in bt.d_logits[b * l..(b + 1) * l].iter().enumerate() {
                    k.axpy(dzh, g, &w.c[class * n..(class + 1) * n]);
                }
                let proj = k.dot(dzh, z_hat);
                let inv = 1.0 / bt.norm[b];
                for ((d, &g), &h) in da.iter_mut().zip(dzh.iter()).zip(z_hat) {
                    *d += (g - h * proj) * inv;
                }
            }
            for ((d, &zv), du) in da.iter_mut().zip(z).zip(&mut bt.du[rows]) {
                *d = if zv > 0.0 { *d + lambda } else { 0.0 };
                *du = *d;
            }
        }
        // d_z^t = DA_{t+1}·S (DA_{t+1} is zero outside the units active at step t+1),
        // d_a^t = d_z^t ⊙ 1[z^t > 0]
        let s_mat = view(self.s, n, n);
        for s in (0..t - 1).rev() {
            let (lower, upper) = bt.da.split_at_mut((s + 1) * sz);
            self.gemm(
                1.0,
                view(upper, bs, n),
                s_mat,
                subset(bt.active.step(s + 1), n),
                0.0,
                view_mut(&mut lower[s * sz..], bs, n),
            );
            let cur = &mut lower[s * sz..(s + 1) * sz];
            let z = &bt.z[s * sz..(s + 1) * sz];
            for ((d, &zv), du) in cur.iter_mut().zip(z).zip(&mut bt.du[..sz]) {
                *d = if zv > 0.0 { *d } else { 0.0 };
                *du += *d;
            }
        }
    }
}

/// The update of a step: the state of the minibatch's groups, applied to a target.
struct UpdateCtx<'a> {
    groups: &'a [Batch],
    stacked: &'a Stacked,
    /// The whole minibatch's inputs (bs × m).
    x: &'a [f32],
    dims: Dims,
    w_rec: f32,
    classify: bool,
    kernels: &'a Kernels,
}

impl UpdateCtx<'_> {
    /// Adds `scale × gradient` of the minibatch to `target`, then projects when `bounds` is
    /// given. Weight rows are updated in fixed blocks, each by one task that adds the groups'
    /// products in order and then projects its rows.
    fn accumulate(&self, target: &mut Weights, scales: Scales, bounds: Option<Bounds>) {
        let Dims { m, n, l, t, .. } = self.dims;
        let (k, st_ed) = (self.kernels, self.stacked);
        let bs = self.x.len() / m;
        let Weights {
            e,
            st,
            b,
            dt,
            c,
            c_bias,
        } = target;
        // ∂L/∂Sᵀ = Σ_t Z_tᵀ·DA_{t+1}: per group, one product over the stacked steps.
        let update_s = || {
            st.par_chunks_mut(ROWS_PER_TASK * n)
                .enumerate()
                .for_each(|(task, rows)| {
                    let (r0, h) = (task * ROWS_PER_TASK, rows.len() / n);
                    for g in self.groups {
                        let depth = (t - 1) * g.len;
                        let z_steps = view(&g.z, depth, n).t().block(r0, 0, h, depth);
                        let da_steps = view(&g.da[g.len * n..], depth, n);
                        k.gemm(scales.s, z_steps, da_steps, 1.0, view_mut(rows, h, n));
                    }
                });
        };
        // ∂L/∂E = DUᵀ·X, then the E-row bound.
        let update_e = || {
            e.par_chunks_mut(ROWS_PER_TASK * m)
                .enumerate()
                .for_each(|(task, rows)| {
                    let (r0, h) = (task * ROWS_PER_TASK, rows.len() / m);
                    let du_t = view(&st_ed.du[..bs * n], bs, n).t().block(r0, 0, h, bs);
                    let xm = view(self.x, bs, m);
                    k.gemm(scales.e, du_t, xm, 1.0, view_mut(rows, h, m));
                    if let Some(bounds) = bounds {
                        for row in rows.chunks_exact_mut(m) {
                            clip_norm(k, row, bounds.e_row);
                        }
                    }
                });
        };
        // ∂L/∂Dᵀ = w_rec·Z_Tᵀ·R, then the column bound on every row, changed or not: a
        // rescaled row can come out an ulp above the bound, and projecting it again only
        // when it next changes would make the parameters depend on that history, which a
        // checkpoint does not hold (a resumed run would then differ from an unbroken one).
        let alpha_d = scales.d * self.w_rec;
        let update_d = || {
            dt.par_chunks_mut(ROWS_PER_TASK * m)
                .enumerate()
                .for_each(|(task, rows)| {
                    let (r0, h) = (task * ROWS_PER_TASK, rows.len() / m);
                    let zt_t = view(&st_ed.z_last[..bs * n], bs, n).t().block(r0, 0, h, bs);
                    let rm = view(&st_ed.r[..bs * m], bs, m);
                    k.gemm(alpha_d, zt_t, rm, 1.0, view_mut(rows, h, m));
                    if let Some(bounds) = bounds {
                        for row in rows.chunks_exact_mut(m) {
                            clip_norm(k, row, bounds.d_col);
                        }
                    }
                });
        };
        rayon::join(update_s, || rayon::join(update_e, update_d));
        // ∂L/∂b = −Σ_b DU_b; ∂L/∂C = Σ_b (∂L/∂logits)_b·ẑ_bᵀ, ∂L/∂c = Σ_b (∂L/∂logits)_b
        // (both zero without a classifier loss; the bias only when it is switched on).
        for g in self.groups {
            for du in g.du[..g.len * n].chunks_exact(n) {
                for (bv, &d) in b.iter_mut().zip(du) {
                    *bv -= scales.b * d;
                }
            }
            if !self.classify {
                continue;
            }
            let (dl, z_hat) = (&g.d_logits[..g.len * l], &g.z_hat[..g.len * n]);
            add_classifier_grad(k, self.dims, scales, dl, z_hat, c, c_bias);
        }
        if let Some(bounds) = bounds {
            for row in c.chunks_exact_mut(n) {
                clip_norm(k, row, bounds.c_row);
            }
        }
    }
}

/// Logits `C·ẑ + c` of one code, turned in place into softmax probabilities (the maximum
/// subtracted for stability). Returns the predicted class (first on ties) and the
/// cross-entropy of `label`.
fn classify(
    k: &Kernels,
    w: &Weights,
    bias: bool,
    z_hat: &[f32],
    label: u8,
    probs: &mut [f32],
) -> (usize, f64) {
    let n = z_hat.len();
    for (class, logit) in probs.iter_mut().enumerate() {
        let b = if bias { w.c_bias[class] } else { 0.0 };
        *logit = b + k.dot(&w.c[class * n..(class + 1) * n], z_hat);
    }
    let mut pred = 0usize;
    for class in 1..probs.len() {
        if probs[class] > probs[pred] {
            pred = class;
        }
    }
    let max = probs[pred];
    let mut sum = 0.0f32;
    for v in probs.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in probs.iter_mut() {
        *v /= sum;
    }
    let ce = -f64::from(probs[label as usize].max(f32::MIN_POSITIVE)).ln();
    (pred, ce)
}

/// `∂L/∂logits = w_cls·(p − onehot(label))`, in place over the probabilities.
fn logit_grad(w_cls: f32, label: u8, probs: &mut [f32]) {
    for (class, g) in probs.iter_mut().enumerate() {
        let target = if class == label as usize { 1.0 } else { 0.0 };
        *g = w_cls * (*g - target);
    }
}

/// Adds the classifier's gradient of the examples whose `∂L/∂logits` (examples × l) and codes
/// ẑ (examples × n) are given, example by example in order, scaled by `scales.c` and
/// `scales.c_bias`.
fn add_classifier_grad(
    k: &Kernels,
    dims: Dims,
    scales: Scales,
    d_logits: &[f32],
    z_hat: &[f32],
    c: &mut [f32],
    c_bias: &mut [f32],
) {
    for (dl, z) in d_logits
        .chunks_exact(dims.l)
        .zip(z_hat.chunks_exact(dims.n))
    {
        for (class, row) in c.chunks_exact_mut(dims.n).enumerate() {
            k.axpy(row, scales.c * dl[class], z);
        }
        if dims.classifier_bias {
            for (cb, &gv) in c_bias.iter_mut().zip(dl) {
                *cb += scales.c_bias * gv;
            }
        }
    }
}

/// Scales `row` down to norm `bound` if it is longer.
fn clip_norm(k: &Kernels, row: &mut [f32], bound: f32) {
    let norm = k.dot(row, row).sqrt();
    if norm > bound {
        k.scale(row, bound / norm);
    }
}

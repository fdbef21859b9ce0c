//! The fast f32 training engine: the reference's mathematics on whole minibatches, as a
//! handful of matrix products per recurrent step through the kernels crate.
//!
//! The examples of a minibatch are carried through each step together, so the dense
//! products (the input drive, the weight gradients) stream each weight matrix through the
//! cache once per step for all of them instead of once per example.
//! The sparsity is used through the depth of the products: each example's row of a step's
//! state `Z_t` and adjoint `DA_t` is zero outside the units it activates, so `Z_t·Sᵀ`,
//! `DA_t·S` and `Z_T·Dᵀ` run over those units' rows of the weights only
//! ([`Kernels::gemm_depth_subset`]), example by example while the examples' own units are
//! few next to the minibatch's (after pretraining, every step but the first), else for the
//! whole minibatch over the units active in some example (see [`EXAMPLE_DEPTH_MAX_SHARE`]).
//!
//! Step by step, with `Z_t`, `DA_t` (B × n) the states and masked adjoints of step t:
//! - forward: `U = X·Eᵀ − b`, `Z_1 = relu(U)`, `Z_{t+1} = relu(U + Z_t·Sᵀ)`, `R = Z_T·Dᵀ − X`;
//! - backward: `DA_T = mask_T ⊙ (w_rec·R·D + λ + classifier term)`,
//!   `DA_t = mask_t ⊙ (DA_{t+1}·S)`, `DU = Σ_t DA_t`;
//! - update: `Sᵀ += α·[Z_1;…;Z_{T−1}]ᵀ·[DA_2;…;DA_T]` (per example over the units it
//!   activates, or one product over the stacked steps), `E += α·DUᵀ·X`,
//!   `Dᵀ += α·w_rec·Z_Tᵀ·R`, then the projections of spec §5.
//!
//! Parallelism and reproducibility: the model, not the minibatch, is split over threads.
//! Each of the [`parts::PARTS`] parts owns a fixed range of the hidden units and computes
//! those units' columns of every state and adjoint, and updates their rows of E and Dᵀ and
//! their columns of Sᵀ (see [`parts`]); a product that reads a whole state runs once per
//! part's block of it. Only activations move between cores; splitting
//! the examples instead had both cores read every weight the other had just updated, and
//! ran 0.87× as fast on two threads at minibatch 10 (paired runs, see the README).
//! Sums over the units (the residual, ‖z^T‖, the classifier's projection) are formed per
//! part and added in part order, so every element's arithmetic is the same whichever
//! thread runs it: parameters after an epoch are bit-identical for every thread count.
//! Layout: `E` and `Dᵀ` are unit-major (row i belongs to unit i, so the norm bounds of spec
//! §5 are row norms, projected by the part that owns the row), and `Sᵀ` is kept so that the
//! forward product reads it row by row. The columns of `Sᵀ`, of the copy of S and of every
//! state and adjoint are stored in one block per part, so that no two cores write the same
//! rows (see [`to_blocks`] and [`Batch`]). [`Engine::params`] converts back to the paper's
//! layout.

use drsae_kernels::{AlignedVec, Kernels, MatMut, MatRef};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

use crate::config::LossWeights;
use crate::config::{Config, Phase};
use crate::params::{Grads, Params};
use crate::reference::LossTerms;

mod codes;
mod parts;
pub use codes::Codes;
use parts::{PARTS, Raw, padded};

/// The largest share of the minibatch's (example, unit) rows, active at some step, for which
/// the recurrent gradient runs example by example over those rows. One part's product per
/// row costs about 1.4× the dense product's share (minibatch 10, n = 400, T = 11, AVX-512,
/// 208 columns), so the rows win below ≈ 70 %; the whole 400-column product still runs 1.3×
/// faster at 60 % (`results/kernels.csv`, `gemm_tn_rows_rec_grad`).
const ROWS_MAX_SHARE: f64 = 2.0 / 3.0;

/// The largest share of a step's (examples × units active in some example) for which the
/// products over a state (`Z_t·Sᵀ`, `DA_t·S`, `Z_T·Dᵀ`) run example by example over each
/// example's own active units. One example's row of such a product costs about 2.2× its
/// share of the minibatch's register-tiled product per unit of depth (one core, n = 400,
/// minibatch 10), so the examples win below ≈ 45 %: after pretraining an example has
/// 28.5 % of the units on at a step and the minibatch 90 %, so every step but the first
/// runs by example (1.13–1.19× the examples/s on one thread, paired).
const EXAMPLE_DEPTH_MAX_SHARE: f64 = 0.45;

/// Examples per task when evaluating a split.
const EVAL_CHUNK: usize = 128;

/// Added to ‖z^T‖² before the square root, as in the reference: no NaN for an all-zero code.
const NORM_EPS: f32 = crate::reference::NORM_EPS as f32;

/// Every buffer is allocated with its matrix's exact size (or more).
const SHAPED: &str = "engine buffers have their matrices' sizes";

/// Parameters in the engine's layout.
#[derive(Clone, Debug)]
struct Weights {
    /// `E`, n×m: row i holds unit i's input weights.
    e: AlignedVec,
    /// `Sᵀ`, n×n in part blocks (see [`to_blocks`]): row j of block p holds the weights from
    /// unit j to part p's units.
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

/// An n×n matrix's columns in part-major blocks: block p holds columns `units[p]` of every
/// row (n × h_p, row stride h_p) at `n·units[p].start`, so each part's share is one run of
/// memory. With the halves interleaved in every row, the per-example recurrent gradient ran
/// 2.3× slower on two threads than on one (each core's writes to its half of a row disturb
/// the other core's half); in separate blocks, as fast as on one.
fn to_blocks(src: &[f32], n: usize, dst: &mut [f32]) {
    for us in parts::split(n) {
        let (h, at) = (us.len(), n * us.start);
        for (j, row) in src.chunks_exact(n).enumerate() {
            dst[at + j * h..at + (j + 1) * h].copy_from_slice(&row[us.clone()]);
        }
    }
}

/// The inverse of [`to_blocks`].
fn from_blocks(src: &[f32], n: usize, dst: &mut [f32]) {
    for us in parts::split(n) {
        let (h, at) = (us.len(), n * us.start);
        for (j, row) in dst.chunks_exact_mut(n).enumerate() {
            row[us.clone()].copy_from_slice(&src[at + j * h..at + (j + 1) * h]);
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
/// step. The states and adjoints (and U, the pre-activation and DU, one step each) are
/// stored in one block per part, laid out for the current batch size `bs`: part p's block,
/// at `steps·bs·units[p].start`, holds its units' values with row `s·bs + b` for example b
/// after step s+1, so consecutive steps stack into one matrix and the two cores never write
/// the same rows (see [`to_blocks`]). Per-part values of an example b live at
/// `p·stride + b`; each part's scratch is padded (see [`padded`]) so that no cache line
/// holds two parts' values.
#[derive(Clone, Debug)]
struct Batch {
    cap: usize,
    /// Distance between two parts' per-example values.
    stride: usize,
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
    /// Each part's share of the residual `R = X̂ − X` (bs×m; part 0's starts from −X); the
    /// loss stage adds the others into part 0's, which is then R.
    r: [AlignedVec; PARTS],
    /// Normalised codes `ẑ = z^T / ‖z^T‖`, bs×n.
    z_hat: AlignedVec,
    /// `‖z^T‖` (with ε) per example.
    norm: AlignedVec,
    /// Softmax probabilities, then `∂L/∂logits`, bs×l.
    d_logits: AlignedVec,
    /// `∂L/∂ẑ = Cᵀ·∂L/∂logits`, bs×n.
    dzh: AlignedVec,
    /// Step s's active units, each part's ascending list (indices into its block) at the
    /// start of its own range of `s·n .. (s+1)·n`; its length at `p·padded(t) + s` of
    /// `unit_count`.
    units: Vec<u32>,
    unit_count: Vec<usize>,
    /// Scratch: which of its units a part has seen active, part p's at `p·padded(n)`.
    seen: Vec<bool>,
    /// Each example's active units at each step, per part: ascending indices into p's block
    /// at `p·padded(t·cap·n) + (s·bs + b)·n`; their number at `p·padded(t·cap) + s·bs + b`
    /// of `counts`.
    lists: Vec<u32>,
    counts: Vec<usize>,
    /// The units of part p that example b activates at some step before the last (ascending
    /// indices into p's block, at `p·padded(cap·n) + b·n`; their number at
    /// `p·padded(cap) + b` of `ever_count`): the rows of Sᵀ that b's share of the recurrent
    /// gradient touches.
    ever: Vec<u32>,
    ever_count: Vec<usize>,
    /// Per part and example: ‖z^T‖² and Σ z^T over its units, the projection of `∂L/∂ẑ` on ẑ
    /// over its units, and ‖R‖² over its pixels.
    sq: Vec<f32>,
    l1: Vec<f64>,
    proj: Vec<f32>,
    rec: Vec<f64>,
    /// Cross-entropy and predicted class per example.
    ce: Vec<f64>,
    preds: Vec<u8>,
}

impl Batch {
    fn new(cap: usize, d: Dims) -> Self {
        let Dims { m, n, l, t, .. } = d;
        // Padded for the f32 values (16 per line), which pads the f64 ones by two lines.
        let stride = padded::<f32>(cap);
        Self {
            cap,
            stride,
            len: 0,
            u: AlignedVec::zeros(cap * n),
            a: AlignedVec::zeros(cap * n),
            z: AlignedVec::zeros(t * cap * n),
            da: AlignedVec::zeros(t * cap * n),
            du: AlignedVec::zeros(cap * n),
            r: std::array::from_fn(|_| AlignedVec::zeros(cap * m)),
            z_hat: AlignedVec::zeros(cap * n),
            norm: AlignedVec::zeros(cap),
            d_logits: AlignedVec::zeros(cap * l),
            dzh: AlignedVec::zeros(cap * n),
            units: vec![0; t * n],
            unit_count: vec![0; PARTS * padded::<usize>(t)],
            seen: vec![false; PARTS * padded::<bool>(n)],
            lists: vec![0; PARTS * padded::<u32>(t * cap * n)],
            counts: vec![0; PARTS * padded::<usize>(t * cap)],
            ever: vec![0; PARTS * padded::<u32>(cap * n)],
            ever_count: vec![0; PARTS * padded::<usize>(cap)],
            sq: vec![0.0; PARTS * stride],
            l1: vec![0.0; PARTS * stride],
            proj: vec![0.0; PARTS * stride],
            rec: vec![0.0; PARTS * stride],
            ce: vec![0.0; cap],
            preds: vec![0; cap],
        }
    }

    /// Sum of the loss terms of the current pass's examples (labels `y`), in order.
    fn loss_sum(&self, y: &[u8], lw: &LossWeights) -> LossTerms {
        let mut sum = LossTerms::default();
        for (b, &label) in y.iter().enumerate().take(self.len) {
            let part_sum = |v: &[f64]| (0..PARTS).map(|p| v[p * self.stride + b]).sum::<f64>();
            sum += LossTerms {
                rec: lw.w_rec * 0.5 * part_sum(&self.rec),
                sparsity: lw.lambda * part_sum(&self.l1),
                cls: lw.w_cls * self.ce[b],
                errors: usize::from(self.preds[b] != label),
            };
        }
        sum
    }

    /// Adds the activity of the current pass's examples to `into`, in place (no allocation
    /// once `into` has its `steps` entries).
    fn add_activity(&self, steps: usize, into: &mut Activity) {
        let (bs, part) = (self.len, self.counts.len() / PARTS);
        into.active_per_step
            .resize(into.active_per_step.len().max(steps), 0);
        for (s, acc) in into.active_per_step[..steps].iter_mut().enumerate() {
            for p in 0..PARTS {
                let at = p * part + s * bs;
                *acc += self.counts[at..at + bs].iter().sum::<usize>() as u64;
            }
        }
        into.examples += self.len;
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
    /// `S` in part blocks (see [`to_blocks`]), refreshed from `w.st` after every update: the
    /// backward product `DA·S` then reads rows too, which the register-tiled GEMM runs ~1.4×
    /// faster at minibatch 10 than the dot-product form `DA·(Sᵀ)ᵀ`, for less than a tenth of
    /// that gain.
    s: AlignedVec,
    /// The minibatch's inputs, in line-aligned storage.
    inputs: AlignedVec,
    /// State of the training minibatch.
    batch: Batch,
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
            batch: Batch::new(0, dims),
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
        let mut st = vec![0.0; n * n];
        transpose(&p.s, n, n, &mut st);
        to_blocks(&st, n, &mut self.w.st);
        to_blocks(&p.s, n, &mut self.s);
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
        // Read only: no stage of a forward pass writes the weights.
        let (w, s) = (WeightsRaw::new(&mut self.w), Raw::new(&mut self.s));
        let kernels = self.kernels;
        type Chunk = (LossTerms, Activity, Vec<u8>, Vec<f32>);
        let chunks: Vec<Chunk> = self.pool.install(|| {
            y.par_chunks(EVAL_CHUNK)
                .zip(x.par_chunks(EVAL_CHUNK * dims.m))
                .map_init(
                    || Batch::new(EVAL_CHUNK, dims),
                    |batch, (yc, xc)| {
                        let pass = Pass::new(dims, kernels, weights, (xc, yc), (w, s), batch, None);
                        parts::run(false, pass.stage_count(), &|i, p| pass.run(i, p));
                        let mut activity = Activity::default();
                        batch.add_activity(dims.t, &mut activity);
                        let codes = if keep_codes {
                            batch.z_hat[..yc.len() * dims.n].to_vec()
                        } else {
                            Vec::new()
                        };
                        (
                            batch.loss_sum(yc, weights),
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

    /// The forward and backward pass of a minibatch, then its gradient added to `target`,
    /// in one hand-off to the thread pool: with two or more threads each part runs on its
    /// own thread (see [`parts`]).
    fn step(
        &mut self,
        x: &[f32],
        y: &[u8],
        weights: &LossWeights,
        target: Target,
    ) -> Result<LossTerms, EngineError> {
        check_batch(x, y, self.dims.m, self.dims)?;
        let dims = self.dims;
        if self.batch.cap < y.len() {
            self.batch = Batch::new(y.len(), dims);
        }
        // The inputs, copied to start a cache line: `X` is the row operand of `∂L/∂E = DUᵀ·X`.
        self.inputs.prefix_mut(x.len()).copy_from_slice(x);
        let w = WeightsRaw::new(&mut self.w);
        let update = match target {
            Target::Weights(scales, bounds) => Update {
                target: w,
                scales,
                bounds,
                mirror: true,
            },
            Target::Gradient => {
                let g = self
                    .grad
                    .as_mut()
                    .expect("the gradient buffer is allocated first");
                g.fill_zero();
                Update {
                    target: WeightsRaw::new(g),
                    scales: Scales::ONES,
                    bounds: None,
                    mirror: false,
                }
            }
        };
        let inputs = (&self.inputs[..x.len()], y);
        let s = Raw::new(&mut self.s);
        let pass = Pass::new(
            dims,
            self.kernels,
            weights,
            inputs,
            (w, s),
            &mut self.batch,
            Some(update),
        );
        let parallel = self.pool.current_num_threads() >= PARTS;
        self.pool
            .install(|| parts::run(parallel, pass.stage_count(), &|i, p| pass.run(i, p)));
        self.last_activity.examples = 0;
        self.last_activity.active_per_step.fill(0);
        self.batch.add_activity(dims.t, &mut self.last_activity);
        Ok(self.batch.loss_sum(y, weights))
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
    let mut st = vec![0.0; n * n];
    from_blocks(&w.st, n, &mut st);
    transpose(&st, n, n, &mut p.s);
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

/// Raw handles to the weights, for the parts of a stage (see [`parts::Raw`]).
#[derive(Clone, Copy)]
struct WeightsRaw {
    e: Raw<f32>,
    st: Raw<f32>,
    b: Raw<f32>,
    dt: Raw<f32>,
    c: Raw<f32>,
    c_bias: Raw<f32>,
}

impl WeightsRaw {
    fn new(w: &mut Weights) -> Self {
        Self {
            e: Raw::new(&mut w.e),
            st: Raw::new(&mut w.st),
            b: Raw::new(&mut w.b),
            dt: Raw::new(&mut w.dt),
            c: Raw::new(&mut w.c),
            c_bias: Raw::new(&mut w.c_bias),
        }
    }
}

/// Raw handles to a [`Batch`]'s buffers.
#[derive(Clone, Copy)]
struct BatchRaw {
    /// [`Batch::stride`], and each part's share of `counts`, `lists`, `ever` and `ever_count`.
    stride: usize,
    count_part: usize,
    list_part: usize,
    ever_part: usize,
    ever_count_part: usize,
    u: Raw<f32>,
    a: Raw<f32>,
    z: Raw<f32>,
    da: Raw<f32>,
    du: Raw<f32>,
    r: [Raw<f32>; PARTS],
    z_hat: Raw<f32>,
    norm: Raw<f32>,
    d_logits: Raw<f32>,
    dzh: Raw<f32>,
    units: Raw<u32>,
    unit_count: Raw<usize>,
    seen: Raw<bool>,
    lists: Raw<u32>,
    counts: Raw<usize>,
    ever: Raw<u32>,
    ever_count: Raw<usize>,
    sq: Raw<f32>,
    l1: Raw<f64>,
    proj: Raw<f32>,
    rec: Raw<f64>,
    ce: Raw<f64>,
    preds: Raw<u8>,
}

impl BatchRaw {
    fn new(bt: &mut Batch) -> Self {
        Self {
            stride: bt.stride,
            count_part: bt.counts.len() / PARTS,
            list_part: bt.lists.len() / PARTS,
            ever_part: bt.ever.len() / PARTS,
            ever_count_part: bt.ever_count.len() / PARTS,
            u: Raw::new(&mut bt.u),
            a: Raw::new(&mut bt.a),
            z: Raw::new(&mut bt.z),
            da: Raw::new(&mut bt.da),
            du: Raw::new(&mut bt.du),
            r: bt.r.each_mut().map(|r| Raw::new(r)),
            z_hat: Raw::new(&mut bt.z_hat),
            norm: Raw::new(&mut bt.norm),
            d_logits: Raw::new(&mut bt.d_logits),
            dzh: Raw::new(&mut bt.dzh),
            units: Raw::new(&mut bt.units),
            unit_count: Raw::new(&mut bt.unit_count),
            seen: Raw::new(&mut bt.seen),
            lists: Raw::new(&mut bt.lists),
            counts: Raw::new(&mut bt.counts),
            ever: Raw::new(&mut bt.ever),
            ever_count: Raw::new(&mut bt.ever_count),
            sq: Raw::new(&mut bt.sq),
            l1: Raw::new(&mut bt.l1),
            proj: Raw::new(&mut bt.proj),
            rec: Raw::new(&mut bt.rec),
            ce: Raw::new(&mut bt.ce),
            preds: Raw::new(&mut bt.preds),
        }
    }
}

/// The stages of a pass, in order (see [`Pass::stage_at`]).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    /// `U = X·Eᵀ − b`, `Z_1 = relu(U)`.
    Input,
    /// `Z_{s+1} = relu(U + Z_s·Sᵀ)`.
    Recur(usize),
    /// Each part's share of `R`, ‖z^T‖² and Σ z^T.
    Residual,
    /// ẑ, R summed, ‖R‖².
    Loss,
    /// Softmax, predictions and `∂L/∂logits` (part 0); with a backward pass, `w_rec·R·D`.
    Head,
    /// `∂L/∂ẑ` and its projection on ẑ.
    Signal,
    /// `DA_T`.
    Top,
    /// `DA_s = mask_s ⊙ (DA_{s+1}·S)`.
    Back(usize),
    /// The gradient added to the target, then the projections.
    Update,
    /// `S ← (Sᵀ)ᵀ`, for the next step's backward products.
    Mirror,
}

/// Where a pass adds the minibatch's gradient.
#[derive(Clone, Copy)]
struct Update {
    target: WeightsRaw,
    scales: Scales,
    bounds: Option<Bounds>,
    /// Refresh `S` from the updated `Sᵀ` (the target is the engine's weights).
    mirror: bool,
}

/// One pass over a minibatch, cut into stages and parts (see [`parts`]): what it reads,
/// where it writes, and the unit and pixel ranges of the parts.
struct Pass<'a> {
    dims: Dims,
    k: &'a Kernels,
    lw: &'a LossWeights,
    bs: usize,
    x: &'a [f32],
    y: &'a [u8],
    w: WeightsRaw,
    /// `S` itself (the transpose of `w.st`), for the backward product.
    s: Raw<f32>,
    bt: BatchRaw,
    units: [Range<usize>; PARTS],
    pixels: [Range<usize>; PARTS],
    /// Backward pass and update, or the forward pass alone.
    update: Option<Update>,
}

impl<'a> Pass<'a> {
    /// A pass over the minibatch `(x, y)` with the weights and `S` given, in `batch`'s
    /// buffers; `update`: the backward pass and where its gradient goes, or none.
    fn new(
        dims: Dims,
        k: &'a Kernels,
        lw: &'a LossWeights,
        (x, y): (&'a [f32], &'a [u8]),
        (w, s): (WeightsRaw, Raw<f32>),
        batch: &mut Batch,
        update: Option<Update>,
    ) -> Self {
        batch.len = y.len();
        Self {
            dims,
            k,
            lw,
            bs: y.len(),
            x,
            y,
            w,
            s,
            bt: BatchRaw::new(batch),
            units: parts::split(dims.n),
            pixels: parts::split(dims.m),
            update,
        }
    }

    /// Stages in this pass.
    fn stage_count(&self) -> usize {
        let t = self.dims.t;
        match self.update {
            None => t + 3,
            Some(u) => 2 * t + 5 + usize::from(u.mirror),
        }
    }

    /// Stage `i`: the forward stages, then the backward ones from `DA_T` down to `DA_1`.
    fn stage_at(&self, i: usize) -> Stage {
        let t = self.dims.t;
        match i {
            0 => Stage::Input,
            i if i < t => Stage::Recur(i),
            i if i == t => Stage::Residual,
            i if i == t + 1 => Stage::Loss,
            i if i == t + 2 => Stage::Head,
            i if i == t + 3 => Stage::Signal,
            i if i == t + 4 => Stage::Top,
            i if i < 2 * t + 4 => Stage::Back(2 * t + 3 - i),
            i if i == 2 * t + 4 => Stage::Update,
            _ => Stage::Mirror,
        }
    }

    /// Part `p` of stage `i`.
    ///
    /// Every stage writes only part p's columns of the states (or its rows and columns of
    /// the weights, or part p's own scratch and per-part values), and reads only what no part
    /// writes in the same stage; [`parts::run`] orders the stages.
    fn run(&self, i: usize, p: usize) {
        match self.stage_at(i) {
            Stage::Input => self.input(p),
            Stage::Recur(s) => self.recur(s, p),
            Stage::Residual => self.residual(p),
            Stage::Loss => self.loss(p),
            Stage::Head => self.head(p),
            Stage::Signal => self.signal(p),
            Stage::Top => self.top(p),
            Stage::Back(s) => self.back(s, p),
            Stage::Update => self.update(p),
            Stage::Mirror => self.mirror(p),
        }
    }

    /// `C ← α·A·B + β·C`, over the depth steps `depth` alone when given (A is zero
    /// elsewhere, so those rows of B are never read).
    fn gemm(
        &self,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        depth: Option<&[u32]>,
        beta: f32,
        c: MatMut<'_>,
    ) {
        match depth {
            Some(d) => self.k.gemm_depth_subset(alpha, a, b, d, beta, c),
            None => self.k.gemm(alpha, a, b, beta, c),
        }
    }

    /// Part p's columns `units[p]` of row `row` of the bs×n matrix at `at` of `buf`, read.
    ///
    /// # Safety
    /// As [`Raw::get`].
    unsafe fn cols<'b>(&self, buf: &'b Raw<f32>, at: usize, row: usize, p: usize) -> &'b [f32] {
        let (n, us) = (self.dims.n, &self.units[p]);
        // SAFETY: forwarded to the caller.
        unsafe { buf.get(at + row * n + us.start..at + row * n + us.end) }
    }

    /// As [`Pass::cols`], written.
    ///
    /// # Safety
    /// As [`Raw::get_mut`].
    #[allow(clippy::mut_from_ref)]
    unsafe fn cols_mut<'b>(
        &self,
        buf: &'b Raw<f32>,
        at: usize,
        row: usize,
        p: usize,
    ) -> &'b mut [f32] {
        let (n, us) = (self.dims.n, &self.units[p]);
        // SAFETY: forwarded to the caller.
        unsafe { buf.get_mut(at + row * n + us.start..at + row * n + us.end) }
    }

    /// Each part's share of the active-list lengths.
    fn unit_part(&self) -> usize {
        padded::<usize>(self.dims.t)
    }

    /// Part p's list of its units active at step s, as indices into its block.
    ///
    /// # Safety
    /// Step s's lists are not being written (they are built by [`Pass::activate`]).
    unsafe fn own_units(&self, s: usize, p: usize) -> &[u32] {
        let (n, us) = (self.dims.n, &self.units[p]);
        // SAFETY: forwarded to the caller.
        unsafe {
            let at = p * self.unit_part() + s;
            let count = self.bt.unit_count.get(at..at + 1)[0];
            self.bt
                .units
                .get(s * n + us.start..s * n + us.start + count)
        }
    }

    /// Part q's units active at step s in some example, or `None` when all of them are: the
    /// depth of a product over q's block of a state.
    ///
    /// # Safety
    /// As [`Pass::own_units`].
    unsafe fn active(&self, s: usize, q: usize) -> Option<&[u32]> {
        // SAFETY: forwarded to the caller.
        let list = unsafe { self.own_units(s, q) };
        (list.len() < self.units[q].len()).then_some(list)
    }

    /// Where example b's active units of part q at step s and their number lie in `lists`
    /// and `counts` (see [`Batch`]).
    fn example_list_at(&self, s: usize, b: usize, q: usize) -> (usize, usize) {
        let row = s * self.bs + b;
        (
            q * self.bt.list_part + row * self.dims.n,
            q * self.bt.count_part + row,
        )
    }

    /// Example b's units of part q active at step s, as indices into q's block.
    ///
    /// # Safety
    /// As [`Pass::own_units`].
    unsafe fn example_units(&self, s: usize, b: usize, q: usize) -> &[u32] {
        let (list_at, count_at) = self.example_list_at(s, b, q);
        // SAFETY: forwarded to the caller.
        unsafe {
            let count = self.bt.counts.get(count_at..count_at + 1)[0];
            self.bt.lists.get(list_at..list_at + count)
        }
    }

    /// Whether the products over step s's states of part q go example by example: when the
    /// examples' own active units add up to at most [`EXAMPLE_DEPTH_MAX_SHARE`] of `bs × width`,
    /// `width` being what the minibatch-wide product would cover per example.
    ///
    /// # Safety
    /// As [`Pass::own_units`].
    unsafe fn by_example(&self, s: usize, q: usize, width: usize) -> bool {
        // SAFETY: forwarded to the caller.
        let own: usize = unsafe { (0..self.bs).map(|e| self.example_units(s, e, q).len()) }.sum();
        own as f64 <= EXAMPLE_DEPTH_MAX_SHARE * (self.bs * width) as f64
    }

    /// `C ← A·B + β·C` where row e of A is example e's state (or masked adjoint) of step s
    /// over part q's units, so zero outside the units it activates: over each example's own
    /// units when they add up to at most [`EXAMPLE_DEPTH_MAX_SHARE`] of the minibatch's
    /// (examples × units active in some example), else over the latter for all examples at
    /// once. The choice depends only on the activity, not on the thread count.
    ///
    /// # Safety
    /// As [`Pass::own_units`] for step s.
    unsafe fn state_product(
        &self,
        (s, q): (usize, usize),
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        mut c: MatMut<'_>,
    ) {
        // SAFETY: forwarded to the caller.
        unsafe {
            if !self.by_example(s, q, self.own_units(s, q).len()) {
                self.gemm(1.0, a, b, self.active(s, q), beta, c);
                return;
            }
            for e in 0..self.bs {
                let (row, rest) = c.split_at_row(1);
                let a_row = a.block(e, 0, 1, a.cols());
                self.k
                    .gemm_depth_subset(1.0, a_row, b, self.example_units(s, e, q), beta, row);
                c = rest;
            }
        }
    }

    /// Where row `row` of part p's block of an n×n matrix in part blocks (`Sᵀ`, `S`; see
    /// [`to_blocks`]) starts.
    fn weight_row_at(&self, p: usize, row: usize) -> usize {
        self.dims.n * self.units[p].start + row * self.units[p].len()
    }

    /// Where part p's block starts in a state buffer of `steps` steps (see [`Batch`]).
    fn block_at(&self, steps: usize, p: usize) -> usize {
        steps * self.bs * self.units[p].start
    }

    /// Rows `row0 .. row0 + rows` of part p's block of a state buffer of `steps` steps, read.
    ///
    /// # Safety
    /// As [`Raw::mat`].
    unsafe fn block<'b>(
        &self,
        buf: &'b Raw<f32>,
        steps: usize,
        row0: usize,
        rows: usize,
        p: usize,
    ) -> MatRef<'b> {
        let h = self.units[p].len();
        // SAFETY: forwarded to the caller.
        unsafe { buf.mat(self.block_at(steps, p) + row0 * h, rows, h, h) }
    }

    /// As [`Pass::block`], written.
    ///
    /// # Safety
    /// As [`Raw::mat_mut`].
    unsafe fn block_mut<'b>(
        &self,
        buf: &'b Raw<f32>,
        steps: usize,
        row0: usize,
        rows: usize,
        p: usize,
    ) -> MatMut<'b> {
        let h = self.units[p].len();
        // SAFETY: forwarded to the caller.
        unsafe { buf.mat_mut(self.block_at(steps, p) + row0 * h, rows, h, h) }
    }

    /// Where row `row` of part p's block of a state buffer of `steps` steps lies.
    fn own_row(&self, steps: usize, row: usize, p: usize) -> Range<usize> {
        let h = self.units[p].len();
        let at = self.block_at(steps, p) + row * h;
        at..at + h
    }

    /// Row `row` of part p's block of a state buffer of `steps` steps, read.
    ///
    /// # Safety
    /// As [`Raw::get`].
    unsafe fn own<'b>(&self, buf: &'b Raw<f32>, steps: usize, row: usize, p: usize) -> &'b [f32] {
        // SAFETY: forwarded to the caller.
        unsafe { buf.get(self.own_row(steps, row, p)) }
    }

    /// As [`Pass::own`], written.
    ///
    /// # Safety
    /// As [`Raw::get_mut`].
    #[allow(clippy::mut_from_ref)]
    unsafe fn own_mut<'b>(
        &self,
        buf: &'b Raw<f32>,
        steps: usize,
        row: usize,
        p: usize,
    ) -> &'b mut [f32] {
        // SAFETY: forwarded to the caller.
        unsafe { buf.get_mut(self.own_row(steps, row, p)) }
    }

    /// `Z_{s+1}[:, P] = relu(src[:, P])` (src is U at step 0, else the pre-activation), with
    /// the active counts and part p's list of its active units at step s.
    fn activate(&self, s: usize, p: usize) {
        let (n, t, bs, us) = (self.dims.n, self.dims.t, self.bs, self.units[p].clone());
        let bt = &self.bt;
        let src = if s == 0 { &bt.u } else { &bt.a };
        // SAFETY: part p's own scratch, states and counts; `src` is not written this stage.
        unsafe {
            let at = p * padded::<bool>(n);
            let seen = bt.seen.get_mut(at..at + us.len());
            seen.fill(false);
            for b in 0..bs {
                let a_row = self.own(src, 1, b, p);
                let z_row = self.own_mut(&bt.z, t, s * bs + b, p);
                let (list_at, count_at) = self.example_list_at(s, b, p);
                let list = bt.lists.get_mut(list_at..list_at + us.len());
                let count = self.k.relu_active(a_row, z_row, list);
                bt.counts.get_mut(count_at..count_at + 1)[0] = count;
                for &i in &list[..count] {
                    seen[i as usize] = true;
                }
            }
            let list = bt.units.get_mut(s * n + us.start..s * n + us.end);
            let mut count = 0;
            for (i, _) in seen.iter().enumerate().filter(|&(_, &on)| on) {
                list[count] = i as u32;
                count += 1;
            }
            let at = p * self.unit_part() + s;
            bt.unit_count.get_mut(at..at + 1)[0] = count;
        }
    }

    /// `U[:, P] = X·E[P]ᵀ − b[P]`, `Z_1[:, P] = relu(U[:, P])`.
    fn input(&self, p: usize) {
        let m = self.dims.m;
        let (bs, us) = (self.bs, self.units[p].clone());
        // SAFETY: part p's columns of U; its rows of E and entries of b are not written
        // during a pass's forward stages.
        unsafe {
            let bias = self.w.b.get(us.clone());
            for b in 0..bs {
                for (u, &bv) in self.own_mut(&self.bt.u, 1, b, p).iter_mut().zip(bias) {
                    *u = -bv;
                }
            }
            let e_t = self.w.e.mat(us.start * m, us.len(), m, m).t();
            let u = self.block_mut(&self.bt.u, 1, 0, bs, p);
            self.k.gemm(1.0, view(self.x, bs, m), e_t, 1.0, u);
        }
        self.activate(0, p);
    }

    /// `Z_{s+1}[:, P] = relu(U[:, P] + Z_s·Sᵀ[:, P])`, over the units active at step s.
    fn recur(&self, s: usize, p: usize) {
        let (t, bs, us) = (self.dims.t, self.bs, self.units[p].clone());
        let h = us.len();
        // SAFETY: part p's block of the pre-activation; U, the previous state, its active
        // lists and Sᵀ are not written this stage.
        unsafe {
            for b in 0..bs {
                self.own_mut(&self.bt.a, 1, b, p)
                    .copy_from_slice(self.own(&self.bt.u, 1, b, p));
            }
            // One product per part's block of Z_s, with the matching rows of Sᵀ's block p.
            for (q, uq) in self.units.iter().enumerate() {
                let prev = self.block(&self.bt.z, t, (s - 1) * bs, bs, q);
                let st = self
                    .w
                    .st
                    .mat(self.weight_row_at(p, uq.start), uq.len(), h, h);
                let a = self.block_mut(&self.bt.a, 1, 0, bs, p);
                self.state_product((s - 1, q), prev, st, 1.0, a);
            }
        }
        self.activate(s, p);
    }

    /// Part p's share of `R = Z_T·Dᵀ − X` (over its active units; part 0 also subtracts X),
    /// and of ‖z^T‖² and Σ z^T per example.
    fn residual(&self, p: usize) {
        let Dims { m, t, .. } = self.dims;
        let (bs, cap, us) = (self.bs, self.bt.stride, &self.units[p]);
        // SAFETY: part p's own residual share and per-part values; the states and Dᵀ are not
        // written this stage.
        unsafe {
            let r = self.bt.r[p].get_mut(0..bs * m);
            if p == 0 {
                for (r, &xv) in r.iter_mut().zip(self.x) {
                    *r = -xv;
                }
            } else {
                r.fill(0.0);
            }
            let z_last = self.block(&self.bt.z, t, (t - 1) * bs, bs, p);
            let dt = self.w.dt.mat(us.start * m, us.len(), m, m);
            self.state_product((t - 1, p), z_last, dt, 1.0, view_mut(r, bs, m));
            for b in 0..bs {
                let z = self.own(&self.bt.z, t, (t - 1) * bs + b, p);
                self.bt.sq.get_mut(p * cap + b..p * cap + b + 1)[0] = self.k.dot(z, z);
                self.bt.l1.get_mut(p * cap + b..p * cap + b + 1)[0] =
                    z.iter().map(|&v| f64::from(v)).sum();
            }
        }
    }

    /// ẑ over part p's units (each part forms ‖z^T‖ from the parts' shares, in part order),
    /// the residual summed over part p's pixels into part 0's share, and ‖R‖² over them.
    fn loss(&self, p: usize) {
        let Dims { m, t, .. } = self.dims;
        let (bs, cap, px) = (self.bs, self.bt.stride, self.pixels[p].clone());
        // SAFETY: part p's columns of ẑ, its pixels of R and its per-part values; the states,
        // the other parts' residual shares and the norms' shares are not written this stage.
        unsafe {
            let sq = self.bt.sq.get(0..PARTS * cap);
            for b in 0..bs {
                let norm = ((0..PARTS).map(|q| sq[q * cap + b]).sum::<f32>() + NORM_EPS).sqrt();
                if p == 0 {
                    self.bt.norm.get_mut(b..b + 1)[0] = norm;
                }
                let z = self.own(&self.bt.z, t, (t - 1) * bs + b, p);
                for (h, &v) in self.cols_mut(&self.bt.z_hat, 0, b, p).iter_mut().zip(z) {
                    *h = v / norm;
                }
                let pixels = b * m + px.start..b * m + px.end;
                let r = self.bt.r[0].get_mut(pixels.clone());
                for q in 1..PARTS {
                    for (rv, &other) in r.iter_mut().zip(self.bt.r[q].get(pixels.clone())) {
                        *rv += other;
                    }
                }
                self.bt.rec.get_mut(p * cap + b..p * cap + b + 1)[0] = f64::from(self.k.dot(r, r));
            }
        }
    }

    /// Part 0: logits, softmax, prediction and cross-entropy per example, and with a
    /// backward pass `∂L/∂logits`. Every part then starts `DA_T[:, P]` from the
    /// reconstruction (see [`Pass::reconstruction_signal`]).
    fn head(&self, p: usize) {
        let Dims { n, l, .. } = self.dims;
        let w_cls = self.lw.w_cls as f32;
        // SAFETY: part 0 alone writes the probabilities, predictions and cross-entropies;
        // each part writes its columns of DA_T; ẑ, R, C and Dᵀ are not written this stage.
        unsafe {
            if p == 0 {
                let (c, c_bias) = (self.w.c.get(0..l * n), self.w.c_bias.get(0..l));
                let bias = self.dims.classifier_bias;
                for (b, &label) in self.y.iter().enumerate() {
                    let z_hat = self.bt.z_hat.get(b * n..(b + 1) * n);
                    let probs = self.bt.d_logits.get_mut(b * l..(b + 1) * l);
                    let (pred, ce) = classify(self.k, (c, c_bias), bias, z_hat, label, probs);
                    self.bt.preds.get_mut(b..b + 1)[0] = pred as u8;
                    self.bt.ce.get_mut(b..b + 1)[0] = ce;
                    if self.update.is_some() {
                        logit_grad(w_cls, label, probs);
                    }
                }
            }
            if self.update.is_some() {
                self.reconstruction_signal(p);
            }
        }
    }

    /// `DA_T[:, P] = w_rec·R·D[:, P]`, the reconstruction's share of the top adjoint, where
    /// it matters: the top stage zeroes it outside each example's units active at step T.
    /// So when those add up to at most [`EXAMPLE_DEPTH_MAX_SHARE`] of the part's columns,
    /// each example's row is the dot products of R_b with its active units' rows of Dᵀ
    /// (zero elsewhere); otherwise one product for the minibatch.
    ///
    /// # Safety
    /// As [`Pass::head`] for part p.
    unsafe fn reconstruction_signal(&self, p: usize) {
        let Dims { m, t, .. } = self.dims;
        let (bs, us) = (self.bs, self.units[p].clone());
        let w_rec = self.lw.w_rec as f32;
        // SAFETY: forwarded to the caller.
        unsafe {
            let dt = self.w.dt.mat(us.start * m, us.len(), m, m);
            if !self.by_example(t - 1, p, us.len()) {
                let r = self.bt.r[0].mat(0, bs, m, m);
                let da = self.block_mut(&self.bt.da, t, (t - 1) * bs, bs, p);
                self.k.gemm(w_rec, r, dt.t(), 0.0, da);
                return;
            }
            for b in 0..bs {
                let rows = self.example_units(t - 1, b, p);
                let da = self.own_mut(&self.bt.da, t, (t - 1) * bs + b, p);
                let (dots, rest) = da.split_at_mut(rows.len());
                self.k
                    .gather_dots(dots, dt, rows, self.bt.r[0].get(b * m..(b + 1) * m));
                rest.fill(0.0);
                // Spread the k-th dot to its unit's place (`rows[k] >= k`, so going down
                // never overwrites a dot not yet moved).
                for (k, &i) in rows.iter().enumerate().rev() {
                    let v = da[k];
                    da[k] = 0.0;
                    da[i as usize] = w_rec * v;
                }
            }
        }
    }

    /// With a classifier loss: `∂L/∂ẑ[:, P] = (∂L/∂logits)·C[:, P]` and its projection on
    /// ẑ over part p's units.
    fn signal(&self, p: usize) {
        if self.lw.w_cls == 0.0 {
            return;
        }
        let Dims { n, l, .. } = self.dims;
        let (cap, us) = (self.bt.stride, self.units[p].clone());
        // SAFETY: part p's columns of ∂L/∂ẑ and its per-part values; C, ẑ and ∂L/∂logits are
        // not written this stage.
        unsafe {
            for b in 0..self.bs {
                let dzh = self.cols_mut(&self.bt.dzh, 0, b, p);
                dzh.fill(0.0);
                for (class, &g) in self.bt.d_logits.get(b * l..(b + 1) * l).iter().enumerate() {
                    let c_row = self.w.c.get(class * n + us.start..class * n + us.end);
                    self.k.axpy(dzh, g, c_row);
                }
                let proj = self.k.dot(dzh, self.cols(&self.bt.z_hat, 0, b, p));
                self.bt.proj.get_mut(p * cap + b..p * cap + b + 1)[0] = proj;
            }
        }
    }

    /// `DA_T[:, P] = mask_T ⊙ (w_rec·R·D + λ + (I − ẑẑᵀ)/‖z‖·Cᵀ·∂L/∂logits)[:, P]`, and
    /// `DU[:, P] = DA_T[:, P]`; the units of part p each example activates at some step
    /// before the last, for the update (see [`Pass::add_recurrent_grad`]).
    fn top(&self, p: usize) {
        let t = self.dims.t;
        let (bs, cap) = (self.bs, self.bt.stride);
        let lambda = self.lw.lambda as f32;
        // SAFETY: part p's columns of DA_T and DU and its own active lists; the states, ẑ,
        // ∂L/∂ẑ, the norms and the projections' shares are not written this stage.
        unsafe {
            for b in 0..bs {
                let da = self.own_mut(&self.bt.da, t, (t - 1) * bs + b, p);
                if self.lw.w_cls != 0.0 {
                    let proj_parts = self.bt.proj.get(0..PARTS * cap);
                    let proj = (0..PARTS).map(|q| proj_parts[q * cap + b]).sum::<f32>();
                    let inv = 1.0 / self.bt.norm.get(b..b + 1)[0];
                    let dzh = self.cols(&self.bt.dzh, 0, b, p);
                    let z_hat = self.cols(&self.bt.z_hat, 0, b, p);
                    for ((d, &g), &h) in da.iter_mut().zip(dzh).zip(z_hat) {
                        *d += (g - h * proj) * inv;
                    }
                }
                let z = self.own(&self.bt.z, t, (t - 1) * bs + b, p);
                let du = self.own_mut(&self.bt.du, 1, b, p);
                for ((d, &zv), du) in da.iter_mut().zip(z).zip(du) {
                    *d = if zv > 0.0 { *d + lambda } else { 0.0 };
                    *du = *d;
                }
                let at = p * self.bt.ever_part + b * self.dims.n;
                let list = self.bt.ever.get_mut(at..at + self.units[p].len());
                let count = self
                    .k
                    .nonzero_columns(self.steps_of(&self.bt.z, 0, b, p), list);
                let at = p * self.bt.ever_count_part + b;
                self.bt.ever_count.get_mut(at..at + 1)[0] = count;
            }
        }
    }

    /// Example b's values of T−1 consecutive steps from step `first` (0-based) in part q's
    /// block of a state buffer of T steps: T−1 rows, bs rows apart.
    ///
    /// # Safety
    /// As [`Raw::mat`].
    unsafe fn steps_of<'b>(
        &self,
        buf: &'b Raw<f32>,
        first: usize,
        b: usize,
        q: usize,
    ) -> MatRef<'b> {
        let (t, bs, hq) = (self.dims.t, self.bs, self.units[q].len());
        let at = self.block_at(t, q) + (first * bs + b) * hq;
        // SAFETY: forwarded to the caller.
        unsafe { buf.mat(at, t - 1, hq, bs * hq) }
    }

    /// The units of part q that example b activates at some step before the last, as built
    /// by [`Pass::top`].
    ///
    /// # Safety
    /// Not during the top stage.
    unsafe fn ever_active(&self, b: usize, q: usize) -> &[u32] {
        // SAFETY: forwarded to the caller.
        unsafe {
            let at = q * self.bt.ever_count_part + b;
            let count = self.bt.ever_count.get(at..at + 1)[0];
            let at = q * self.bt.ever_part + b * self.dims.n;
            self.bt.ever.get(at..at + count)
        }
    }

    /// `DA_s[:, P] = mask_s ⊙ (DA_{s+1}·S[:, P])` (over the units active at step s+1), and
    /// `DU[:, P] += DA_s[:, P]`.
    fn back(&self, s: usize, p: usize) {
        let (t, bs, us) = (self.dims.t, self.bs, self.units[p].clone());
        let h = us.len();
        // SAFETY: part p's blocks of DA_s and DU; DA_{s+1}, its active lists, the states and
        // S are not written this stage.
        unsafe {
            // One product per part's block of DA_{s+1}, with the matching rows of S's block p.
            for (q, uq) in self.units.iter().enumerate() {
                let upper = self.block(&self.bt.da, t, (s + 1) * bs, bs, q);
                let s_mat = self.s.mat(self.weight_row_at(p, uq.start), uq.len(), h, h);
                let cur = self.block_mut(&self.bt.da, t, s * bs, bs, p);
                let beta = if q == 0 { 0.0 } else { 1.0 };
                self.state_product((s + 1, q), upper, s_mat, beta, cur);
            }
            for b in 0..bs {
                let cur = self.own_mut(&self.bt.da, t, s * bs + b, p);
                let z = self.own(&self.bt.z, t, s * bs + b, p);
                for ((d, &zv), du) in cur
                    .iter_mut()
                    .zip(z)
                    .zip(self.own_mut(&self.bt.du, 1, b, p))
                {
                    *d = if zv > 0.0 { *d } else { 0.0 };
                    *du += *d;
                }
            }
        }
    }

    /// Adds `scale × gradient` of the minibatch to part p's share of the target (its
    /// columns of Sᵀ, rows of E and Dᵀ, entries of b; part 0 also C and c), then projects
    /// the rows it owns when the update carries bounds.
    fn update(&self, p: usize) {
        let Some(Update {
            target: tw,
            scales,
            bounds,
            ..
        }) = self.update
        else {
            return;
        };
        let Dims { m, n, l, t, .. } = self.dims;
        let (bs, us) = (self.bs, self.units[p].clone());
        let h = us.len();
        let k = self.k;
        // SAFETY: part p's columns of Sᵀ, rows of E and Dᵀ and entries of b, and (part 0) C
        // and c; the states, adjoints, R, ẑ and ∂L/∂logits are not written this stage.
        unsafe {
            self.add_recurrent_grad(p, scales.s, tw.st);
            // ∂L/∂E = DUᵀ·X, then the E-row bound.
            let du_t = self.block(&self.bt.du, 1, 0, bs, p).t();
            let e = tw.e.mat_mut(us.start * m, h, m, m);
            k.gemm(scales.e, du_t, view(self.x, bs, m), 1.0, e);
            // ∂L/∂Dᵀ = w_rec·Z_Tᵀ·R, then the column bound on every row, changed or not: a
            // rescaled row can come out an ulp above the bound, and projecting it again only
            // when it next changes would make the parameters depend on that history, which a
            // checkpoint does not hold (a resumed run would then differ from an unbroken one).
            let zt_t = self.block(&self.bt.z, t, (t - 1) * bs, bs, p).t();
            let r = self.bt.r[0].mat(0, bs, m, m);
            let dt = tw.dt.mat_mut(us.start * m, h, m, m);
            k.gemm(scales.d * self.lw.w_rec as f32, zt_t, r, 1.0, dt);
            if let Some(bounds) = bounds {
                for row in tw.e.get_mut(us.start * m..us.end * m).chunks_exact_mut(m) {
                    clip_norm(k, row, bounds.e_row);
                }
                for row in tw.dt.get_mut(us.start * m..us.end * m).chunks_exact_mut(m) {
                    clip_norm(k, row, bounds.d_col);
                }
            }
            // ∂L/∂b = −Σ_b DU_b.
            let bias = tw.b.get_mut(us.clone());
            for b in 0..bs {
                for (bv, &d) in bias.iter_mut().zip(self.own(&self.bt.du, 1, b, p)) {
                    *bv -= scales.b * d;
                }
            }
            if p != 0 {
                return;
            }
            // ∂L/∂C = Σ_b (∂L/∂logits)_b·ẑ_bᵀ, ∂L/∂c = Σ_b (∂L/∂logits)_b (both zero without
            // a classifier loss; the bias only when it is switched on).
            let c = tw.c.get_mut(0..l * n);
            if self.lw.w_cls != 0.0 {
                let dl = self.bt.d_logits.get(0..bs * l);
                let z_hat = self.bt.z_hat.get(0..bs * n);
                let c_bias = tw.c_bias.get_mut(0..l);
                add_classifier_grad(k, self.dims, scales, dl, z_hat, c, c_bias);
            }
            if let Some(bounds) = bounds {
                for row in c.chunks_exact_mut(n) {
                    clip_norm(k, row, bounds.c_row);
                }
            }
        }
    }

    /// Adds `scale × ∂L/∂Sᵀ[:, P]` (`Σ_t Z_tᵀ·DA_{t+1}`) to `st`'s columns of part p.
    ///
    /// An example's rows of `Z_t` are zero outside the units it activates at some step, so
    /// when the examples' own active sets add up to at most [`ROWS_MAX_SHARE`] of the
    /// minibatch's rows, each example's product runs over its own units' rows of Sᵀ;
    /// otherwise one dense product runs over the stacked steps. Either way the choice and
    /// the arithmetic depend only on the states, not on the thread count.
    ///
    /// # Safety
    /// As [`Pass::update`]: only part p's columns of `st` are written, and the states,
    /// adjoints and active lists are not.
    unsafe fn add_recurrent_grad(&self, p: usize, scale: f32, st: Raw<f32>) {
        let Dims { n, t, .. } = self.dims;
        let (bs, us) = (self.bs, self.units[p].clone());
        let h = us.len();
        // Rows `units[q]` of Sᵀ's block p.
        let st_q = |uq: &Range<usize>| {
            // SAFETY: part p's block of Sᵀ (the caller's promise).
            unsafe { st.mat_mut(self.weight_row_at(p, uq.start), uq.len(), h, h) }
        };
        // SAFETY: the states, adjoints and active lists are not written this stage.
        unsafe {
            let total: usize = (0..bs)
                .flat_map(|b| (0..PARTS).map(move |q| (b, q)))
                .map(|(b, q)| self.ever_active(b, q).len())
                .sum();
            if (total as f64) <= ROWS_MAX_SHARE * (bs * n) as f64 {
                for b in 0..bs {
                    // Example b's states of steps 1..T−1 and adjoints of steps 2..T.
                    let da_b = self.steps_of(&self.bt.da, 1, b, p);
                    for (q, uq) in self.units.iter().enumerate() {
                        let z_b = self.steps_of(&self.bt.z, 0, b, q);
                        let rows = self.ever_active(b, q);
                        self.k.gemm_tn_rows(scale, z_b, da_b, rows, st_q(uq));
                    }
                }
            } else {
                let depth = (t - 1) * bs;
                let da_steps = self.block(&self.bt.da, t, bs, depth, p);
                for (q, uq) in self.units.iter().enumerate() {
                    let z_steps = self.block(&self.bt.z, t, 0, depth, q).t();
                    self.k.gemm(scale, z_steps, da_steps, 1.0, st_q(uq));
                }
            }
        }
    }

    /// `S[:, P] ← (Sᵀ[P, :])ᵀ`: part p's columns of S, from its units' rows of Sᵀ (which
    /// every part's update wrote).
    fn mirror(&self, p: usize) {
        let us = &self.units[p];
        // Rows `units[q]` of S's block p are the transpose of rows `units[p]` of Sᵀ's block q.
        for (q, uq) in self.units.iter().enumerate() {
            // SAFETY: part p's block of S; Sᵀ is not written this stage.
            unsafe {
                let at = self.weight_row_at(q, us.start);
                let src = self.w.st.mat(at, us.len(), uq.len(), uq.len());
                let at = self.weight_row_at(p, uq.start);
                let dst = self.s.mat_mut(at, uq.len(), us.len(), us.len());
                self.k.transpose(src, dst);
            }
        }
    }
}

/// Logits `C·ẑ + c` of one code (c added when `bias` is on), turned in place into softmax
/// probabilities (the maximum subtracted for stability). Returns the predicted class (first
/// on ties) and the cross-entropy of `label`.
fn classify(
    k: &Kernels,
    (c, c_bias): (&[f32], &[f32]),
    bias: bool,
    z_hat: &[f32],
    label: u8,
    probs: &mut [f32],
) -> (usize, f64) {
    let n = z_hat.len();
    for (class, logit) in probs.iter_mut().enumerate() {
        let b = if bias { c_bias[class] } else { 0.0 };
        *logit = b + k.dot(&c[class * n..(class + 1) * n], z_hat);
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

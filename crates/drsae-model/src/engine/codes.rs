//! Phase 2 with a frozen encoder (`train_encoder_phase2 = false`, the linear-classifier
//! baseline). The code ẑ of every example is then fixed, so it is computed once per split
//! and the classifier trains on the cached codes: an epoch costs the classifier's arithmetic
//! (≈ 2·l·n per example) instead of the encoder's (≈ 12.8 MFLOP per example at n = 400),
//! and E, S, b and D are left bit-for-bit untouched.

use super::{
    Engine, EngineError, Evaluation, Scales, add_classifier_grad, check_batch, classify, clip_norm,
    logit_grad,
};
use crate::config::{LossWeights, Phase};
use crate::engine::Activity;
use crate::reference::LossTerms;

/// The normalised codes ẑ = z^T/‖z^T‖ of a split, with what the encoder contributes to its
/// loss (constant while the encoder is frozen).
#[derive(Clone, Debug, Default)]
pub struct Codes {
    /// examples × n_hidden, row-major.
    pub z_hat: Vec<f32>,
    /// Reconstruction and sparsity terms summed over the split (classification excluded).
    pub encoder_loss: LossTerms,
    /// Activity per step over the split.
    pub activity: Activity,
}

impl Engine {
    /// Encodes a split (`x`: examples × n_input) with the current encoder, in the fixed
    /// chunks of [`Engine::evaluate`].
    pub fn encode(
        &mut self,
        x: &[f32],
        y: &[u8],
        weights: &LossWeights,
    ) -> Result<Codes, EngineError> {
        let (eval, z_hat) = self.forward_split(x, y, weights, true)?;
        Ok(Codes {
            z_hat,
            encoder_loss: LossTerms {
                cls: 0.0,
                errors: 0,
                ..eval.loss
            },
            activity: eval.activity,
        })
    }

    /// One SGD update of the classifier alone on a minibatch of cached codes (`z_hat`:
    /// batch × n_hidden), as update number `k`: what [`Engine::train_step`] does to C and c
    /// when the encoder is frozen, example by example in the same order. Returns the
    /// classification loss and errors, computed before the update.
    pub fn classifier_step(
        &mut self,
        z_hat: &[f32],
        y: &[u8],
        phase: Phase,
        k: u64,
    ) -> Result<LossTerms, EngineError> {
        let dims = self.dims;
        check_batch(z_hat, y, dims.n, dims)?;
        let cfg = &self.config;
        let lr = cfg.learning_rate_at(k);
        let w_cls = cfg.w_cls(phase);
        let scales = Scales {
            c: (-lr * cfg.mult_c) as f32,
            c_bias: (-lr * cfg.mult_c_bias) as f32,
            ..Scales::ZEROS
        };
        let project = crate::optim::should_project(cfg, k).then_some(cfg.c_row_bound as f32);
        let kernels = self.kernels;
        let probs = &mut self.logits_scratch;
        probs.resize(y.len() * dims.l, 0.0);
        let mut loss = LossTerms::default();
        for ((p, z), &label) in probs
            .chunks_exact_mut(dims.l)
            .zip(z_hat.chunks_exact(dims.n))
            .zip(y)
        {
            let classifier = (&self.w.c[..], &self.w.c_bias[..]);
            let (pred, ce) = classify(kernels, classifier, dims.classifier_bias, z, label, p);
            loss.cls += w_cls * ce;
            loss.errors += usize::from(pred != label as usize);
            logit_grad(w_cls as f32, label, p);
        }
        if w_cls != 0.0 {
            let w = &mut self.w;
            add_classifier_grad(kernels, dims, scales, probs, z_hat, &mut w.c, &mut w.c_bias);
        }
        if let Some(bound) = project {
            for row in self.w.c.chunks_exact_mut(dims.n) {
                clip_norm(kernels, row, bound);
            }
        }
        Ok(loss)
    }

    /// Classification loss, errors and predictions of cached codes under the current
    /// classifier (the encoder's terms are in [`Codes::encoder_loss`]).
    pub fn evaluate_codes(
        &mut self,
        z_hat: &[f32],
        y: &[u8],
        weights: &LossWeights,
    ) -> Result<Evaluation, EngineError> {
        let dims = self.dims;
        check_batch(z_hat, y, dims.n, dims)?;
        let mut eval = Evaluation {
            predictions: Vec::with_capacity(y.len()),
            ..Evaluation::default()
        };
        let probs = &mut self.logits_scratch;
        probs.resize(dims.l, 0.0);
        for (z, &label) in z_hat.chunks_exact(dims.n).zip(y) {
            let classifier = (&self.w.c[..], &self.w.c_bias[..]);
            let (pred, ce) = classify(
                self.kernels,
                classifier,
                dims.classifier_bias,
                z,
                label,
                probs,
            );
            eval.loss.cls += weights.w_cls * ce;
            eval.loss.errors += usize::from(pred != label as usize);
            eval.predictions.push(pred as u8);
        }
        Ok(eval)
    }
}

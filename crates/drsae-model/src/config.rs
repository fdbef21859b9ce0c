//! Every hyperparameter of the model and its training schedule, as one flat, validated struct.
//!
//! The fields are flat (no nested tables) so that a sweep tool can set any of them by name.
//! Defaults follow `docs/drsae-spec.md`: MNIST, n = 400, T = 11, the authors' code values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The two training phases of spec §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Phase 1: unsupervised pretraining (reconstruction + sparsity, `w_cls_phase1`).
    Pretrain,
    /// Phase 2: discriminative fine-tuning (the full loss, `w_cls_phase2`).
    Finetune,
}

impl Phase {
    /// The lowercase name used in TOML, JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pretrain => "pretrain",
            Phase::Finetune => "finetune",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pretrain" => Ok(Phase::Pretrain),
            "finetune" => Ok(Phase::Finetune),
            other => Err(format!(
                "unknown phase `{other}` (expected `pretrain` or `finetune`)"
            )),
        }
    }
}

/// The weights of the three loss terms of spec §3 for one phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossWeights {
    /// Weight of the reconstruction term `½‖x − x̂‖²`.
    pub w_rec: f64,
    /// Weight λ of the sparsity term `‖z^T‖₁`.
    pub lambda: f64,
    /// Weight of the cross-entropy term.
    pub w_cls: f64,
}

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field holds a value the model cannot use.
    #[error("field `{field}` {requirement}, got {value}")]
    Invalid {
        /// The field's name, as spelled in TOML.
        field: &'static str,
        /// What the field must satisfy, e.g. "must be a finite number ≥ 0".
        requirement: &'static str,
        /// The offending value, formatted.
        value: String,
    },
    /// The text is not TOML or does not match the fields; toml's message keeps line and column.
    #[error("invalid config TOML: {0}")]
    Parse(#[from] toml::de::Error),
    /// The config could not be written as TOML.
    #[error("cannot write config as TOML: {0}")]
    Serialize(#[from] toml::ser::Error),
}

/// All hyperparameters (spec §2–§6). Every value the spec names is a field here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Input dimension m (784 for MNIST).
    pub n_input: usize,
    /// Number of hidden units n.
    pub n_hidden: usize,
    /// Number of classes l.
    pub n_classes: usize,
    /// T: the number of rectifications (T − 1 passes through S).
    pub n_steps: usize,
    /// Weight of the reconstruction loss.
    pub w_rec: f64,
    /// Weight λ of the L1 sparsity loss on z^T.
    pub lambda: f64,
    /// Classification loss weight in phase 1.
    pub w_cls_phase1: f64,
    /// Classification loss weight in phase 2.
    pub w_cls_phase2: f64,
    /// Whether the classifier has a bias c (the authors' code: yes; the paper: no).
    pub classifier_bias: bool,
    /// Whether phase 2 trains E, S, b and D as well as the classifier, as the paper does.
    /// `false` trains only C and c in phase 2, on the frozen pretrained code: the
    /// linear-classifier baseline. Left out of the TOML when true, so that configs (and
    /// sweep run ids, which hash them) written before the field existed are unchanged.
    #[serde(skip_serializing_if = "is_true")]
    pub train_encoder_phase2: bool,
    /// α = alpha_scale / n_steps: the ISTA step of the initialisation.
    pub alpha_scale: f64,
    /// Weight of the random training image added to each initial decoder column.
    pub template_weight: f64,
    /// Initial value of every entry of the threshold b (spec §4: 1e-5).
    pub b_init: f64,
    /// Bound on the L2 norm of each decoder column D_i.
    pub d_col_bound: f64,
    /// Bound on the L2 norm of each encoder row E_i; `None` means α (the code's 1.25/11).
    pub e_row_bound: Option<f64>,
    /// Bound on the L2 norm of each classifier row C_k.
    pub c_row_bound: f64,
    /// Initial learning rate η₀.
    pub learning_rate: f64,
    /// Decay in η_k = learning_rate / (1 + lr_decay·k).
    pub lr_decay: f64,
    /// Gradient multiplier for E; `None` means 1/T.
    pub mult_e: Option<f64>,
    /// Gradient multiplier for b; `None` means 1/T.
    pub mult_b: Option<f64>,
    /// Gradient multiplier for S; `None` means 1/max(T − 1, 1).
    pub mult_s: Option<f64>,
    /// Gradient multiplier for D.
    pub mult_d: f64,
    /// Gradient multiplier for C.
    pub mult_c: f64,
    /// Gradient multiplier for the classifier bias c.
    pub mult_c_bias: f64,
    /// Project the constrained parameters after every this many updates (the code used 5).
    pub projection_interval: usize,
    /// Examples per minibatch.
    pub batch_size: usize,
    /// Epochs of phase 1.
    pub epochs_phase1: usize,
    /// Maximum epochs of phase 2.
    pub epochs_phase2: usize,
    /// Measure validation error every this many epochs.
    pub valid_interval: usize,
    /// Early stopping: end phase 2 once this many epochs have passed since the best
    /// validation error without a better one. `None` runs every epoch of phase 2; either way
    /// the best-on-validation checkpoint is the result.
    pub patience: Option<usize>,
    /// Seed of every random choice (initialisation, shuffling).
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            n_input: 784,
            n_hidden: 400,
            n_classes: 10,
            n_steps: 11,
            w_rec: 5.0,
            lambda: 0.09,
            w_cls_phase1: 0.0,
            w_cls_phase2: 1.0,
            classifier_bias: true,
            train_encoder_phase2: true,
            alpha_scale: 1.25,
            template_weight: 0.25,
            b_init: 1e-5,
            d_col_bound: 1.0,
            e_row_bound: None,
            c_row_bound: 5.0,
            learning_rate: 5e-3,
            lr_decay: 5e-6,
            mult_e: None,
            mult_b: None,
            mult_s: None,
            mult_d: 1.0,
            mult_c: 0.2,
            mult_c_bias: 0.2,
            projection_interval: 1,
            batch_size: 10,
            epochs_phase1: 100,
            epochs_phase2: 1000,
            valid_interval: 2,
            patience: None,
            seed: 0,
        }
    }
}

/// Requirement texts, shared so that every message for the same rule reads the same.
const FINITE_NON_NEGATIVE: &str = "must be a finite number ≥ 0";
const FINITE_POSITIVE: &str = "must be a finite number > 0";
const POSITIVE_BOUND: &str = "must be a number > 0 (inf disables the projection)";
const POSITIVE_INTEGER: &str = "must be ≥ 1";

fn invalid(
    field: &'static str,
    requirement: &'static str,
    value: impl fmt::Display,
) -> ConfigError {
    ConfigError::Invalid {
        field,
        requirement,
        value: value.to_string(),
    }
}

fn check_non_negative(field: &'static str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(invalid(field, FINITE_NON_NEGATIVE, v))
    }
}

fn check_positive(field: &'static str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(field, FINITE_POSITIVE, v))
    }
}

/// Norm bounds may be +inf (no constraint) but never ≤ 0 or NaN.
fn check_bound(field: &'static str, v: f64) -> Result<(), ConfigError> {
    if v > 0.0 {
        Ok(())
    } else {
        Err(invalid(field, POSITIVE_BOUND, v))
    }
}

fn check_at_least_one(field: &'static str, v: usize) -> Result<(), ConfigError> {
    if v >= 1 {
        Ok(())
    } else {
        Err(invalid(field, POSITIVE_INTEGER, v))
    }
}

impl Config {
    /// α = alpha_scale / n_steps (spec §4: 1.25 / number of rectifications).
    pub fn alpha(&self) -> f64 {
        self.alpha_scale / self.n_steps as f64
    }

    /// The bound on encoder row norms: the field, or α when unset.
    pub fn e_row_bound(&self) -> f64 {
        self.e_row_bound.unwrap_or_else(|| self.alpha())
    }

    /// Gradient multiplier for E: the field, or 1/T ("scaled down by the number of repeats").
    pub fn mult_e(&self) -> f64 {
        self.mult_e.unwrap_or(1.0 / self.n_steps as f64)
    }

    /// Gradient multiplier for b: the field, or 1/T.
    pub fn mult_b(&self) -> f64 {
        self.mult_b.unwrap_or(1.0 / self.n_steps as f64)
    }

    /// Gradient multiplier for S: the field, or 1/(T − 1); S is used T − 1 times, and the
    /// max(·, 1) keeps T = 1 (where S is unused and its gradient is zero) finite.
    pub fn mult_s(&self) -> f64 {
        self.mult_s
            .unwrap_or(1.0 / self.n_steps.saturating_sub(1).max(1) as f64)
    }

    /// Factor on the learning rate of E, S, b and D in a phase: 0 in phase 2 when the
    /// encoder is frozen (`train_encoder_phase2 = false`), else 1.
    pub fn encoder_rate_factor(&self, phase: Phase) -> f64 {
        if phase == Phase::Finetune && !self.train_encoder_phase2 {
            0.0
        } else {
            1.0
        }
    }

    /// Whether phase 1 of a run with `other` computes exactly what phase 1 with `self` does,
    /// so that both can start phase 2 from one pretrained checkpoint: they may differ only
    /// in fields that phase 2 alone reads.
    pub fn same_phase1(&self, other: &Config) -> bool {
        let phase1_only = |c: &Config| {
            let mut p = Config {
                w_cls_phase2: 0.0,
                train_encoder_phase2: true,
                epochs_phase2: 0,
                valid_interval: 1,
                patience: None,
                ..c.clone()
            };
            // Without a classification loss in phase 1 the classifier never changes there:
            // its rows start at unit norm, so a bound clearly above that never acts either.
            if c.w_cls_phase1 == 0.0 && c.c_row_bound > 1.001 {
                p.c_row_bound = f64::INFINITY;
                p.mult_c = 0.0;
                p.mult_c_bias = 0.0;
                p.classifier_bias = true;
            }
            p
        };
        phase1_only(self) == phase1_only(other)
    }

    /// The classification weight of a phase.
    pub fn w_cls(&self, phase: Phase) -> f64 {
        match phase {
            Phase::Pretrain => self.w_cls_phase1,
            Phase::Finetune => self.w_cls_phase2,
        }
    }

    /// The loss weights in force during `phase`.
    pub fn loss_weights(&self, phase: Phase) -> LossWeights {
        LossWeights {
            w_rec: self.w_rec,
            lambda: self.lambda,
            w_cls: self.w_cls(phase),
        }
    }

    /// η_k = learning_rate / (1 + lr_decay·k), k = minibatch updates since phase 1 began.
    pub fn learning_rate_at(&self, k: u64) -> f64 {
        self.learning_rate / (1.0 + self.lr_decay * k as f64)
    }

    /// Rejects values the model cannot use; the error names the field and the value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_at_least_one("n_input", self.n_input)?;
        check_at_least_one("n_hidden", self.n_hidden)?;
        if self.n_classes < 2 {
            return Err(invalid("n_classes", "must be ≥ 2", self.n_classes));
        }
        // Labels are stored as u8, so more than 256 classes could never be addressed.
        if self.n_classes > 256 {
            return Err(invalid(
                "n_classes",
                "must be ≤ 256 (labels are u8)",
                self.n_classes,
            ));
        }
        check_at_least_one("n_steps", self.n_steps)?;
        check_non_negative("w_rec", self.w_rec)?;
        check_non_negative("lambda", self.lambda)?;
        check_non_negative("w_cls_phase1", self.w_cls_phase1)?;
        check_non_negative("w_cls_phase2", self.w_cls_phase2)?;
        check_positive("alpha_scale", self.alpha_scale)?;
        check_non_negative("template_weight", self.template_weight)?;
        // b may take either sign during training, so its start only has to be finite.
        if !self.b_init.is_finite() {
            return Err(invalid("b_init", "must be a finite number", self.b_init));
        }
        check_bound("d_col_bound", self.d_col_bound)?;
        if let Some(v) = self.e_row_bound {
            check_bound("e_row_bound", v)?;
        }
        check_bound("c_row_bound", self.c_row_bound)?;
        check_positive("learning_rate", self.learning_rate)?;
        check_non_negative("lr_decay", self.lr_decay)?;
        if let Some(v) = self.mult_e {
            check_non_negative("mult_e", v)?;
        }
        if let Some(v) = self.mult_b {
            check_non_negative("mult_b", v)?;
        }
        if let Some(v) = self.mult_s {
            check_non_negative("mult_s", v)?;
        }
        check_non_negative("mult_d", self.mult_d)?;
        check_non_negative("mult_c", self.mult_c)?;
        check_non_negative("mult_c_bias", self.mult_c_bias)?;
        check_at_least_one("projection_interval", self.projection_interval)?;
        check_at_least_one("batch_size", self.batch_size)?;
        check_at_least_one("valid_interval", self.valid_interval)?;
        // A patience shorter than the validation interval would stop before the next
        // measurement could improve on the best.
        if let Some(p) = self.patience
            && p < self.valid_interval
        {
            return Err(invalid(
                "patience",
                "must be ≥ valid_interval (epochs between validations)",
                p,
            ));
        }
        // TOML integers are signed 64-bit, so a larger seed could not be saved in a checkpoint.
        if self.seed > i64::MAX as u64 {
            return Err(invalid(
                "seed",
                "must be ≤ 9223372036854775807 (TOML integers are signed 64-bit)",
                self.seed,
            ));
        }
        Ok(())
    }

    /// Parses TOML (absent fields take their defaults, unknown fields are errors) and validates.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Writes every set field as TOML; unset `Option` fields are omitted and so stay unset.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }
}

/// For `skip_serializing_if`: a flag at its default of true.
fn is_true(v: &bool) -> bool {
    *v
}

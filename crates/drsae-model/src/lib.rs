//! The DrSAE model (Rolfe & LeCun, ICLR 2013) as `docs/drsae-spec.md` defines it.
//!
//! - [`config`]: every hyperparameter, validated; TOML in and out.
//! - [`params`]: E, S, b, D, C, c as row-major vectors; gradients share the type.
//! - [`reference`](mod@reference): the f64 oracle (forward, loss, analytic BPTT), one example at a time.
//! - [`init`]: the spec §4 initialisation (encoder starts as non-negative ISTA).
//! - [`optim`]: SGD with per-parameter multipliers, and the norm projections.
//! - [`engine`]: the fast f32 minibatch engine, sparse and parallel, checked against the reference.
//! - [`checkpoint`]: atomic safetensors checkpoints with config and training state.
//!
//! All SIMD lives in `drsae-kernels`; this crate never calls `std::arch` itself.

pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod init;
pub mod optim;
pub mod params;
pub mod reference;

pub use config::{Config, ConfigError, LossWeights, Phase};
pub use params::{Grads, Params, Scalar};

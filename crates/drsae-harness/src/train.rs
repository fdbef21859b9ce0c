//! `drsae train`: the spec's two-phase schedule with validation, checkpoints, resumption,
//! per-epoch metrics and a final `result.json` that the sweep harness reads.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::Args;
use drsae_data::batch::{BatchBuf, EpochBatches};
use drsae_data::mnist::{Dataset, Split};
use drsae_model::checkpoint::{self, Checkpoint, TrainState};
use drsae_model::config::{Config, Phase};
use drsae_model::engine::{Activity, Codes, Engine};
use drsae_model::init::initialize;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::cli_data::DataArgs;
use crate::fsutil::write_atomic;

/// Exit code of a run stopped by a NaN or infinite loss.
pub const EXIT_DIVERGED: u8 = 3;
/// Exit code of a run stopped by SIGINT or SIGTERM (after saving the last completed epoch).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Flags of `drsae train`.
#[derive(Clone, Debug, Args)]
pub struct TrainArgs {
    /// Run configuration (any field of the model's Config; missing fields take the paper's
    /// defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override a config field, e.g. `--set lambda=0.05` (repeatable; TOML values).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub overrides: Vec<String>,
    /// Folder for the run: config, metrics, checkpoints, result.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Continue from `OUT/checkpoint-last.safetensors` if it exists (else start afresh).
    #[arg(long)]
    pub resume: bool,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Start phase 2 from this end-of-phase-1 checkpoint (another run's
    /// `pretrained.safetensors`) instead of pretraining; its configuration must agree on every
    /// field phase 1 reads. The result is bit-identical to pretraining here. Ignored when
    /// `--resume` finds a checkpoint.
    #[arg(long, value_name = "FILE")]
    pub pretrained: Option<PathBuf>,
    /// Dataset location and options.
    #[command(flatten)]
    pub data: DataArgs,
}

/// What `result.json` says about a run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// `finished`, `diverged`, `interrupted` or `failed`.
    pub status: String,
    /// A sentence on how the run ended.
    pub message: String,
    /// Best validation error (fraction) over phase 2.
    pub best_valid_error: Option<f64>,
    /// Phase-2 epoch of the best validation error.
    pub best_epoch: Option<u64>,
    /// Test error (fraction) of the best-on-validation parameters.
    pub test_error_at_best: Option<f64>,
    /// Epochs completed, both phases.
    pub epochs_run: u64,
    /// Wall time of this process's training, seconds (summed over resumptions, and
    /// including the pretraining of a `--pretrained` checkpoint).
    pub wall_s: f64,
    /// Wall time when the best validation error was measured.
    #[serde(default)]
    pub wall_s_at_best: Option<f64>,
    /// Mean training throughput, examples per second.
    pub examples_per_s: f64,
    /// Kernel set used.
    pub kernel: String,
    /// Worker threads.
    pub threads: usize,
}

/// Errors that end a run before or during training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Configuration problem (file, field or override).
    #[error("{0}")]
    Config(String),
    /// Data problem.
    #[error(transparent)]
    Data(#[from] drsae_data::DataError),
    /// Checkpoint problem.
    #[error(transparent)]
    Checkpoint(#[from] drsae_model::checkpoint::CheckpointError),
    /// Engine problem.
    #[error(transparent)]
    Engine(#[from] drsae_model::engine::EngineError),
    /// File-system problem, with the path.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a config file (or the defaults) and applies `FIELD=VALUE` overrides, then validates.
pub fn load_config(path: Option<&Path>, overrides: &[String]) -> Result<Config, TrainError> {
    let text = match path {
        Some(p) => fs::read_to_string(p).map_err(io_err(p))?,
        None => String::new(),
    };
    let mut table: toml::Table = text.parse().map_err(|e| {
        TrainError::Config(format!(
            "{}: {e}",
            path.map_or("<defaults>".into(), |p| p.display().to_string())
        ))
    })?;
    for o in overrides {
        let (key, value) = o.split_once('=').ok_or_else(|| {
            TrainError::Config(format!("override `{o}` is not of the form FIELD=VALUE"))
        })?;
        let parsed: toml::Table = format!("v = {value}")
            .parse()
            .or_else(|_| format!("v = \"{value}\"").parse())
            .map_err(|e| TrainError::Config(format!("override `{o}`: {e}")))?;
        table.insert(key.trim().to_string(), parsed["v"].clone());
    }
    let name = path.map_or("<command line>".into(), |p| p.display().to_string());
    Config::from_toml_str(&table.to_string())
        .map_err(|e| TrainError::Config(format!("{name}: {e}")))
}

/// Names of the files a run folder holds.
pub mod files {
    /// Resolved configuration.
    pub const CONFIG: &str = "config.toml";
    /// Per-epoch metrics.
    pub const METRICS: &str = "metrics.csv";
    /// Checkpoint after the last completed epoch.
    pub const LAST: &str = "checkpoint-last.safetensors";
    /// Best-on-validation checkpoint (phase 2).
    pub const BEST: &str = "checkpoint-best.safetensors";
    /// Checkpoint at the end of phase 1.
    pub const PRETRAINED: &str = "pretrained.safetensors";
    /// Final status.
    pub const RESULT: &str = "result.json";
}

const METRICS_HEADER: &str = "phase,epoch,updates,loss_total,loss_rec,loss_sparsity,loss_cls,active_per_step,train_error,valid_error,test_error,learning_rate,examples_per_s,wall_s";

/// Runs `drsae train`; returns the process exit code.
pub fn run_train(args: &TrainArgs, stop: Arc<AtomicBool>) -> Result<u8, TrainError> {
    let config = load_config(args.config.as_deref(), &args.overrides)?;
    fs::create_dir_all(&args.out).map_err(io_err(&args.out))?;
    let last_path = args.out.join(files::LAST);
    let resumed = if args.resume && last_path.exists() {
        let ckpt = checkpoint::load(&last_path)?;
        if ckpt.config != config {
            return Err(TrainError::Config(format!(
                "{} was written with a different configuration than the one given; \
                 use a new --out folder or the same config",
                last_path.display()
            )));
        }
        Some(ckpt)
    } else {
        None
    };
    let text = config
        .to_toml_string()
        .map_err(|e| TrainError::Config(e.to_string()))?;
    write_atomic(&args.out.join(files::CONFIG), text.as_bytes()).map_err(io_err(&args.out))?;
    let data = args.data.load()?;
    if data.train.dim != config.n_input {
        return Err(TrainError::Config(format!(
            "field `n_input` is {} but the images have {} pixels",
            config.n_input, data.train.dim
        )));
    }
    let threads = args.threads.unwrap_or_else(crate::default_threads);
    let shared = match (&resumed, &args.pretrained) {
        (None, Some(file)) => Some(load_pretrained(file, &config, &args.out)?),
        _ => None,
    };
    let start_from_shared = shared.is_some();
    let (params, state) = match resumed.or(shared) {
        Some(ckpt) => (ckpt.params, ckpt.state),
        None => {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
            let params = initialize(&config, &data.train.images, &mut rng);
            let state = TrainState {
                phase: Phase::Pretrain,
                epoch: 0,
                updates: 0,
                seed: config.seed,
                best_valid_error: None,
                best_epoch: None,
                best_test_error: None,
                wall_s: 0.0,
                best_wall_s: None,
                examples_trained: 0,
                train_s: 0.0,
            };
            (params, state)
        }
    };
    let engine = Engine::new(&params, &config, threads)?;
    let mut run = Run {
        out: args.out.clone(),
        config,
        engine,
        data,
        state,
        stop,
        progress: crate::progress::Progress::new(),
        frozen: None,
    };
    if start_from_shared {
        // The run's own copy, under its own configuration, so that it is complete by itself
        // (for `drsae analyze`, or as the pretrained checkpoint of a later run).
        run.save(files::PRETRAINED)?;
    }
    run.truncate_metrics()?;
    run.execute()
}

/// Loads an end-of-phase-1 checkpoint for `--pretrained` after checking that it is one and
/// that its phase 1 is this config's. Copies its run's phase-1 metrics rows into `out`, so
/// the new run's metrics cover both phases.
fn load_pretrained(file: &Path, config: &Config, out: &Path) -> Result<Checkpoint, TrainError> {
    let ckpt = checkpoint::load(file)?;
    let reject = |why: &str| {
        Err(TrainError::Config(format!(
            "--pretrained {}: {why}",
            file.display()
        )))
    };
    if config.epochs_phase1 == 0 {
        return reject("this config has no phase 1 (epochs_phase1 = 0) to skip");
    }
    if ckpt.state.phase != Phase::Pretrain || ckpt.state.epoch != config.epochs_phase1 as u64 {
        return reject(&format!(
            "is not the end of a {}-epoch phase 1 ({} epoch {})",
            config.epochs_phase1, ckpt.state.phase, ckpt.state.epoch
        ));
    }
    if !config.same_phase1(&ckpt.config) {
        return reject("was pretrained with a different phase-1 configuration");
    }
    let metrics = file.with_file_name(files::METRICS);
    if let Ok(text) = fs::read_to_string(&metrics) {
        let rows: Vec<&str> = text
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("pretrain,"))
            .collect();
        if text.lines().next() == Some(METRICS_HEADER) && rows.len() == config.epochs_phase1 {
            let copy = format!("{METRICS_HEADER}\n{}\n", rows.join("\n"));
            let dest = out.join(files::METRICS);
            write_atomic(&dest, copy.as_bytes()).map_err(io_err(&dest))?;
        }
    }
    Ok(ckpt)
}

struct Run {
    out: PathBuf,
    config: Config,
    engine: Engine,
    data: Dataset,
    state: TrainState,
    stop: Arc<AtomicBool>,
    progress: crate::progress::Progress,
    /// The splits encoded once by the frozen encoder, in a phase 2 that trains only the
    /// classifier (`train_encoder_phase2 = false`).
    frozen: Option<FrozenCodes>,
}

/// Each split's codes ẑ as a split of its own (same labels, n values per example), so that
/// the epoch order and minibatches are those of the images.
struct FrozenCodes {
    train: Split,
    valid: Split,
    test: Split,
    /// The training split's reconstruction and sparsity terms and activity: the same every
    /// epoch while the encoder is frozen.
    encoder_loss: drsae_model::reference::LossTerms,
    activity: Activity,
}

impl FrozenCodes {
    fn new(engine: &mut Engine, data: &Dataset, config: &Config) -> Result<Self, TrainError> {
        let w = config.loss_weights(Phase::Finetune);
        // The codes move into the split; only the training split's loss and activity are kept.
        let mut encode = |split: &Split| -> Result<(Split, Codes), TrainError> {
            let mut codes = engine.encode(&split.images, &split.labels, &w)?;
            let as_split = Split {
                images: std::mem::take(&mut codes.z_hat),
                labels: split.labels.clone(),
                dim: config.n_hidden,
            };
            Ok((as_split, codes))
        };
        let (train, codes) = encode(&data.train)?;
        Ok(Self {
            train,
            valid: encode(&data.valid)?.0,
            test: encode(&data.test)?.0,
            encoder_loss: codes.encoder_loss,
            activity: codes.activity,
        })
    }
}

/// How an epoch ended.
enum EpochEnd {
    Done,
    Interrupted,
    Diverged(String),
}

impl Run {
    /// Global epoch index (phase-1 epochs, then phase-2 epochs), which seeds the epoch's order.
    fn global_epoch(&self, phase: Phase, epoch: u64) -> u64 {
        match phase {
            Phase::Pretrain => epoch,
            Phase::Finetune => self.config.epochs_phase1 as u64 + epoch,
        }
    }

    fn epochs_run(&self) -> u64 {
        self.global_epoch(self.state.phase, self.state.epoch)
    }

    /// Keeps only the metrics rows that the checkpoint being resumed covers, so a crash
    /// between appending a row and writing the checkpoint leaves no duplicate row.
    fn truncate_metrics(&self) -> Result<(), TrainError> {
        let path = self.out.join(files::METRICS);
        let Ok(text) = fs::read_to_string(&path) else {
            return Ok(());
        };
        let keep = self.epochs_run() as usize;
        let mut lines: Vec<&str> = text.lines().take(1 + keep).collect();
        if lines.first() != Some(&METRICS_HEADER) {
            lines.clear();
        }
        let mut out = lines.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        write_atomic(&path, out.as_bytes()).map_err(io_err(&path))
    }

    fn execute(&mut self) -> Result<u8, TrainError> {
        let start = Instant::now();
        let prior_wall = self.state.wall_s;
        let mut ending = "completed the schedule".to_string();
        loop {
            let (phase, total) = match self.state.phase {
                Phase::Pretrain => (Phase::Pretrain, self.config.epochs_phase1 as u64),
                Phase::Finetune => (Phase::Finetune, self.config.epochs_phase2 as u64),
            };
            if self.state.epoch >= total {
                if phase == Phase::Pretrain {
                    self.state.phase = Phase::Finetune;
                    self.state.epoch = 0;
                    continue;
                }
                break;
            }
            if let (Phase::Finetune, Some(patience), Some(best)) =
                (phase, self.config.patience, self.state.best_epoch)
                && self.state.epoch >= best + patience as u64
            {
                ending = format!(
                    "stopped early: no better validation error in the {patience} epochs after \
                     phase-2 epoch {best}"
                );
                break;
            }
            let end = self.train_epoch(phase, start, prior_wall)?;
            match end {
                EpochEnd::Done => {}
                EpochEnd::Interrupted => {
                    self.progress.finish();
                    self.finish(
                        "interrupted",
                        "stopped by a signal after the last completed epoch's checkpoint",
                        start,
                        prior_wall,
                    )?;
                    return Ok(EXIT_INTERRUPTED);
                }
                EpochEnd::Diverged(msg) => {
                    self.progress.finish();
                    eprintln!("error: {msg}");
                    self.finish("diverged", &msg, start, prior_wall)?;
                    return Ok(EXIT_DIVERGED);
                }
            }
        }
        self.progress.finish();
        self.finish("finished", &ending, start, prior_wall)?;
        Ok(0)
    }

    fn train_epoch(
        &mut self,
        phase: Phase,
        start: Instant,
        prior_wall: f64,
    ) -> Result<EpochEnd, TrainError> {
        let epoch = self.state.epoch + 1;
        let total = match phase {
            Phase::Pretrain => self.config.epochs_phase1,
            Phase::Finetune => self.config.epochs_phase2,
        } as u64;
        let bs = self.config.batch_size;
        let n = self.data.train.len();
        let t0 = Instant::now();
        let frozen = phase == Phase::Finetune && !self.config.train_encoder_phase2;
        if frozen && self.frozen.is_none() {
            self.frozen = Some(FrozenCodes::new(
                &mut self.engine,
                &self.data,
                &self.config,
            )?);
        }
        let codes = self.frozen.as_ref().filter(|_| frozen);
        let split = codes.map_or(&self.data.train, |c| &c.train);
        let mut batches =
            EpochBatches::new(n, bs, self.config.seed, self.global_epoch(phase, epoch - 1));
        let mut buf = BatchBuf::new(bs, split.dim);
        let mut loss = drsae_model::reference::LossTerms::default();
        let mut activity = Activity::default();
        if let Some(c) = codes {
            loss += c.encoder_loss;
            activity.merge(&c.activity);
        }
        let mut k = self.state.updates;
        self.progress
            .start_epoch(&format!("{phase} {epoch}/{total}"), n as u64);
        // The minibatch loop runs on the engine's first worker (see `Engine::run_in_pool`).
        let (stop, out, progress) = (&self.stop, &self.out, &mut self.progress);
        let early = self.engine.run_in_pool(|engine| {
            while batches.next_into(split, &mut buf) {
                if stop.load(Ordering::Relaxed) {
                    return Ok(Some(EpochEnd::Interrupted));
                }
                let x = &buf.x[..buf.len * buf.dim()];
                let y = &buf.y[..buf.len];
                let terms = if codes.is_some() {
                    engine.classifier_step(x, y, phase, k)?
                } else {
                    engine.train_step(x, y, phase, k)?
                };
                if !terms.total().is_finite() {
                    return Ok(Some(EpochEnd::Diverged(format!(
                        "loss became {} at update {k} ({phase} epoch {epoch}); the last good \
                         checkpoint is {}",
                        terms.total(),
                        out.join(files::LAST).display()
                    ))));
                }
                loss += terms;
                if codes.is_none() {
                    activity.merge(engine.last_activity());
                }
                k += 1;
                progress.advance(buf.len as u64);
            }
            Ok::<_, TrainError>(None)
        })?;
        if let Some(end) = early {
            return Ok(end);
        }
        let secs = t0.elapsed().as_secs_f64();
        self.state.train_s += secs;
        self.state.examples_trained += n as u64;
        self.state.updates = k;
        self.state.epoch = epoch;

        let mut valid_error = None;
        let mut test_error = None;
        if phase == Phase::Finetune && epoch.is_multiple_of(self.config.valid_interval as u64) {
            let w = self.config.loss_weights(phase);
            let (v, t) = match codes {
                Some(c) => (
                    self.engine
                        .evaluate_codes(&c.valid.images, &c.valid.labels, &w)?,
                    self.engine
                        .evaluate_codes(&c.test.images, &c.test.labels, &w)?,
                ),
                None => (
                    self.engine
                        .evaluate(&self.data.valid.images, &self.data.valid.labels, &w)?,
                    self.engine
                        .evaluate(&self.data.test.images, &self.data.test.labels, &w)?,
                ),
            };
            valid_error = Some(v.error_rate());
            test_error = Some(t.error_rate());
            if self
                .state
                .best_valid_error
                .is_none_or(|best| v.error_rate() < best)
            {
                self.state.best_valid_error = Some(v.error_rate());
                self.state.best_epoch = Some(epoch);
                self.state.best_test_error = Some(t.error_rate());
                self.state.best_wall_s = Some(prior_wall + start.elapsed().as_secs_f64());
                self.save(files::BEST)?;
            }
        }
        let wall = prior_wall + start.elapsed().as_secs_f64();
        self.state.wall_s = wall;
        let row = format!(
            "{phase},{epoch},{k},{},{},{},{},{},{},{},{},{},{:.1},{:.2}",
            loss.total() / n as f64,
            loss.rec / n as f64,
            loss.sparsity / n as f64,
            loss.cls / n as f64,
            activity
                .mean_per_step()
                .iter()
                .map(|a| format!("{a:.1}"))
                .collect::<Vec<_>>()
                .join(";"),
            loss.errors as f64 / n as f64,
            valid_error.map_or(String::new(), |v| v.to_string()),
            test_error.map_or(String::new(), |v| v.to_string()),
            self.config.learning_rate_at(k),
            n as f64 / secs,
            wall,
        );
        self.append_metrics(&row)?;
        self.progress.log(&format!(
            "{phase} epoch {epoch}/{total}: loss {:.4} (rec {:.4}, l1 {:.4}, cls {:.4}), train err {:.2}%{}, {:.0} ex/s",
            loss.total() / n as f64,
            loss.rec / n as f64,
            loss.sparsity / n as f64,
            loss.cls / n as f64,
            100.0 * loss.errors as f64 / n as f64,
            valid_error.map_or(String::new(), |v| format!(
                ", valid err {:.2}%, test err {:.2}%",
                100.0 * v,
                100.0 * test_error.unwrap_or(f64::NAN)
            )),
            n as f64 / secs
        ));
        if phase == Phase::Pretrain && epoch == total {
            self.save(files::PRETRAINED)?;
        }
        self.save(files::LAST)?;
        Ok(EpochEnd::Done)
    }

    fn append_metrics(&self, row: &str) -> Result<(), TrainError> {
        let path = self.out.join(files::METRICS);
        let new = !path.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut text = String::new();
        if new {
            text.push_str(METRICS_HEADER);
            text.push('\n');
        }
        text.push_str(row);
        text.push('\n');
        f.write_all(text.as_bytes()).map_err(io_err(&path))?;
        f.sync_data().map_err(io_err(&path))
    }

    fn save(&self, name: &str) -> Result<(), TrainError> {
        let ckpt = Checkpoint {
            params: self.engine.params(),
            config: self.config.clone(),
            state: self.state.clone(),
        };
        checkpoint::save(&self.out.join(name), &ckpt)?;
        Ok(())
    }

    fn finish(
        &self,
        status: &str,
        message: &str,
        start: Instant,
        prior_wall: f64,
    ) -> Result<(), TrainError> {
        let result = RunResult {
            status: status.into(),
            message: message.into(),
            best_valid_error: self.state.best_valid_error,
            best_epoch: self.state.best_epoch,
            test_error_at_best: self.state.best_test_error,
            epochs_run: self.epochs_run(),
            wall_s: prior_wall + start.elapsed().as_secs_f64(),
            wall_s_at_best: self.state.best_wall_s,
            examples_per_s: if self.state.train_s > 0.0 {
                self.state.examples_trained as f64 / self.state.train_s
            } else {
                0.0
            },
            kernel: self.engine.kernel_name().into(),
            threads: self.engine.threads(),
        };
        let path = self.out.join(files::RESULT);
        let json = serde_json::to_string_pretty(&result).expect("RunResult serialises");
        write_atomic(&path, json.as_bytes()).map_err(io_err(&path))?;
        println!("{status}: {message}");
        if let (Some(v), Some(t), Some(e)) = (
            result.best_valid_error,
            result.test_error_at_best,
            result.best_epoch,
        ) {
            println!(
                "best validation error {:.2}% at phase-2 epoch {e}; test error there {:.2}%",
                100.0 * v,
                100.0 * t
            );
        }
        Ok(())
    }
}

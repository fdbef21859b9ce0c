//! `drsae bench`: training throughput on real MNIST, as a median over repeats after warm-up,
//! with the dense-equivalent GFLOP/s and the measured activity; appends a row to a CSV.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use drsae_data::batch::{BatchBuf, EpochBatches};
use drsae_model::checkpoint;
use drsae_model::config::{Config, Phase};
use drsae_model::engine::{Activity, Engine};
use drsae_model::init::initialize;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::cli_data::DataArgs;
use crate::train::TrainError;

/// Flags of `drsae bench`.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// Start from this checkpoint (its n and T) instead of a fresh initialisation.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Hidden units (ignored with --checkpoint).
    #[arg(long, default_value_t = 400)]
    pub n_hidden: usize,
    /// Rectifications T (ignored with --checkpoint).
    #[arg(long, default_value_t = 11)]
    pub n_steps: usize,
    /// Minibatch size; above the configured one the learning rate is scaled down by
    /// (configured / this) so that one update keeps its size.
    #[arg(long, default_value_t = 10)]
    pub batch_size: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Training phase whose loss is used.
    #[arg(long, value_enum, default_value = "finetune")]
    pub phase: PhaseArg,
    /// Examples per timed repeat.
    #[arg(long, default_value_t = 5000)]
    pub examples: usize,
    /// Timed repeats (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Append the result row to this CSV.
    #[arg(long, value_name = "FILE", default_value = "results/train_bench.csv")]
    pub csv: PathBuf,
    /// Dataset location and options.
    #[command(flatten)]
    pub data: DataArgs,
}

/// Phase selector for the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PhaseArg {
    /// Reconstruction + sparsity.
    Pretrain,
    /// The full loss.
    Finetune,
}

/// Dense arithmetic of one training example (spec §9): forward E·x, (T−1)·S·z, D·z;
/// backward Dᵀ·r, (T−1)·Sᵀ·d and the three weight gradients; 2 flops per multiply-add.
pub fn dense_flops_per_example(m: usize, n: usize, t: usize) -> f64 {
    let (m, n, s) = (m as f64, n as f64, t.saturating_sub(1) as f64);
    2.0 * (2.0 * n * m + 3.0 * m * n + 3.0 * s * n * n)
}

/// Runs `drsae bench`.
pub fn run_bench(args: &BenchArgs) -> Result<(), TrainError> {
    let data = args.data.load()?;
    let (params, mut config, source, k0) = match &args.checkpoint {
        Some(path) => {
            let c = checkpoint::load(path)?;
            let k = c.state.updates;
            (c.params, c.config, path.display().to_string(), k)
        }
        None => {
            let config = Config {
                n_hidden: args.n_hidden,
                n_steps: args.n_steps,
                ..Config::default()
            };
            config
                .validate()
                .map_err(|e| TrainError::Config(e.to_string()))?;
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
            let p = initialize(&config, &data.train.images, &mut rng);
            (p, config, "init".to_string(), 0)
        }
    };
    // The loss is summed over the minibatch, so one update of B examples moves B/B₀ times as
    // far as one of the configured minibatch B₀. Above B₀ the learning rate is scaled by B₀/B
    // so that updates keep their size (unscaled, minibatch 128 drives every unit on and the
    // benchmark times a diverged network); below B₀ it is kept, i.e. the same step per example.
    let bs = args.batch_size.max(1);
    config.learning_rate *= (config.batch_size as f64 / bs as f64).min(1.0);
    config.batch_size = bs;
    let phase = match args.phase {
        PhaseArg::Pretrain => Phase::Pretrain,
        PhaseArg::Finetune => Phase::Finetune,
    };
    let mut engine = Engine::new(&params, &config, args.threads)?;
    let n = data.train.len();
    let mut batches = EpochBatches::new(n, bs, config.seed, 0);
    let mut buf = BatchBuf::new(bs, data.train.dim);
    let mut k = k0;
    let mut epoch = 0;
    let mut step = |engine: &mut Engine, activity: &mut Activity| -> Result<usize, TrainError> {
        if !batches.next_into(&data.train, &mut buf) {
            epoch += 1;
            batches.reset(epoch);
            batches.next_into(&data.train, &mut buf);
        }
        let x = &buf.x[..buf.len * buf.dim()];
        engine.train_step(x, &buf.y[..buf.len], phase, k)?;
        activity.merge(engine.last_activity());
        k += 1;
        Ok(buf.len)
    };
    let timed = |engine: &mut Engine| -> Result<(Vec<f64>, Activity), TrainError> {
        let mut warm = Activity::default();
        let mut done = 0;
        while done < args.examples.min(2000) {
            done += step(engine, &mut warm)?;
        }
        let mut rates = Vec::new();
        let mut activity = Activity::default();
        for _ in 0..args.repeats.max(1) {
            let t0 = Instant::now();
            let mut done = 0;
            while done < args.examples {
                done += step(engine, &mut activity)?;
            }
            rates.push(done as f64 / t0.elapsed().as_secs_f64());
        }
        Ok((rates, activity))
    };
    // As training runs it: the loop on the engine's first worker.
    let (mut rates, activity) = engine.run_in_pool(timed)?;
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let flops = dense_flops_per_example(config.n_input, config.n_hidden, config.n_steps);
    let per_step = activity.mean_per_step();
    let active_fraction =
        per_step.iter().sum::<f64>() / (per_step.len().max(1) as f64 * config.n_hidden as f64);
    println!(
        "n {} T {} batch {} threads {} from {source} ({}): median {:.0} examples/s \
         (min {:.0}, max {:.0}), dense-equivalent {:.1} GFLOP/s, mean active fraction {:.3}, \
         learning rate {:.2e}, kernel {}",
        config.n_hidden,
        config.n_steps,
        bs,
        args.threads,
        phase,
        median,
        rates[0],
        rates[rates.len() - 1],
        median * flops / 1e9,
        active_fraction,
        config.learning_rate,
        engine.kernel_name()
    );
    let new = !args.csv.exists();
    if let Some(dir) = args.csv.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.csv)
        .map_err(|source| TrainError::Io {
            path: args.csv.clone(),
            source,
        })?;
    let mut text = String::new();
    if new {
        text.push_str("git_rev,kernel,n_hidden,n_steps,batch_size,threads,source,phase,examples_per_s_median,examples_per_s_min,examples_per_s_max,dense_gflops,active_fraction,learning_rate\n");
    }
    text.push_str(&format!(
        "{},{},{},{},{},{},{},{},{:.0},{:.0},{:.0},{:.2},{:.4},{:e}\n",
        crate::git_rev(),
        engine.kernel_name(),
        config.n_hidden,
        config.n_steps,
        bs,
        args.threads,
        source,
        phase,
        median,
        rates[0],
        rates[rates.len() - 1],
        median * flops / 1e9,
        active_fraction,
        config.learning_rate
    ));
    f.write_all(text.as_bytes())
        .map_err(|source| TrainError::Io {
            path: args.csv.clone(),
            source,
        })?;
    Ok(())
}

//! `drsae eval`: validation and test error of a checkpoint, with the confusion matrix.

use std::path::PathBuf;

use clap::Args;
use drsae_model::checkpoint;
use drsae_model::config::Phase;
use drsae_model::engine::{Engine, Evaluation};
use serde::Serialize;

use crate::cli_data::DataArgs;
use crate::train::TrainError;

/// Flags of `drsae eval`.
#[derive(Clone, Debug, Args)]
pub struct EvalArgs {
    /// Checkpoint to evaluate.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// Also write the report as JSON to this file (`-` for standard output).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Worker threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Dataset location and options.
    #[command(flatten)]
    pub data: DataArgs,
}

/// Error and confusion matrix of one split.
#[derive(Clone, Debug, Serialize)]
pub struct SplitReport {
    /// Examples evaluated.
    pub examples: usize,
    /// Misclassified fraction.
    pub error: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Mean active units after each step.
    pub active_per_step: Vec<f64>,
}

/// The whole `drsae eval` report.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// The checkpoint evaluated.
    pub checkpoint: String,
    /// Validation split.
    pub valid: SplitReport,
    /// Test split.
    pub test: SplitReport,
}

fn split_report(eval: &Evaluation, labels: &[u8], classes: usize) -> SplitReport {
    let mut confusion = vec![vec![0usize; classes]; classes];
    for (&y, &p) in labels.iter().zip(&eval.predictions) {
        confusion[y as usize][p as usize] += 1;
    }
    SplitReport {
        examples: labels.len(),
        error: eval.error_rate(),
        confusion,
        active_per_step: eval.activity.mean_per_step(),
    }
}

/// Runs `drsae eval`.
pub fn run_eval(args: &EvalArgs) -> Result<EvalReport, TrainError> {
    let ckpt = checkpoint::load(&args.checkpoint)?;
    let data = args.data.load()?;
    let threads = args.threads.unwrap_or_else(crate::default_threads);
    let mut engine = Engine::new(&ckpt.params, &ckpt.config, threads)?;
    let w = ckpt.config.loss_weights(Phase::Finetune);
    let l = ckpt.config.n_classes;
    let v = engine.evaluate(&data.valid.images, &data.valid.labels, &w)?;
    let t = engine.evaluate(&data.test.images, &data.test.labels, &w)?;
    let report = EvalReport {
        checkpoint: args.checkpoint.display().to_string(),
        valid: split_report(&v, &data.valid.labels, l),
        test: split_report(&t, &data.test.labels, l),
    };
    println!("checkpoint        {}", report.checkpoint);
    println!(
        "validation error  {:.2}% ({} examples)",
        100.0 * report.valid.error,
        report.valid.examples
    );
    println!(
        "test error        {:.2}% ({} examples)",
        100.0 * report.test.error,
        report.test.examples
    );
    println!("test confusion matrix (rows: true class, columns: predicted)");
    for (y, row) in report.test.confusion.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|c| format!("{c:>5}")).collect();
        println!("  {y}: {}", cells.join(""));
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("report serialises");
        if path.as_os_str() == "-" {
            println!("{json}");
        } else {
            crate::fsutil::write_atomic(path, json.as_bytes()).map_err(|source| {
                TrainError::Io {
                    path: path.clone(),
                    source,
                }
            })?;
        }
    }
    Ok(report)
}

//! The `drsae` command-line tool: data, train, eval, bench, sweep, report, analyze.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use drsae_harness::analyze::{self, AnalyzeArgs};
use drsae_harness::bench::{self, BenchArgs};
use drsae_harness::cli_data::{self, DataArgs};
use drsae_harness::eval::{self, EvalArgs};
use drsae_harness::train::{self, TrainArgs};

#[derive(Parser)]
#[command(
    name = "drsae",
    version,
    about = "Discriminative Recurrent Sparse Auto-Encoders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a dataset, verify it and print a summary.
    Data(DataArgs),
    /// Train a DrSAE: unsupervised pretraining, then discriminative fine-tuning.
    Train(TrainArgs),
    /// Validation and test error of a checkpoint, with the confusion matrix.
    Eval(EvalArgs),
    /// Training throughput (examples/s) on real MNIST.
    Bench(BenchArgs),
    /// Part-units and categorical units of a checkpoint: units.csv, figures, summary.md.
    Analyze(AnalyzeArgs),
    /// Run every run of a sweep specification (experiments/*.toml).
    Sweep(drsae_harness::sweep::SweepArgs),
    /// Append one run's row to its sweep's summary (used by `sweep --emit` commands).
    #[command(hide = true)]
    SweepRecord(drsae_harness::sweep::SweepRecordArgs),
    /// Aggregate a sweep's summary into report.md and plots.
    Report(drsae_harness::sweep::ReportArgs),
    /// Download MNIST from the public mirrors into the data folder and verify it.
    FetchData {
        /// Target folder (default: $DRSAE_DATA_DIR, else data/mnist/ in the repository).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Cut the small test fixture (first N training and test images) from real MNIST.
    Fixture {
        /// Folder with the full MNIST files.
        #[arg(long)]
        src: Option<PathBuf>,
        /// Folder to write the fixture into.
        #[arg(long)]
        out: PathBuf,
        /// Training images to keep.
        #[arg(long, default_value_t = 1000)]
        n_train: usize,
        /// Test images to keep.
        #[arg(long, default_value_t = 500)]
        n_test: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Data(args) => cli_data::run_data(&args).map_err(Into::into),
        Command::Train(args) => {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)) {
                eprintln!(
                    "warning: cannot catch SIGINT/SIGTERM ({e}); an interrupt loses the epoch in flight"
                );
            }
            match train::run_train(&args, stop) {
                Ok(code) => return ExitCode::from(code),
                Err(e) => Err(e.into()),
            }
        }
        Command::Sweep(args) => match drsae_harness::sweep::run_sweep(&args) {
            Ok(()) => Ok(()),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(e.exit_code() as u8);
            }
        },
        Command::SweepRecord(args) => {
            drsae_harness::sweep::run_sweep_record(&args).map_err(Into::into)
        }
        Command::Report(args) => drsae_harness::sweep::run_report(&args).map_err(Into::into),
        Command::Eval(args) => eval::run_eval(&args).map(|_| ()).map_err(Into::into),
        Command::Bench(args) => bench::run_bench(&args).map_err(Into::into),
        Command::Analyze(args) => analyze::run_analyze(&args).map_err(Into::into),
        Command::FetchData { dir } => {
            let dir = drsae_data::locate::resolve_data_dir(dir.as_deref(), &cli_data::repo_root());
            drsae_data::fetch::fetch_mnist(&dir).map_err(Into::into)
        }
        Command::Fixture {
            src,
            out,
            n_train,
            n_test,
        } => {
            let src = drsae_data::locate::resolve_data_dir(src.as_deref(), &cli_data::repo_root());
            drsae_data::fixture::make_fixture(&src, &out, n_train, n_test).map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
